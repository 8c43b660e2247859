//! What every Fleet service shares: typed configuration, logging, the gRPC
//! server bootstrap, error mapping, store connections and migrations, an
//! injected clock, access-token verification, the transactional outbox and
//! the in-process event bus.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod amqp;
pub mod cacert;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod feed;
pub mod grpc;
pub mod layer;
pub mod metrics;
pub mod observed;
pub mod outbox;
pub mod probe;
pub mod process;
pub mod revocation;
pub mod secret;
pub mod store;
pub mod structs;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod token;
pub mod trace;

pub use clock::{Clock, SharedClock, SystemClock};
pub use secret::Secret;
pub use store::{Db, PoolSettings, StorePool};
