//! The gateway's word for what it forwards: a service token, fetched from
//! auth with the shared service secret (`tokens.service_secret`) and renewed
//! at half its life, sent with every call to a service so that the client
//! address and user agent the gateway forwards are believed. Without one
//! (auth unreachable, another secret) services record the gateway itself.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use fleet_kit::{Secret, time::from_timestamp};
use fleet_proto::auth::v1::{IssueServiceTokenRequest, auth_service_client::AuthServiceClient};
use http::HeaderValue;
use pingora::{server::ShutdownWatch, services::background::BackgroundService};

use crate::{server::AUTH_SERVICE, upstream::Upstreams};

/// The name the gateway's service token carries.
const NAME: &str = "gateway";

/// Holds the current `Bearer` value, if any.
pub struct Forwarder {
    upstreams: Arc<Upstreams>,
    secret: Secret,
    clock: fleet_kit::SharedClock,
    value: RwLock<Option<HeaderValue>>,
}

impl Forwarder {
    /// A forwarder asking auth behind `upstreams`.
    pub fn new(upstreams: Arc<Upstreams>, secret: Secret, clock: fleet_kit::SharedClock) -> Self {
        Self {
            upstreams,
            secret,
            clock,
            value: RwLock::new(None),
        }
    }

    /// The header value to send (`Bearer …`), once one was obtained.
    pub fn header(&self) -> Option<HeaderValue> {
        self.value.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fetches a token; the time until it should be renewed.
    async fn renew(&self) -> anyhow::Result<Duration> {
        let channel = self.upstreams.channel(AUTH_SERVICE).await?;
        let request = IssueServiceTokenRequest {
            name: NAME.into(),
            secret: self.secret.expose().to_string(),
        };
        let answer = AuthServiceClient::new(channel)
            .issue_service_token(request)
            .await?
            .into_inner();
        let value = HeaderValue::try_from(format!("Bearer {}", answer.token))?;
        *self.value.write().unwrap_or_else(|p| p.into_inner()) = Some(value);
        let expires_at = answer.expires_at.as_ref().and_then(from_timestamp);
        let left = expires_at.map_or(Duration::ZERO, |at| {
            (at - self.clock.now()).to_std().unwrap_or_default()
        });
        Ok((left / 2).max(Duration::from_secs(1)))
    }
}

/// Keeps the token fresh inside the gateway's runtime.
pub struct Renewal(pub Arc<Forwarder>);

#[async_trait]
impl BackgroundService for Renewal {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut failures = 0u32;
        loop {
            let wait = match self.0.renew().await {
                Ok(next) => {
                    failures = 0;
                    next
                }
                Err(err) => {
                    failures += 1;
                    // Auth may still be starting: quiet for the first seconds.
                    if failures == 10 {
                        tracing::warn!(
                            error = format!("{err:#}"),
                            "no service token from auth: services will record the gateway as the client"
                        );
                    }
                    Duration::from_millis(500).saturating_mul(1 << failures.min(6))
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
