//! Users' events through the outbox and RabbitMQ: a broker outage loses
//! nothing, and every consumer sees every event exactly once in effect.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use fleet_kit::{
    Db, SystemClock,
    amqp::{AmqpPublisher, AmqpSettings, EventHandler, HandleError, RecentIds, Subscription, consume},
    events::EventPublisher,
    outbox::OutboxRelay,
    testing::{TcpRelay, TestBackend, backend_available, broker::BrokerNames, database},
};
use fleet_proto::events::v1::Event;
use fleet_users::{
    domain::{DisplayName, Email, Role},
    store::{NewUser, user_store},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Counts how often each event id was handled.
#[derive(Default)]
struct Tally(Mutex<HashMap<String, u32>>);

#[async_trait::async_trait]
impl EventHandler for Tally {
    async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        *self.0.lock().unwrap().entry(event.id.clone()).or_default() += 1;
        Ok(())
    }
}

impl Tally {
    fn counts(&self) -> HashMap<String, u32> {
        self.0.lock().unwrap().clone()
    }
}

fn new_user(n: usize) -> NewUser {
    NewUser {
        email: Email::parse(&format!("user{n}@example.com")).unwrap(),
        display_name: DisplayName::parse(&format!("User {n}")).unwrap(),
        role: Role::User,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_rabbitmq_is_cut_and_arrive_exactly_once() {
    if !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let database = database(TestBackend::Sqlite).await.unwrap();
    let db = Db::connect(&database.url, "users").await.unwrap();
    fleet_users::migrate(&db).await.unwrap();
    let store = user_store(&db);

    let relay = TcpRelay::start("127.0.0.1:5672").await;
    let id = Uuid::now_v7().simple().to_string();
    let through_relay = AmqpSettings {
        url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", relay.port),
        exchange: format!("fleet.test.{id}"),
        dead_letter_exchange: format!("fleet.test.{id}.dead"),
    };
    let direct = AmqpSettings {
        url: AmqpSettings::default().url,
        ..through_relay.clone()
    };
    let mut names = BrokerNames::new(&direct.url);
    names.exchange(&direct.exchange).exchange(&direct.dead_letter_exchange);
    // Two consumers on queues of their own: both must see everything.
    let stop = CancellationToken::new();
    let tallies: Vec<Arc<Tally>> = (0..2).map(|_| Arc::new(Tally::default())).collect();
    for (n, tally) in tallies.iter().enumerate() {
        let subscription = Subscription {
            queue: format!("fleet.test.{id}.consumer{n}"),
            bindings: vec!["user.*".into()],
            private: true,
            prefetch: 16,
            delivery_limit: 0,
            retry_for: fleet_kit::amqp::RETRY_FOR,
        };
        tokio::spawn(consume(
            direct.clone(),
            subscription,
            tally.clone(),
            Arc::new(RecentIds::new(1000)),
            stop.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let publisher: Arc<dyn EventPublisher> = Arc::new(AmqpPublisher::new(through_relay));
    let outbox = OutboxRelay::new(&db, publisher.clone(), Arc::new(SystemClock));
    for n in 0..2 {
        store.create(new_user(n), Utc::now()).await.unwrap();
    }
    assert_eq!(outbox.publish_pending().await.unwrap(), 2);

    relay.set_cut(true);
    for n in 2..5 {
        store
            .create(new_user(n), Utc::now())
            .await
            .expect("changes succeed while the broker is away");
    }
    assert!(outbox.publish_pending().await.is_err());
    assert_eq!(outbox.backlog().await.unwrap(), 3, "the events wait in the outbox");

    relay.set_cut(false);
    let mut published = 0;
    for _ in 0..50 {
        match outbox.publish_pending().await {
            Ok(n) => {
                published += n;
                if outbox.backlog().await.unwrap() == 0 {
                    break;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(published, 3);
    // At-least-once delivery may repeat an event; its effect must not repeat.
    let pending_again = {
        let mut first = None;
        for tally in &tallies {
            for _ in 0..100 {
                if tally.counts().len() == 5 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            first = tally.counts().keys().next().cloned();
        }
        first.unwrap()
    };
    let again = fleet_proto::events::v1::Event {
        id: pending_again,
        r#type: "user.created".into(),
        ..Default::default()
    };
    AmqpPublisher::new(direct.clone()).publish(&again).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    for tally in &tallies {
        let counts = tally.counts();
        assert_eq!(counts.len(), 5, "every event reached every consumer");
        assert!(
            counts.values().all(|n| *n == 1),
            "each exactly once in effect: {counts:?}"
        );
    }
    stop.cancel();
    let connection = lapin::Connection::connect(&direct.url, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for exchange in [&direct.exchange, &direct.dead_letter_exchange] {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    }
}
