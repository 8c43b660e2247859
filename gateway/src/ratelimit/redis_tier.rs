//! The limiter's shared tier: every replica's decisions made in Redis, by
//! one script call per request, or on a Redis Cluster one per slot that
//! the request's buckets occupy.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use redis::Script;

use super::{Bucket, Decision, FIGURES, REDIS_RETRY_AFTER_MS, RateLimiter, combine};
use crate::redis_link::{RedisConnection, RedisLink};

/// The same GCRA as [`super::gcra`], for all of a request's buckets at once, on
/// Redis's clock; nothing is consumed unless every bucket allows. Each
/// bucket asks for up to `want` requests at once (a lease) and takes as many
/// as fit, at least one. Per bucket it answers: allowed, remaining, reset
/// and retry-after (microseconds), and how many it took.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local updates = {}
local all = true
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 * i - 2])
  local period = tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  local interval = math.max(math.floor(period / limit), 1)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local fit = math.floor((now + period - tat) / interval)
  local take = math.min(want, fit)
  if take < 1 then
    all = false
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = tat - now
    out[#out + 1] = tat + interval - period - now
    out[#out + 1] = 0
  else
    local new_tat = tat + take * interval
    out[#out + 1] = 1
    out[#out + 1] = math.floor((period - (new_tat - now)) / interval)
    out[#out + 1] = new_tat - now
    out[#out + 1] = 0
    out[#out + 1] = take
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

/// Gives a bucket back what a call took (`ARGV[1]` microseconds of its
/// theoretical arrival time), keeping its expiry.
const GIVE_BACK_SCRIPT: &str = r"
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('SET', KEYS[1], tat - tonumber(ARGV[1]), 'PX', ttl)
  end
end
return 0
";

/// A request's buckets grouped by their keys' hash tags (the part in
/// braces): on a Redis Cluster, the keys of one call must share a slot.
fn slot_groups(buckets: &[Bucket]) -> Vec<Vec<&Bucket>> {
    let mut groups: Vec<(&str, Vec<&Bucket>)> = Vec::new();
    for bucket in buckets {
        let tag = hash_tag(&bucket.key);
        match groups.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, group)) => group.push(bucket),
            None => groups.push((tag, vec![bucket])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// What Redis Cluster hashes of `key`: the text between its first `{` and
/// the next `}` when that is not empty, else the whole key.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}').filter(|close| *close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key)
}

pub(super) struct RedisTier {
    pub(super) link: Arc<RedisLink>,
    script: Script,
    give_back: Script,
    pub(super) failed_at_ms: AtomicI64,
}

impl RedisTier {
    pub(super) fn new(link: Arc<RedisLink>) -> Self {
        Self {
            link,
            script: Script::new(GCRA_SCRIPT),
            give_back: Script::new(GIVE_BACK_SCRIPT),
            failed_at_ms: AtomicI64::new(i64::MIN),
        }
    }
}

impl RateLimiter {
    /// `None` when Redis is not configured, failing, or resting after a failure.
    pub(super) async fn check_redis(&self, buckets: &[Bucket], lease: bool) -> Option<Decision> {
        let tier = self.redis.as_ref()?;
        let now = self.clock.now().timestamp_millis();
        if !tier.link.is_up() && now.saturating_sub(tier.failed_at_ms.load(Ordering::Relaxed)) < REDIS_RETRY_AFTER_MS {
            return None;
        }
        match self.invoke(tier, buckets, lease).await {
            Ok(figures) => {
                let decisions = buckets
                    .iter()
                    .zip(figures.chunks(FIGURES))
                    .map(|(bucket, f)| figures_decision(bucket, f));
                // Figures stop short after a bucket that refused.
                let all_allowed =
                    figures.len() == buckets.len() * FIGURES && figures.chunks(FIGURES).all(|f| f[0] == 1);
                if all_allowed {
                    self.keep_leases(buckets, &figures);
                }
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

    /// Runs the script; `lease`: draw each bucket's lease, not one request.
    /// On a Redis Cluster, buckets in different slots are drawn by one call
    /// per slot, in order; when one refuses, what the calls before it took
    /// is given back, so that nothing is consumed unless every bucket
    /// allows, as in one call. The figures are in `buckets`' order, and stop
    /// short after a refusal.
    async fn invoke(&self, tier: &RedisTier, buckets: &[Bucket], lease: bool) -> anyhow::Result<Vec<i64>> {
        let mut connection = tier.link.connection().await?;
        let groups = if tier.link.is_cluster() {
            slot_groups(buckets)
        } else {
            vec![buckets.iter().collect()]
        };
        let mut figures = Vec::with_capacity(buckets.len() * FIGURES);
        let mut taken: Vec<(&Bucket, i64)> = Vec::new();
        for group in groups {
            let mut invocation = tier.script.prepare_invoke();
            for bucket in &group {
                let want = if lease { self.lease_size(bucket.quota) } else { 1 };
                invocation
                    .key(self.redis_key(bucket))
                    .arg(bucket.quota.limit.max(1))
                    .arg(bucket.quota.period_us())
                    .arg(want);
            }
            let answer: redis::RedisResult<Vec<i64>> = invocation.invoke_async(&mut connection).await;
            tier.link.report(&answer);
            let answer = match answer {
                Ok(answer) => answer,
                Err(err) => {
                    self.give_back(tier, &mut connection, &taken).await;
                    return Err(err.into());
                }
            };
            anyhow::ensure!(
                answer.len() == group.len() * FIGURES,
                "unexpected answer from the rate-limit script"
            );
            let allowed = answer.chunks(FIGURES).all(|f| f[0] == 1);
            taken.extend(group.iter().zip(answer.chunks(FIGURES)).map(|(b, f)| (*b, f[4])));
            figures.extend(group.iter().zip(answer.chunks(FIGURES)).map(|(b, f)| (*b, f.to_vec())));
            if !allowed {
                self.give_back(tier, &mut connection, &taken).await;
                break;
            }
        }
        // Back into the buckets' order.
        let mut ordered = Vec::with_capacity(figures.len() * FIGURES);
        for bucket in buckets {
            if let Some((_, f)) = figures.iter().find(|(b, _)| std::ptr::eq(*b, bucket)) {
                ordered.extend_from_slice(f);
            }
        }
        Ok(ordered)
    }

    fn redis_key(&self, bucket: &Bucket) -> String {
        format!("{}{}", self.settings.key_prefix, bucket.key)
    }

    /// Returns what earlier calls took (a refusal later, or a failure).
    async fn give_back(&self, tier: &RedisTier, connection: &mut RedisConnection, taken: &[(&Bucket, i64)]) {
        for (bucket, took) in taken.iter().filter(|(_, took)| *took > 0) {
            let interval = (bucket.quota.period_us() / i64::from(bucket.quota.limit.max(1))).max(1);
            let returned: redis::RedisResult<()> = tier
                .give_back
                .key(self.redis_key(bucket))
                .arg(took * interval)
                .invoke_async(connection)
                .await;
            tier.link.report(&returned);
        }
    }
}

/// One bucket's figures from the script.
/// What was drawn beyond the request itself counts as remaining.
pub(super) fn figures_decision(bucket: &Bucket, f: &[i64]) -> Decision {
    let secs = |us: i64| u64::try_from((us + 999_999) / 1_000_000).unwrap_or(0);
    Decision {
        allowed: f[0] == 1,
        quota: bucket.quota,
        remaining: u32::try_from(f[1] + (f[4] - 1).max(0)).unwrap_or(0),
        reset_secs: secs(f[2]),
        retry_after_secs: secs(f[3]),
    }
}
