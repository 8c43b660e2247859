//! Traces: the fleet split in three processes exports to a fake OTLP
//! collector (a tonic server on 127.0.0.1:0). One REST login is one trace
//! across the gateway, auth and users, continued by the consumers of the
//! events it published; the logs carry its ids; a failed request is logged
//! once, at the edge, with its cause; a gRPC client's traceparent is
//! continued through the pass-through.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fleet_kit::testing::backend_available;
use fleet_proto::users::v1::GetUserRequest;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::span::SpanKind,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    grpc::{authed, through_gateway},
    harness::{Api, Fleet, PASSWORD, Proto, Split, broker_names},
};

/// A span as the collector received it, with the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: SpanKind,
    trace: String,
    id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .as_ref()
                .map(|r| attributes(&r.attributes))
                .and_then(|a| a.get("service.name").cloned())
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        name: span.name.clone(),
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        trace: hex(&span.trace_id),
                        id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (collector, endpoint)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the spans received so far.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(Instant::now() < deadline, "{what}; received:\n{spans:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The JSON log lines of a process.
fn log_lines(fleet: &Fleet) -> Vec<Value> {
    fleet
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The process's log lines once one of them is about `request_id`: the
/// gateway writes a request's line after its answer has gone out.
async fn lines_about(fleet: &Fleet, request_id: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = log_lines(fleet);
        if lines.iter().any(|l| l["request_id"] == request_id) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no line about {request_id}:\n{}",
            fleet.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_login_is_one_trace_across_gateway_auth_users_and_the_consumers_of_its_events() {
    if !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let (collector, endpoint) = Collector::start().await;
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (exchange, dead) = (format!("fleet.test.{id}"), format!("fleet.test.{id}.dead"));
    let _names = broker_names(&exchange);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("FLEET_LOG__LEVEL", "info"),
        ("FLEET_GATEWAY__HTTP_MODE", "serve"),
        ("FLEET_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        ("FLEET_EVENTS__EXCHANGE", exchange.as_str()),
        ("FLEET_EVENTS__DEAD_LETTER_EXCHANGE", dead.as_str()),
    ];
    let Split {
        users, auth, gateway, ..
    } = Fleet::split(&env).await;
    let api = Api::new(&gateway, Proto::Http1);
    api.register("ada@example.com", "Ada").await;

    let body = json!({"email": "ada@example.com", "password": PASSWORD});
    let login = api.call(Method::POST, "/api/v1/auth/login", None, Some(body)).await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    let request_id = login.header("x-request-id").unwrap().to_string();

    // The gateway's server span of that request roots the trace.
    let spans = collector
        .wait_for("the gateway exports the login's span", |spans| {
            spans
                .iter()
                .any(|s| s.service == "fleet-gateway" && s.attributes.get("request_id") == Some(&request_id))
        })
        .await;
    let root = spans
        .iter()
        .find(|s| s.attributes.get("request_id") == Some(&request_id) && s.service == "fleet-gateway")
        .unwrap()
        .clone();
    assert_eq!(root.name, "POST /api/v1/auth/login");
    assert!(root.parent.is_empty(), "the client sent no traceparent: {root:?}");
    assert_eq!(root.attributes["http.response.status_code"], "200");

    // Auth answers Login and asks users for the account, in the same trace;
    // the events the login published are consumed by every process.
    let trace = root.trace.clone();
    let spans = collector
        .wait_for("auth, users and the event consumers join the trace", |spans| {
            let of = |service: &str, kind: SpanKind| {
                spans
                    .iter()
                    .any(|s| s.trace == trace && s.service == service && s.kind == kind)
            };
            of("fleet-auth", SpanKind::Server)
                && of("fleet-users", SpanKind::Server)
                && ["fleet-gateway", "fleet-auth", "fleet-users"]
                    .iter()
                    .all(|service| of(service, SpanKind::Consumer))
        })
        .await;
    let in_trace: Vec<&Received> = spans.iter().filter(|s| s.trace == trace).collect();
    let services: HashSet<&str> = in_trace.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        HashSet::from(["fleet-gateway", "fleet-auth", "fleet-users"]),
        "{in_trace:#?}"
    );
    let login_span = in_trace
        .iter()
        .find(|s| s.service == "fleet-auth" && s.name == "fleet.auth.v1.AuthService/Login")
        .unwrap_or_else(|| panic!("no Login span in {in_trace:#?}"));
    assert_eq!(login_span.attributes["request_id"], request_id);
    assert!(
        in_trace
            .iter()
            .any(|s| s.service == "fleet-users" && s.name.starts_with("fleet.users.v1.UsersService/")),
        "{in_trace:#?}"
    );
    // One tree: a single root, and every other span's parent is in the trace.
    let ids: HashSet<&str> = in_trace.iter().map(|s| s.id.as_str()).collect();
    let roots: Vec<_> = in_trace.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    for span in &in_trace {
        assert!(
            span.parent.is_empty() || ids.contains(span.parent.as_str()),
            "{span:?} hangs outside the trace"
        );
    }
    // The consumers of the login's event descend from auth's Login span.
    let consumed = in_trace
        .iter()
        .find(|s| {
            s.kind == SpanKind::Consumer
                && s.attributes
                    .get("event_type")
                    .is_some_and(|t| t == "auth.login_succeeded")
        })
        .unwrap_or_else(|| panic!("no consumer of auth.login_succeeded in {in_trace:#?}"));
    let parent_of = |span: &Received| in_trace.iter().find(|s| s.id == span.parent).copied();
    let mut ancestor = parent_of(consumed);
    while let Some(span) = ancestor
        && span.id != login_span.id
    {
        ancestor = parent_of(span);
    }
    assert!(ancestor.is_some(), "{consumed:?} does not descend from {login_span:?}");

    // Logs carry the ids: the gateway's line for the request and auth's
    // lines while it answered name the same trace.
    let lines = lines_about(&gateway, &request_id).await;
    let line = lines
        .iter()
        .find(|l| l["request_id"] == request_id.as_str() && l["message"] == "request")
        .unwrap_or_else(|| panic!("no access log line for {request_id}:\n{}", gateway.log()));
    assert_eq!(line["trace_id"], trace.as_str(), "{line}");
    assert_eq!(line["span_id"], root.id.as_str(), "{line}");
    assert_eq!(line["route"], "/api/v1/auth/login", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");

    // A gRPC client's own traceparent is continued through the gateway's
    // pass-through into the service.
    let token = api.login("ada@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let user_id = api.call(Method::GET, "/api/v1/users/me", Some(&token), None).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (client_trace, client_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let mut request = authed(GetUserRequest { id: user_id.clone() }, &token);
    let traceparent = format!("00-{client_trace}-{client_span}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    through_gateway(&gateway).await.get_user(request).await.unwrap();
    let is_get_user = |s: &Received| s.service == "fleet-users" && s.name == "fleet.users.v1.UsersService/GetUser";
    let spans = collector
        .wait_for("the pass-through joins the client's trace", |spans| {
            let of_client = |s: &&Received| s.trace == client_trace;
            spans.iter().filter(of_client).any(is_get_user)
                && spans
                    .iter()
                    .filter(of_client)
                    .any(|s| s.service == "fleet-gateway" && s.kind == SpanKind::Server)
        })
        .await;
    let edge = spans
        .iter()
        .find(|s| s.trace == client_trace && s.service == "fleet-gateway" && s.kind == SpanKind::Server)
        .unwrap();
    assert_eq!(edge.parent, client_span, "{edge:?}");
    let answered = spans
        .iter()
        .find(|s| s.trace == client_trace && is_get_user(s))
        .unwrap();
    assert_eq!(answered.parent, edge.id, "{answered:?}");

    // A failure is logged once, at the edge, with its context and cause;
    // the client hears no internal detail.
    drop(users);
    let failed = api.call(Method::GET, "/api/v1/users/me", Some(&token), None).await;
    assert_eq!(failed.status, 503, "{:?}", failed.body);
    let failed_id = failed.header("x-request-id").unwrap().to_string();
    let detail = failed.body["detail"].as_str().unwrap();
    assert!(
        !detail.contains("error"),
        "an internal detail reached the client: {detail}"
    );
    let lines = lines_about(&gateway, &failed_id).await;
    let about: Vec<&Value> = lines
        .iter()
        .filter(|l| l["request_id"] == failed_id.as_str() && l["level"] == "ERROR")
        .collect();
    assert_eq!(about.len(), 1, "logged once: {about:#?}");
    let line = about[0];
    assert_eq!(line["route"], "/api/v1/users/me", "{line}");
    assert_eq!(line["user_id"], user_id.as_str(), "{line}");
    assert_eq!(line["status"], 503, "{line}");
    assert!(line["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{line}");
    let cause = line["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("UsersService") && cause.contains("unavailable") && cause.len() > detail.len(),
        "the cause chain, beyond what the client heard ({detail}): {cause}"
    );
    drop(auth);
}
