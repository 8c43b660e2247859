//! The auth service's errors and their one mapping to gRPC statuses.

use std::time::Duration;

use fleet_kit::error::{Violations, forbidden_fields, internal, invalid_argument};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::hashing::{self, Overloaded};

/// Everything an auth RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request has invalid fields.
    #[error("invalid request: {0}")]
    Invalid(Violations),
    /// Wrong email or password; the same whether the email exists or not.
    #[error("invalid email or password")]
    BadCredentials,
    /// Too many consecutive failures.
    #[error("too many failed attempts; try again later")]
    Locked {
        /// Seconds until the next attempt, if the lock ends by itself.
        retry_after: Option<Duration>,
    },
    /// The account is disabled.
    #[error("account disabled")]
    Disabled,
    /// The mfa_token is unknown, spent or expired.
    #[error("invalid or expired mfa_token")]
    InvalidMfaToken,
    /// The second factor is wrong, spent, or a replayed TOTP code.
    #[error("invalid second factor")]
    BadSecondFactor,
    /// A well-formed code on an authenticated request that proves nothing:
    /// wrong, spent or replayed. Forbidden, with the field named.
    #[error("invalid request: {0}")]
    WrongCode(Violations),
    /// The 2FA state does not allow the request (not enrolled, already on...).
    #[error("{0}")]
    MfaState(&'static str),
    /// An SMS could not be sent.
    #[error("the SMS could not be sent; try again later")]
    SmsUndeliverable,
    /// The refresh token is unknown, spent or its session has ended.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// The session ended.
    #[error("session has ended")]
    SessionEnded,
    /// No such session of the caller.
    #[error("session not found")]
    SessionNotFound,
    /// Every password-hashing thread is busy and the queue is full.
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// The users service answered with an error meant for the caller.
    #[error("{}", .0.message())]
    Upstream(Status),
    /// A failure the caller cannot act on.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<Violations> for AuthError {
    fn from(v: Violations) -> Self {
        AuthError::Invalid(v)
    }
}

impl AuthError {
    /// An error from the users service: what concerns the caller's input
    /// passes through with its details, anything else is an outage.
    pub fn from_users(status: Status) -> Self {
        match status.code() {
            Code::InvalidArgument | Code::AlreadyExists => AuthError::Upstream(status),
            Code::Unavailable | Code::DeadlineExceeded => {
                AuthError::Upstream(Status::unavailable("users service unavailable"))
            }
            // A connection lost mid-call is an outage too, not a fault.
            Code::Unknown | Code::Cancelled if std::error::Error::source(&status).is_some() => {
                AuthError::Upstream(Status::unavailable("users service unavailable"))
            }
            _ => AuthError::Unexpected(anyhow::anyhow!(
                "users service: {:?}: {}",
                status.code(),
                status.message()
            )),
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Invalid(v) => invalid_argument(&v),
            AuthError::BadCredentials
            | AuthError::InvalidRefreshToken
            | AuthError::SessionEnded
            | AuthError::InvalidMfaToken
            | AuthError::BadSecondFactor => Status::unauthenticated(err.to_string()),
            AuthError::Locked { retry_after } => {
                let mut details = ErrorDetails::new();
                if let Some(delay) = retry_after {
                    details.set_retry_info(Some(delay));
                }
                Status::with_error_details(Code::ResourceExhausted, err.to_string(), details)
            }
            AuthError::Disabled => Status::permission_denied(err.to_string()),
            AuthError::WrongCode(v) => forbidden_fields(&v),
            AuthError::SessionNotFound => Status::not_found(err.to_string()),
            AuthError::MfaState(_) => Status::failed_precondition(err.to_string()),
            AuthError::SmsUndeliverable => Status::unavailable(err.to_string()),
            AuthError::Overloaded(_) => Status::with_error_details(
                Code::Unavailable,
                err.to_string(),
                ErrorDetails::with_retry_info(Some(hashing::RETRY_AFTER)),
            ),
            AuthError::Upstream(status) => status,
            AuthError::Unexpected(e) => internal(&e),
        }
    }
}
