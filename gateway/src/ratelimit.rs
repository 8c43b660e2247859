//! Rate limits: GCRA buckets shared by every gateway replica through Redis
//! (one Lua script, one round trip per decision; see [`redis_tier`]), with
//! an in-process GCRA that takes over while Redis is unreachable.

mod redis_tier;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use fleet_kit::SharedClock;

use self::redis_tier::{RedisTier, figures_decision};
use crate::{
    client_ip::{ClientIpHeader, limit_network},
    redis_link::RedisLink,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A number of requests per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Requests allowed per period (and in one burst).
    pub limit: u32,
    /// The period, seconds.
    pub period_secs: u32,
}

impl Quota {
    const fn per_minute(limit: u32) -> Self {
        Self { limit, period_secs: 60 }
    }

    fn period_us(self) -> i64 {
        i64::from(self.period_secs.max(1)) * 1_000_000
    }
}

/// Rate-limit configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitSettings {
    /// Off: nothing is limited.
    pub enabled: bool,
    /// Per authenticated user.
    pub user: Quota,
    /// Per client IP, for requests without a valid token.
    pub anonymous: Quota,
    /// Stricter limits per client IP on particular routes, by template;
    /// they apply on top of the user or anonymous limit.
    pub routes: BTreeMap<String, Quota>,
    /// Peers whose client IP header is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The one header trusted proxies report the client in.
    pub client_ip_header: ClientIpHeader,
    /// IPv6 clients are limited by this prefix of their address (64: one
    /// subscriber's network); IPv4 clients by their address.
    pub ipv6_prefix_len: u8,
    /// Prefix of the Redis keys.
    pub key_prefix: String,
    /// How much of a bucket's quota (per mille) a replica may draw from
    /// Redis ahead of use, answering from it without a round trip for up to
    /// [`LEASE_MILLIS`]. Unused draws are lost, so a bucket never lets more
    /// than its quota through; it may refuse early by at most this share per
    /// replica. Buckets whose share is under two requests (every default
    /// quota) are always decided in Redis, one request at a time. 0: never.
    pub lease_per_mille: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        let routes = [
            ("/api/v1/auth/login", 10),
            ("/api/v1/auth/register", 5),
            ("/api/v1/auth/refresh", 30),
            ("/api/v1/auth/login/mfa", 10),
            ("/api/v1/auth/login/mfa/sms", 5),
            ("/api/v1/auth/2fa/sms/enroll", 5),
            ("/api/v1/auth/2fa/sms/confirm", 10),
            ("/api/v1/auth/2fa/totp/confirm", 10),
            ("/api/v1/auth/2fa/totp/disable", 10),
            ("/api/v1/auth/2fa/backup-codes", 10),
        ]
        .into_iter()
        .map(|(route, limit)| (route.to_string(), Quota::per_minute(limit)))
        .collect();
        Self {
            enabled: true,
            user: Quota::per_minute(100),
            anonymous: Quota::per_minute(20),
            routes,
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::default(),
            ipv6_prefix_len: 64,
            key_prefix: "fleet:rl:".into(),
            lease_per_mille: 10,
        }
    }
}

/// One bucket a request draws from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Its key (without the prefix).
    pub key: String,
    /// Its quota.
    pub quota: Quota,
}

/// The outcome for one request: the most constraining bucket's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Let through?
    pub allowed: bool,
    /// That bucket's quota.
    pub quota: Quota,
    /// Requests left in it.
    pub remaining: u32,
    /// Seconds until it is full again.
    pub reset_secs: u64,
    /// Seconds until a refused request may succeed.
    pub retry_after_secs: u64,
}

/// GCRA for one bucket: the new theoretical arrival time to store (if the
/// request is allowed) and the figures. Times in microseconds, so that even
/// very high limits keep a whole-number emission interval.
pub fn gcra(tat: Option<i64>, now: i64, quota: Quota) -> (Option<i64>, Decision) {
    let period = quota.period_us();
    let limit = i64::from(quota.limit.max(1));
    let interval = (period / limit).max(1);
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + interval;
    let allow_at = new_tat - period;
    let secs = |us: i64| u64::try_from((us + 999_999) / 1_000_000).unwrap_or(0);
    if now < allow_at {
        let decision = Decision {
            allowed: false,
            quota,
            remaining: 0,
            reset_secs: secs(tat - now),
            retry_after_secs: secs(allow_at - now).max(1),
        };
        return (None, decision);
    }
    let remaining = u32::try_from((period - (new_tat - now)) / interval).unwrap_or(0);
    let decision = Decision {
        allowed: true,
        quota,
        remaining,
        reset_secs: secs(new_tat - now),
        retry_after_secs: 0,
    };
    (Some(new_tat), decision)
}

