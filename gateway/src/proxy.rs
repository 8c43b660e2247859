//! The request pipeline (Pingora phases): request id → plain-HTTP redirect →
//! CORS preflight → built-in endpoints → gRPC pass-through or REST route →
//! size limits → authentication → transcode and call. Every answer carries
//! the security headers and the request id.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

mod answers;
mod console;
mod passthrough;
mod rest;
mod stream;

use async_trait::async_trait;
use bytes::Bytes;
use fleet_kit::{
    grpc::{CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER, FORWARDER_HEADER},
    process::ProcessMonitor,
    token::{Identity, TokenError, TokenVerifier, bearer},
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use pingora::{
    http::ResponseHeader,
    prelude::{HttpPeer, ProxyHttp, Session},
    protocols::ALPN,
};
use tracing::Instrument;

use crate::{
    cache::ResponseCache,
    client_ip::client_ip,
    health::Dependencies,
    metrics::GatewayMetrics,
    problem::Problem,
    ratelimit::{Decision, RateLimiter},
    routes::RouteTable,
    settings::{GatewaySettings, HttpMode},
    upstream::Upstreams,
};

/// The request id header.
pub use fleet_kit::grpc::REQUEST_ID_HEADER;

/// The gateway: routes, upstreams, verifier and settings.
pub struct Gateway {
    /// REST routes from the annotations.
    pub routes: RouteTable,
    /// The services.
    pub upstreams: Arc<Upstreams>,
    /// Verifies bearer tokens at the edge.
    pub verifier: Arc<TokenVerifier>,
    /// Configuration.
    pub settings: GatewaySettings,
    /// The OpenAPI document, served as is.
    pub openapi: Bytes,
    /// Rate limits.
    pub limiter: Arc<RateLimiter>,
    /// The response cache.
    pub cache: Arc<ResponseCache>,
    /// Counters.
    pub metrics: GatewayMetrics,
    /// The services and backends, as last probed.
    pub dependencies: Arc<Dependencies>,
    /// This process's figures.
    pub process: Arc<ProcessMonitor>,
    /// `Strict-Transport-Security`, from the settings.
    pub hsts: HeaderValue,
    /// The service token that vouches for forwarded client headers.
    pub forwarder: Arc<crate::forwarder::Forwarder>,
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestContext {
    /// The request id, propagated or generated.
    pub request_id: String,
    /// Arrived over TLS.
    pub tls: bool,
    /// The route template or a fixed label, for logs and metrics.
    pub endpoint: String,
    /// The verified caller, if any.
    pub identity: Option<Identity>,
    /// The upstream `host:port` of a gRPC pass-through.
    pub passthrough: Option<String>,
    /// The allowed CORS origin to echo, if the request came from one.
    pub cors_origin: Option<String>,
    /// The client's address (through trusted proxies).
    pub client_ip: Option<IpAddr>,
    /// The rate-limit decision, when the route is limited.
    pub rate: Option<Decision>,
    /// When the request arrived.
    pub started: Option<std::time::Instant>,
    /// The request's span: a child of the client's `traceparent`, if any.
    pub span: tracing::Span,
    /// Why the request failed, for the one log line that says so.
    pub failure: Option<String>,
    /// Bytes of a passed-through request body so far.
    pub body_bytes: usize,
    /// The request asked for the session cookie on a route that keeps one:
    /// a 401 clears it.
    pub session_cookie: bool,
}

fn valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// A UUIDv7 from the thread's userspace generator: `Uuid::now_v7` asks the
/// kernel for randomness on every call, which every request would pay.
fn new_request_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok())
}

