//! Tests of the cache.

use chrono::Utc;
use fleet_kit::{clock::ManualClock, events::new_event};
use fleet_proto::events::v1::{LoginSucceeded, UserUpdated};
use uuid::Uuid;

use super::*;

fn cache(clock: &ManualClock) -> ResponseCache {
    ResponseCache::new(CacheSettings::default(), None, Arc::new(clock.clone()))
}

#[test]
fn hex_is_two_lower_case_digits_per_byte() {
    assert_eq!(hex(&[0x00, 0xab, 0x0f, 0xf0, 0xff]), "00ab0ff0ff");
    assert_eq!(hex(&[]), "");
}

fn list_key(cache: &ResponseCache, query: Option<&str>, user: &str, role: &str) -> CacheKey {
    cache
        .key("/api/v1/users", "/api/v1/users", query, Some(user), role)
        .unwrap()
}

async fn fill(cache: &ResponseCache, key: &CacheKey, body: &'static [u8]) {
    let miss = cache.get(key).await.unwrap_err();
    cache.put(key, &miss, Bytes::from_static(body)).await;
}

#[tokio::test]
async fn keys_hold_path_query_caller_and_role_and_expire_with_their_ttl() {
    let clock = ManualClock::new(Utc::now());
    let cache = cache(&clock);
    let a = list_key(&cache, Some("limit=5&q=x"), "alice", "admin");
    assert_eq!(
        a,
        list_key(&cache, Some("q=x&limit=5"), "alice", "admin"),
        "query order is normalized"
    );
    assert_ne!(a, list_key(&cache, Some("limit=5&q=x"), "bob", "admin"));
    assert_ne!(
        a,
        list_key(&cache, Some("limit=5&q=x"), "alice", "user"),
        "a token of another role is another caller"
    );
    assert!(
        cache
            .key("/api/v1/users/me", "/api/v1/users/me", None, Some("alice"), "user")
            .is_none(),
        "not a cacheable route"
    );
    fill(&cache, &a, b"{}").await;
    assert_eq!(cache.get(&a).await.unwrap().ttl_secs, 300);
    clock.advance(chrono::Duration::seconds(301));
    assert!(cache.get(&a).await.is_err());
}

#[test]
fn a_templated_route_keys_on_its_bound_path() {
    let mut settings = CacheSettings::default();
    settings.routes.insert("/api/v1/users/{id}".into(), 60);
    let cache = ResponseCache::new(settings, None, Arc::new(ManualClock::new(Utc::now())));
    let of = |path: &str| {
        cache
            .key("/api/v1/users/{id}", path, None, Some("alice"), "admin")
            .unwrap()
    };
    assert_ne!(of("/api/v1/users/1"), of("/api/v1/users/2"));
}

#[tokio::test]
async fn an_answer_read_before_an_invalidation_is_stale_when_stored_after_it() {
    let clock = ManualClock::new(Utc::now());
    let cache = cache(&clock);
    let key = list_key(&cache, None, "alice", "admin");
    let miss = cache.get(&key).await.unwrap_err();
    // The change's event arrives while the old answer is on its way.
    cache.invalidate("users").await;
    cache.put(&key, &miss, Bytes::from_static(b"old")).await;
    assert!(cache.get(&key).await.is_err());
}

#[tokio::test]
async fn in_redis_too_an_answer_read_before_an_invalidation_is_never_served() {
    if !fleet_kit::testing::backend_available("Redis", "127.0.0.1:6379").await {
        return;
    }
    let settings = CacheSettings {
        key_prefix: format!("fleet-test:{}:", Uuid::now_v7()),
        ..CacheSettings::default()
    };
    let shared = || {
        let link = RedisLink::open("redis://127.0.0.1:6379", Duration::from_secs(2)).unwrap();
        let clock = Arc::new(ManualClock::new(Utc::now()));
        ResponseCache::new(settings.clone(), Some(Arc::new(link)), clock)
    };
    let (one, two) = (shared(), shared());
    let key = list_key(&one, None, "alice", "admin");
    let miss = one.get(&key).await.unwrap_err();
    // The other replica applies the event first.
    two.invalidate("users").await;
    one.put(&key, &miss, Bytes::from_static(b"old")).await;
    assert!(
        two.get(&key).await.is_err(),
        "stored under the generation its lookup saw"
    );
    // An answer looked up now is shared.
    let miss = two.get(&key).await.unwrap_err();
    two.put(&key, &miss, Bytes::from_static(b"new")).await;
    assert_eq!(shared().get(&key).await.unwrap().body, Bytes::from_static(b"new"));
}

