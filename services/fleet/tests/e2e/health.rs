//! The gateway's health endpoints with real figures: readiness, the
//! dependencies (services, PostgreSQL, RabbitMQ, Redis), memory and CPU, and
//! what they say when Redis is cut or a service is gone.

use std::time::{Duration, Instant};

use fleet_kit::testing::{TcpRelay, TestBackend, backend_available, database};
use reqwest::Method;
use serde_json::Value;

use crate::harness::{Answer, Api, DEAD_UPSTREAM, Fleet, Proto};

/// Probes every second, so that tests see changes quickly.
const FAST_PROBES: (&str, &str) = ("FLEET_GATEWAY__HEALTH__PROBE_INTERVAL_SECS", "1");

async fn health(api: &Api<'_>, path: &str) -> Answer {
    let answer = api.call(Method::GET, path, None, None).await;
    assert_eq!(answer.header("content-type"), Some("application/json"), "{path}");
    answer
}

/// Polls `path` until `accept` holds (probes run in the background).
async fn until(api: &Api<'_>, path: &str, accept: impl Fn(&Answer) -> bool) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = health(api, path).await;
        if accept(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never got there: {} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn dependency<'a>(external: &'a Answer, name: &str) -> &'a Value {
    &external.body["dependencies"][name]
}

fn assert_up(external: &Answer, name: &str, kind: &str) {
    let report = dependency(external, name);
    assert_eq!(report["status"], "up", "{name}: {}", external.body);
    assert_eq!(report["kind"], kind, "{name}");
    assert!(report["latency_ms"].as_f64().unwrap() > 0.0, "{name}: {report}");
    let checked = report["checked_at"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(checked).unwrap();
    assert!(report.get("error").is_none(), "{report}");
}

#[tokio::test]
async fn every_health_endpoint_answers_with_real_figures() {
    let fleet = Fleet::start_with(&[FAST_PROBES]).await;
    let api = Api::new(&fleet, Proto::Http1);

    let ready = until(&api, "/health/ready", |a| a.status == 200).await;
    assert_eq!(ready.body["status"], "ok");

    // Both services answer by now, but the round that said so may be the next one.
    let external = until(&api, "/health/external", |a| a.body["status"] == "ok").await;
    assert_eq!(external.status, 200);
    assert_up(&external, "auth", "service");
    assert_up(&external, "users", "service");
    assert_up(&external, "stats", "service");
    assert_up(&external, "transfer", "service");
    assert_up(&external, "notify", "service");
    // Embedded defaults: no PostgreSQL, RabbitMQ or Redis to probe.
    assert_eq!(
        external.body["dependencies"].as_object().unwrap().len(),
        5,
        "{}",
        external.body
    );

    let memory = health(&api, "/health/memory").await;
    assert_eq!(memory.status, 200);
    let rss = memory.body["process"]["rss_bytes"].as_u64().unwrap();
    assert!(rss > 4 << 20, "a fleet process uses megabytes: {rss}");
    assert!(memory.body["process"]["virtual_bytes"].as_u64().unwrap() >= rss);
    let total = memory.body["system"]["total_bytes"].as_u64().unwrap();
    let available = memory.body["system"]["available_bytes"].as_u64().unwrap();
    assert!(total > rss && available > 0 && available <= total, "{}", memory.body);
    assert!(memory.body["cache"]["local_entries"].is_u64());
    assert!(["ok", "degraded"].contains(&memory.body["status"].as_str().unwrap()));

    let cpu = health(&api, "/health/cpu").await;
    assert_eq!(cpu.status, 200);
    assert!(cpu.body["cores"].as_u64().unwrap() >= 1);
    assert!(cpu.body["process"]["cpu_percent"].as_f64().unwrap() >= 0.0);
    for window in ["one", "five", "fifteen"] {
        assert!(
            cpu.body["load_average"][window].as_f64().unwrap() >= 0.0,
            "{}",
            cpu.body
        );
    }

    let cache = health(&api, "/health/cache").await;
    assert_eq!(cache.body["status"], "ok");
    assert_eq!(cache.body["redis"]["status"], "disabled");

    let metrics = fleet.metrics().await;
    for line in [r#"backend_up{backend="auth"} 1"#, r#"backend_up{backend="users"} 1"#] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn the_backends_are_probed_and_a_redis_cut_degrades_the_cache_but_not_readiness() {
    if !backend_available("Redis", "127.0.0.1:6379").await || !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let Some(db) = database(TestBackend::Postgres).await else {
        return;
    };
    let relay = TcpRelay::start("127.0.0.1:6379").await;
    let redis = format!("redis://127.0.0.1:{}", relay.port);
    let fleet = Fleet::start_with(&[
        FAST_PROBES,
        ("FLEET_DATABASE_URL", db.url.as_str()),
        ("FLEET_REDIS_URL", redis.as_str()),
        ("FLEET_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ])
    .await;
    let api = Api::new(&fleet, Proto::Http1);

    let external = until(&api, "/health/external", |a| a.body["status"] == "ok").await;
    for (name, kind) in [
        ("auth", "service"),
        ("users", "service"),
        ("postgresql", "backend"),
        ("rabbitmq", "backend"),
        ("redis", "backend"),
    ] {
        assert_up(&external, name, kind);
    }
    let cache = health(&api, "/health/cache").await;
    assert_eq!(cache.body["redis"]["status"], "up");
    assert!(cache.body["redis"]["latency_ms"].as_f64().unwrap() > 0.0);

    relay.set_cut(true);
    let external = until(&api, "/health/external", |a| a.body["status"] == "degraded").await;
    assert_eq!(external.status, 200);
    assert_eq!(external.body["down"], serde_json::json!(["redis"]));
    let redis_report = dependency(&external, "redis");
    assert_eq!(redis_report["status"], "down");
    assert!(redis_report["error"].as_str().is_some_and(|e| !e.is_empty()));
    let text = external.body.to_string();
    assert!(
        !text.contains("://") && !text.contains("guest"),
        "no URL or credential: {text}"
    );
    let cache = health(&api, "/health/cache").await;
    assert_eq!(cache.body["status"], "degraded", "{}", cache.body);
    assert_eq!(
        health(&api, "/health/ready").await.status,
        200,
        "Redis down is no reason to stop serving"
    );
    assert!(
        fleet.metrics().await.contains(r#"backend_up{backend="redis"} 0"#),
        "the alert's metric follows"
    );

    relay.set_cut(false);
    until(&api, "/health/external", |a| a.body["status"] == "ok").await;
    until(&api, "/health/cache", |a| a.body["status"] == "ok").await;
}

#[tokio::test]
async fn a_service_down_is_named_and_readiness_drops_when_none_answers() {
    let front = Fleet::start().await;
    let gateway = Fleet::gateway_for(&front, &[FAST_PROBES, ("FLEET_USERS__URL", DEAD_UPSTREAM)]).await;
    // One client, made while the front's certificate file still exists.
    let api = Api::new(&gateway, Proto::Http1);

    let external = until(&api, "/health/external", |a| {
        a.body["dependencies"]["users"]["status"] == "down"
    })
    .await;
    assert_eq!(external.body["status"], "degraded");
    assert_eq!(external.body["down"], serde_json::json!(["users"]));
    assert_up(&external, "auth", "service");
    assert_eq!(
        health(&api, "/health/ready").await.status,
        200,
        "auth's routes still work"
    );

    // The services' process goes away: nothing behind the gateway answers.
    drop(front);
    let ready = until(&api, "/health/ready", |a| a.status == 503).await;
    assert_eq!(ready.body["status"], "down");
    let external = health(&api, "/health/external").await;
    assert_eq!((external.status, &external.body["status"]), (503, &Value::from("down")));
    assert_eq!(
        external.body["down"],
        serde_json::json!(["auth", "notify", "stats", "transfer", "users"])
    );
}
