//! The fault suite: the fleet as six `--target` processes on PostgreSQL,
//! Redis and RabbitMQ (each reached through a relay the suite can cut; the
//! PostgreSQL and the Redis are the suite's own), under a bounded mixed load
//! of registrations, logins, profile updates and reads through the gateway,
//! while parts of it fail one at a time: each backend's connections cut for
//! 10 s, the suite's PostgreSQL and Redis restarted, and every component
//! killed (`kill -9`) and restarted. Then nothing acknowledged may be lost, no
//! event counted twice, no request held past the gateway's deadline, and no
//! process may have grown its file descriptors or memory. It prints a table
//! of each fault.
//!
//! A test binary of its own, so that it runs beside no other test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "e2e/harness.rs"]
mod harness;

#[path = "faults/load.rs"]
mod load;

use std::time::{Duration, Instant};

use fleet_kit::testing::{
    TcpRelay,
    own_servers::{OwnPostgres, OwnRabbitMq, OwnRedis},
};

use crate::{
    harness::{Api, Fleet, Proto, Split},
    load::{Load, Tally},
};

/// How long a backend is cut.
const CUT: Duration = Duration::from_secs(10);
/// Load before each fault, and after its part is back.
const CALM: Duration = Duration::from_secs(2);
/// The longest a request may take: the gateway's deadline (10 s) and a margin.
const HUNG: Duration = Duration::from_secs(12);
/// What "healthy again within 15 s of the part's return" allows.
const RECOVERS: Duration = Duration::from_secs(15);
/// How long events may take to flow again after the broker returns: the
/// outage's backlog in every outbox goes first (a debug build, two cores).
const CATCH_UP: Duration = Duration::from_secs(60);

