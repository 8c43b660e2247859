//! Revoked sessions, remembered until their last access token has expired, so
//! that logout and revocation take effect at once in every service. Fed by
//! `session.revoked` events, and kept whole by reading auth's durable list
//! ([`RevocationSource`]) at start, every [`RESYNC_INTERVAL`], and at once
//! when events were missed: a restart, a lost broadcast or a reconnecting
//! consumer cannot bring a revoked token back.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::grpc::FreshChannel;
use chrono::{DateTime, Utc};
use fleet_proto::auth::v1::{ListRevokedSessionsRequest, auth_service_client::AuthServiceClient};
use fleet_proto::events::v1::{Event, event::Payload};
use tokio::sync::{
    Notify,
    broadcast::{self, error::RecvError},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::time::from_timestamp;

/// The set of revoked session ids, each with the instant it may be forgotten.
#[derive(Debug, Clone, Default)]
pub struct RevokedSessions {
    inner: Arc<Mutex<HashMap<Uuid, DateTime<Utc>>>>,
    /// Woken when events were missed: read the whole list again.
    resync: Arc<Notify>,
}

/// How often the whole list is read again, events or not.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);

/// Where the durable list of revoked sessions is read.
#[async_trait::async_trait]
pub trait RevocationSource: Send + Sync + 'static {
    /// Every revoked session whose tokens may still be live, with when they
    /// have all expired.
    async fn revoked(&self) -> anyhow::Result<Vec<(Uuid, DateTime<Utc>)>>;
}

/// Auth's `ListRevokedSessions`, over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcRevocationSource(pub AuthServiceClient<FreshChannel>);

#[async_trait::async_trait]
impl RevocationSource for GrpcRevocationSource {
    async fn revoked(&self) -> anyhow::Result<Vec<(Uuid, DateTime<Utc>)>> {
        let answer = self
            .0
            .clone()
            .list_revoked_sessions(ListRevokedSessionsRequest {})
            .await?;
        Ok(answer
            .into_inner()
            .sessions
            .iter()
            .filter_map(|s| {
                let id = Uuid::parse_str(&s.session_id).ok()?;
                Some((id, s.tokens_expire_at.as_ref().and_then(from_timestamp)?))
            })
            .collect())
    }
}

impl RevokedSessions {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers `session` as revoked until `until`.
    pub fn revoke(&self, session: Uuid, until: DateTime<Utc>, now: DateTime<Utc>) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, expiry| *expiry > now);
        let entry = map.entry(session).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Whether `session` is revoked at `now`.
    pub fn is_revoked(&self, session: Uuid, now: DateTime<Utc>) -> bool {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&session).is_some_and(|until| *until > now)
    }

    /// Applies one event; true when it revoked a session.
    pub fn apply(&self, event: &Event, now: DateTime<Utc>) -> bool {
        let Some(Payload::SessionRevoked(revoked)) = &event.payload else {
            return false;
        };
        let (Ok(session), Some(until)) = (
            Uuid::parse_str(&revoked.session_id),
            revoked.tokens_expire_at.as_ref().and_then(from_timestamp),
        ) else {
            tracing::warn!(event_id = %event.id, "session.revoked event without a session or expiry");
            return false;
        };
        self.revoke(session, until, now);
        true
    }

    /// Follows a bus subscription until it closes.
    pub fn follow(
        &self,
        mut events: broadcast::Receiver<Arc<Event>>,
        clock: crate::clock::SharedClock,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        this.apply(&event, clock.now());
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::error!(
                            missed = n,
                            "revocation listener lagged behind the event bus; reading the whole list"
                        );
                        this.resync.notify_one();
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }
}

impl RevokedSessions {
    /// Reads the whole list from `source` once; the count it holds.
    pub async fn sync(&self, source: &dyn RevocationSource, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let revoked = source.revoked().await?;
        let count = revoked.len();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, expiry| *expiry > now);
        for (session, until) in revoked.into_iter().filter(|(_, until)| *until > now) {
            let entry = map.entry(session).or_insert(until);
            *entry = (*entry).max(until);
        }
        Ok(count)
    }

    /// Asks for a whole read at once (events were missed).
    pub fn resync_now(&self) {
        self.resync.notify_one();
    }

    /// Keeps the set whole until `stop`: a read at once (retried every
    /// second until one succeeds), then every [`RESYNC_INTERVAL`] and
    /// whenever events were missed.
    pub fn keep_in_sync(
        &self,
        source: Arc<dyn RevocationSource>,
        clock: crate::clock::SharedClock,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut synced_once = false;
            loop {
                match this.sync(source.as_ref(), clock.now()).await {
                    Ok(_) => synced_once = true,
                    Err(err) if synced_once => {
                        tracing::warn!(error = format!("{err:#}"), "could not read the revoked sessions");
                    }
                    Err(err) => tracing::debug!(error = format!("{err:#}"), "revoked sessions not readable yet"),
                }
                let wait = if synced_once {
                    RESYNC_INTERVAL
                } else {
                    Duration::from_secs(1)
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = this.resync.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    struct Listed(Vec<(Uuid, DateTime<Utc>)>);

    #[async_trait::async_trait]
    impl RevocationSource for Listed {
        async fn revoked(&self) -> anyhow::Result<Vec<(Uuid, DateTime<Utc>)>> {
            Ok(self.0.clone())
        }
    }

    #[tokio::test]
    async fn a_sync_learns_every_revocation_the_events_never_brought() {
        let revoked = RevokedSessions::new();
        let now = Utc::now();
        let (live, old) = (Uuid::now_v7(), Uuid::now_v7());
        let source = Listed(vec![
            (live, now + Duration::minutes(10)),
            (old, now - Duration::minutes(1)),
        ]);
        assert_eq!(revoked.sync(&source, now).await.unwrap(), 2);
        assert!(revoked.is_revoked(live, now));
        assert!(!revoked.is_revoked(old, now), "its tokens have all expired");
    }

    #[test]
    fn a_revocation_lasts_until_the_tokens_expire() {
        let revoked = RevokedSessions::new();
        let now = Utc::now();
        let sid = Uuid::now_v7();
        revoked.revoke(sid, now + Duration::minutes(15), now);
        assert!(revoked.is_revoked(sid, now + Duration::minutes(14)));
        assert!(!revoked.is_revoked(sid, now + Duration::minutes(16)));
        assert!(!revoked.is_revoked(Uuid::now_v7(), now));
    }
}
