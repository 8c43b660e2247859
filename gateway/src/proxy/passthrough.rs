//! gRPC pass-through: a gRPC request goes to its service unchanged, after
//! the same edge checks as a REST call. Only RPCs meant for outside callers
//! pass (a `google.api.http` rule or the `(fleet.api.v1.public)` mark); they
//! draw from the same rate limit buckets as their REST routes and carry the
//! same body cap.

use http::{HeaderMap, HeaderValue, header};
use pingora::prelude::Session;

use super::{Answer, GRPC_MESSAGE, GRPC_STATUS, Gateway, RequestContext, head, header_str, text_value};

/// The gRPC status of a refusal the REST side answers with `status`.
fn code_of(status: u16) -> tonic::Code {
    match status {
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        413 | 429 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::InvalidArgument,
    }
}

impl Gateway {
    /// A trailers-only gRPC error answer.
    pub(super) async fn grpc_error(
        &self,
        session: &mut Session,
        ctx: &RequestContext,
        code: tonic::Code,
        message: &str,
    ) -> Answer {
        let mut headers = HeaderMap::with_capacity(12);
        self.decorate(&mut headers, ctx);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(GRPC_STATUS, HeaderValue::from(code as i32));
        if code == tonic::Code::ResourceExhausted
            && let Some(rate) = ctx.rate.filter(|r| !r.allowed)
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(rate.retry_after_secs));
        }
        let message = message.replace(|c: char| !c.is_ascii_graphic() && c != ' ', "");
        headers.insert(GRPC_MESSAGE, text_value(message)?);
        session.write_response_header(head(200, headers)?, true).await?;
        Ok(true)
    }

    /// Checks a gRPC request and picks its upstream; `Ok(false)` lets it
    /// through to the proxy.
    pub(super) async fn grpc(&self, session: &mut Session, ctx: &mut RequestContext) -> Answer {
        let path = session.req_header().uri.path().to_string();
        let Some(policy) = self.routes.edge_rpc(&path).map(str::to_string) else {
            // Made-up paths share one metric label.
            ctx.endpoint = "unknown".into();
            let (code, message) = if self.routes.is_rpc(&path) {
                (tonic::Code::PermissionDenied, "this method is internal to the fleet")
            } else {
                (tonic::Code::Unimplemented, "no such method")
            };
            ctx.failure = Some(format!("refused gRPC call to {path}"));
            return self.grpc_error(session, ctx, code, message).await;
        };
        ctx.endpoint.clone_from(&path);
        let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        let Some(authority) = self.upstreams.authority(service).map(str::to_string) else {
            return self
                .grpc_error(session, ctx, tonic::Code::Unimplemented, "unknown service")
                .await;
        };
        let authenticated = self.authenticate(session, ctx).await;
        let refused = match self.limit(ctx, &policy).await {
            Err(problem) => Some(problem),
            Ok(()) => authenticated.err(),
        };
        let limit = self.settings.max_body_bytes;
        let declared = header_str(session, "content-length").and_then(|v| v.parse::<usize>().ok());
        let refused = refused.or_else(|| {
            declared.filter(|n| *n > limit).map(|_| {
                crate::problem::Problem::new(
                    413,
                    "payload_too_large",
                    format!("the request body exceeds {limit} bytes"),
                )
            })
        });
        if let Some(problem) = refused {
            ctx.failure = Some(format!("{}: {}", problem.code, problem.detail));
            return self
                .grpc_error(session, ctx, code_of(problem.status), &problem.detail)
                .await;
        }
        ctx.passthrough = Some(authority);
        Ok(false)
    }

    /// Counts a passed-through body; past the cap the request fails with
    /// 413, which [`Gateway::fail_answer`] turns into `RESOURCE_EXHAUSTED`.
    pub(super) fn count_body(&self, ctx: &mut RequestContext, chunk: Option<&bytes::Bytes>) -> pingora::Result<()> {
        ctx.body_bytes += chunk.map_or(0, bytes::Bytes::len);
        if ctx.body_bytes > self.settings.max_body_bytes {
            // Blamed on the client: the proxy then stops both streams and
            // answers, where an upstream error would wait for the service.
            let error = pingora::Error::explain(
                pingora::ErrorType::HTTPStatus(413),
                "the request body exceeds the gateway's limit",
            );
            return Err(error.into_down());
        }
        Ok(())
    }

    /// The gRPC status of a pass-through that failed inside the proxy.
    pub(super) fn fail_code(error: &pingora::Error) -> (tonic::Code, &'static str) {
        match error.etype() {
            pingora::ErrorType::HTTPStatus(413) => (
                tonic::Code::ResourceExhausted,
                "the request body exceeds the gateway's limit",
            ),
            _ => (tonic::Code::Unavailable, "upstream unavailable"),
        }
    }
}
