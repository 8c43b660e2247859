//! The in-process tier, versioned by tag: every invalidation takes a number
//! from one counter and marks its tag with it; a lookup notes the counter
//! before it asks upstream, and an entry stored from that lookup is valid
//! only while no mark on its tag is newer. An answer read before an
//! invalidation arrived is so never served after it.

use std::{
    borrow::Cow,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use bytes::Bytes;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
struct Entry {
    tag: Cow<'static, str>,
    body: Bytes,
    expires_at: DateTime<Utc>,
    /// The counter when the lookup that filled it began.
    seen: u64,
}

/// Entries by key, and the invalidation marks of their tags.
pub struct LocalTier {
    entries: moka::sync::Cache<String, Entry>,
    /// Tag → the counter value of its last invalidation. A mark outlives
    /// every entry it can concern: entries live at most `max_ttl` from
    /// their store, stores follow their lookups within a request deadline.
    marks: moka::sync::Cache<String, u64>,
    counter: AtomicU64,
    /// Entries seen before this are all invalid (events were missed).
    floor: AtomicU64,
}

impl LocalTier {
    /// A tier of `capacity` entries, none living past `max_ttl`.
    pub fn new(capacity: u64, max_ttl: Duration) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(max_ttl)
                .build(),
            marks: moka::sync::Cache::builder()
                .time_to_live(max_ttl * 2 + Duration::from_secs(60))
                .build(),
            counter: AtomicU64::new(0),
            floor: AtomicU64::new(0),
        }
    }

    /// The counter now: taken by a lookup before it asks upstream.
    pub fn now(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }

    /// A valid, unexpired entry's body and expiry.
    pub fn get(&self, id: &str, now: DateTime<Utc>) -> Option<(Bytes, DateTime<Utc>)> {
        let entry = self.entries.get(id)?;
        let valid = entry.expires_at > now
            && entry.seen >= self.floor.load(Ordering::SeqCst)
            && self.marks.get(entry.tag.as_ref()).is_none_or(|mark| mark <= entry.seen);
        valid.then_some((entry.body, entry.expires_at))
    }

    /// Stores what a lookup begun at `seen` found upstream or in Redis.
    pub fn insert(&self, id: String, tag: Cow<'static, str>, body: Bytes, expires_at: DateTime<Utc>, seen: u64) {
        let entry = Entry {
            tag,
            body,
            expires_at,
            seen,
        };
        self.entries.insert(id, entry);
    }

    /// Invalidates a tag's entries, and those lookups under way will store.
    pub fn invalidate(&self, tag: &str) {
        let mark = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.marks.insert(tag.to_string(), mark);
    }

    /// Invalidates every entry, and those lookups under way will store.
    pub fn invalidate_all(&self) {
        let mark = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.floor.fetch_max(mark, Ordering::SeqCst);
        self.entries.invalidate_all();
    }

    /// Entries held (valid or not).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier() -> LocalTier {
        LocalTier::new(100, Duration::from_secs(300))
    }

    fn store(tier: &LocalTier, id: &str, tag: &'static str, seen: u64) {
        let later = Utc::now() + chrono::Duration::seconds(60);
        tier.insert(id.into(), Cow::Borrowed(tag), Bytes::from_static(b"{}"), later, seen);
    }

    #[test]
    fn an_answer_looked_up_before_an_invalidation_is_not_served_after_it() {
        let tier = tier();
        let seen = tier.now();
        tier.invalidate("users");
        store(&tier, "a", "users", seen);
        assert!(tier.get("a", Utc::now()).is_none());
        // A lookup begun after the invalidation stores a valid answer.
        store(&tier, "a", "users", tier.now());
        assert!(tier.get("a", Utc::now()).is_some());
    }

    #[test]
    fn an_invalidation_empties_its_tag_only_and_invalidate_all_everything() {
        let tier = tier();
        store(&tier, "list", "users", tier.now());
        store(&tier, "stats", "user:1", tier.now());
        tier.invalidate("user:1");
        assert!(tier.get("list", Utc::now()).is_some());
        assert!(tier.get("stats", Utc::now()).is_none());
        let seen = tier.now();
        tier.invalidate_all();
        store(&tier, "list", "users", seen);
        assert!(tier.get("list", Utc::now()).is_none(), "looked up before the floor");
    }

    #[test]
    fn expired_entries_are_not_served() {
        let tier = tier();
        store(&tier, "a", "users", tier.now());
        assert!(tier.get("a", Utc::now() + chrono::Duration::seconds(61)).is_none());
    }
}
