//! The stats service through the gateway: the activity log built from the
//! fleet's events, its figures, who may read them, and a cache that is never
//! staler than the last event.

use std::time::{Duration, Instant};

use fleet_kit::testing::{TcpRelay, TestBackend, backend_available, database};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, Fleet, PATIENT_REDIS, Proto, assert_problem, broker_names};

/// How long figures may take to follow the events on a healthy backbone.
const SETTLES: Duration = Duration::from_secs(15);

/// Reads `path` until `done` holds, boundedly; the last answer.
pub async fn until(api: &Api<'_>, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    until_within(api, path, token, SETTLES, done).await
}

/// Reads `path` until `done` holds or `within` has passed; the last answer.
async fn until_within(
    api: &Api<'_>,
    path: &str,
    token: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let answer = api.call(Method::GET, path, Some(token), None).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        if done(&answer.body) {
            return answer.body;
        }
        assert!(started.elapsed() < within, "{path} never settled: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn token_of(login: &Value) -> String {
    login["access_token"].as_str().unwrap().to_string()
}

/// A registration, a failed and two good logins, and a logout of the first
/// session; then the three endpoints answer exactly.
async fn a_day_in_the_life(api: &Api<'_>) -> (Value, String) {
    let ada = api.register("ada@example.com", "Ada").await;
    let wrong = json!({"email": "ada@example.com", "password": "not the password at all"});
    let refused = api.call(Method::POST, "/api/v1/auth/login", None, Some(wrong)).await;
    assert_eq!(refused.status, 401);
    let first = token_of(&api.login("ada@example.com").await);
    let token = token_of(&api.login("ada@example.com").await);
    let out = api.call(Method::POST, "/api/v1/auth/logout", Some(&first), None).await;
    assert_eq!(out.status, 204);

    // user.created, auth.login_failed, 2 × (auth.login_succeeded +
    // session.created), session.revoked.
    let user = until(api, "/api/v1/stats/user", &token, |s| s["events_total"] == 7).await;
    assert_eq!(user["user_id"], ada["id"]);
    assert_eq!(
        (
            &user["logins_total"],
            &user["failed_logins_total"],
            &user["active_sessions"],
            &user["account_age_days"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(0)),
        "{user}"
    );
    assert!(user["last_login_at"].is_string(), "{user}");
    let keys: Vec<&String> = user.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "exactly the spec's fields: {user}");

    let activity = api
        .call(Method::GET, "/api/v1/stats/activity?limit=100", Some(&token), None)
        .await;
    assert_eq!(activity.status, 200);
    let items = activity.body["items"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 7, "{}", activity.body);
    assert_eq!(kinds[0], "session.revoked", "newest first");
    assert_eq!(kinds[6], "user.created");
    assert_eq!(kinds.iter().filter(|k| **k == "auth.login_succeeded").count(), 2);
    let failed = items.iter().find(|i| i["kind"] == "auth.login_failed").unwrap();
    assert!(failed["details"].is_object() && failed["ip"] == "127.0.0.1", "{failed}");
    assert!(
        failed["details"]["consecutive_failures"].is_u64(),
        "a whole number: {failed}"
    );
    for item in items {
        for field in ["id", "kind", "occurred_at", "ip", "user_agent", "details"] {
            assert!(!item[field].is_null(), "{field} in {item}");
        }
    }
    assert!(activity.body["next_cursor"].is_null());
    let daily: u64 = activity.body["daily"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["count"].as_u64().unwrap())
        .sum();
    assert_eq!(daily, 7);

    let sessions = api
        .call(Method::GET, "/api/v1/stats/sessions", Some(&token), None)
        .await;
    assert_eq!(sessions.status, 200);
    assert_eq!(
        (
            &sessions.body["active"],
            &sessions.body["total"],
            &sessions.body["revoked"]
        ),
        (&json!(1), &json!(2), &json!(1)),
        "{}",
        sessions.body
    );
    assert!(sessions.body["average_duration_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(sessions.body["by_user_agent"][0]["count"], 2, "{}", sessions.body);
    (ada, token)
}

#[tokio::test]
async fn the_activity_log_and_its_figures_through_fleet_run() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http2);
    let (ada, token) = a_day_in_the_life(&api).await;
    let metrics = fleet.metrics().await;
    for line in [
        "stats_entries_written_total 7",
        "stats_duplicates_skipped_total 0",
        r#"events_consumer_lag_seconds{consumer="stats"} "#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }

    // Cached, and fresh again once a new event is projected.
    // (A read may still miss while the last notices arrive; then one hits.)
    let mut hit = false;
    for _ in 0..50 {
        let again = api.call(Method::GET, "/api/v1/stats/user", Some(&token), None).await;
        if again.header("cache-status").is_some_and(|s| s.contains("hit")) {
            hit = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hit, "a second read of settled figures is a cache hit");
    api.login("ada@example.com").await;
    until(&api, "/api/v1/stats/user", &token, |s| s["logins_total"] == 3).await;

    // Bad input is a 400 naming the fields.
    let bad = api
        .call(
            Method::GET,
            "/api/v1/stats/activity?from=yesterday&limit=0&cursor=%25",
            Some(&token),
            None,
        )
        .await;
    assert_problem(&bad, 400);
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["from", "limit", "cursor"], "{}", bad.body);
    let backwards = api
        .call(
            Method::GET,
            "/api/v1/stats/activity?from=2027-01-02T00:00:00Z&to=2027-01-01T00:00:00Z",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(backwards.body, json!({"items": [], "next_cursor": null, "daily": []}));

    // Another user's figures: 403, unless an administrator asks.
    let (_, bob) = api.signed_in("bob@example.com", "Bob").await;
    let ada_id = ada["id"].as_str().unwrap();
    let of_ada = format!("/api/v1/stats/user?user_id={ada_id}");
    assert_problem(&api.call(Method::GET, &of_ada, Some(&bob), None).await, 403);
    assert_problem(
        &api.call(Method::GET, "/api/v1/stats/overview", Some(&bob), None).await,
        403,
    );
    let promoted = fleet.command(&["user", "promote", "bob@example.com"]);
    assert!(promoted.status.success());
    let admin = token_of(&api.login("bob@example.com").await);
    let read = until(&api, &of_ada, &admin, |s| s["logins_total"] == 3).await;
    assert_eq!(read["user_id"], ada["id"]);
    let overview = api
        .call(Method::GET, "/api/v1/stats/overview", Some(&admin), None)
        .await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert_eq!(overview.body["users_total"], 2, "{}", overview.body);
    assert_eq!(overview.body["active_users_1d"], 2, "{}", overview.body);

    // Erasure: a deleted account's activity goes, on every cached read too.
    let deleted = api
        .call(Method::DELETE, &format!("/api/v1/users/{ada_id}"), Some(&admin), None)
        .await;
    assert_eq!(deleted.status, 204);
    until(&api, &of_ada, &admin, |s| s["events_total"] == 0).await;
}

#[tokio::test]
async fn split_processes_on_postgresql_and_rabbitmq_count_the_same() {
    if !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let Some(db) = database(TestBackend::Postgres).await else {
        return;
    };
    // Users, auth, stats and the gateway each in a process of their own;
    // stats consumes its own durable queue.
    let split = Fleet::split(&[("FLEET_DATABASE_URL", db.url.as_str())]).await;
    let api = Api::new(&split.gateway, Proto::Http1);
    a_day_in_the_life(&api).await;
    let log = split.stats.log();
    assert!(!log.contains("\"ERROR\""), "stats logged errors: {log}");
}

#[tokio::test]
async fn with_rabbitmq_cut_events_wait_and_the_figures_catch_up_exactly() {
    if !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let relay = TcpRelay::start("127.0.0.1:5672").await;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", relay.port);
    let exchange = format!("fleet.test.{}", uuid::Uuid::now_v7().simple());
    let _names = broker_names(&exchange);
    let (dead, queue) = (format!("{exchange}.dead"), format!("{exchange}.stats"));
    let fleet = Fleet::start_with(&[
        ("FLEET_AMQP_URL", url.as_str()),
        ("FLEET_EVENTS__EXCHANGE", exchange.as_str()),
        ("FLEET_EVENTS__DEAD_LETTER_EXCHANGE", dead.as_str()),
        ("FLEET_STATS__QUEUE", queue.as_str()),
    ])
    .await;
    let api = Api::new(&fleet, Proto::Http1);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    // user.created, auth.login_succeeded, session.created.
    until(&api, "/api/v1/stats/user", &token, |s| s["events_total"] == 3).await;

    relay.set_cut(true);
    api.login("ada@example.com").await;
    api.login("ada@example.com").await;
    let wrong = json!({"email": "ada@example.com", "password": "not the password at all"});
    assert_eq!(
        api.call(Method::POST, "/api/v1/auth/login", None, Some(wrong))
            .await
            .status,
        401
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = api.call(Method::GET, "/api/v1/stats/user", Some(&token), None).await;
    assert_eq!(
        waiting.body["events_total"], 3,
        "nothing reached stats: {}",
        waiting.body
    );

    relay.set_cut(false);
    // The outbox relay and the consumer each back off while the broker is
    // away, doubling up to 5 s; on a loaded machine the logins above can
    // keep the cut long enough for either to sleep past it. Catching up is
    // what is asserted, within both backoffs' cap.
    let reconnected = 2 * Duration::from_secs(5) + SETTLES;
    let user = until_within(&api, "/api/v1/stats/user", &token, reconnected, |s| {
        s["events_total"] == 8
    })
    .await;
    assert_eq!(
        (&user["logins_total"], &user["failed_logins_total"]),
        (&json!(3), &json!(1)),
        "{user}"
    );
    // And it stays exact: nothing is counted twice once the backlog is sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = until(&api, "/api/v1/stats/user", &token, |_| true).await;
    assert_eq!(settled["events_total"], 8, "{settled}");
}

#[tokio::test]
async fn a_login_empties_the_cached_figures_on_two_gateways_sharing_redis() {
    if !backend_available("Redis", "127.0.0.1:6379").await || !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let exchange = format!("fleet.test.{id}");
    let _names = broker_names(&exchange);
    let (dead, queue, prefix) = (
        format!("{exchange}.dead"),
        format!("{exchange}.stats"),
        format!("fleet-test:{id}:"),
    );
    let shared = [
        ("FLEET_REDIS_URL", "redis://127.0.0.1:6379"),
        ("FLEET_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        ("FLEET_EVENTS__EXCHANGE", exchange.as_str()),
        ("FLEET_EVENTS__DEAD_LETTER_EXCHANGE", dead.as_str()),
        ("FLEET_STATS__QUEUE", queue.as_str()),
        ("FLEET_GATEWAY__CACHE__KEY_PREFIX", prefix.as_str()),
        PATIENT_REDIS,
    ];
    let one = Fleet::start_with(&shared).await;
    let two = Fleet::gateway_for(&one, &shared).await;
    let (a, b) = (Api::new(&one, Proto::Http1), Api::new(&two, Proto::Http1));
    let (_, ada) = a.signed_in("ada@example.com", "Ada").await;
    until(&a, "/api/v1/stats/user", &ada, |s| s["logins_total"] == 1).await;
    // Settled on both, then cached and shared through Redis.
    until(&b, "/api/v1/stats/user", &ada, |s| s["logins_total"] == 1).await;
    let mut shared_hit = false;
    for _ in 0..50 {
        let read = b.call(Method::GET, "/api/v1/stats/user", Some(&ada), None).await;
        if read.header("cache-status").is_some_and(|s| s.starts_with("fleet; hit")) {
            shared_hit = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(shared_hit, "settled figures are served from the cache");

    a.login("ada@example.com").await;
    until(&a, "/api/v1/stats/user", &ada, |s| s["logins_total"] == 2).await;
    until(&b, "/api/v1/stats/user", &ada, |s| s["logins_total"] == 2).await;
}