#[tokio::test]
async fn after_missing_events_a_replica_serves_no_shared_entry_looked_up_before() {
    if !fleet_kit::testing::backend_available("Redis", "127.0.0.1:6379").await {
        return;
    }
    let mut settings = CacheSettings {
        key_prefix: format!("fleet-test:{}:", Uuid::now_v7()),
        ..CacheSettings::default()
    };
    settings.routes.insert("/api/v1/stats/user".into(), 3600);
    let clock = ManualClock::new(Utc::now());
    let replica = || {
        let link = RedisLink::open("redis://127.0.0.1:6379", Duration::from_secs(2)).unwrap();
        ResponseCache::new(settings.clone(), Some(Arc::new(link)), Arc::new(clock.clone()))
    };
    let (one, two) = (replica(), replica());
    let key = one
        .key("/api/v1/stats/user", "/api/v1/stats/user", None, Some("bob"), "user")
        .unwrap();
    let miss = one.get(&key).await.unwrap_err();
    one.put(&key, &miss, Bytes::from_static(b"before")).await;
    assert!(two.get(&key).await.is_ok(), "shared");

    // The broker went away: an event about bob (a tag no replica can
    // name afterwards) was missed by every replica.
    clock.advance(chrono::Duration::seconds(5));
    let fresh = replica();
    fresh.missed_events().await;
    assert!(fresh.get(&key).await.is_err(), "looked up before it caught up");
    let miss = fresh.get(&key).await.unwrap_err();
    fresh.put(&key, &miss, Bytes::from_static(b"after")).await;
    assert_eq!(replica().get(&key).await.unwrap().body, Bytes::from_static(b"after"));
}

#[tokio::test]
async fn user_events_empty_the_users_tag() {
    let clock = ManualClock::new(Utc::now());
    let cache = cache(&clock);
    let key = list_key(&cache, None, "alice", "user");
    fill(&cache, &key, b"{}").await;
    let login = new_event(
        "auth",
        Some(Uuid::now_v7()),
        Utc::now(),
        Payload::LoginSucceeded(LoginSucceeded::default()),
    );
    cache.apply(&login).await;
    assert!(cache.get(&key).await.is_ok(), "a login does not change the users list");
    let updated = new_event(
        "users",
        Some(Uuid::now_v7()),
        Utc::now(),
        Payload::UserUpdated(UserUpdated::default()),
    );
    assert_eq!(tags_of(&updated)[0], "users");
    cache.apply(&updated).await;
    assert!(cache.get(&key).await.is_err());
}

#[tokio::test]
async fn stats_go_stale_with_their_subjects_events_whoever_asked() {
    let clock = ManualClock::new(Utc::now());
    let cache = cache(&clock);
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let stats = |query: Option<&str>, caller: Uuid, role| {
        let caller = caller.to_string();
        cache
            .key("/api/v1/stats/user", "/api/v1/stats/user", query, Some(&caller), role)
            .unwrap()
    };
    let own = stats(None, bob, "user");
    let bobs_by_admin_query = format!("user_id={bob}");
    let by_admin = stats(Some(&bobs_by_admin_query), alice, "admin");
    let admins_own = stats(None, alice, "admin");
    for key in [&own, &by_admin, &admins_own] {
        fill(&cache, key, b"{}").await;
    }
    let projected = new_event(
        "stats",
        Some(bob),
        Utc::now(),
        Payload::StatsProjected(fleet_proto::events::v1::StatsProjected { events: 1 }),
    );
    cache.apply(&projected).await;
    assert!(cache.get(&own).await.is_err(), "bob's own figures");
    assert!(
        cache.get(&by_admin).await.is_err(),
        "bob's figures as an admin read them"
    );
    assert!(cache.get(&admins_own).await.is_ok(), "the admin's own figures stay");
}
