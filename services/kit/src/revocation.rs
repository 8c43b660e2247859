//! Revoked sessions, remembered until their last access token has expired, so
//! that logout and revocation take effect at once in every service. Fed by
//! `session.revoked` events.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use fleet_proto::events::v1::{Event, event::Payload};
use tokio::sync::broadcast::{self, error::RecvError};
use uuid::Uuid;

use crate::time::from_timestamp;

/// The set of revoked session ids, each with the instant it may be forgotten.
#[derive(Debug, Clone, Default)]
pub struct RevokedSessions {
    inner: Arc<Mutex<HashMap<Uuid, DateTime<Utc>>>>,
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
                        tracing::error!(missed = n, "revocation listener lagged behind the event bus");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

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
