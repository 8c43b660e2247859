//! Fleet's API gateway on Pingora: TLS, security headers, edge
//! authentication, REST→gRPC transcoding driven by the `google.api.http`
//! annotations, gRPC pass-through and the generated OpenAPI document.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod health;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod session_cookie;
pub mod settings;
pub mod tls;
pub mod transcode;
pub mod upstream;

pub use server::{Deps, run};
pub use settings::{GatewaySettings, HttpMode};
pub mod cache;
pub mod client_ip;
pub mod console;
pub mod forwarder;
pub mod ratelimit;
pub mod redis_link;
