//! The response cache: an in-process tier (moka) in front of a shared Redis
//! tier. Keys hold everything that changes an answer (the path with its
//! bound ids, the normalized query, the caller and its role); entries carry
//! tags (`users`, `user:<id>`) whose generation, kept in Redis, is bumped
//! by `user.*` events that every gateway replica receives, which empties
//! them everywhere at once. A lookup notes the generations it saw and its
//! answer is stored under them, so an answer read before an invalidation
//! is never served after it (see [`local`] for the in-process tier).

mod local;

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use fleet_kit::SharedClock;
use fleet_proto::events::v1::{Event, event::Payload};
use redis::Script;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex as AsyncMutex;
use tracing::Instrument;

use self::local::LocalTier;
use crate::redis_link::{RedisConnection, RedisLink};

/// Cache configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheSettings {
    /// Off: nothing is cached.
    pub enabled: bool,
    /// Cacheable GET routes by template, with their TTL in seconds.
    pub routes: BTreeMap<String, u64>,
    /// Entries the in-process tier holds.
    pub local_capacity: u64,
    /// Prefix of the Redis keys.
    pub key_prefix: String,
}

impl Default for CacheSettings {
    fn default() -> Self {
        let routes = [
            ("/api/v1/users", 300),
            ("/api/v1/stats/user", 3600),
            ("/api/v1/stats/activity", 3600),
            ("/api/v1/stats/sessions", 3600),
        ]
        .into_iter()
        .map(|(route, ttl)| (route.to_string(), ttl))
        .collect();
        Self {
            enabled: true,
            routes,
            local_capacity: 10_000,
            key_prefix: "fleet:cache:".into(),
        }
    }
}

/// What a cacheable request looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// Path, normalized query, caller and role, NUL-separated: the
    /// in-process key as it is; Redis keys hold its SHA-256, made only on a
    /// local miss.
    pub id: String,
    /// The tag whose invalidation empties it.
    pub tag: Cow<'static, str>,
    /// How long it lives.
    pub ttl: Duration,
}

/// What a lookup that missed saw: the answer it goes on to fetch is stored
/// under these generations, not the ones current when it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    local: u64,
    /// When the lookup was made (milliseconds, the injected clock): what is
    /// stored after it was read from upstream after this moment.
    looked_up_ms: i64,
    /// The tag's Redis generation; `None` when Redis did not answer, and
    /// then nothing is stored there.
    shared: Option<String>,
}

/// A cache hit: the answer body and its remaining lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The JSON body of a 200 answer.
    pub body: Bytes,
    /// Seconds it stays fresh.
    pub ttl_secs: i64,
}

/// Counters for `/health/cache` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheHealth {
    /// "up", "down" or "disabled".
    pub redis: &'static str,
    /// Hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// Entries in the in-process tier.
    pub local_entries: u64,
    /// Invalidations applied.
    pub invalidations: u64,
}

/// Reads a tag's generation and the entry of that generation in one trip.
const LOOKUP: &str = r"
local generation = redis.call('GET', KEYS[1]) or '0'
local value = redis.call('GET', KEYS[2] .. ':' .. generation)
local ttl = -2
if value then ttl = redis.call('PTTL', KEYS[2] .. ':' .. generation) end
return {generation, value or false, ttl}
";

/// The two-tier cache.
pub struct ResponseCache {
    settings: CacheSettings,
    clock: SharedClock,
    local: LocalTier,
    redis: Option<RedisTier>,
    flights: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    /// Shared entries looked up before this moment (milliseconds) are not
    /// served: this replica missed events until then.
    trusted_from_ms: AtomicI64,
}

