//! A private subscription (one process's own queue) lives as long as its
//! connection, its dead-letter queue too: a process that goes leaves no
//! queue behind on the real broker of this machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use fleet_kit::{
    amqp::{AmqpSettings, EventHandler, HandleError, RecentIds, Subscription, consume},
    testing::{TcpRelay, backend_available, broker::BrokerNames},
};
use fleet_proto::events::v1::Event;
use lapin::{Connection, ConnectionProperties, options::QueueDeclareOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BROKER: &str = "127.0.0.1:5672";

struct Ignore;

#[async_trait::async_trait]
impl EventHandler for Ignore {
    async fn handle(&self, _event: &Event) -> Result<(), HandleError> {
        Ok(())
    }
}

/// What another connection finds under a queue's name.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// A queue any connection may use.
    Open,
    /// A queue that belongs to one connection (exclusive).
    Held,
    /// No queue.
    Gone,
}

async fn find(connection: &Connection, queue: &str) -> Found {
    // A refused passive declare closes its channel: one channel per look.
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel.queue_declare(queue.into(), passive, Default::default()).await {
        Ok(_) => Found::Open,
        Err(err) if err.to_string().contains("RESOURCE_LOCKED") => Found::Held,
        Err(err) if err.to_string().contains("NOT_FOUND") => Found::Gone,
        Err(err) => panic!("looking for {queue}: {err}"),
    }
}

async fn until_found(connection: &Connection, queue: &str, wanted: Found) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = find(connection, queue).await;
        if found == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "{queue}: {found:?}, not {wanted:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_private_subscription_leaves_no_queue_behind_its_connection() {
    if !backend_available("RabbitMQ", BROKER).await {
        return;
    }
    let id = Uuid::now_v7().simple().to_string();
    let relay = TcpRelay::start(BROKER).await;
    let settings = AmqpSettings {
        url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", relay.port),
        exchange: format!("fleet.test.{id}"),
        dead_letter_exchange: format!("fleet.test.{id}.dead"),
    };
    let subscription = Subscription {
        queue: format!("fleet.test.{id}.process"),
        bindings: vec!["#".into()],
        private: true,
        prefetch: 8,
        delivery_limit: 0,
        retry_for: fleet_kit::amqp::RETRY_FOR,
    };
    let direct = AmqpSettings::default().url;
    let mut names = BrokerNames::new(&direct);
    names
        .queue(&subscription.queue)
        .exchange(&settings.exchange)
        .exchange(&settings.dead_letter_exchange);
    let stop = CancellationToken::new();
    tokio::spawn(consume(
        settings,
        subscription.clone(),
        Arc::new(Ignore),
        Arc::new(RecentIds::new(16)),
        stop.clone(),
    ));

    let looking = Connection::connect(&direct, ConnectionProperties::default())
        .await
        .unwrap();
    let queues = [subscription.queue.clone(), format!("{}.dead", subscription.queue)];
    for queue in &queues {
        until_found(&looking, queue, Found::Held).await;
    }
    // The process goes: its connection ends.
    stop.cancel();
    relay.set_cut(true);
    for queue in &queues {
        until_found(&looking, queue, Found::Gone).await;
    }
}
