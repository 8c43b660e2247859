//! Rate limits through the gateway: per IP and per user, shared by replicas
//! through Redis, trusted proxies, and a Redis outage cut mid-test.

use std::time::Duration;

use fleet_kit::testing::{TcpRelay, backend_available, redis_cluster::RedisCluster};
use reqwest::Method;

use crate::harness::{Answer, Api, Fleet, PATIENT_REDIS, Proto, assert_problem};

const REDIS: &str = "127.0.0.1:6379";

async fn redis_available() -> bool {
    backend_available("Redis", REDIS).await
}

fn limited(redis_url: Option<&str>, prefix: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("FLEET_GATEWAY__RATE_LIMIT__ENABLED".to_string(), "true".to_string()),
        ("FLEET_GATEWAY__RATE_LIMIT__KEY_PREFIX".to_string(), prefix.to_string()),
        // 20 an hour refills one request every 3 minutes, so however slow the
        // machine, no request is refilled while a test counts its budget.
        (
            "FLEET_GATEWAY__RATE_LIMIT__ANONYMOUS__PERIOD_SECS".to_string(),
            "3600".to_string(),
        ),
    ];
    if let Some(url) = redis_url {
        env.push(("FLEET_REDIS_URL".to_string(), url.to_string()));
    }
    env
}

async fn start(env: &[(String, String)]) -> Fleet {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Fleet::start_with(&pairs).await
}

/// Limited, with loopback as the trusted proxy: the tests' own requests
/// arrive as from a proxy.
fn behind_loopback_proxy() -> Vec<(String, String)> {
    let mut env = limited(None, &prefix());
    env.push((
        "FLEET_GATEWAY__RATE_LIMIT__TRUSTED_PROXIES".into(),
        "[\"127.0.0.1/32\", \"::1/128\"]".into(),
    ));
    env
}

fn prefix() -> String {
    format!("fleet-test:{}:", uuid::Uuid::now_v7())
}

async fn jwks(api: &Api<'_>, forwarded_for: Option<&str>) -> Answer {
    let mut request = api.client.get(api.fleet.url("/.well-known/jwks.json"));
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    crate::harness::answer(request.send().await.unwrap()).await
}

fn assert_limited(answer: &Answer, limit: u32) {
    assert_problem(answer, 429);
    assert!(
        answer
            .header("retry-after")
            .is_some_and(|s| s.parse::<u64>().unwrap() >= 1)
    );
    assert_eq!(answer.header("ratelimit-limit"), Some(limit.to_string().as_str()));
    assert_eq!(answer.header("ratelimit-remaining"), Some("0"));
    assert!(answer.header("ratelimit-reset").is_some());
    assert_eq!(
        answer.header("ratelimit-policy"),
        Some(format!("\"default\";q={limit};w=3600").as_str())
    );
    assert!(
        answer
            .header("ratelimit")
            .is_some_and(|v| v.starts_with("\"default\";r=0;t="))
    );
}

async fn the_21st_anonymous_request_is_refused(redis_url: Option<&str>) {
    let fleet = start(&limited(redis_url, &prefix())).await;
    let api = Api::new(&fleet, Proto::Http1);
    for i in 0..20 {
        let ok = jwks(&api, None).await;
        assert_eq!(ok.status, 200, "request {}", i + 1);
        assert_eq!(ok.header("ratelimit-remaining"), Some((19 - i).to_string().as_str()));
    }
    assert_limited(&jwks(&api, None).await, 20);
}

#[tokio::test]
async fn the_21st_anonymous_request_is_refused_embedded() {
    the_21st_anonymous_request_is_refused(None).await;
}

#[tokio::test]
async fn the_21st_anonymous_request_is_refused_with_redis() {
    if redis_available().await {
        the_21st_anonymous_request_is_refused(Some("redis://127.0.0.1:6379")).await;
    }
}

#[tokio::test]
async fn the_101st_request_of_a_user_is_refused_while_another_user_goes_on() {
    let Some(url) = redis_available().await.then_some("redis://127.0.0.1:6379") else {
        return;
    };
    // GCRA refills one request every period/limit; over an hour that is 36 s,
    // so the 101 requests surely fall within one refill and the count is exact.
    let mut env = limited(Some(url), &prefix());
    env.push(("FLEET_GATEWAY__RATE_LIMIT__USER__PERIOD_SECS".into(), "3600".into()));
    let fleet = start(&env).await;
    let api = Api::new(&fleet, Proto::Http2);
    let (_, ada) = api.signed_in("ada@example.com", "Ada").await;
    let (_, bob) = api.signed_in("bob@example.com", "Bob").await;
    for i in 0..100 {
        let ok = api.call(Method::GET, "/api/v1/users/me", Some(&ada), None).await;
        assert_eq!(ok.status, 200, "request {}", i + 1);
    }
    let refused = api.call(Method::GET, "/api/v1/users/me", Some(&ada), None).await;
    assert_problem(&refused, 429);
    assert_eq!(refused.header("ratelimit-limit"), Some("100"));
    assert_eq!(refused.header("ratelimit-policy"), Some("\"default\";q=100;w=3600"));
    let other = api.call(Method::GET, "/api/v1/users/me", Some(&bob), None).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("ratelimit-remaining"), Some("99"));
}