struct RedisTier {
    link: Arc<RedisLink>,
    lookup: Script,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn normalized_query(query: Option<&str>) -> String {
    let mut pairs: Vec<&str> = query.unwrap_or_default().split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    pairs.join("&")
}

/// Lower-case hexadecimal, without a `format!` per byte (every hit pays it).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The tags a domain event invalidates.
pub fn tags_of(event: &Event) -> Vec<String> {
    let user = (!event.subject_user_id.is_empty()).then(|| format!("user:{}", event.subject_user_id));
    match event.payload {
        Some(Payload::UserCreated(_) | Payload::UserUpdated(_) | Payload::UserDeleted(_)) => {
            std::iter::once("users".to_string()).chain(user).collect()
        }
        Some(_) => user.into_iter().collect(),
        None => Vec::new(),
    }
}

impl ResponseCache {
    /// A cache; no Redis: the in-process tier alone.
    pub fn new(settings: CacheSettings, redis: Option<Arc<RedisLink>>, clock: SharedClock) -> Self {
        let redis = redis.map(|link| RedisTier {
            link,
            lookup: Script::new(LOOKUP),
        });
        let max_ttl = settings.routes.values().copied().max().unwrap_or(300);
        let local = LocalTier::new(settings.local_capacity, Duration::from_secs(max_ttl.max(1)));
        Self {
            settings,
            clock,
            local,
            redis,
            flights: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            trusted_from_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// The key of a GET of `path` on the route `template`, when the route
    /// is cacheable. Answers depend on the ids in the path, the query, the
    /// caller and its role, so all are part of the key.
    pub fn key(
        &self,
        template: &str,
        path: &str,
        query: Option<&str>,
        user: Option<&str>,
        role: &str,
    ) -> Option<CacheKey> {
        if !self.settings.enabled {
            return None;
        }
        let ttl = *self.settings.routes.get(template)?;
        let tag = if template.starts_with("/api/v1/stats") {
            // A user's figures go stale with that user's events: the user
            // an admin names (`?user_id=`), or else the caller.
            let subject = query
                .unwrap_or_default()
                .split('&')
                .find_map(|pair| pair.strip_prefix("user_id="))
                .filter(|id| !id.is_empty());
            Cow::Owned(format!("user:{}", subject.or(user).unwrap_or(role)))
        } else {
            Cow::Borrowed("users")
        };
        // None of the parts can hold a NUL (a URI cannot, nor an id or a
        // role from a verified token), so the joined form names one answer.
        let query = normalized_query(query);
        let user = user.unwrap_or_default();
        let mut id = String::with_capacity(path.len() + query.len() + user.len() + role.len() + 3);
        for (i, part) in [path, &query, user, role].into_iter().enumerate() {
            if i > 0 {
                id.push('\0');
            }
            id.push_str(part);
        }
        Some(CacheKey {
            id,
            tag,
            ttl: Duration::from_secs(ttl),
        })
    }

    async fn connection(&self) -> Option<RedisConnection> {
        self.redis.as_ref()?.link.connection().await.ok()
    }

    fn report<T>(&self, result: &redis::RedisResult<T>) {
        if let Some(tier) = &self.redis {
            tier.link.report(result);
        }
    }

    /// An entry's key. The tag in braces is the key's hash tag: on a Redis
    /// Cluster an entry lives in its tag's generation's slot, so one lookup
    /// reads both.
    fn entry_key(&self, key: &CacheKey) -> String {
        let digest = Sha256::digest(key.id.as_bytes());
        format!("{}entry:{{{}}}:{}", self.settings.key_prefix, key.tag, hex(&digest))
    }

    fn generation_key(&self, tag: &str) -> String {
        format!("{}gen:{{{tag}}}", self.settings.key_prefix)
    }

    /// Counts a lookup's outcome, as the caller decided it.
    pub fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Looks a key up, in-process first, then in Redis; a miss says what
    /// it saw, for [`ResponseCache::put`].
    pub async fn get(&self, key: &CacheKey) -> Result<Hit, Miss> {
        let now = self.clock.now();
        let seen = self.local.now();
        if let Some((body, expires_at)) = self.local.get(&key.id, now) {
            return Ok(Hit {
                body,
                ttl_secs: (expires_at - now).num_seconds(),
            });
        }
        let (shared, hit) = match self.get_redis(key).await {
            Some((generation, hit)) => (Some(generation), hit),
            None => (None, None),
        };
        match hit {
            Some(hit) => {
                let expires_at = now + chrono::Duration::seconds(hit.ttl_secs);
                self.local
                    .insert(key.id.clone(), key.tag.clone(), hit.body.clone(), expires_at, seen);
                Ok(hit)
            }
            None => Err(Miss {
                local: seen,
                looked_up_ms: now.timestamp_millis(),
                shared,
            }),
        }
    }

    /// The tag's generation and, if stored under it, the entry.
    async fn get_redis(&self, key: &CacheKey) -> Option<(String, Option<Hit>)> {
        let mut connection = self.connection().await?;
        let tier = self.redis.as_ref()?;
        let answer: redis::RedisResult<(String, Option<Vec<u8>>, i64)> = tier
            .lookup
            .key(self.generation_key(&key.tag))
            .key(self.entry_key(key))
            .invoke_async(&mut connection)
            .await;
        self.report(&answer);
        let (generation, value, ttl_ms) = answer.ok()?;
        // An entry looked up before this replica last caught up with missed
        // events may hold what one of them changed: not trusted.
        let trusted_from = self.trusted_from_ms.load(Ordering::Relaxed);
        let hit = value
            .filter(|value| value.len() >= 8)
            .map(|mut value| {
                let body = value.split_off(8);
                let looked_up_ms = i64::from_be_bytes(value.try_into().unwrap_or([0; 8]));
                (looked_up_ms, body)
            })
            .filter(|(looked_up_ms, _)| *looked_up_ms >= trusted_from)
            .map(|(_, body)| Hit {
                body: Bytes::from(body),
                ttl_secs: ttl_ms / 1000,
            });
        Some((generation, hit))
    }

    /// Stores a 200 answer in both tiers, under the generations its lookup
    /// saw: if an invalidation came since, the entry is stale at once.
    pub async fn put(&self, key: &CacheKey, miss: &Miss, body: Bytes) {
        let expires_at = self.clock.now() + chrono::Duration::from_std(key.ttl).unwrap_or_default();
        self.local
            .insert(key.id.clone(), key.tag.clone(), body.clone(), expires_at, miss.local);
        let Some(generation) = &miss.shared else {
            return;
        };
        let Some(mut connection) = self.connection().await else {
            return;
        };
        let ttl_ms = u64::try_from(key.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        // The entry says when its answer was looked up (see `trusted_from_ms`).
        let mut value = Vec::with_capacity(8 + body.len());
        value.extend_from_slice(&miss.looked_up_ms.to_be_bytes());
        value.extend_from_slice(&body);
        let stored = redis::cmd("SET")
            .arg(format!("{}:{generation}", self.entry_key(key)))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut connection)
            .await;
        self.report(&stored);
    }

    /// What a request that skips the lookup (`Cache-Control: no-cache`)
    /// stores its answer under: the generations now.
    pub async fn bypass(&self, key: &CacheKey) -> Miss {
        let local = self.local.now();
        let looked_up_ms = self.clock.now().timestamp_millis();
        let Some(mut connection) = self.connection().await else {
            return Miss {
                local,
                looked_up_ms,
                shared: None,
            };
        };
        let generation: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(self.generation_key(&key.tag))
            .query_async(&mut connection)
            .await;
        self.report(&generation);
        let shared = generation.ok().map(|g| g.unwrap_or_else(|| "0".into()));
        Miss {
            local,
            looked_up_ms,
            shared,
        }
    }

    /// Empties a tag: the shared generation moves on and this replica's
    /// entries of the tag are stale. Every replica does this for every event.
    pub async fn invalidate(&self, tag: &str) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        self.local.invalidate(tag);
        let Some(mut connection) = self.connection().await else {
            return;
        };
        let bumped: redis::RedisResult<i64> = redis::cmd("INCR")
            .arg(self.generation_key(tag))
            .query_async(&mut connection)
            .await;
        self.report(&bumped);
    }

    /// Events were missed: every in-process entry is stale, so is the shared
    /// users list, and no shared entry looked up before now is trusted by
    /// this replica (the missed per-user tags cannot be named; their
    /// generations were not moved on).
    pub async fn missed_events(&self) {
        self.trusted_from_ms
            .store(self.clock.now().timestamp_millis(), Ordering::Relaxed);
        self.local.invalidate_all();
        self.invalidate("users").await;
    }

    /// Applies a domain event.
    pub async fn apply(&self, event: &Event) {
        let tags = tags_of(event);
        if tags.is_empty() {
            return;
        }
        let span = fleet_kit::trace::event_span("gateway.cache", event);
        async {
            for tag in tags {
                self.invalidate(&tag).await;
            }
        }
        .instrument(span)
        .await;
    }

    /// The single-flight lock of a key: the first caller holds it while it
    /// asks upstream; the others wait and then find the answer cached.
    pub fn flight(&self, key: &CacheKey) -> Arc<AsyncMutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.len() > 10_000 {
            flights.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        flights.entry(key.id.clone()).or_default().clone()
    }

    /// How the cache is doing.
    pub fn health(&self) -> CacheHealth {
        CacheHealth {
            redis: match &self.redis {
                None => "disabled",
                Some(tier) if tier.link.is_up() => "up",
                Some(_) => "down",
            },
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            local_entries: self.local.entry_count(),
            invalidations: self.invalidations.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
