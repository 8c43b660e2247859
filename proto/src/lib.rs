//! Fleet's gRPC contracts: the generated messages, clients and servers of
//! every service, and the encoded `FileDescriptorSet` the gateway builds its
//! routes from and the services serve through reflection.

#![allow(clippy::derive_partial_eq_without_eq)]

pub mod codec;
pub mod json;
pub mod rules;

/// The encoded `FileDescriptorSet` of every Fleet proto, with source info and
/// imports (including `google.api.http`), as protox compiled it.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fleet_descriptor.bin"));

/// `google.api` (the HTTP annotations).
pub mod google {
    #[allow(missing_docs)]
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

/// Fleet's packages, nested as their names are (`fleet.users.v1` is
/// `fleet::users::v1`), so that generated code finds other packages'
/// types (`google.api.HttpBody`) by relative paths.
pub mod fleet {
    /// Fleet's own options: REST method options and field rules.
    pub mod api {
        #[allow(missing_docs)]
        pub mod v1 {
            tonic::include_proto!("fleet.api.v1");
        }
    }

    /// The users service.
    pub mod users {
        #[allow(missing_docs)]
        pub mod v1 {
            tonic::include_proto!("fleet.users.v1");
        }
    }

    /// The auth service.
    pub mod auth {
        #[allow(missing_docs)]
        pub mod v1 {
            tonic::include_proto!("fleet.auth.v1");
        }
    }

    /// The stats service.
    pub mod stats {
        #[allow(missing_docs)]
        pub mod v1 {
            tonic::include_proto!("fleet.stats.v1");
        }
    }

    /// The transfer service.
    pub mod transfer {
        #[allow(missing_docs)]
        pub mod v1 {
            tonic::include_proto!("fleet.transfer.v1");
        }
    }

    /// The notify service.
    pub mod notify {
        #[allow(missing_docs)]
        pub mod v1 {
            tonic::include_proto!("fleet.notify.v1");
        }
    }

    /// Domain events.
    pub mod events {
        #[allow(missing_docs)]
        pub mod v1 {
            tonic::include_proto!("fleet.events.v1");
        }
    }
}

pub use fleet::{api, auth, events, notify, stats, transfer, users};
