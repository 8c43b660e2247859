//! Rate limits: GCRA buckets shared by every gateway replica through Redis
//! (one Lua script, one round trip per decision), with an in-process GCRA
//! that takes over while Redis is unreachable.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use fleet_kit::SharedClock;

use crate::redis_link::RedisLink;
use ipnet::IpNet;
use redis::Script;
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
    /// Peers whose `X-Forwarded-For`/`Forwarded` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Prefix of the Redis keys.
    pub key_prefix: String,
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
            key_prefix: "fleet:rl:".into(),
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

/// The same GCRA as [`gcra`], for all of a request's buckets at once, on
/// Redis's clock; nothing is consumed unless every bucket allows.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local updates = {}
local all = true
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local interval = math.max(math.floor(period / limit), 1)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - period
  if now < allow_at then
    all = false
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = tat - now
    out[#out + 1] = allow_at - now
  else
    out[#out + 1] = 1
    out[#out + 1] = math.floor((period - (new_tat - now)) / interval)
    out[#out + 1] = new_tat - now
    out[#out + 1] = 0
    updates[#updates + 1] = {key, new_tat, new_tat - now}
  end
end
if all then
  for _, u in ipairs(updates) do
    redis.call('SET', u[1], u[2], 'PX', math.ceil(u[3] / 1000))
  end
end
return out
";

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
}

/// The limiter: Redis when configured and reachable, else in-process.
pub struct RateLimiter {
    settings: RateLimitSettings,
    clock: SharedClock,
    redis: Option<RedisTier>,
    local: Mutex<HashMap<String, i64>>,
    fallback_decisions: AtomicU64,
    redis_failures: AtomicU64,
    rejections: AtomicU64,
}

struct RedisTier {
    link: Arc<RedisLink>,
    script: Script,
    failed_at_ms: AtomicI64,
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
        let redis = redis.map(|link| RedisTier {
            link,
            script: Script::new(GCRA_SCRIPT),
            failed_at_ms: AtomicI64::new(i64::MIN),
        });
        Self {
            settings,
            clock,
            redis,
            local: Mutex::new(HashMap::new()),
            fallback_decisions: AtomicU64::new(0),
            redis_failures: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
        }
    }

    /// The configuration.
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// The buckets of a request: the user's or the client IP's, plus the
    /// route's own when it has one.
    pub fn buckets(&self, user: Option<&str>, ip: IpAddr, route: &str) -> Vec<Bucket> {
        let mut buckets = vec![match user {
            Some(id) => Bucket {
                key: format!("user:{id}"),
                quota: self.settings.user,
            },
            None => Bucket {
                key: format!("ip:{ip}"),
                quota: self.settings.anonymous,
            },
        }];
        if let Some(quota) = self.settings.routes.get(route) {
            buckets.push(Bucket {
                key: format!("route:{route}:ip:{ip}"),
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
        let decision = match self.check_redis(buckets).await {
            Some(decision) => decision,
            None => {
                if self.redis.is_some() {
                    self.fallback_decisions.fetch_add(1, Ordering::Relaxed);
                }
                self.check_local(buckets)
            }
        };
        if !decision.allowed {
            self.rejections.fetch_add(1, Ordering::Relaxed);
        }
        Some(decision)
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

    /// `None` when Redis is not configured, failing, or resting after a failure.
    async fn check_redis(&self, buckets: &[Bucket]) -> Option<Decision> {
        let tier = self.redis.as_ref()?;
        let now = self.clock.now().timestamp_millis();
        if !tier.link.is_up() && now.saturating_sub(tier.failed_at_ms.load(Ordering::Relaxed)) < REDIS_RETRY_AFTER_MS {
            return None;
        }
        match self.invoke(tier, buckets).await {
            Ok(figures) => {
                let decisions = buckets.iter().zip(figures.chunks(4)).map(|(bucket, f)| Decision {
                    allowed: f[0] == 1,
                    quota: bucket.quota,
                    remaining: u32::try_from(f[1]).unwrap_or(0),
                    reset_secs: u64::try_from((f[2] + 999_999) / 1_000_000).unwrap_or(0),
                    retry_after_secs: u64::try_from((f[3] + 999_999) / 1_000_000).unwrap_or(0),
                });
                let all_allowed = figures.chunks(4).all(|f| f[0] == 1);
                let mut decision = combine(decisions)?;
                decision.allowed = all_allowed;
                if !all_allowed {
                    decision.retry_after_secs = decision.retry_after_secs.max(1);
                }
                Some(decision)
            }
            Err(err) => {
                self.redis_failures.fetch_add(1, Ordering::Relaxed);
                tier.failed_at_ms.store(now, Ordering::Relaxed);
                tracing::debug!(error = %err, "rate limit decided by this replica");
                None
            }
        }
    }

    async fn invoke(&self, tier: &RedisTier, buckets: &[Bucket]) -> anyhow::Result<Vec<i64>> {
        let mut connection = tier.link.connection().await?;
        let mut invocation = tier.script.prepare_invoke();
        for bucket in buckets {
            invocation
                .key(format!("{}{}", self.settings.key_prefix, bucket.key))
                .arg(bucket.quota.limit.max(1))
                .arg(bucket.quota.period_us());
        }
        let figures: redis::RedisResult<Vec<i64>> = invocation.invoke_async(&mut connection).await;
        tier.link.report(&figures);
        let figures = figures?;
        anyhow::ensure!(
            figures.len() == buckets.len() * 4,
            "unexpected answer from the rate-limit script"
        );
        Ok(figures)
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
        }
    }
}

/// The client's address: the socket peer, unless the peer is a trusted proxy,
/// in which case the nearest untrusted address of `Forwarded` (preferred) or
/// `X-Forwarded-For`.
pub fn client_ip(peer: IpAddr, forwarded: Option<&str>, x_forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = match forwarded {
        Some(value) => value
            .split(',')
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.eq_ignore_ascii_case("for").then(|| parse_node(value)).flatten()
                })
            })
            .collect(),
        None => x_forwarded_for
            .unwrap_or_default()
            .split(',')
            .filter_map(|part| parse_node(part.trim()))
            .collect(),
    };
    chain.iter().rev().find(|ip| !is_trusted(ip)).copied().unwrap_or(peer)
}

/// An address from `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"` or `2001:db8::1`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim().trim_matches('"');
    if let Ok(ip) = raw.parse() {
        return Some(ip);
    }
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    raw.rsplit_once(':').and_then(|(host, _)| host.parse().ok())
}

#[cfg(test)]
mod tests {
    use chrono::{Duration as ChronoDuration, Utc};
    use fleet_kit::clock::ManualClock;

    use super::*;

    #[test]
    fn gcra_allows_a_burst_of_the_limit_then_refuses_until_an_interval_passes() {
        let quota = Quota::per_minute(20);
        let now = 1_000_000_000;
        let mut tat = None;
        for expected_remaining in (0..20).rev() {
            let (next, decision) = gcra(tat, now, quota);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            tat = next;
        }
        let (next, refused) = gcra(tat, now, quota);
        assert_eq!((next, refused.allowed, refused.retry_after_secs), (None, false, 3));
        assert_eq!(refused.reset_secs, 60);
        assert!(
            gcra(tat, now + 3_000_000, quota).1.allowed,
            "one interval later, one more"
        );
    }

    #[test]
    fn gcra_keeps_limits_far_above_one_per_millisecond() {
        let quota = Quota {
            limit: 1_000_000_000,
            period_secs: 60,
        };
        let mut tat = None;
        for _ in 0..10_000 {
            let (next, decision) = gcra(tat, 5_000_000_000, quota);
            assert!(decision.allowed);
            tat = next;
        }
    }

    #[tokio::test]
    async fn the_local_limiter_consumes_nothing_when_any_bucket_refuses() {
        let clock = ManualClock::new(Utc::now());
        let limiter = RateLimiter::new(RateLimitSettings::default(), None, Arc::new(clock.clone()));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let login = limiter.buckets(None, ip, "/api/v1/auth/login");
        assert_eq!(login.len(), 2);
        for _ in 0..10 {
            assert!(limiter.check(&login).await.unwrap().allowed);
        }
        let refused = limiter.check(&login).await.unwrap();
        assert_eq!((refused.allowed, refused.quota.limit), (false, 10));
        // The IP's general budget lost only the ten that went through.
        let general = limiter
            .check(&limiter.buckets(None, ip, "/api/v1/users"))
            .await
            .unwrap();
        assert_eq!((general.allowed, general.remaining), (true, 20 - 11));
        clock.advance(ChronoDuration::seconds(60));
        assert!(limiter.check(&login).await.unwrap().allowed);
        assert_eq!(limiter.health().redis, "disabled");
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.9".parse().unwrap();
        assert_eq!(client_ip(stranger, None, Some("203.0.113.5"), &trusted), stranger);
        assert_eq!(
            client_ip(proxy, None, Some("203.0.113.5, 10.9.9.9"), &trusted).to_string(),
            "203.0.113.5"
        );
        assert_eq!(
            client_ip(
                proxy,
                Some(r#"for=203.0.113.7;proto=https, for="[2001:db8::1]:4711""#),
                None,
                &trusted
            )
            .to_string(),
            "2001:db8::1"
        );
        assert_eq!(client_ip(proxy, None, None, &trusted), proxy);
        assert_eq!(client_ip(proxy, None, Some("garbage"), &trusted), proxy);
    }
}