enum Fault {
    Kill(&'static str),
    Cut(&'static str),
    Restart(&'static str),
}

impl Fault {
    fn name(&self) -> String {
        match self {
            Fault::Kill(component) => format!("kill -9 {component}"),
            Fault::Cut(backend) => format!("cut {backend} for {}s", CUT.as_secs()),
            Fault::Restart(backend) => format!("restart {backend}"),
        }
    }
}

struct Row {
    fault: String,
    /// From the fault to the part's return (a cut's length, a restart's).
    outage: Duration,
    /// For the broker: until a new login reached stats.
    caught_up: Option<Duration>,
    /// From the fault's start to the end of the calm after it.
    window: (Instant, Instant),
    sent: u64,
    failed: u64,
    recovered_in: Duration,
}

fn component<'a>(split: &'a mut Split, name: &str) -> &'a mut Fleet {
    match name {
        "users" => &mut split.users,
        "auth" => &mut split.auth,
        "stats" => &mut split.stats,
        "transfer" => &mut split.transfer,
        "notify" => &mut split.notify,
        "gateway" => &mut split.gateway,
        other => panic!("no component {other}"),
    }
}

/// File descriptors and resident memory (KiB) of a process.
fn footprint(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// Time until a signed-in read answers again through the gateway, and the
/// services' readiness says ready.
async fn recovery(split: &Split, token: &str) -> Duration {
    let started = Instant::now();
    let api = Api::new(&split.gateway, Proto::Http1);
    loop {
        let read = api
            .client
            .get(split.gateway.url("/api/v1/users/me"))
            .bearer_auth(token)
            .send();
        let ok = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .is_ok_and(|r| r.is_ok_and(|r| r.status() == 200));
        let ready = split.gateway.readiness().await.is_some_and(|(status, _)| status == 200);
        if ok && ready {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not healthy a minute after the part returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Time until a new login of the probe (its `nth`) reaches stats through
/// the broker.
async fn events_flow(split: &Split, nth: u64) -> Duration {
    let started = Instant::now();
    let api = Api::new(&split.gateway, Proto::Http1);
    let tokens = api.login("probe@example.com").await;
    let token = tokens["access_token"].as_str().unwrap();
    loop {
        let figures = api
            .call(reqwest::Method::GET, "/api/v1/stats/user", Some(token), None)
            .await;
        if figures.body["logins_total"].as_u64().unwrap_or(0) >= nth {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(90) {
            let uncached = api
                .client
                .get(split.gateway.url("/api/v1/stats/user"))
                .bearer_auth(token)
                .header("cache-control", "no-cache")
                .send()
                .await
                .unwrap();
            println!("uncached: {}", uncached.text().await.unwrap());
            for line in split
                .gateway
                .log()
                .lines()
                .filter(|l| l.contains("amqp") || l.contains("cache"))
            {
                println!("gateway log: {}", &line[..line.len().min(300)]);
            }
            for (name, process) in [
                ("auth", &split.auth),
                ("stats", &split.stats),
                ("gateway", &split.gateway),
            ] {
                for line in process
                    .metrics()
                    .await
                    .lines()
                    .filter(|l| (l.starts_with("events_") || l.starts_with("outbox_")) && !l.starts_with('#'))
                {
                    println!("{name}: {line}");
                }
            }
            panic!(
                "events not flowing 90 s after the broker returned: login {nth} of the probe, stats says {}",
                figures.body
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_parts_of_the_fleet_fail_under_load() {
    let Some(rabbitmq) = tokio::task::spawn_blocking(OwnRabbitMq::start).await.unwrap() else {
        return;
    };
    let Some(postgres) = tokio::task::spawn_blocking(OwnPostgres::start).await.unwrap() else {
        return;
    };
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let relays = [
        (
            "PostgreSQL",
            TcpRelay::start(&format!("127.0.0.1:{}", postgres.port)).await,
        ),
        (
            "RabbitMQ",
            TcpRelay::start(&format!("127.0.0.1:{}", rabbitmq.port)).await,
        ),
        ("Redis", TcpRelay::start(&format!("127.0.0.1:{}", redis.port)).await),
    ];
    let database_url = postgres.url("postgres").replacen(
        &format!("127.0.0.1:{}", postgres.port),
        &format!("127.0.0.1:{}", relays[0].1.port),
        1,
    );
    let amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", relays[1].1.port);
    let redis_url = format!("redis://127.0.0.1:{}", relays[2].1.port);
    // The node is the suite's own: the names need no clean-up.
    let id = uuid::Uuid::now_v7().simple().to_string();
    let exchange = format!("fleet.test.{id}");
    let (dead, stats_queue, notify_queue, prefix) = (
        format!("{exchange}.dead"),
        format!("{exchange}.stats"),
        format!("{exchange}.notify"),
        format!("fleet-test:{id}:"),
    );
    let env = [
        ("FLEET_DATABASE_URL", database_url.as_str()),
        ("FLEET_AMQP_URL", amqp_url.as_str()),
        ("FLEET_REDIS_URL", redis_url.as_str()),
        ("FLEET_EVENTS__EXCHANGE", exchange.as_str()),
        ("FLEET_EVENTS__DEAD_LETTER_EXCHANGE", dead.as_str()),
        ("FLEET_STATS__QUEUE", stats_queue.as_str()),
        ("FLEET_NOTIFY__QUEUE", notify_queue.as_str()),
        ("FLEET_GATEWAY__CACHE__KEY_PREFIX", prefix.as_str()),
    ];
    let mut split = Fleet::split(&env).await;
    let (_, probe) = Api::new(&split.gateway, Proto::Http1)
        .signed_in("probe@example.com", "Probe")
        .await;
    let mut probe_logins = 1;

    let tally = Tally::default();
    let load = Load::start(&split.gateway, tally.clone(), 4);
    tokio::time::sleep(CALM).await;

    // Backends first, while every process is the one that started: their
    // descriptors and memory are compared across the cuts.
    let pids: Vec<(&str, u32)> = ["users", "auth", "stats", "transfer", "notify", "gateway"]
        .into_iter()
        .map(|name| (name, component(&mut split, name).pid()))
        .collect();
    let before: Vec<(usize, u64)> = pids.iter().map(|(_, pid)| footprint(*pid)).collect();
    let faults = [
        Fault::Cut("PostgreSQL"),
        Fault::Cut("RabbitMQ"),
        Fault::Cut("Redis"),
        Fault::Restart("PostgreSQL"),
        Fault::Restart("Redis"),
        Fault::Restart("RabbitMQ"),
        Fault::Kill("users"),
        Fault::Kill("auth"),
        Fault::Kill("stats"),
        Fault::Kill("transfer"),
        Fault::Kill("notify"),
        Fault::Kill("gateway"),
    ];
    let mut rows = Vec::new();
    let mut after_cuts = Vec::new();
    for fault in &faults {
        let start = tally.snapshot();
        let began = Instant::now();
        match fault {
            Fault::Cut(backend) => {
                let relay = &relays.iter().find(|(name, _)| name == backend).unwrap().1;
                relay.set_cut(true);
                tokio::time::sleep(CUT).await;
                relay.set_cut(false);
            }
            Fault::Restart("PostgreSQL") => tokio::task::block_in_place(|| postgres.restart()),
            Fault::Restart("RabbitMQ") => tokio::task::block_in_place(|| rabbitmq.restart()),
            Fault::Restart(_) => tokio::task::block_in_place(|| redis.restart()),
            Fault::Kill(name) => {
                tally.set_gateway_down(*name == "gateway");
                component(&mut split, name).restart().await;
            }
        }
        let outage = began.elapsed();
        let recovered_in = recovery(&split, &probe).await;
        // After the broker, also the time until events flow again: the
        // outboxes' backlog of the outage goes first.
        let caught_up = if matches!(fault, Fault::Cut("RabbitMQ") | Fault::Restart("RabbitMQ")) {
            probe_logins += 1;
            Some(events_flow(&split, probe_logins).await)
        } else {
            None
        };
        tally.set_gateway_down(false);
        tokio::time::sleep(CALM).await;
        let during = tally.snapshot().since(&start);
        rows.push(Row {
            fault: fault.name(),
            outage,
            caught_up,
            window: (began, Instant::now()),
            sent: during.sent,
            failed: during.failed,
            recovered_in,
        });
        if matches!(fault, Fault::Cut("Redis")) {
            after_cuts = pids.iter().map(|(_, pid)| footprint(*pid)).collect();
        }
    }
    load.stop().await;

    // What every client was told, against what the fleet holds.
    let api = Api::new(&split.gateway, Proto::Http1);
    let lost = tally.lost_writes(&api).await;
    let (lost_events, doubled_events, accounts_off) = tally.events(&api).await;
    for (email, at) in &accounts_off {
        let during = at.and_then(|at| rows.iter().find(|r| r.window.0 <= at && at <= r.window.1));
        println!(
            "stats is off for {email}, logged in during: {}",
            during.map_or("no fault", |r| r.fault.as_str())
        );
    }

    println!(
        "\n{:<24} {:>8} {:>8} {:>10} {:>12} {:>14}",
        "fault", "sent", "failed", "outage", "recovered", "events flow"
    );
    for row in &rows {
        println!(
            "{:<24} {:>8} {:>8} {:>8.1} s {:>10.1} s {:>14}",
            row.fault,
            row.sent,
            row.failed,
            row.outage.as_secs_f64(),
            row.recovered_in.as_secs_f64(),
            row.caught_up
                .map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        );
    }
    // Checked once the load has stopped: a check beside running clients
    // would race their renames.
    println!(
        "lost after recovery, all faults: {} acknowledged writes, {} logins stats never counted, {} counted twice",
        lost.len(),
        lost_events,
        doubled_events
    );
    println!("slowest request: {:.1} s", tally.slowest().as_secs_f64());
    for ((name, _), (before, after)) in pids.iter().zip(before.iter().zip(&after_cuts)) {
        println!(
            "{name}: {} → {} descriptors, {} → {} MiB across the cuts",
            before.0,
            after.0,
            before.1 / 1024,
            after.1 / 1024
        );
    }

    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(
        (lost_events, doubled_events),
        (0, 0),
        "each login counted once by stats"
    );
    let slowest = tally.slowest();
    assert!(
        slowest < HUNG,
        "a request was held {slowest:?}, past the gateway's deadline"
    );
    let unexpected = tally.unexpected_statuses();
    if !unexpected.is_empty() {
        for name in ["users", "auth", "stats", "transfer", "notify", "gateway"] {
            let log = component(&mut split, name).log();
            let mut seen: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("\"message\":\"internal error\""))
                .collect();
            seen.dedup();
            for line in seen.iter().take(4) {
                println!("{name}: {}", &line[..line.len().min(600)]);
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} failures other than 503/504 problem answers, the first: {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)]
    );
    for row in &rows {
        assert!(
            row.caught_up.is_none_or(|d| d < CATCH_UP),
            "{}: events flowed again only after {:?}",
            row.fault,
            row.caught_up
        );
        assert!(
            row.recovered_in < RECOVERS,
            "{}: healthy again only after {:?}",
            row.fault,
            row.recovered_in
        );
    }
    for ((name, _), (before, after)) in pids.iter().zip(before.iter().zip(&after_cuts)) {
        assert!(
            after.0 <= before.0 + 32,
            "{name} kept descriptors: {} → {}",
            before.0,
            after.0
        );
        assert!(
            after.1 <= before.1 + 64 * 1024,
            "{name} grew: {} → {} KiB",
            before.1,
            after.1
        );
    }
}
