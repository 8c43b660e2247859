//! The auth and users services over real gRPC, against SQLite and PostgreSQL.
//! One test binary: one link instead of many.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth_flow;
mod helpers;
mod keys;
mod mfa;
mod store;
mod users_api;
