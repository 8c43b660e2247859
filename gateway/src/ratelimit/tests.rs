//! Tests of the rate limiter.

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

fn leasing_limiter(prefix: &str, clock: &ManualClock, limit: u32) -> RateLimiter {
    let settings = RateLimitSettings {
        user: Quota { limit, period_secs: 60 },
        key_prefix: prefix.to_string(),
        ..RateLimitSettings::default()
    };
    // A deadline a loaded test machine meets: at production's 250 ms a
    // slow call falls back to this replica's own state, which is right
    // in production and a false failure here.
    let link = Arc::new(RedisLink::open("redis://127.0.0.1:6379", std::time::Duration::from_secs(2)).unwrap());
    RateLimiter::new(settings, Some(link), Arc::new(clock.clone()))
}

#[tokio::test]
async fn high_quotas_are_drawn_ahead_and_never_exceeded_small_ones_never() {
    if !fleet_kit::testing::backend_available("Redis", "127.0.0.1:6379").await {
        return;
    }
    let prefix = format!("fleet-test:{}:", uuid::Uuid::now_v7().simple());
    let clock = ManualClock::new(Utc::now());
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    // 1% of 1000 a minute: ten at a time, one round trip per ten.
    let one = leasing_limiter(&prefix, &clock, 1000);
    let ada = one.buckets(Some("ada"), ip, "/api/v1/users");
    let first = one.check(&ada).await.unwrap();
    assert_eq!((first.allowed, first.remaining), (true, 999));
    for expected in (990..999).rev() {
        let next = one.check(&ada).await.unwrap();
        assert_eq!((next.allowed, next.remaining), (true, expected));
    }
    assert_eq!(one.health().leased_decisions, 9);
    let eleventh = one.check(&ada).await.unwrap();
    assert_eq!((eleventh.allowed, eleventh.remaining), (true, 989));
    assert_eq!(one.health().leased_decisions, 9, "the eleventh went to Redis");

    // A second replica shares the budget: whatever the first drew and
    // left unused is lost, never handed out twice.
    let two = leasing_limiter(&prefix, &clock, 1000);
    let mut allowed = 0;
    for _ in 0..1000 {
        if two.check(&ada).await.unwrap().allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 1000 - 20, "the first replica drew 20");
    // The first replica's nine unused draws still serve it, then Redis refuses.
    for _ in 0..9 {
        assert!(one.check(&ada).await.unwrap().allowed);
    }
    let refused = one.check(&ada).await.unwrap();
    assert!(!refused.allowed && refused.retry_after_secs >= 1, "{refused:?}");

    // Draws expire: a second later they are gone.
    let bob = one.buckets(Some("bob"), ip, "/api/v1/users");
    assert!(one.check(&bob).await.unwrap().allowed);
    let leased = one.health().leased_decisions;
    clock.advance(ChronoDuration::milliseconds(LEASE_MILLIS + 1));
    assert!(one.check(&bob).await.unwrap().allowed);
    assert_eq!(one.health().leased_decisions, leased, "an expired draw is not used");

    // Default quotas are decided in Redis one request at a time, and so
    // is any request with such a bucket (here the login route's).
    let exact = leasing_limiter(&prefix, &clock, 100);
    let cy = exact.buckets(Some("cy"), ip, "/api/v1/users");
    for _ in 0..5 {
        exact.check(&cy).await.unwrap();
    }
    let login = one.buckets(None, ip, "/api/v1/auth/login");
    for _ in 0..3 {
        one.check(&login).await.unwrap();
    }
    assert_eq!(exact.health().leased_decisions, 0);
    assert_eq!(one.health().leased_decisions, leased);
}

#[tokio::test]
async fn concurrent_requests_at_a_leases_end_draw_one_lease_between_them() {
    if !fleet_kit::testing::backend_available("Redis", "127.0.0.1:6379").await {
        return;
    }
    let prefix = format!("fleet-test:{}:", uuid::Uuid::now_v7().simple());
    let clock = ManualClock::new(Utc::now());
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    // 1% of 100 000: a lease is a thousand requests.
    let one = Arc::new(leasing_limiter(&prefix, &clock, 100_000));
    let ada = one.buckets(Some("ada"), ip, "/api/v1/users");
    // Redis decides on its own clock: what refills while the test runs
    // (one request per 600 µs) is allowed for below.
    let started = std::time::Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (limiter, buckets) = (one.clone(), ada.clone());
        requests.spawn(async move { limiter.check(&buckets).await.unwrap().allowed });
    }
    while let Some(allowed) = requests.join_next().await {
        assert!(allowed.unwrap());
    }
    // One request drew the lease; the 19 beside it drew one each, but
    // for those that came after the lease had arrived and were served
    // from it. A second replica's draw sees what they took, not twenty
    // leases.
    let leased = one.health().leased_decisions;
    let singles = 19 - u32::try_from(leased).unwrap();
    let two = leasing_limiter(&prefix, &clock, 100_000);
    let next = two.check(&ada).await.unwrap();
    let refilled = u32::try_from(started.elapsed().as_micros() / 600).unwrap() + 1;
    let expected = 100_000 - 1000 - singles - 1;
    assert!(
        (expected..=expected + refilled).contains(&next.remaining),
        "{} remaining, expected {expected} (+{refilled} refilled)",
        next.remaining
    );
    // And the lease drawn serves the first replica's next requests.
    assert!(one.check(&ada).await.unwrap().allowed);
    assert_eq!(one.health().leased_decisions, leased + 1);
}
