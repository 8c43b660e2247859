//! The gRPC server bootstrap every service uses: its routes plus tonic-health
//! and tonic-reflection, the authentication layer, a listener that was bound
//! beforehand (tests bind port 0), and graceful shutdown.

mod fresh;

pub use fresh::{CHANNEL_AGE, FreshChannel};

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;

use crate::{layer::AuthLayer, observed::ObserveLayer, token::TokenVerifier};

/// The metadata the gateway forwards the client's address in. Services keep
/// it only when a service token vouches for it (see [`FORWARDER_HEADER`]).
pub const CLIENT_IP_HEADER: &str = "x-fleet-client-ip";
/// The client's user agent, as the gateway forwards it.
pub const CLIENT_USER_AGENT_HEADER: &str = "x-fleet-client-user-agent";
/// A service token (`Bearer …`) vouching for the forwarded client headers:
/// without a valid one they are dropped before any handler sees them.
pub const FORWARDER_HEADER: &str = "x-fleet-forwarder";

/// The request id the gateway gives every request and forwards to services.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How long one client connection lives before the server asks it to go
/// (GOAWAY) and the client reconnects. Behind a Service whose selector moves
/// (a blue-green switch, a scale-out), a long-lived HTTP/2 connection would
/// otherwise stay on the pod it first reached for as long as that pod lives.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// How long a connection asked to go may finish its calls before it is cut.
pub const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);

/// Serves `routes` on `listener` until `shutdown` resolves. `services` are the
/// fully-qualified names reported as SERVING through grpc.health.v1.
///
/// Accepted connections get `TCP_NODELAY`: tonic's builder setting applies only
/// to listeners it binds itself, and without it Nagle's algorithm holds an
/// answer's last small segment back for the peer's delayed ACK (a ~40 ms tail
/// on loopback).
///
/// When `shutdown` resolves the services report NOT_SERVING, the listener
/// stops accepting, every connection is sent GOAWAY, and calls in flight
/// finish; this returns once the last connection has closed. The process
/// bounds that wait by its own grace period.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
    verifier: Arc<TokenVerifier>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in services {
        health.set_service_status(*name, ServingStatus::Serving).await;
    }
    health.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(fleet_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

    let addr = listener.local_addr().ok();
    tracing::info!(?addr, ?services, "gRPC server listening");
    let routes = routes.add_service(health_service).add_service(reflection);
    Server::builder()
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE)
        .layer(ObserveLayer)
        .layer(AuthLayer::new(verifier))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            shutdown.await;
            for name in services {
                health.set_service_status(*name, ServingStatus::NotServing).await;
            }
            health.set_service_status("", ServingStatus::NotServing).await;
        })
        .await
        .context("gRPC server failed")
}