/// The most constraining of several decisions: a refusal, else the one with
/// the fewest requests left.
fn combine(decisions: impl IntoIterator<Item = Decision>) -> Option<Decision> {
    decisions.into_iter().min_by_key(|d| (d.allowed, d.remaining))
}

/// How long requests drawn ahead from Redis may be used.
pub const LEASE_MILLIS: i64 = 1000;

/// Figures per bucket in the script's answer.
const FIGURES: usize = 5;

/// Requests drawn ahead from Redis for one bucket.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Still usable.
    left: u32,
    /// Usable until (microseconds, the injected clock).
    until_us: i64,
    /// The bucket's figures when they were drawn.
    decision: Decision,
}

/// The requests drawn ahead, and the buckets being drawn for right now.
#[derive(Debug, Default)]
struct Leases {
    held: HashMap<String, Lease>,
    /// One request at a time draws a bucket's next lease; the others that
    /// arrive meanwhile are decided one by one, so that concurrent requests
    /// at a lease's end do not each draw (and waste) a share of the quota.
    drawing: HashSet<String>,
}

/// Marks buckets as being drawn for until it is dropped (whether the draw
/// answered, failed or was abandoned with its request).
struct Drawing<'a> {
    leases: &'a Mutex<Leases>,
    keys: Vec<String>,
}

impl Drop for Drawing<'_> {
    fn drop(&mut self) {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            leases.drawing.remove(key);
        }
    }
}

/// How long Redis is left alone after a failure before it is tried again.
const REDIS_RETRY_AFTER_MS: i64 = 1000;
const LOCAL_SWEEP_AT: usize = 100_000;

/// Health of the limiter, for `/health/cache` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimiterHealth {
    /// "up", "down" or "disabled" (no Redis configured).
    pub redis: &'static str,
    /// Decisions taken by the in-process limiter while Redis was down.
    pub fallback_decisions: u64,
    /// Redis failures seen.
    pub redis_failures: u64,
    /// Requests refused.
    pub rejections: u64,
    /// Decisions answered from requests drawn ahead from Redis.
    pub leased_decisions: u64,
}

/// The limiter: Redis when configured and reachable, else in-process.
pub struct RateLimiter {
    settings: RateLimitSettings,
    clock: SharedClock,
    redis: Option<RedisTier>,
    local: Mutex<HashMap<String, i64>>,
    leases: Mutex<Leases>,
    fallback_decisions: AtomicU64,
    redis_failures: AtomicU64,
    rejections: AtomicU64,
    leased_decisions: AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter; no Redis: in-process only.
    pub fn new(settings: RateLimitSettings, redis: Option<Arc<RedisLink>>, clock: SharedClock) -> Self {
        let redis = redis.map(RedisTier::new);
        Self {
            settings,
            clock,
            redis,
            local: Mutex::new(HashMap::new()),
            leases: Mutex::new(Leases::default()),
            fallback_decisions: AtomicU64::new(0),
            redis_failures: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            leased_decisions: AtomicU64::new(0),
        }
    }

    /// The configuration.
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// The buckets of a request: the user's or the client IP's, plus the
    /// route's own when it has one.
    pub fn buckets(&self, user: Option<&str>, ip: IpAddr, route: &str) -> Vec<Bucket> {
        let ip = limit_network(ip, self.settings.ipv6_prefix_len);
        // The part in braces is the key's hash tag: on a Redis Cluster, an
        // anonymous request's buckets share their client's slot, and one
        // script call decides them all.
        let mut buckets = vec![match user {
            Some(id) => Bucket {
                key: format!("{{user:{id}}}"),
                quota: self.settings.user,
            },
            None => Bucket {
                key: format!("{{ip:{ip}}}"),
                quota: self.settings.anonymous,
            },
        }];
        if let Some(quota) = self.settings.routes.get(route) {
            buckets.push(Bucket {
                key: format!("{{ip:{ip}}}route:{route}"),
                quota: *quota,
            });
        }
        buckets
    }

    /// Decides on a request drawing from `buckets`; `None` when limits are off.
    pub async fn check(&self, buckets: &[Bucket]) -> Option<Decision> {
        if !self.settings.enabled || buckets.is_empty() {
            return None;
        }
        if let Some(decision) = self.check_leased(buckets) {
            self.leased_decisions.fetch_add(1, Ordering::Relaxed);
            return Some(decision);
        }
        let drawing = self.start_drawing(buckets);
        let decision = match self.check_redis(buckets, drawing.is_some()).await {
            Some(decision) => decision,
            None => {
                if self.redis.is_some() {
                    self.fallback_decisions.fetch_add(1, Ordering::Relaxed);
                }
                self.check_local(buckets)
            }
        };
        drop(drawing);
        if !decision.allowed {
            self.rejections.fetch_add(1, Ordering::Relaxed);
        }
        Some(decision)
    }

