//! Serving the account console's files (see [`crate::console`]).

use bytes::Bytes;
use http::{HeaderValue, header};
use pingora::prelude::Session;

use super::{Answer, Gateway, RequestContext, header_str};
use crate::console::{self, Asset};

impl Gateway {
    /// One console file, or 304 when the client holds this build's.
    pub(super) async fn console(&self, session: &mut Session, ctx: &mut RequestContext, asset: &Asset) -> Answer {
        ctx.endpoint = "console".into();
        let etag = console::etag();
        let extra = [
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(console::CONTENT_SECURITY_POLICY),
            ),
            // Asked again each time, answered 304 while the build is the same.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, HeaderValue::from_static(etag)),
        ];
        let held = header_str(session, "if-none-match")
            .is_some_and(|tags| tags.split(',').any(|tag| tag.trim().trim_start_matches("W/") == etag));
        if held {
            return self.respond(session, ctx, 304, None, &extra, Bytes::new()).await;
        }
        let body = Bytes::from_static(asset.body);
        self.respond(session, ctx, 200, Some(asset.content_type), &extra, body)
            .await
    }
}
