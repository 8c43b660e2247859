//! RFC 9457 problem details: every error the gateway answers with, including
//! gRPC statuses mapped to HTTP by the standard table.

use serde::Serialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, snake_case.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable code, e.g. `invalid_argument`.
    pub code: &'static str,
    /// What happened, for a person.
    pub detail: String,
    /// Field errors of a validation failure.
    pub errors: Vec<FieldError>,
    /// Seconds until a retry may succeed.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    r#type: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

/// The media type of problem answers.
pub const CONTENT_TYPE: &str = "application/problem+json";

impl Problem {
    /// A problem without field errors.
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// A 400 with one field error.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            errors: vec![FieldError {
                field: field.clone(),
                message: message.clone(),
            }],
            ..Self::new(400, "invalid_argument", format!("{field}: {message}"))
        }
    }

    /// The problem a gRPC status stands for.
    pub fn from_status(status: &Status) -> Self {
        let (http, code) = http_status(status.code());
        let errors = status
            .get_details_bad_request()
            .map(|br| {
                br.field_violations
                    .into_iter()
                    .map(|v| FieldError {
                        field: v.field,
                        message: v.description,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let retry_after = status
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        let detail = match status.code() {
            // Never pass internal detail through.
            Code::Internal | Code::Unknown | Code::DataLoss => "internal error".to_string(),
            _ => status.message().to_string(),
        };
        Self {
            status: http,
            code,
            detail,
            errors,
            retry_after,
        }
    }

    /// The RFC 9457 body.
    pub fn to_json(&self, request_id: &str) -> Vec<u8> {
        let title = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let body = Body {
            r#type: format!("urn:fleet:problem:{}", self.code),
            title,
            status: self.status,
            detail: &self.detail,
            code: self.code,
            request_id,
            errors: &self.errors,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// The standard gRPC → HTTP mapping, with a snake_case code name.
pub fn http_status(code: Code) -> (u16, &'static str) {
    let status = match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        // A well-formed request that the resource's current state refuses
        // (2FA not on, nothing pending) conflicts with that state: 409, so a
        // 400 always means the request itself must change.
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unauthenticated => 401,
    };
    (status, fleet_kit::metrics::code_name(code))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn statuses_map_to_problems_with_field_errors_and_retry_hints() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("email", "is not a valid email address");
        let status = Status::with_error_details(Code::InvalidArgument, "invalid request", details);
        let problem = Problem::from_status(&status);
        assert_eq!((problem.status, problem.code), (400, "invalid_argument"));
        let body: serde_json::Value = serde_json::from_slice(&problem.to_json("req-1")).unwrap();
        assert_eq!(body["errors"][0]["field"], "email");
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["type"], "urn:fleet:problem:invalid_argument");
        assert_eq!(body["title"], "Bad Request");

        let locked = Status::with_error_details(
            Code::ResourceExhausted,
            "locked",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(29_500))),
        );
        assert_eq!(Problem::from_status(&locked).retry_after, Some(30));
        assert_eq!(
            Problem::from_status(&Status::internal("db at 10.0.0.1 down")).detail,
            "internal error"
        );
        assert_eq!(http_status(Code::Unavailable).0, 503);
        assert_eq!(http_status(Code::DeadlineExceeded).0, 504);
    }
}
