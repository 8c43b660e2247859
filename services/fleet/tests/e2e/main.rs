//! End to end: the real `fleet run`, driven over HTTPS with reqwest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bluegreen;
mod broker_users;
mod cache;
mod console;
mod contract;
mod early;
mod edge;
mod events;
mod grpc;
mod harness;
mod health;
mod identity;
mod import;
mod lifecycle;
mod mfa;
mod monitoring;
mod notify;
mod openapi;
mod overload;
mod pgbouncer;
mod ratelimit;
mod rest;
mod security;
mod sockets;
mod stats;
mod traces;
mod transfer;
mod webhooks;
