//! The tower layer that observes every gRPC call a service answers. It
//! opens the call's span, a child of the caller's `traceparent`, with the
//! request id and (filled in by the authentication layer) the user id, so
//! that everything logged while answering carries them; and it measures
//! `grpc_server_handled_total{service,method,code}` and
//! `grpc_server_handling_seconds{service,method}`, timed to the end of the
//! answer (streams included) and labelled with the status the client saw,
//! read from the trailers or, for a trailers-only answer, the headers.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};
use tracing::{Instrument, Span};

use crate::metrics::{GrpcLabels, GrpcMethodLabels, code_name, grpc};

/// Adds [`Observed`] around a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed { inner }
    }
}

/// Traces, counts and times each call of the inner service.
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Observed<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Body + Unpin,
{
    type Response = http::Response<ObservedBody<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call::start(&request);
        let span = call.span.clone();
        let answer = span.in_scope(|| self.inner.call(request));
        let answer = async move {
            let response = answer.await?;
            let mut call = Some(call);
            // A trailers-only answer (every error tonic raises before the
            // body) carries its status in the headers.
            if let Some(code) = status(response.headers())
                && let Some(call) = call.take()
            {
                call.finish(code);
            }
            Ok(response.map(|inner| ObservedBody { inner, call }))
        };
        Box::pin(answer.instrument(span))
    }
}

/// The status in `grpc-status`, if there is one.
fn status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    Some(Code::from_bytes(value.as_bytes()))
}

/// One call being answered; its span ends when the call is finished.
#[derive(Debug)]
struct Call {
    service: String,
    method: String,
    started: Instant,
    span: Span,
}

impl Call {
    fn start<B>(request: &http::Request<B>) -> Self {
        let (service, method) = split_path(request.uri().path()).unwrap_or(("unknown", "unknown"));
        let request_id = request
            .headers()
            .get(crate::grpc::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let span = tracing::info_span!(
            "grpc",
            otel.name = format!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id,
            user_id = tracing::field::Empty,
        );
        crate::trace::continue_from_headers(&span, request.headers());
        Self {
            service: service.to_string(),
            method: method.to_string(),
            started: Instant::now(),
            span,
        }
    }

    fn finish(self, code: Code) {
        self.span.record("rpc.grpc.status_code", code as i32);
        if server_fault(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        // Paths nobody serves share one label, so that callers cannot
        // create series at will.
        let (service, method) = if code == Code::Unimplemented {
            ("unknown".to_string(), "unknown".to_string())
        } else {
            (self.service, self.method)
        };
        let metrics = grpc();
        metrics
            .handling_seconds
            .get_or_create(&GrpcMethodLabels {
                service: service.clone(),
                method: method.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
        metrics
            .handled
            .get_or_create(&GrpcLabels {
                service,
                method,
                code: code_name(code).to_string(),
            })
            .inc();
    }
}

/// The codes that mean the server failed, not the caller (OpenTelemetry's
/// conventions for gRPC servers).
fn server_fault(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let name = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    (name(service) && name(method)).then_some((service, method))
}

/// The answer's body, which records the call when its trailers pass (or
/// when it is dropped unfinished: the client went away).
#[derive(Debug)]
pub struct ObservedBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|t| status(t).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(Code::Internal),
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(Code::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method_or_nothing() {
        assert_eq!(
            split_path("/fleet.users.v1.UsersService/GetUser"),
            Some(("fleet.users.v1.UsersService", "GetUser"))
        );
        assert_eq!(
            split_path("/grpc.health.v1.Health/Check"),
            Some(("grpc.health.v1.Health", "Check"))
        );
        for odd in ["", "/", "/x", "/x/", "//y", "/a b/c", "/x/y/z", "no-slash/y"] {
            assert_eq!(split_path(odd), None, "{odd}");
        }
    }
}
