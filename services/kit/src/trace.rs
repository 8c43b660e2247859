//! W3C trace context across the fleet's boundaries: HTTP and gRPC headers,
//! tonic metadata, and the `trace_context` map every event carries through
//! the outbox and RabbitMQ. Spans are `tracing` spans; the OpenTelemetry
//! layer installed by [`crate::telemetry`] turns them into exported spans.
//! With tracing off (no `OTEL_*` endpoint) that layer is absent: the spans
//! still give logs their context, and nothing is propagated.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use fleet_proto::events::v1::Event;
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// True until [`crate::telemetry::init`] says otherwise: a process that
/// never installed the fleet's subscriber keeps its spans.
static SPANS_READ: AtomicBool = AtomicBool::new(true);

/// Whether anything reads this process's request spans: the exporter, or
/// logs at `info` or finer. A hot path leaves out a span nothing would read.
pub fn spans_read() -> bool {
    SPANS_READ.load(Ordering::Relaxed)
}

pub(crate) fn set_spans_read(on: bool) {
    SPANS_READ.store(on, Ordering::Relaxed);
}

/// Reads `traceparent`/`tracestate` from HTTP headers.
struct HeaderReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes `traceparent`/`tracestate` into HTTP headers.
struct HeaderWriter<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent a request names in its headers (empty when none).
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderReader(headers))
}

/// Makes `span` the child of the context in `headers`, if they carry one.
pub fn continue_from_headers(span: &Span, headers: &http::HeaderMap) {
    adopt(span, extract(headers));
}

/// The trace headers that name `span` as the parent of what follows.
pub fn headers_of(span: &Span) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut fields);
    fields
}

/// Writes `span`'s context into outgoing HTTP headers.
pub fn inject_headers(span: &Span, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderWriter(headers));
}

/// Writes the current span's context into an outgoing tonic request.
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    for (name, value) in headers_of(&Span::current()) {
        if let (Ok(name), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(name.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            metadata.insert(name, value);
        }
    }
}

/// The current span's context, as an event carries it.
pub fn current_context() -> HashMap<String, String> {
    headers_of(&Span::current())
}

/// Renames `span` for OpenTelemetry once what it is became known (the
/// route of a request); `otel.name` can only be given at creation.
pub fn rename(span: &Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    span.context().span().update_name(name);
}

/// Sets an OpenTelemetry attribute that logs need not repeat.
pub fn set_attribute(span: &Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    span.set_attribute(key, value);
}

/// A span for handling `event` in `consumer`, continuing the trace of the
/// request that produced it.
pub fn event_span(consumer: &str, event: &Event) -> Span {
    let span = tracing::info_span!(
        "event",
        otel.name = format!("{} process", event.r#type),
        otel.kind = "consumer",
        messaging.system = "fleet.events",
        messaging.consumer = consumer,
        event_id = event.id,
        event_type = event.r#type,
    );
    adopt(&span, TraceContextPropagator::new().extract(&event.trace_context));
    span
}

fn adopt(span: &Span, parent: Context) {
    use opentelemetry::trace::TraceContextExt;
    if parent.span().span_context().is_valid() {
        // Fails only when the span is already started: ours never are.
        let _ = span.set_parent(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_remote_parent_is_read_from_headers_and_a_bad_one_ignored() {
        use opentelemetry::trace::TraceContextExt;
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", PARENT.parse().unwrap());
        let cx = extract(&headers);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        headers.insert("traceparent", "00-zz-yy-01".parse().unwrap());
        assert!(!extract(&headers).span().span_context().is_valid());
    }
}