fn peer_ip(session: &Session) -> IpAddr {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

type Answer = pingora::Result<bool>;

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// A response head from finished headers. Our own answers build their
/// headers as a plain map: no header-name case to keep, nothing parsed back.
fn head(status: u16, headers: HeaderMap) -> pingora::Result<Box<ResponseHeader>> {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = http::StatusCode::from_u16(status)
        .map_err(|_| pingora::Error::explain(pingora::ErrorType::InternalError, "invalid status"))?;
    parts.headers = headers;
    Ok(Box::new(ResponseHeader::from(parts)))
}

/// A header value from text built at run time (a redirect's location).
fn text_value(text: String) -> pingora::Result<HeaderValue> {
    HeaderValue::try_from(text)
        .map_err(|_| pingora::Error::explain(pingora::ErrorType::InternalError, "invalid header value"))
}

impl Gateway {
    /// Verifies the bearer token, if any; `Err` with the problem to answer.
    async fn authenticate(&self, session: &Session, ctx: &mut RequestContext) -> Result<(), Problem> {
        let Some(value) = session.req_header().headers.get(header::AUTHORIZATION) else {
            return Ok(());
        };
        let Some(token) = value.to_str().ok().and_then(bearer) else {
            return Err(Problem::new(401, "unauthenticated", "malformed authorization header"));
        };
        match self.verifier.verify(token).await {
            Ok(identity) => {
                if let Some(user) = identity.user_id() {
                    ctx.span.record("user_id", tracing::field::display(user));
                }
                ctx.identity = Some(identity);
                Ok(())
            }
            Err(TokenError::KeysUnavailable) => Err(Problem::new(503, "unavailable", "cannot verify tokens right now")),
            Err(err) => Err(Problem::new(401, "unauthenticated", err.to_string())),
        }
    }

    /// Draws from the request's buckets, with the rate limit policy named
    /// `policy` (a route template); `Err` with the 429 to answer.
    async fn limit(&self, ctx: &mut RequestContext, policy: &str) -> Result<(), Problem> {
        let ip = ctx.client_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let user = ctx
            .identity
            .as_ref()
            .and_then(Identity::user_id)
            .map(|id| id.to_string());
        let buckets = self.limiter.buckets(user.as_deref(), ip, policy);
        let Some(decision) = self.limiter.check(&buckets).await else {
            return Ok(());
        };
        ctx.rate = Some(decision);
        self.metrics.decision(decision.allowed);
        if decision.allowed {
            return Ok(());
        }
        let mut problem = Problem::new(429, "rate_limited", "too many requests; slow down");
        problem.retry_after = Some(decision.retry_after_secs);
        Err(problem)
    }

    fn headers_too_large(&self, session: &Session) -> bool {
        let total: usize = session
            .req_header()
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        total > self.settings.max_header_bytes
    }

    /// Routes a request: redirect, limits on headers, gRPC pass-through,
    /// preflight, built-in endpoints, or a REST route.
    async fn route(&self, session: &mut Session, ctx: &mut RequestContext) -> Answer {
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.cors_origin = self.allowed_origin(session);
        let limits = self.limiter.settings();
        ctx.client_ip = Some(client_ip(
            peer_ip(session),
            &session.req_header().headers,
            limits.client_ip_header,
            &limits.trusted_proxies,
        ));

        if !ctx.tls && self.settings.http_mode == HttpMode::Redirect {
            ctx.endpoint = "redirect".into();
            return self.redirect_to_https(session, ctx).await;
        }
        if self.headers_too_large(session) {
            ctx.endpoint = "rejected".into();
            let problem = Problem::new(431, "headers_too_large", "the request headers are too large");
            return self.problem(session, ctx, &problem).await;
        }
        let is_grpc = header_str(session, "content-type").is_some_and(|ct| ct.starts_with("application/grpc"));
        if is_grpc {
            return self.grpc(session, ctx).await;
        }
        let method = session.req_header().method.clone();
        if method == Method::OPTIONS && header_str(session, "access-control-request-method").is_some() {
            ctx.endpoint = "preflight".into();
            return self.preflight(session, ctx).await;
        }
        match session.req_header().uri.path() {
            "/health" if method == Method::GET => {
                ctx.endpoint = "/health".into();
                self.json(session, ctx, 200, br#"{"status":"ok"}"#.to_vec()).await
            }
            path @ ("/health/ready" | "/health/cache" | "/health/external" | "/health/memory" | "/health/cpu")
                if method == Method::GET =>
            {
                ctx.endpoint = path.to_string();
                let (status, body) = self.health(path).await;
                self.json(session, ctx, status, serde_json::to_vec(&body).unwrap_or_default())
                    .await
            }
            "/api/v1/openapi.json" if method == Method::GET => {
                ctx.endpoint = "/api/v1/openapi.json".into();
                let body = self.openapi.clone();
                let extra = [(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"))];
                self.respond(session, ctx, 200, Some("application/json"), &extra, body)
                    .await
            }
            path if self.settings.console && (method == Method::GET || method == Method::HEAD) => {
                match crate::console::find(path) {
                    Some(asset) => self.console(session, ctx, asset).await,
                    None => self.rest(session, ctx).await,
                }
            }
            _ => self.rest(session, ctx).await,
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestContext;

    fn new_ctx(&self) -> Self::CTX {
        RequestContext {
            request_id: String::new(),
            tls: false,
            endpoint: String::new(),
            identity: None,
            passthrough: None,
            cors_origin: None,
            client_ip: None,
            rate: None,
            started: Some(std::time::Instant::now()),
            span: tracing::Span::none(),
            failure: None,
            body_bytes: 0,
            session_cookie: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> pingora::Result<bool> {
        ctx.request_id = header_str(session, REQUEST_ID_HEADER)
            .filter(|id| valid_request_id(id))
            .map_or_else(new_request_id, str::to_string);
        // A span costs microseconds on every request: it is opened when
        // something reads it, the exporter or logs at info.
        if fleet_kit::trace::spans_read() {
            ctx.span = tracing::info_span!(
                "request",
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                request_id = ctx.request_id,
                route = tracing::field::Empty,
                user_id = tracing::field::Empty,
            );
            fleet_kit::trace::continue_from_headers(&ctx.span, &session.req_header().headers);
            let method = session.req_header().method.as_str().to_string();
            fleet_kit::trace::set_attribute(&ctx.span, "http.request.method", method);
        }
        if ctx.span.is_none() {
            return self.route(session, ctx).await;
        }
        let span = ctx.span.clone();
        self.route(session, ctx).instrument(span).await
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Self::CTX) -> pingora::Result<Box<HttpPeer>> {
        let Some(authority) = &ctx.passthrough else {
            return pingora::Error::e_explain(pingora::ErrorType::InternalError, "no upstream chosen");
        };
        let mut peer = HttpPeer::new(authority.as_str(), false, String::new());
        // The services speak gRPC over cleartext HTTP/2.
        peer.options.alpn = ALPN::H2;
        Ok(Box::new(peer))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        self.count_body(ctx, body.as_ref())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut pingora::http::RequestHeader,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        upstream.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
        let ip = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        upstream.insert_header(CLIENT_IP_HEADER, ip)?;
        // What the client sent under the gateway's own names never passes.
        let agent = upstream.headers.get(header::USER_AGENT).cloned();
        upstream.remove_header(CLIENT_USER_AGENT_HEADER);
        upstream.remove_header(FORWARDER_HEADER);
        if let Some(agent) = agent {
            upstream.insert_header(CLIENT_USER_AGENT_HEADER, agent)?;
        }
        if let Some(forwarder) = self.forwarder.header() {
            upstream.insert_header(FORWARDER_HEADER, forwarder)?;
        }
        // The service continues the trace (replacing whatever the client sent).
        for (name, value) in fleet_kit::trace::headers_of(&ctx.span) {
            upstream.insert_header(name, value)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        let mut headers = HeaderMap::with_capacity(12);
        self.decorate(&mut headers, ctx);
        for (name, value) in &headers {
            upstream.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &pingora::Error,
        ctx: &mut Self::CTX,
    ) -> pingora::proxy::FailToProxy {
        let nothing_sent = session.response_written().is_none();
        let answered = if !nothing_sent {
            Ok(false)
        } else if ctx.passthrough.is_some() {
            // gRPC clients read statuses, not HTTP error pages.
            let (code, message) = Self::fail_code(error);
            self.grpc_error(session, ctx, code, message).await
        } else {
            let problem = Problem::new(502, "bad_gateway", "the upstream failed");
            self.problem(session, ctx, &problem).await
        };
        if let Err(err) = answered {
            tracing::debug!(error = %err, "could not answer a failed proxy request");
        }
        ctx.failure = Some(format!(
            "proxying to {}: {error}",
            ctx.passthrough.as_deref().unwrap_or("the upstream")
        ));
        pingora::proxy::FailToProxy {
            error_code: 502,
            can_reuse_downstream: false,
        }
    }

    /// The one log line of every request, with its request id, route and
    /// user id, inside its span (so with the trace ids): at error level with
    /// the cause when the gateway or a service failed, at info otherwise.
    async fn logging(&self, session: &mut Session, error: Option<&pingora::Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let method = &session.req_header().method;
        // A request that ended before routing (a broken connection) shares one label.
        let endpoint = if ctx.endpoint.is_empty() {
            "unknown"
        } else {
            ctx.endpoint.as_str()
        };
        let seconds = ctx.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.metrics.request(method, endpoint, status, seconds);
        let span = std::mem::replace(&mut ctx.span, tracing::Span::none());
        if !span.is_none() {
            fleet_kit::trace::rename(&span, format!("{method} {endpoint}"));
            span.record("route", endpoint);
            fleet_kit::trace::set_attribute(&span, "http.response.status_code", i64::from(status));
        }
        let _inside = span.enter();
        let cause = match (&ctx.failure, error) {
            (Some(failure), Some(error)) => Some(format!("{failure}; {error}")),
            (Some(failure), None) => Some(failure.clone()),
            (None, Some(error)) => Some(error.to_string()),
            (None, None) => None,
        };
        // The line names its request itself: the span may not exist.
        let request_id = ctx.request_id.as_str();
        let user_id = ctx
            .identity
            .as_ref()
            .and_then(Identity::user_id)
            .map(tracing::field::display);
        if status >= 500 || (status == 0 && cause.is_some()) {
            span.record("otel.status_code", "ERROR");
            tracing::error!(
                request_id,
                route = endpoint,
                user_id,
                method = method.as_str(),
                status,
                cause,
                seconds,
                "request failed"
            );
        } else {
            tracing::info!(
                request_id,
                route = endpoint,
                user_id,
                method = method.as_str(),
                status,
                cause,
                seconds,
                "request"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn new_request_ids_are_distinct_uuid_v7s() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let parsed = Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 7, "{id}");
            assert!(valid_request_id(&id));
        }
    }

    #[test]
    fn request_ids_are_propagated_only_when_sane() {
        assert!(valid_request_id("0190a1b2-aaaa"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id(&"x".repeat(129)));
    }
}
