//! How the gateway answers by itself: the headers every answer carries,
//! JSON and problem+json bodies, the HTTPS redirect and CORS preflights.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use pingora::prelude::Session;

use super::{
    Answer, Gateway, RATELIMIT, RATELIMIT_LIMIT, RATELIMIT_POLICY, RATELIMIT_REMAINING, RATELIMIT_RESET, REQUEST_ID,
    RequestContext, head, header_str, text_value,
};
use crate::problem::{self, Problem};

/// The most of an unread request body an early answer waits to read.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
/// The longest an early answer waits for it.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Before an answer given without reading the whole body (413, 431, 429,
/// 401 …): reads and drops the rest, within [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`], so that the client finishes sending and reads the
/// answer. Clients that cannot read an answer while they upload (an HTTP/2
/// stream reset, an HTTP/1.1 connection closed on unread data) see it then.
pub(super) async fn drain_unread_body(session: &mut Session) {
    if session.is_body_empty() || session.is_body_done() {
        return;
    }
    let declared = header_str(session, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_BYTES) {
        return;
    }
    let drain = async {
        let mut drained = 0usize;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            drained += chunk.len();
            if drained > DRAIN_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

impl Gateway {
    /// Adds the headers every answer carries.
    pub(super) fn decorate(&self, headers: &mut HeaderMap, ctx: &RequestContext) {
        if ctx.tls {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, self.hsts.clone());
        }
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        // Request ids are checked (or made) to be header-safe.
        if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
            headers.insert(REQUEST_ID, id);
        }
        if let Some(rate) = &ctx.rate {
            let (limit, window) = (rate.quota.limit, rate.quota.period_secs);
            headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
            headers.insert(RATELIMIT_REMAINING, HeaderValue::from(rate.remaining));
            headers.insert(RATELIMIT_RESET, HeaderValue::from(rate.reset_secs));
            let policy = format!("\"default\";q={limit};w={window}");
            let state = format!("\"default\";r={};t={}", rate.remaining, rate.reset_secs);
            for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, state)] {
                if let Ok(value) = HeaderValue::try_from(value) {
                    headers.insert(name, value);
                }
            }
        }
        if let Some(origin) = &ctx.cors_origin
            && let Ok(origin) = HeaderValue::from_str(origin)
        {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("x-request-id, retry-after, www-authenticate"),
            );
        }
    }

    pub(super) async fn respond(
        &self,
        session: &mut Session,
        ctx: &RequestContext,
        status: u16,
        content_type: Option<&'static str>,
        extra: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Answer {
        let mut headers = HeaderMap::with_capacity(16);
        self.decorate(&mut headers, ctx);
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        if status != 204 && status != 304 {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        for (name, value) in extra {
            headers.insert(name.clone(), value.clone());
        }
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        let head_only = session.req_header().method == Method::HEAD || body.is_empty();
        drain_unread_body(session).await;
        session.write_response_header(head(status, headers)?, head_only).await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(true)
    }

    pub(super) async fn problem(&self, session: &mut Session, ctx: &mut RequestContext, problem: &Problem) -> Answer {
        ctx.failure
            .get_or_insert_with(|| format!("{}: {}", problem.code, problem.detail));
        let mut extra = Vec::new();
        if problem.status == 401 {
            let error = if ctx.identity.is_none() && header_str(session, "authorization").is_some() {
                r#"Bearer error="invalid_token""#
            } else {
                "Bearer"
            };
            extra.push((header::WWW_AUTHENTICATE, HeaderValue::from_static(error)));
        }
        if problem.status == 401 && ctx.session_cookie {
            extra.push((header::SET_COOKIE, crate::session_cookie::clear()));
        }
        if let Some(secs) = problem.retry_after {
            extra.push((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        let body = Bytes::from(problem.to_json(&ctx.request_id));
        self.respond(session, ctx, problem.status, Some(problem::CONTENT_TYPE), &extra, body)
            .await
    }

    pub(super) async fn json(&self, session: &mut Session, ctx: &RequestContext, status: u16, body: Vec<u8>) -> Answer {
        self.respond(session, ctx, status, Some("application/json"), &[], Bytes::from(body))
            .await
    }

    pub(super) async fn redirect_to_https(&self, session: &mut Session, ctx: &mut RequestContext) -> Answer {
        let host = header_str(session, "host")
            .map(str::to_string)
            .or_else(|| session.req_header().uri.host().map(str::to_string));
        let Some(host) = host else {
            return self
                .problem(
                    session,
                    ctx,
                    &Problem::new(400, "missing_host", "a Host header is required"),
                )
                .await;
        };
        let Ok(authority) = host.parse::<http::uri::Authority>() else {
            return self
                .problem(
                    session,
                    ctx,
                    &Problem::new(400, "invalid_host", "the Host header is not valid"),
                )
                .await;
        };
        let bare = authority.host().to_string();
        let port = self
            .settings
            .public_https_port
            .unwrap_or(self.settings.https_listen.port());
        let authority = if port == 443 { bare } else { format!("{bare}:{port}") };
        let path = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let location = text_value(format!("https://{authority}{path}"))?;
        self.respond(session, ctx, 308, None, &[(header::LOCATION, location)], Bytes::new())
            .await
    }

    pub(super) fn allowed_origin(&self, session: &Session) -> Option<String> {
        let origin = header_str(session, "origin")?;
        self.settings
            .cors
            .allowed_origins
            .iter()
            .any(|o| o == origin)
            .then(|| origin.to_string())
    }

    pub(super) async fn preflight(&self, session: &mut Session, ctx: &mut RequestContext) -> Answer {
        if ctx.cors_origin.is_none() {
            return self
                .problem(session, ctx, &Problem::new(403, "cors_denied", "origin not allowed"))
                .await;
        }
        let extra = [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, x-request-id"),
            ),
            (
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(self.settings.cors.max_age_secs),
            ),
        ];
        self.respond(session, ctx, 204, None, &extra, Bytes::new()).await
    }
}
