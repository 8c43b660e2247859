//! The REST path: a route from the annotations, the edge checks, the cache,
//! and the call transcoded to its RPC.

use bytes::Bytes;
use fleet_kit::{
    grpc::{CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER, FORWARDER_HEADER, REQUEST_ID_HEADER},
    token::Identity,
};
use http::{Method, header};
use pingora::prelude::Session;
use tracing::Instrument;

use super::{Answer, CACHE_STATUS, Gateway, RequestContext, header_str, text_value};
use crate::{
    cache::{CacheKey, Miss},
    problem::{self, Problem},
    routes::RouteMatch,
    session_cookie, transcode,
    upstream::metadata,
};

impl Gateway {
    /// Reads the whole body, refusing more than the route's limit.
    async fn read_body(&self, session: &mut Session, template: &str) -> Result<Vec<u8>, Problem> {
        let limit = self.settings.body_limit_for(template);
        let too_large = || {
            Problem::new(
                413,
                "payload_too_large",
                format!("the request body exceeds {limit} bytes"),
            )
        };
        let declared = header_str(session, "content-length").and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(_) => return Err(Problem::new(400, "invalid_body", "the request body could not be read")),
            }
        }
    }

    pub(super) async fn rest(&self, session: &mut Session, ctx: &mut RequestContext) -> Answer {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let query = session.req_header().uri.query().map(str::to_string);
        let lookup_method = if method == Method::HEAD { Method::GET } else { method };
        let (route, bindings) = match self.routes.find(&lookup_method, &path) {
            RouteMatch::Found(route, bindings) => (route, bindings),
            RouteMatch::MethodNotAllowed(allowed) => {
                // What the path supports, HEAD with GET, and OPTIONS itself.
                let mut methods: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                if allowed.contains(&Method::GET) {
                    methods.push("HEAD");
                }
                methods.push("OPTIONS");
                methods.sort_unstable();
                let allow = methods.join(", ");
                if lookup_method == Method::OPTIONS {
                    ctx.endpoint = "options".into();
                    let extra = [(header::ALLOW, text_value(allow)?)];
                    return self.respond(session, ctx, 204, None, &extra, Bytes::new()).await;
                }
                ctx.endpoint = "method_not_allowed".into();
                let problem = Problem::new(
                    405,
                    "method_not_allowed",
                    format!("{lookup_method} is not allowed here"),
                );
                let body = Bytes::from(problem.to_json(&ctx.request_id));
                let extra = [(header::ALLOW, text_value(allow)?)];
                return self
                    .respond(session, ctx, 405, Some(problem::CONTENT_TYPE), &extra, body)
                    .await;
            }
            RouteMatch::NotFound => {
                ctx.endpoint = "unknown".into();
                return self
                    .problem(session, ctx, &Problem::new(404, "not_found", "no such route"))
                    .await;
            }
        };
        ctx.endpoint = route.template.as_str().to_string();
        ctx.span.record("route", ctx.endpoint.as_str());
        let cookie_field = route
            .session_cookie
            .as_deref()
            .filter(|_| session_cookie::requested(&session.req_header().headers));
        ctx.session_cookie = cookie_field.is_some();
        let authenticated = self.authenticate(session, ctx).await;
        if let Err(problem) = self.limit(ctx, route.template.as_str()).await {
            return self.problem(session, ctx, &problem).await;
        }
        if let Err(problem) = authenticated {
            return self.problem(session, ctx, &problem).await;
        }
        let body = match self.read_body(session, route.template.as_str()).await {
            Ok(body) => body,
            Err(problem) => return self.problem(session, ctx, &problem).await,
        };
        // Cacheable GETs: answer from the cache, or let one request per key
        // through to the service while the others wait for its answer.
        let user = ctx
            .identity
            .as_ref()
            .and_then(Identity::user_id)
            .map(|id| id.to_string());
        let cache_key = match (&ctx.identity, lookup_method == Method::GET) {
            (Some(identity), true) if !route.streams_body() => self.cache.key(
                route.template.as_str(),
                &path,
                query.as_deref(),
                user.as_deref(),
                &identity.role,
            ),
            _ => None,
        };
        let bypass = header_str(session, "cache-control").is_some_and(|v| v.contains("no-cache"));
        // A hit takes no lock; a miss takes the key's lock, looks again (the
        // request it waited for may have filled it), and keeps the lock
        // until its own answer is stored.
        let mut in_flight = None;
        let (cached, miss) = match (&cache_key, bypass) {
            (Some(key), false) => {
                let mut found = self.cache.get(key).await;
                if found.is_err() {
                    in_flight = Some(self.cache.flight(key).lock_owned().await);
                    found = self.cache.get(key).await;
                }
                self.cache.record(found.is_ok());
                self.metrics.cache_lookup(route.template.as_str(), found.is_ok());
                match found {
                    Ok(hit) => (Some(hit), None),
                    Err(miss) => (None, Some(miss)),
                }
            }
            (Some(key), true) => (None, Some(self.cache.bypass(key).await)),
            _ => (None, None),
        };
        if let Some(hit) = cached {
            drop(in_flight);
            let status = text_value(format!("fleet; hit; ttl={}", hit.ttl_secs))?;
            let extra = [(CACHE_STATUS, status)];
            return self
                .respond(session, ctx, 200, Some("application/json"), &extra, hit.body)
                .await;
        }
        // A request that cannot be transcoded is never stored, so a hit
        // above never skips this check.
        let content_type = header_str(session, "content-type");
        let mut message = match transcode::request_message(route, &bindings, query.as_deref(), content_type, body) {
            Ok(message) => message,
            Err(problem) => return self.problem(session, ctx, &problem).await,
        };
        if let Some(field) = cookie_field {
            session_cookie::fill(&mut message, field, session_cookie::read(&session.req_header().headers));
        }
        let ip = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let forwarder = self.forwarder.header();
        let forwarder = forwarder.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default();
        let pairs = [
            (
                "authorization",
                header_str(session, "authorization").unwrap_or_default(),
            ),
            (REQUEST_ID_HEADER, ctx.request_id.as_str()),
            (CLIENT_IP_HEADER, ip.as_str()),
            (
                CLIENT_USER_AGENT_HEADER,
                header_str(session, "user-agent").unwrap_or_default(),
            ),
            (FORWARDER_HEADER, forwarder),
        ];
        let service = route.rpc.parent_service().full_name().to_string();
        let grpc_path = route.grpc_path();
        let call = tracing::info_span!(
            parent: &ctx.span,
            "upstream",
            otel.name = grpc_path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = route.rpc.name(),
        );
        if route.streams_body() {
            return self
                .stream(session, ctx, route, message, metadata(&pairs))
                .instrument(call)
                .await;
        }
        let answer = self
            .upstreams
            .unary(
                &service,
                &grpc_path,
                message,
                route.rpc.output(),
                metadata(&pairs),
                self.settings.timeout_for(route.template.as_str()),
            )
            .instrument(call)
            .await;
        let mut answer = match answer {
            Ok(answer) => answer,
            Err(status) => return self.upstream_failed(session, ctx, &service, &grpc_path, &status).await,
        };
        let cookie = cookie_field.map(|field| (header::SET_COOKIE, session_cookie::after_success(&mut answer, field)));
        let extra: Vec<_> = cookie.into_iter().collect();
        if transcode::is_empty_message(&route.rpc.output()) {
            return self.respond(session, ctx, 204, None, &extra, Bytes::new()).await;
        }
        match transcode::response_json(&answer) {
            Ok(json) => match (&cache_key, miss) {
                (Some(key), Some(miss)) if route.success_status == 200 => {
                    self.store_and_respond(session, ctx, (key, &miss), json, bypass, in_flight)
                        .await
                }
                _ => {
                    let (status, json) = (route.success_status, Bytes::from(json));
                    self.respond(session, ctx, status, Some("application/json"), &extra, json)
                        .await
                }
            },
            Err(err) => {
                ctx.failure = Some(format!("encoding the answer of {grpc_path}: {err}"));
                self.problem(session, ctx, &Problem::new(500, "internal", "internal error"))
                    .await
            }
        }
    }

    async fn store_and_respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        (key, miss): (&CacheKey, &Miss),
        json: Vec<u8>,
        bypass: bool,
        in_flight: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Answer {
        let body = Bytes::from(json);
        self.cache.put(key, miss, body.clone()).await;
        drop(in_flight);
        let fwd = if bypass { "request" } else { "miss" };
        let extra = [(CACHE_STATUS, text_value(format!("fleet; fwd={fwd}; stored"))?)];
        self.respond(session, ctx, 200, Some("application/json"), &extra, body)
            .await
    }
}
