//! Stats replicas on the shared durable queue, against the real broker and
//! PostgreSQL: every event is counted exactly once, whether it is published
//! twice, consumed by either of two replicas, or redelivered after one
//! replica's connection is cut between delivery and acknowledgement.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use fleet_kit::{
    Db, SharedClock, SystemClock,
    amqp::{AmqpPublisher, AmqpSettings},
    events::{EventPublisher, InProcessBus, new_event},
    outbox::OutboxRelay,
    testing::{TcpRelay, TestBackend, backend_available, broker::BrokerNames, database},
};
use fleet_proto::events::v1::{LoginSucceeded, event::Payload};
use fleet_stats::{
    Feed,
    feed::Recorder,
    metrics::StatsMetrics,
    store::{StatsStore, stats_store},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BROKER: &str = "127.0.0.1:5672";
const EVENTS: usize = 300;

/// A replica: its own recorder and feed, on the shared store and queue.
fn replica(
    store: &Arc<dyn StatsStore>,
    db: &Db,
    settings: AmqpSettings,
    queue: &str,
    stop: &CancellationToken,
) -> StatsMetrics {
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = StatsMetrics::default();
    let relay = OutboxRelay::new(db, Arc::new(InProcessBus::default()), clock.clone());
    let recorder = Arc::new(Recorder::new(store.clone(), relay, clock, metrics.clone()));
    let feed = Feed::Amqp {
        settings,
        queue: queue.to_string(),
    };
    tokio::spawn(fleet_kit::feed::run(feed, recorder, "stats", stop.clone()));
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_count_every_event_once_through_duplicates_and_a_cut_connection() {
    if !backend_available("RabbitMQ", BROKER).await {
        return;
    }
    let Some(database) = database(TestBackend::Postgres).await else {
        return;
    };
    let db = Db::connect(&database.url, "stats").await.unwrap();
    fleet_stats::migrate(&db).await.unwrap();
    let store = stats_store(&db);

    let id = Uuid::now_v7().simple().to_string();
    let settings = AmqpSettings {
        exchange: format!("fleet.test.{id}"),
        dead_letter_exchange: format!("fleet.test.{id}.dead"),
        ..AmqpSettings::default()
    };
    let queue = format!("fleet.test.{id}.stats");
    let mut names = BrokerNames::new(&settings.url);
    names
        .queue(&queue)
        .exchange(&settings.exchange)
        .exchange(&settings.dead_letter_exchange);
    // Replica A reaches the broker through a relay the test can cut.
    let cut = TcpRelay::start(BROKER).await;
    let through_relay = AmqpSettings {
        url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", cut.port),
        ..settings.clone()
    };
    let stop = CancellationToken::new();
    let a = replica(&store, &db, through_relay, &queue, &stop);
    let b = replica(&store, &db, settings.clone(), &queue, &stop);
    // Both consumers declare and bind the queue before anything is published.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let user = Uuid::now_v7();
    let publisher = AmqpPublisher::new(settings.clone());
    for i in 0..EVENTS {
        let event = new_event(
            "auth",
            Some(user),
            Utc::now(),
            Payload::LoginSucceeded(LoginSucceeded {
                session_id: Uuid::now_v7().to_string(),
                ..LoginSucceeded::default()
            }),
        );
        // Every event is published twice, as a relay that crashed before
        // marking it sent would.
        publisher.publish(&event).await.unwrap();
        publisher.publish(&event).await.unwrap();
        if i == EVENTS / 3 {
            cut.set_cut(true);
        }
        if i == 2 * EVENTS / 3 {
            cut.set_cut(false);
        }
    }

    let started = Instant::now();
    loop {
        let figures = store.user_figures(user).await.unwrap();
        if figures.logins == EVENTS as i64 {
            break;
        }
        assert!(figures.logins < EVENTS as i64, "an event counted twice: {figures:?}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not every event arrived: {figures:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The redeliveries still in flight change nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let figures = store.user_figures(user).await.unwrap();
    assert_eq!(
        (figures.logins, figures.events, figures.active_sessions),
        (300, 300, 300)
    );
    assert_eq!(
        a.entries_written.get() + b.entries_written.get(),
        EVENTS as u64,
        "each entry written once, by one replica or the other"
    );
    assert!(b.entries_written.get() > 0, "the replicas shared the work");
    stop.cancel();
}
