//! The response cache through the gateway: hits, per-caller keys, and
//! invalidation by events on one gateway and on two sharing Redis.

use std::time::{Duration, Instant};

use fleet_kit::testing::backend_available;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Answer, Api, Fleet, PATIENT_REDIS, Proto, broker_names};

async fn list(api: &Api<'_>, token: &str) -> Answer {
    api.call(Method::GET, "/api/v1/users?limit=10", Some(token), None).await
}

fn names(answer: &Answer) -> Vec<String> {
    answer.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["display_name"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until a gateway has applied `n` tag invalidations (a sign-up or a
/// change makes two: the `users` tag and the user's own): an answer stored
/// before they arrive is rightly dropped when they do.
async fn invalidations_applied(api: &Api<'_>, n: u64) {
    let started = Instant::now();
    loop {
        let health = api.call(Method::GET, "/health/cache", None, None).await;
        if health.body["cache"]["invalidations"].as_u64().unwrap_or(0) >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the events never reached the gateway: {}",
            health.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_repeated_list_is_a_hit_and_no_caller_gets_anothers_answer() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http2);
    let (_, ada) = api.signed_in("ada@example.com", "Ada").await;
    let (_, bob) = api.signed_in("bob@example.com", "Bob").await;

    let first = list(&api, &ada).await;
    assert_eq!(first.header("cache-status"), Some("fleet; fwd=miss; stored"));
    let second = list(&api, &ada).await;
    assert!(
        second
            .header("cache-status")
            .is_some_and(|s| s.starts_with("fleet; hit")),
        "{:?}",
        second.headers
    );
    assert_eq!(second.body, first.body);

    // Each caller sees its own email in the list, never the other's answer.
    let bobs = list(&api, &bob).await;
    assert_eq!(bobs.header("cache-status"), Some("fleet; fwd=miss; stored"));
    let email_of = |answer: &Answer, name: &str| {
        answer.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["display_name"] == name)
            .unwrap()["email"]
            .clone()
    };
    assert_eq!(email_of(&second, "Ada"), "ada@example.com");
    assert!(email_of(&second, "Bob").is_null());
    assert_eq!(email_of(&bobs, "Bob"), "bob@example.com");
    assert!(email_of(&bobs, "Ada").is_null());
    let again = list(&api, &bob).await;
    assert_eq!(email_of(&again, "Bob"), "bob@example.com");

    let metrics = fleet.metrics().await;
    assert!(
        metrics.contains(r#"cache_hits_total{cache_key="/api/v1/users"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cache_misses_total{cache_key="/api/v1/users"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("events_published_total"), "{metrics}");
    let health = api.call(Method::GET, "/health/cache", None, None).await;
    assert!(health.body["cache"]["hits"].as_u64().unwrap() >= 2, "{}", health.body);

    // A change empties the list at once (embedded: the in-process bus).
    let rename = json!({"display_name": "Ada L."});
    assert_eq!(
        api.call(Method::PATCH, "/api/v1/users/me", Some(&ada), Some(rename))
            .await
            .status,
        200
    );
    let fresh = wait_for_name(&api, &ada, "Ada L.").await;
    assert!(fresh < Duration::from_secs(1), "took {fresh:?}");
}

async fn wait_for_name(api: &Api<'_>, token: &str, name: &str) -> Duration {
    let started = Instant::now();
    loop {
        let answer = list(api, token).await;
        if names(&answer).iter().any(|n| n == name) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the list stayed stale: {:?}",
            names(&answer)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_gateways_share_redis_and_both_are_fresh_within_a_second_after_a_change() {
    if !backend_available("Redis", "127.0.0.1:6379").await || !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let exchange = format!("fleet.test.{id}");
    let _names = broker_names(&exchange);
    let dead = format!("fleet.test.{id}.dead");
    let prefix = format!("fleet-test:{id}:");
    let shared = [
        ("FLEET_REDIS_URL", "redis://127.0.0.1:6379"),
        ("FLEET_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        ("FLEET_EVENTS__EXCHANGE", exchange.as_str()),
        ("FLEET_EVENTS__DEAD_LETTER_EXCHANGE", dead.as_str()),
        ("FLEET_GATEWAY__CACHE__KEY_PREFIX", prefix.as_str()),
        PATIENT_REDIS,
    ];
    let one = Fleet::start_with(&shared).await;
    let two = Fleet::gateway_for(&one, &shared).await;
    let (a, b) = (Api::new(&one, Proto::Http1), Api::new(&two, Proto::Http1));
    let (_, ada) = a.signed_in("ada@example.com", "Ada").await;
    invalidations_applied(&a, 2).await;
    invalidations_applied(&b, 2).await;

    assert_eq!(
        list(&a, &ada).await.header("cache-status"),
        Some("fleet; fwd=miss; stored")
    );
    let shared_hit = list(&b, &ada).await;
    assert!(
        shared_hit
            .header("cache-status")
            .is_some_and(|s| s.starts_with("fleet; hit")),
        "the second gateway finds the first one's entry in Redis: {:?}",
        shared_hit.headers
    );

    let rename = json!({"display_name": "Ada L."});
    assert_eq!(
        a.call(Method::PATCH, "/api/v1/users/me", Some(&ada), Some(rename))
            .await
            .status,
        200
    );
    let (on_one, on_two) = (
        wait_for_name(&a, &ada, "Ada L.").await,
        wait_for_name(&b, &ada, "Ada L.").await,
    );
    assert!(
        on_one < Duration::from_secs(1) && on_two < Duration::from_secs(1),
        "{on_one:?} {on_two:?}"
    );
}

#[tokio::test]
async fn concurrent_misses_on_one_key_make_a_single_upstream_call() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http2);
    let (_, ada) = api.signed_in("ada@example.com", "Ada").await;
    let answers = futures::future::join_all((0..16).map(|_| list(&api, &ada))).await;
    let stored = answers
        .iter()
        .filter(|a| a.header("cache-status") == Some("fleet; fwd=miss; stored"))
        .count();
    let hits = answers
        .iter()
        .filter(|a| a.header("cache-status").is_some_and(|s| s.starts_with("fleet; hit")))
        .count();
    assert_eq!(
        (stored, hits),
        (1, 15),
        "one request went upstream, the others waited for its answer"
    );
    let metrics = fleet.metrics().await;
    assert!(
        metrics.contains(r#"cache_misses_total{cache_key="/api/v1/users"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cache_hits_total{cache_key="/api/v1/users"} 15"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_templated_route_is_cached_per_id_in_its_path() {
    // (Keys also hold the caller's role: see the gateway's unit tests. A token
    // of an old role is revoked when the role changes, so the edge cannot
    // show it for long.)
    let fleet = Fleet::start_with(&[("FLEET_GATEWAY__CACHE__ROUTES__/api/v1/users/{id}", "60")]).await;
    let api = Api::new(&fleet, Proto::Http2);
    let (ada, _) = api.signed_in("ada@example.com", "Ada").await;
    let (bob, _) = api.signed_in("bob@example.com", "Bob").await;
    assert!(fleet.command(&["user", "promote", "ada@example.com"]).status.success());
    let ada_admin = api.login("ada@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Two sign-ups and the promotion: nothing to drop what is stored below.
    invalidations_applied(&api, 6).await;

    let get = |id: &Value| {
        let path = format!("/api/v1/users/{}", id["id"].as_str().unwrap());
        let token = ada_admin.clone();
        let api = &api;
        async move { api.call(Method::GET, &path, Some(&token), None).await }
    };
    let first = get(&bob).await;
    assert_eq!(first.header("cache-status"), Some("fleet; fwd=miss; stored"));
    assert_eq!(first.body["email"], "bob@example.com");
    let second = get(&ada).await;
    assert_eq!(second.header("cache-status"), Some("fleet; fwd=miss; stored"));
    assert_eq!(second.body["email"], "ada@example.com");
    assert!(
        get(&bob)
            .await
            .header("cache-status")
            .is_some_and(|s| s.starts_with("fleet; hit"))
    );
}
