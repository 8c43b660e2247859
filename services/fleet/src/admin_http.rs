//! The admin listener: `/metrics` (Prometheus text format) and `/health`
//! for the whole process. Kept off the public listeners.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio_util::sync::CancellationToken;

/// The content type of the text exposition format.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints on `addr` until `shutdown`.
pub async fn serve(addr: SocketAddr, registry: Arc<Registry>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin listener on {addr}"))?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    match encode(&mut body, &registry) {
                        Ok(()) => ([(header::CONTENT_TYPE, METRICS_TYPE)], body).into_response(),
                        Err(_) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "encoding failed").into_response(),
                    }
                }
            }),
        )
        .route(
            "/health",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#) }),
        );
    tracing::info!(%addr, "admin listener (metrics, health)");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("admin listener failed")
}
