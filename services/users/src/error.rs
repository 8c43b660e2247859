//! The users service's errors and their one mapping to gRPC statuses.

use fleet_kit::error::{Violations, internal, invalid_argument};
use tonic::Status;

use crate::store::StoreError;

/// Everything a users RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The request has invalid fields.
    #[error("invalid request: {0}")]
    Invalid(Violations),
    /// No such user.
    #[error("user not found")]
    NotFound,
    /// The email belongs to another user.
    #[error("email already registered")]
    EmailTaken,
    /// Optimistic concurrency: the user changed.
    #[error("the user changed: it is at version {current}")]
    VersionConflict {
        /// The version it is at now.
        current: i64,
    },
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// A failure the caller cannot act on.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for UsersError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => UsersError::NotFound,
            StoreError::EmailTaken => UsersError::EmailTaken,
            StoreError::VersionConflict { current } => UsersError::VersionConflict { current },
            StoreError::Unexpected(e) => UsersError::Unexpected(e),
        }
    }
}

impl From<Violations> for UsersError {
    fn from(v: Violations) -> Self {
        UsersError::Invalid(v)
    }
}

impl From<UsersError> for Status {
    fn from(err: UsersError) -> Self {
        match &err {
            UsersError::Invalid(v) => invalid_argument(v),
            UsersError::NotFound => Status::not_found(err.to_string()),
            UsersError::EmailTaken => Status::already_exists(err.to_string()),
            UsersError::VersionConflict { .. } => Status::aborted(err.to_string()),
            UsersError::Forbidden(_) => Status::permission_denied(err.to_string()),
            UsersError::Unexpected(e) => internal(e),
        }
    }
}