    /// Claims the right to draw leases for every bucket of a request: only
    /// when each bucket takes leases and none is being drawn already.
    fn start_drawing(&self, buckets: &[Bucket]) -> Option<Drawing<'_>> {
        self.redis.as_ref()?;
        if !buckets.iter().all(|b| self.lease_size(b.quota) > 1) {
            return None;
        }
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.iter().any(|b| leases.drawing.contains(&b.key)) {
            return None;
        }
        let keys: Vec<String> = buckets.iter().map(|b| b.key.clone()).collect();
        leases.drawing.extend(keys.iter().cloned());
        Some(Drawing {
            leases: &self.leases,
            keys,
        })
    }

    fn check_local(&self, buckets: &[Bucket]) -> Decision {
        let now = self.clock.now().timestamp_micros();
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if local.len() > LOCAL_SWEEP_AT {
            local.retain(|_, tat| *tat > now);
        }
        let results: Vec<(Option<i64>, Decision)> = buckets
            .iter()
            .map(|b| gcra(local.get(&b.key).copied(), now, b.quota))
            .collect();
        let all_allowed = results.iter().all(|(_, d)| d.allowed);
        if all_allowed {
            for (bucket, (tat, _)) in buckets.iter().zip(&results) {
                if let Some(tat) = tat {
                    local.insert(bucket.key.clone(), *tat);
                }
            }
        }
        let mut decision = combine(results.into_iter().map(|(_, d)| d)).unwrap_or(Decision {
            allowed: true,
            quota: buckets[0].quota,
            remaining: buckets[0].quota.limit,
            reset_secs: 0,
            retry_after_secs: 0,
        });
        decision.allowed = all_allowed;
        decision
    }

    /// How many requests of `quota` a replica may draw at once; 1: no lease.
    fn lease_size(&self, quota: Quota) -> u32 {
        let share = u64::from(quota.limit) * u64::from(self.settings.lease_per_mille) / 1000;
        u32::try_from(share).unwrap_or(u32::MAX).max(1)
    }

    /// Answers from requests drawn ahead, when every bucket has one left.
    fn check_leased(&self, buckets: &[Bucket]) -> Option<Decision> {
        let tier = self.redis.as_ref()?;
        if !tier.link.is_up() {
            return None;
        }
        let now = self.clock.now().timestamp_micros();
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let usable = |lease: Option<&Lease>| lease.is_some_and(|l| l.left > 0 && l.until_us > now);
        if !buckets.iter().all(|b| usable(leases.held.get(&b.key))) {
            return None;
        }
        let decisions: Vec<Decision> = buckets
            .iter()
            .filter_map(|bucket| {
                let lease = leases.held.get_mut(&bucket.key)?;
                lease.left -= 1;
                let mut decision = lease.decision;
                // What is still drawn counts as remaining: Redis already gave it.
                decision.remaining = decision.remaining.saturating_add(lease.left);
                Some(decision)
            })
            .collect();
        combine(decisions)
    }

    /// Keeps what the script took beyond this request, for the next ones.
    fn keep_leases(&self, buckets: &[Bucket], figures: &[i64]) {
        let now = self.clock.now().timestamp_micros();
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.held.len() > LOCAL_SWEEP_AT {
            leases.held.retain(|_, lease| lease.until_us > now);
        }
        for (bucket, f) in buckets.iter().zip(figures.chunks(FIGURES)) {
            let taken = u32::try_from(f[4]).unwrap_or(0);
            if taken > 1 {
                let mut decision = figures_decision(bucket, f);
                decision.remaining = u32::try_from(f[1]).unwrap_or(0);
                let lease = Lease {
                    left: taken - 1,
                    until_us: now + (LEASE_MILLIS * 1000).min(bucket.quota.period_us()),
                    decision,
                };
                leases.held.insert(bucket.key.clone(), lease);
            }
        }
    }

    /// How the limiter is doing.
    pub fn health(&self) -> LimiterHealth {
        LimiterHealth {
            redis: match &self.redis {
                None => "disabled",
                Some(tier) if tier.link.is_up() => "up",
                Some(_) => "down",
            },
            fallback_decisions: self.fallback_decisions.load(Ordering::Relaxed),
            redis_failures: self.redis_failures.load(Ordering::Relaxed),
            rejections: self.rejections.load(Ordering::Relaxed),
            leased_decisions: self.leased_decisions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
