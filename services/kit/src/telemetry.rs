//! Logging and tracing. Logs are one JSON object per line, filterable with
//! `RUST_LOG`-style directives from configuration; each line carries the
//! fields of the spans it happened in (request id, route, user id) and, when
//! tracing is on, the trace and span ids. Traces are exported over OTLP/gRPC
//! when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the other `OTEL_*`
//! variables (service name, resource attributes, sampler, batching, headers,
//! timeout) are read by the OpenTelemetry SDK itself.

use std::collections::HashMap;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, LevelFilter, Targets, filter_fn},
    fmt::{self, FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter, format::Writer},
    prelude::*,
    registry::LookupSpan,
};

/// How logs are written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LogConfig {
    /// Filter directives, e.g. `info,fleet_auth=debug`.
    pub level: String,
    /// `json` (default) or `pretty` for a terminal.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable.
    Pretty,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

/// Where traces go, from the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// `service.name`: `OTEL_SERVICE_NAME`, or this process's default.
    pub service_name: String,
    /// Export at all: an OTLP endpoint is set and the SDK is not disabled.
    pub export: bool,
}

impl TraceConfig {
    /// Reads the switches from `env`; `default_service_name` names this
    /// process when `OTEL_SERVICE_NAME` does not.
    pub fn from_env(env: &HashMap<String, String>, default_service_name: &str) -> Self {
        let set = |name: &str| env.get(name).is_some_and(|v| !v.trim().is_empty());
        let is = |name: &str, value: &str| env.get(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value));
        let endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let disabled = is("OTEL_SDK_DISABLED", "true") || is("OTEL_TRACES_EXPORTER", "none");
        let service_name = env
            .get("OTEL_SERVICE_NAME")
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .unwrap_or(default_service_name);
        Self {
            service_name: service_name.to_string(),
            export: endpoint && !disabled,
        }
    }
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes what is left.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered. Call it inside the runtime the
    /// exporter was built in, before that runtime ends.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "could not flush the last spans");
        }
    }
}

/// The crates whose spans are exported: the fleet's own, not its libraries'.
fn traced_targets() -> Targets {
    Targets::new()
        .with_target("fleet", tracing::Level::INFO)
        .with_target("fleet_kit", tracing::Level::INFO)
        .with_target("fleet_gateway", tracing::Level::INFO)
        .with_target("fleet_auth", tracing::Level::INFO)
        .with_target("fleet_users", tracing::Level::INFO)
}

/// Installs the global subscriber: logs, and traces when `trace.export`.
/// With export on it must run inside a Tokio runtime (the OTLP exporter's
/// channel lives there). Later calls keep the first subscriber.
pub fn init(config: &LogConfig, trace: &TraceConfig) -> Telemetry {
    let (provider, failure) = if trace.export {
        match tracer_provider(trace) {
            Ok(provider) => (Some(provider), None),
            Err(err) => (None, Some(err)),
        }
    } else {
        (None, None)
    };
    let installed = subscriber(config, provider.as_ref(), std::io::stdout).try_init();
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
    crate::trace::set_spans_read(provider.is_some() || logs_at_info(config));
    if let Some(err) = failure {
        tracing::error!(error = format!("{err:#}"), "traces cannot be exported");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry { provider }
}

/// Whether the log level lets `info` lines through for some target.
fn logs_at_info(config: &LogConfig) -> bool {
    EnvFilter::try_new(&config.level)
        .ok()
        .and_then(|filter| filter.max_level_hint())
        .is_none_or(|hint| hint >= LevelFilter::INFO)
}

/// Logs to `writer`, and spans to `provider` when there is one.
fn subscriber<W>(
    config: &LogConfig,
    provider: Option<&SdkTracerProvider>,
    writer: W,
) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let level = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // The level filters events; the fleet's own spans stay visible to the
    // log layer whatever the level, so that a warning still names its
    // request, route and user. The hint lets `log` records of libraries
    // below the level be skipped before they reach the subscriber.
    let fleet_spans = filter_fn(|meta| meta.is_span() && *meta.level() <= tracing::Level::INFO)
        .with_max_level_hint(LevelFilter::INFO);
    let filter = level.or(fleet_spans.and(traced_targets()));
    let logs = match config.format {
        LogFormat::Json => fmt::layer()
            .fmt_fields(SpanFields)
            .event_format(JsonLines)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(writer).with_filter(filter).boxed(),
    };
    let spans = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("fleet"))
            .with_filter(traced_targets())
    });
    tracing_subscriber::registry().with(spans).with(logs)
}

fn tracer_provider(trace: &TraceConfig) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
    let resource = Resource::builder()
        .with_service_name(trace.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// One JSON object per event: time, level, target, the fields of every span
/// the event is in (outermost first, inner ones winning), the trace and
/// span ids when tracing is on, then the event's own fields.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        if let Some(scope) = ctx.event_scope() {
            let mut ids = None;
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&format!("{{{}}}", fields.fields))
                {
                    line.extend(fields);
                }
                if let Some(otel) = extensions.get::<tracing_opentelemetry::OtelData>()
                    && let (Some(trace), Some(span)) = (otel.trace_id(), otel.span_id())
                {
                    ids = Some((trace, span));
                }
            }
            if let Some((trace, span)) = ids {
                line.insert("trace_id".into(), Value::String(trace.to_string()));
                line.insert("span_id".into(), Value::String(span.to_string()));
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Span fields as the members of a JSON object, without its braces, so that
/// a field recorded later is appended rather than the whole object parsed
/// and written again (`JsonFields` does that, on every request). A field
/// recorded twice appears twice; the later one wins when a line is written.
struct SpanFields;

impl<'w> FormatFields<'w> for SpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut members = Members {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let first = current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut members = Members {
            out: &mut writer,
            first,
            result: Ok(()),
        };
        fields.record(&mut members);
        members.result
    }
}

