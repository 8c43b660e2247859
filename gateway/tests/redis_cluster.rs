//! Rate limits and the shared cache on a real Redis Cluster (three masters,
//! a replica each, on loopback ports), reached as `redis+cluster://`:
//! buckets whose keys land in different slots still decide together, two
//! gateway replicas share every figure, and a master failing over to its
//! replica in the middle loses and doubles nothing. Each test runs again on
//! a cluster that speaks only TLS, reached as `rediss+cluster://` with a CA
//! file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::Utc;
use fleet_gateway::{
    cache::{CacheSettings, ResponseCache},
    ratelimit::{Bucket, Quota, RateLimitSettings, RateLimiter},
    redis_link::RedisLink,
};
use fleet_kit::{clock::ManualClock, testing::redis_cluster::RedisCluster};

const LOGIN: &str = "/api/v1/auth/login";

fn link(cluster: &RedisCluster) -> Arc<RedisLink> {
    // A deadline a loaded test machine meets.
    Arc::new(RedisLink::open(&cluster.url(), Duration::from_secs(2)).unwrap())
}

/// One gateway replica's limiter on the cluster: 10 requests a minute per
/// user, 3 a minute per client on the login route, every request decided in
/// Redis (no lease).
fn limiter(cluster: &RedisCluster, prefix: &str) -> RateLimiter {
    let settings = RateLimitSettings {
        user: Quota {
            limit: 10,
            period_secs: 60,
        },
        anonymous: Quota {
            limit: 10,
            period_secs: 60,
        },
        routes: BTreeMap::from([(
            LOGIN.to_string(),
            Quota {
                limit: 3,
                period_secs: 60,
            },
        )]),
        key_prefix: prefix.to_string(),
        lease_per_mille: 0,
        ..RateLimitSettings::default()
    };
    RateLimiter::new(settings, Some(link(cluster)), Arc::new(ManualClock::new(Utc::now())))
}

/// How many of `n` requests the replicas, taking turns, let through.
async fn allowed(replicas: &[&RateLimiter], buckets: &[Bucket], n: usize) -> usize {
    let mut allowed = 0;
    for i in 0..n {
        let decision = replicas[i % replicas.len()].check(buckets).await.unwrap();
        if decision.allowed {
            allowed += 1;
        }
    }
    for replica in replicas {
        assert_eq!(replica.health().redis, "up", "decided in Redis, not by the replica");
        assert_eq!(replica.health().fallback_decisions, 0);
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_shared_decided_together_across_slots_and_survive_a_failover() {
    let Some(cluster) = RedisCluster::start() else { return };
    limits_on(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_on_a_cluster_over_tls() {
    let Some(cluster) = RedisCluster::start_tls() else {
        return;
    };
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://"));
    // Without the CA file the nodes' certificate is not trusted.
    let (without_ca, _) = url.split_once("/?cacertfile=").unwrap();
    let untrusted = RedisLink::open(without_ca, Duration::from_secs(2)).unwrap();
    assert!(untrusted.connection().await.is_err(), "an unknown CA was trusted");
    limits_on(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_shared_and_emptied_on_a_cluster_through_a_failover() {
    let Some(cluster) = RedisCluster::start() else { return };
    cache_on(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_works_on_a_cluster_over_tls() {
    let Some(cluster) = RedisCluster::start_tls() else {
        return;
    };
    cache_on(&cluster).await;
}

async fn limits_on(cluster: &RedisCluster) {
    let prefix = format!("fleet-test:{}:", uuid::Uuid::now_v7().simple());
    let (one, two) = (limiter(cluster, &prefix), limiter(cluster, &prefix));
    let replicas = [&one, &two];
    let ip: IpAddr = "198.51.100.7".parse().unwrap();

    // A signed-in caller on the login route draws from its user bucket and
    // from the route's bucket for its address: keys in different slots.
    let user = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let on_login = one.buckets(Some(user), ip, LOGIN);
    assert_eq!(on_login.len(), 2);
    assert_ne!(
        cluster.slot(&format!("{prefix}{}", on_login[0].key)),
        cluster.slot(&format!("{prefix}{}", on_login[1].key)),
        "the test needs the two buckets in different slots"
    );
    assert_eq!(
        allowed(&replicas, &on_login, 8).await,
        3,
        "the route allows 3, whichever replica asks"
    );
    // The five refused requests took nothing from the user's own bucket.
    let elsewhere = one.buckets(Some(user), ip, "/api/v1/users/me");
    assert_eq!(
        allowed(&replicas, &elsewhere, 12).await,
        7,
        "10 a minute, 3 already spent"
    );

    // Another user draws 4, its master fails over to its replica, and the
    // rest of the minute's quota is exactly what is left.
    let other = one.buckets(Some("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"), ip, "/api/v1/users/me");
    assert_eq!(allowed(&replicas, &other, 4).await, 4);
    let key = format!("{prefix}{}", other[0].key);
    let before = cluster.master_of(&key);
    let after = tokio::task::block_in_place(|| cluster.fail_over(&key));
    assert_ne!(before, after);
    assert_eq!(
        allowed(&replicas, &other, 10).await,
        6,
        "counted once across the failover"
    );
}

async fn cache_on(cluster: &RedisCluster) {
    let settings = CacheSettings {
        key_prefix: format!("fleet-test:{}:", uuid::Uuid::now_v7().simple()),
        ..CacheSettings::default()
    };
    let replica = || {
        ResponseCache::new(
            settings.clone(),
            Some(link(cluster)),
            Arc::new(ManualClock::new(Utc::now())),
        )
    };
    let (one, two) = (replica(), replica());
    let key = one
        .key("/api/v1/users", "/api/v1/users", None, Some("alice"), "admin")
        .unwrap();

    let miss = one.get(&key).await.unwrap_err();
    one.put(&key, &miss, Bytes::from_static(b"first")).await;
    assert_eq!(
        two.get(&key).await.unwrap().body,
        Bytes::from_static(b"first"),
        "shared"
    );

    // The master holding the tag's generation (and its entries) fails over.
    let generation = format!("{}gen:{{users}}", settings.key_prefix);
    tokio::task::block_in_place(|| cluster.fail_over(&generation));
    assert_eq!(
        replica().get(&key).await.unwrap().body,
        Bytes::from_static(b"first"),
        "the entry moved with its slot"
    );
    two.invalidate("users").await;
    assert!(replica().get(&key).await.is_err(), "emptied for every replica");
    let miss = two.get(&key).await.unwrap_err();
    two.put(&key, &miss, Bytes::from_static(b"second")).await;
    assert_eq!(replica().get(&key).await.unwrap().body, Bytes::from_static(b"second"));
}
