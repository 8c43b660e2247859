//! Fleet's API gateway on Pingora: TLS, security headers, edge
//! authentication, REST→gRPC transcoding driven by the `google.api.http`
//! annotations, and gRPC pass-through.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod problem;
pub mod routes;
pub mod transcode;