/// Writes `"name":value` members, comma-separated.
struct Members<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl Members<'_, '_> {
    fn member(&mut self, field: &Field, value: &Value) {
        if self.result.is_err() || field.name().starts_with("otel.") {
            return;
        }
        let comma = if self.first { "" } else { "," };
        self.first = false;
        self.result = write!(self.out, "{comma}{}:{value}", Value::String(field.name().to_string()));
    }
}

impl tracing::field::Visit for Members<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, &Value::String(value.to_string()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, &Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, &Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, &Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.member(field, &Value::String(format!("{value:?}")));
    }
}

/// `error: cause: cause...`, as `{:#}` prints an `anyhow::Error`.
pub fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

/// Collects an event's fields; an error field keeps its whole cause chain.
struct Fields<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::String(value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), Value::String(cause_chain(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn request_spans_are_wanted_when_some_target_logs_at_info() {
        let at = |level: &str| {
            logs_at_info(&LogConfig {
                level: level.into(),
                format: LogFormat::Json,
            })
        };
        assert!(at("info"));
        assert!(at("debug"));
        assert!(at("error,fleet_gateway=info"));
        assert!(!at("error"));
        assert!(!at("warn,fleet_auth=warn"));
    }

    #[test]
    fn the_log_filter_hints_a_level_so_library_log_records_below_it_are_skipped() {
        let config = LogConfig {
            level: "error".into(),
            format: LogFormat::Json,
        };
        let hint = subscriber(&config, None, std::io::sink).max_level_hint();
        assert_eq!(hint, Some(LevelFilter::INFO), "spans are info; nothing finer is read");
    }

    #[test]
    fn the_service_name_comes_from_otel_service_name_or_the_default() {
        assert_eq!(
            TraceConfig::from_env(&env(&[]), "fleet-auth").service_name,
            "fleet-auth"
        );
        let named = env(&[("OTEL_SERVICE_NAME", "accounts")]);
        assert_eq!(TraceConfig::from_env(&named, "fleet-auth").service_name, "accounts");
    }

    #[test]
    fn traces_are_exported_only_when_an_endpoint_is_set_and_nothing_disables_them() {
        assert!(!TraceConfig::from_env(&env(&[]), "fleet").export);
        assert!(TraceConfig::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]), "fleet").export);
        assert!(
            TraceConfig::from_env(
                &env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]),
                "fleet"
            )
            .export
        );
        for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
            let config = TraceConfig::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), off]), "fleet");
            assert!(!config.export, "{off:?}");
        }
        assert!(!TraceConfig::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), "fleet").export);
    }

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    #[test]
    fn a_line_carries_its_spans_fields_and_trace_ids_even_below_the_spans_level() {
        let provider = SdkTracerProvider::builder().build();
        let buffer = Buffer::default();
        let config = LogConfig {
            level: "warn".into(),
            format: LogFormat::Json,
        };
        let subscriber = subscriber(&config, Some(&provider), buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!(
                "request",
                otel.kind = "server",
                request_id = "r-1",
                route = "/api/v1/users",
                user_id = tracing::field::Empty
            );
            let _in_request = request.enter();
            request.record("user_id", "u-0");
            request.record("user_id", "u-1 \"quoted\"");
            tracing::info!("not at this level");
            let call = tracing::info_span!("upstream", request_id = "r-1b");
            let _in_call = call.enter();
            tracing::warn!(attempt = 2, ok = false, "slow upstream");
        });
        let lines = buffer.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "slow upstream");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["ok"], false);
        assert_eq!(line["route"], "/api/v1/users");
        assert_eq!(line["user_id"], "u-1 \"quoted\"", "the last record wins");
        assert_eq!(line["request_id"], "r-1b", "the inner span wins");
        assert_eq!(line["trace_id"].as_str().map(str::len), Some(32), "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
        assert!(line.get("otel.kind").is_none(), "{line}");
        assert!(line["target"].as_str().unwrap().starts_with("fleet_kit"));
    }

    #[test]
    fn without_tracing_lines_carry_span_fields_and_no_ids() {
        let buffer = Buffer::default();
        let subscriber = subscriber(&LogConfig::default(), None, buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "r-2");
            let _in = span.enter();
            tracing::info!("served");
        });
        let lines = buffer.lines();
        assert_eq!(lines[0]["request_id"], "r-2");
        assert!(lines[0].get("trace_id").is_none());
    }

    #[test]
    fn an_error_field_is_logged_with_its_cause_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("saving the user")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("disk full"));
        assert_eq!(cause_chain(&err), "saving the user: disk full");
    }
}