/// Two gateways on `redis_url` let one client 20 requests between them,
/// and each refuses the 21st; their limiters are both on Redis.
async fn two_gateways_share_one_budget(redis_url: &str) {
    let mut env = limited(Some(redis_url), &prefix());
    env.push((PATIENT_REDIS.0.to_string(), PATIENT_REDIS.1.to_string()));
    let (one, two) = (start(&env).await, start(&env).await);
    let (a, b) = (Api::new(&one, Proto::Http1), Api::new(&two, Proto::Http1));
    for _ in 0..10 {
        assert_eq!(jwks(&a, None).await.status, 200);
        assert_eq!(jwks(&b, None).await.status, 200);
    }
    assert_limited(&jwks(&a, None).await, 20);
    assert_limited(&jwks(&b, None).await, 20);
    for api in [&a, &b] {
        let health = cache_health(api).await;
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["rate_limiter"]["redis"], "up", "{health}");
        assert_eq!(health["rate_limiter"]["fallback_decisions"], 0, "{health}");
    }
}

#[tokio::test]
async fn two_gateways_sharing_redis_share_one_budget() {
    if redis_available().await {
        two_gateways_share_one_budget("redis://127.0.0.1:6379").await;
    }
}

#[tokio::test]
async fn two_gateways_on_a_redis_cluster_share_one_budget() {
    let Some(cluster) = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap() else {
        return;
    };
    two_gateways_share_one_budget(&cluster.url()).await;
}

#[tokio::test]
async fn two_gateways_on_a_redis_cluster_over_tls_share_one_budget() {
    let Some(cluster) = tokio::task::spawn_blocking(RedisCluster::start_tls).await.unwrap() else {
        return;
    };
    two_gateways_share_one_budget(&cluster.url()).await;
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    // Untrusted peer: a spoofed header changes nothing.
    let fleet = start(&limited(None, &prefix())).await;
    let api = Api::new(&fleet, Proto::Http1);
    for i in 0..20 {
        assert_eq!(jwks(&api, Some(&format!("203.0.113.{i}"))).await.status, 200);
    }
    assert_limited(&jwks(&api, Some("198.51.100.1")).await, 20);

    // Trusted peer: every forwarded client has a bucket of its own.
    let fleet = start(&behind_loopback_proxy()).await;
    let api = Api::new(&fleet, Proto::Http1);
    for i in 0..25 {
        let ok = jwks(&api, Some(&format!("203.0.113.{i}"))).await;
        assert_eq!((ok.status, ok.header("ratelimit-remaining")), (200, Some("19")));
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_a_client_cannot_pick_its_address_and_ipv6_counts_per_64() {
    let fleet = start(&behind_loopback_proxy()).await;
    let api = Api::new(&fleet, Proto::Http1);
    // The proxy sets X-Forwarded-For (appending its line to the client's);
    // the client adds a Forwarded and a line of its own, new each time.
    let mut remaining = Vec::new();
    for i in 0..3 {
        let request = api
            .client
            .get(api.fleet.url("/.well-known/jwks.json"))
            .header("forwarded", format!("for=192.0.2.{i}"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("x-forwarded-for", "203.0.113.5");
        let answer = crate::harness::answer(request.send().await.unwrap()).await;
        assert_eq!(answer.status, 200);
        remaining.push(answer.header("ratelimit-remaining").unwrap().to_string());
    }
    assert_eq!(
        remaining,
        ["19", "18", "17"],
        "one bucket: the proxy's address for the client"
    );

    // Addresses of one /64 share a bucket; another /64 has its own.
    for (i, host) in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2:abcd::5"]
        .iter()
        .enumerate()
    {
        let answer = jwks(&api, Some(host)).await;
        assert_eq!(
            answer.header("ratelimit-remaining"),
            Some((19 - i).to_string().as_str()),
            "{host}"
        );
    }
    let other = jwks(&api, Some("2001:db8:1:3::1")).await;
    assert_eq!(other.header("ratelimit-remaining"), Some("19"));
}

async fn cache_health(api: &Api<'_>) -> serde_json::Value {
    api.call(Method::GET, "/health/cache", None, None).await.body
}

#[tokio::test]
async fn with_redis_cut_limits_hold_per_replica_and_the_shared_budget_returns_with_it() {
    if !redis_available().await {
        return;
    }
    let relay = TcpRelay::start(REDIS).await;
    let fleet = start(&limited(Some(&format!("redis://127.0.0.1:{}", relay.port)), &prefix())).await;
    let api = Api::new(&fleet, Proto::Http1);
    for _ in 0..5 {
        assert_eq!(jwks(&api, None).await.status, 200);
    }
    assert_eq!(cache_health(&api).await["status"], "ok");

    relay.set_cut(true);
    // Still served, and still limited, by this replica alone.
    let mut served = 0;
    loop {
        let answer = jwks(&api, None).await;
        if answer.status == 429 {
            break;
        }
        assert_eq!(answer.status, 200);
        served += 1;
        assert!(served <= 20, "the local limiter must hold");
    }
    assert_eq!(served, 20, "a fresh per-replica budget while Redis is away");
    let health = cache_health(&api).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["rate_limiter"]["redis"], "down");

    relay.set_cut(false);
    // Back on Redis: the shared bucket still holds 15 of its 20.
    let mut shared = 0;
    for _ in 0..100 {
        let answer = jwks(&api, None).await;
        match answer.status {
            200 if answer.header("ratelimit-remaining") != Some("19") => shared += 1,
            429 if shared > 0 => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shared, 15, "the shared budget applies again");
    assert_eq!(cache_health(&api).await["status"], "ok");
}
