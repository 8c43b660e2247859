//! Streamed answers: a server-streaming RPC of `google.api.HttpBody` parts
//! becomes one HTTP body, chunked on HTTP/1.1, written a part at a time.
//! The next part is read only once the previous one was written, so a slow
//! client holds the service back through HTTP/2 flow control; a client that
//! goes away ends the write, which drops the call and cancels it upstream.
//!
//! The first part sets the content type. The service's
//! `content-disposition` metadata becomes that header. An error before the
//! first part is a problem answer like any other; after it, the status has
//! gone out, so the connection is cut: the client sees a body that never
//! ended (no last chunk, or an HTTP/2 reset), never a short one that looks
//! whole.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use pingora::prelude::Session;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use tonic::{Status, metadata::MetadataMap};

use super::{Answer, Gateway, RequestContext, head};
use crate::{problem::Problem, routes::Route, upstream};

/// The service metadata a streamed answer passes on as headers.
const PASSED_ON: [HeaderName; 1] = [header::CONTENT_DISPOSITION];

/// The parts of a `google.api.HttpBody`.
fn parts(message: &DynamicMessage) -> (String, Bytes) {
    let content_type = match message.get_field_by_name("content_type").as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let data = match message.get_field_by_name("data").as_deref() {
        Some(Value::Bytes(b)) => b.clone(),
        _ => Bytes::new(),
    };
    (content_type, data)
}

impl Gateway {
    /// Calls the streaming RPC of `route` and streams its parts out.
    pub(super) async fn stream(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        route: &Route,
        message: DynamicMessage,
        metadata: MetadataMap,
    ) -> Answer {
        let service = route.rpc.parent_service().full_name().to_string();
        let grpc_path = route.grpc_path();
        let timeout = self.settings.timeout_for(route.template.as_str());
        let output: MessageDescriptor = route.rpc.output();
        let started = self
            .upstreams
            .server_streaming(&service, &grpc_path, message, output, metadata, timeout)
            .await;
        let (answer_metadata, mut parts_stream) = match started {
            Ok(answer) => {
                let (metadata, stream, _) = answer.into_parts();
                (metadata, stream)
            }
            Err(status) => return self.upstream_failed(session, ctx, &service, &grpc_path, &status).await,
        };
        // The first part: before it, failing is still a problem answer.
        let first = match tokio::time::timeout(timeout, parts_stream.message()).await {
            Ok(Ok(first)) => first,
            Ok(Err(status)) => {
                let status = upstream::local(&service, status);
                return self.upstream_failed(session, ctx, &service, &grpc_path, &status).await;
            }
            Err(_) => {
                let status = upstream::late(&service);
                return self.upstream_failed(session, ctx, &service, &grpc_path, &status).await;
            }
        };
        let (content_type, data) = first.as_ref().map(parts).unwrap_or_default();
        let mut headers = HeaderMap::with_capacity(16);
        self.decorate(&mut headers, ctx);
        let content_type = HeaderValue::try_from(content_type)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Chunked on HTTP/1.1, so the connection stays open after the last
        // chunk (without it, the body would end only with the connection);
        // HTTP/2 frames the body itself and drops the header.
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let answer_headers = answer_metadata.into_headers();
        for name in PASSED_ON {
            if let Some(value) = answer_headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        session.write_response_header(head(200, headers)?, head_only).await?;
        if head_only {
            return Ok(true);
        }
        if first.is_none() {
            session.write_response_body(Some(Bytes::new()), true).await?;
            return Ok(true);
        }
        if !data.is_empty() {
            session.write_response_body(Some(data), false).await?;
        }
        loop {
            let next = tokio::time::timeout(timeout, parts_stream.message()).await;
            match next {
                Ok(Ok(Some(part))) => {
                    let (_, data) = parts(&part);
                    if !data.is_empty() {
                        session.write_response_body(Some(data), false).await?;
                    }
                }
                Ok(Ok(None)) => {
                    session.write_response_body(Some(Bytes::new()), true).await?;
                    return Ok(true);
                }
                Ok(Err(status)) => return Err(self.cut(ctx, &grpc_path, &upstream::local(&service, status))),
                Err(_) => return Err(self.cut(ctx, &grpc_path, &upstream::late(&service))),
            }
        }
    }

    /// An upstream failure before any of the answer went out.
    pub(super) async fn upstream_failed(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        service: &str,
        grpc_path: &str,
        status: &Status,
    ) -> Answer {
        let code = crate::problem::http_status(status.code()).1.to_string();
        let labels = crate::metrics::UpstreamLabels {
            service: service.to_string(),
            code,
        };
        self.metrics.upstream_errors.get_or_create(&labels).inc();
        ctx.failure = Some(format!("{grpc_path}: {}", upstream::describe(status)));
        self.problem(session, ctx, &Problem::from_status(status)).await
    }

    /// A failure after the answer began: the connection is cut.
    fn cut(&self, ctx: &mut RequestContext, grpc_path: &str, status: &Status) -> Box<pingora::Error> {
        let description = format!(
            "{grpc_path}: the stream failed after it began: {}",
            upstream::describe(status)
        );
        ctx.failure = Some(description.clone());
        pingora::Error::explain(pingora::ErrorType::HTTPStatus(502), description)
    }
}
