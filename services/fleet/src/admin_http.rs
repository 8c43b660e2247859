//! The admin listener: `/metrics` (Prometheus text format), `/health`
//! (the process is alive) and `/health/ready` (it takes traffic) for the
//! whole process. Kept off the public listeners; orchestrators probe it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
};

use anyhow::Context;
use axum::{
    Router,
    http::{HeaderMap, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio_util::sync::CancellationToken;

/// OpenMetrics, what Prometheus asks for.
const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Prometheus' classic text format, for everyone else (promtool, curl).
const CLASSIC_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where a process is in its life, as `/health/ready` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Its components are still starting.
    Starting = 0,
    /// Every component is serving.
    Ready = 1,
    /// It was told to stop and is finishing what it holds.
    Draining = 2,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
        }
    }
}

/// The process's phase, shared by whoever moves it and the listener.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicU8>);

impl Readiness {
    /// Moves to `phase`; draining is final.
    pub fn set(&self, phase: Phase) {
        let _ = self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
            (now != Phase::Draining as u8).then_some(phase as u8)
        });
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::SeqCst) {
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Starting,
        }
    }
}

/// Binds the admin listener, so that a taken port fails before anything starts.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin listener on {addr}"))
}

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("the admin listener's address")?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    if encode(&mut body, &registry).is_err() {
                        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "encoding failed").into_response();
                    }
                    let openmetrics = headers
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
                    if openmetrics {
                        ([(header::CONTENT_TYPE, OPENMETRICS_TYPE)], body).into_response()
                    } else {
                        ([(header::CONTENT_TYPE, CLASSIC_TYPE)], classic_text(&body)).into_response()
                    }
                }
            }),
        )
        .route(
            "/health",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#) }),
        )
        .route(
            "/health/ready",
            get(move || {
                let phase = readiness.phase();
                async move {
                    let status = if phase == Phase::Ready {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    let body = serde_json::json!({ "status": phase.name() }).to_string();
                    (status, [(header::CONTENT_TYPE, "application/json")], body)
                }
            }),
        );
    tracing::info!(%addr, "admin listener (metrics, health, readiness)");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("admin listener failed")
}

/// The OpenMetrics exposition rewritten in the classic text format (0.0.4):
/// counter families take their `_total` sample name, `unknown` becomes
/// `untyped`, and the `# UNIT` and `# EOF` lines go. Samples are the same.
fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Held until the family's TYPE tells its sample name.
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some((family, kind)) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split_once(' ')) {
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "unknown" => (family.to_string(), "untyped"),
                other => (family.to_string(), other),
            };
            if let Some((_, text)) = help.take().filter(|(of, _)| *of == family) {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_is_final() {
        let readiness = Readiness::default();
        assert_eq!(readiness.phase(), Phase::Starting);
        readiness.set(Phase::Ready);
        assert_eq!(readiness.phase(), Phase::Ready);
        readiness.set(Phase::Draining);
        readiness.set(Phase::Ready);
        assert_eq!(
            readiness.phase(),
            Phase::Draining,
            "a stopping process never turns ready again"
        );
    }

    #[test]
    fn openmetrics_becomes_the_classic_text_format() {
        let openmetrics = "# HELP http_requests HTTP requests answered.\n\
# TYPE http_requests counter\n\
http_requests_total{method=\"GET\"} 2\n\
# HELP latency_seconds Latency.\n\
# TYPE latency_seconds histogram\n\
# UNIT latency_seconds seconds\n\
latency_seconds_bucket{le=\"+Inf\"} 1\n\
latency_seconds_sum 0.5\n\
latency_seconds_count 1\n\
# HELP up Whether it is up.\n\
# TYPE up gauge\n\
up 1\n\
# EOF\n";
        let classic = "# HELP http_requests_total HTTP requests answered.\n\
# TYPE http_requests_total counter\n\
http_requests_total{method=\"GET\"} 2\n\
# HELP latency_seconds Latency.\n\
# TYPE latency_seconds histogram\n\
latency_seconds_bucket{le=\"+Inf\"} 1\n\
latency_seconds_sum 0.5\n\
latency_seconds_count 1\n\
# HELP up Whether it is up.\n\
# TYPE up gauge\n\
up 1\n";
        assert_eq!(classic_text(openmetrics), classic);
    }
}
