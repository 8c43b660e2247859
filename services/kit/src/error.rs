//! Errors at the gRPC edge. Each service has its own error enum and maps it to
//! [`tonic::Status`] in one place with these helpers: validation failures carry
//! `google.rpc.BadRequest` field violations; internal failures are logged once
//! with their cause chain and reach the caller only as an opaque message.

use std::fmt;

use tonic::Status;
use tonic_types::StatusExt;

/// One invalid field of a request: the same type the field rules report.
pub use fleet_proto::rules::Violation as FieldViolation;

/// The field violations found while validating one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldViolation::new(field, message));
    }

    /// Runs a parser and records its error under `field`; `None` on error.
    pub fn check<T, E: fmt::Display>(&mut self, field: &str, parsed: Result<T, E>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(err) => {
                self.add(field, err.to_string());
                None
            }
        }
    }

    /// `Ok(())` when nothing was recorded.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The recorded violations.
    pub fn iter(&self) -> impl Iterator<Item = &FieldViolation> {
        self.0.iter()
    }
}

impl From<FieldViolation> for Violations {
    fn from(v: FieldViolation) -> Self {
        Self(vec![v])
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
        f.write_str(&parts.join("; "))
    }
}

/// `INVALID_ARGUMENT` with a `google.rpc.BadRequest` detail per field, as
/// the codec answers for broken field rules.
pub fn invalid_argument(violations: &Violations) -> Status {
    fleet_proto::codec::invalid_argument(&violations.0)
}

/// `PERMISSION_DENIED` that names the fields at fault: a well-formed value
/// that proves nothing (a wrong code), as opposed to a malformed one.
pub fn forbidden_fields(violations: &Violations) -> Status {
    fleet_proto::codec::with_violations(tonic::Code::PermissionDenied, &violations.0)
}

/// An opaque status for a failure that is not the caller's. The cause chain
/// is logged here, once, and never sent to the caller. A store that cannot
/// be reached (no connection in time, a connection lost) is `UNAVAILABLE`,
/// which the gateway answers 503: the request may succeed later as it is.
/// A statement the server cancelled at its timeout is `DEADLINE_EXCEEDED`
/// (504). A service this one called that was unavailable or late makes
/// this call the same. Anything else is `INTERNAL`.
pub fn internal(err: &anyhow::Error) -> Status {
    if statement_timed_out(err) {
        tracing::warn!(error = format!("{err:#}"), "a statement ran past its timeout");
        return Status::deadline_exceeded("the store did not answer in time");
    }
    if store_unreachable(err) {
        tracing::warn!(error = format!("{err:#}"), "store unreachable");
        return Status::unavailable("the store is unavailable; try again");
    }
    if let Some(code) = dependency_down(err) {
        tracing::warn!(error = format!("{err:#}"), "a called service failed");
        return Status::new(code, "a service this call needs is unavailable; try again");
    }
    tracing::error!(error = format!("{err:#}"), "internal error");
    Status::internal("internal error")
}

/// Whether the server cancelled a statement that ran past
/// `statement_timeout` (SQLSTATE 57014).
fn statement_timed_out(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(cause.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014"))
    })
}

/// Whether `err` comes from a store that could not be reached: no
/// connection in time, a connection refused or lost, a server (or a proxy
/// in front of it) that broke off while the connection was made, or a
/// server that ended the session because it is stopping or starting
/// (SQLSTATE class 08, and 57P01–57P03).
fn store_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| match cause.downcast_ref::<sqlx::Error>() {
        Some(
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_),
        ) => true,
        Some(sqlx::Error::Database(db)) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")),
        _ => false,
    })
}

/// The code of a called service's answer that says "try again": it was
/// unavailable, or did not answer in time.
fn dependency_down(err: &anyhow::Error) -> Option<tonic::Code> {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<Status>())
        .map(Status::code)
        .find(|code| matches!(code, tonic::Code::Unavailable | tonic::Code::DeadlineExceeded))
}

/// The field violations a status carries, for clients and tests.
pub fn field_violations(status: &Status) -> Vec<FieldViolation> {
    status
        .get_details_bad_request()
        .map(|br| {
            br.field_violations
                .into_iter()
                .map(|v| FieldViolation::new(v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn an_unreachable_store_is_unavailable_and_anything_else_internal() {
        for unreachable in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            let err = anyhow::Error::new(unreachable).context("reading the user");
            let status = internal(&err);
            assert_eq!(status.code(), Code::Unavailable, "{err:#}");
            assert!(
                !status.message().contains("reading"),
                "the cause stays out: {}",
                status.message()
            );
        }
        // A proxy that accepted the connection and broke it off at once.
        let cut = anyhow::Error::new(sqlx::Error::Protocol("unexpected response from SSLRequest".into()));
        assert_eq!(internal(&cut).code(), Code::Unavailable);
        // A called service that was down, or late, makes this call so too.
        let down = anyhow::Error::new(Status::unavailable("users down")).context("users service");
        assert_eq!(internal(&down).code(), Code::Unavailable);
        let late = anyhow::Error::new(Status::deadline_exceeded("late")).context("users service");
        assert_eq!(internal(&late).code(), Code::DeadlineExceeded);
        let failed = anyhow::Error::new(Status::internal("a bug")).context("users service");
        assert_eq!(internal(&failed).code(), Code::Internal);
        let broken = anyhow::Error::new(sqlx::Error::RowNotFound).context("reading the user");
        assert_eq!(internal(&broken).code(), Code::Internal);
        assert_eq!(internal(&anyhow::anyhow!("a bug")).code(), Code::Internal);
    }

    #[test]
    fn invalid_argument_round_trips_its_field_violations() {
        let mut v = Violations::new();
        v.add("email", "is not an email address");
        v.add("password", "must be at least 12 characters");
        let status = invalid_argument(&v);
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<_> = field_violations(&status).into_iter().map(|f| f.field).collect();
        assert_eq!(fields, ["email", "password"]);
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let err = anyhow::anyhow!("connection to postgres://secret@db refused");
        let status = internal(&err);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
