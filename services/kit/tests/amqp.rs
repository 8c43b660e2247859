//! The RabbitMQ backbone against the real broker of this machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use fleet_kit::{
    amqp::{AmqpPublisher, AmqpSettings, EventHandler, HandleError, RecentIds, Subscription, consume},
    events::{EventPublisher, new_event},
    testing::{TlsRelay, backend_available, broker::BrokerNames},
};
use fleet_proto::events::v1::{Event, UserDeleted, event::Payload};
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BROKER: &str = "127.0.0.1:5672";

/// Settings with an exchange and queue of this test's own, deleted when the
/// third value drops.
fn isolated() -> (AmqpSettings, Subscription, BrokerNames) {
    let id = Uuid::now_v7().simple().to_string();
    let settings = AmqpSettings {
        exchange: format!("fleet.test.{id}"),
        dead_letter_exchange: format!("fleet.test.{id}.dead"),
        ..AmqpSettings::default()
    };
    let subscription = Subscription {
        queue: format!("fleet.test.{id}.q"),
        bindings: vec!["user.*".into()],
        private: false,
        prefetch: 8,
        delivery_limit: 20,
        retry_for: fleet_kit::amqp::RETRY_FOR,
    };
    let mut names = BrokerNames::new(&settings.url);
    names
        .queue(&subscription.queue)
        .exchange(&settings.exchange)
        .exchange(&settings.dead_letter_exchange);
    (settings, subscription, names)
}

/// Forwards every handled event to the test; fails the first `failures` times.
struct Collect {
    tx: mpsc::UnboundedSender<Event>,
    failures: AtomicU32,
    calls: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl EventHandler for Collect {
    async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(HandleError::Retry(anyhow::anyhow!("not yet")));
        }
        self.tx.send(event.clone()).unwrap();
        Ok(())
    }
}

struct Running {
    events: mpsc::UnboundedReceiver<Event>,
    calls: Arc<AtomicU32>,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_consumer(settings: &AmqpSettings, sub: &Subscription, failures: u32) -> Running {
    start_consumer_probed(settings, &settings.url, sub, failures).await
}

/// A consumer on `settings`; the queue's existence is checked at `probe`
/// (a plain URL, for a consumer whose own needs TLS settings).
async fn start_consumer_probed(settings: &AmqpSettings, probe: &str, sub: &Subscription, failures: u32) -> Running {
    let (tx, events) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicU32::new(0));
    let handler = Arc::new(Collect {
        tx,
        failures: AtomicU32::new(failures),
        calls: calls.clone(),
    });
    let stop = CancellationToken::new();
    tokio::spawn(consume(
        settings.clone(),
        sub.clone(),
        handler,
        Arc::new(RecentIds::new(1000)),
        stop.clone(),
    ));
    // Wait until the queue exists, so nothing published next is unroutable.
    let connection = Connection::connect(probe, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for _ in 0..100 {
        let probe = channel
            .queue_declare(
                sub.queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await;
        if probe.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running { events, calls, stop }
}

/// The first message in `sub`'s dead-letter queue, waiting up to 10 s.
async fn dead_lettered(channel: &lapin::Channel, sub: &Subscription) -> Option<lapin::message::BasicGetMessage> {
    let dead = format!("{}.dead", sub.queue);
    for _ in 0..200 {
        let got = channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if got.is_some() {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn user_event() -> Event {
    let mut event = new_event(
        "users",
        Some(Uuid::now_v7()),
        Utc::now(),
        Payload::UserDeleted(UserDeleted {}),
    );
    event.trace_context.insert(
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    );
    event
}

async fn next(running: &mut Running) -> Event {
    tokio::time::timeout(Duration::from_secs(10), running.events.recv())
        .await
        .expect("an event")
        .unwrap()
}

#[tokio::test]
async fn published_events_reach_a_consumer_once_with_their_trace_context() {
    if !backend_available("RabbitMQ", BROKER).await {
        return;
    }
    let (settings, sub, _names) = isolated();
    let mut running = start_consumer(&settings, &sub, 0).await;
    let publisher = AmqpPublisher::new(settings.clone());
    let event = user_event();
    publisher.publish(&event).await.unwrap();
    publisher.publish(&event).await.unwrap(); // a redelivery of the same event
    let other = user_event();
    publisher.publish(&other).await.unwrap();

    let first = next(&mut running).await;
    assert_eq!(first, event);
    assert_eq!(first.trace_context["traceparent"], event.trace_context["traceparent"]);
    assert_eq!(next(&mut running).await.id, other.id, "the duplicate was skipped");
    assert_eq!(running.calls.load(Ordering::SeqCst), 2);
    drop(running);
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_does_not_block_the_queue() {
    if !backend_available("RabbitMQ", BROKER).await {
        return;
    }
    let (settings, sub, _names) = isolated();
    let mut running = start_consumer(&settings, &sub, 0).await;
    let connection = Connection::connect(&settings.url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_publish(
            settings.exchange.as_str().into(),
            "user.updated".into(),
            BasicPublishOptions::default(),
            b"\xff\xffnot protobuf",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let good = user_event();
    AmqpPublisher::new(settings.clone()).publish(&good).await.unwrap();
    assert_eq!(next(&mut running).await.id, good.id);

    assert_eq!(
        dead_lettered(&channel, &sub)
            .await
            .expect("the poison message is in the dead-letter queue")
            .delivery
            .data,
        b"\xff\xffnot protobuf"
    );

    // Counted under the names the dashboard and the alerts use.
    let mut registry = prometheus_client::registry::Registry::default();
    fleet_kit::metrics::register_events(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        format!("events_dead_lettered_total{{queue=\"{}\"}} 1", sub.queue),
        format!("events_consumed_total{{queue=\"{}\"}} 1", sub.queue),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    drop(running);
}

#[tokio::test]
async fn transient_failures_are_waited_out_and_lasting_ones_go_back_to_the_queue_until_its_limit() {
    if !backend_available("RabbitMQ", BROKER).await {
        return;
    }
    // Five failures in a row, six seconds (a store restarting): the delivery
    // is held and tried again until it succeeds; nothing is lost.
    let (settings, sub, _names) = isolated();
    let mut running = start_consumer(&settings, &sub, 5).await;
    let publisher = AmqpPublisher::new(settings.clone());
    let event = user_event();
    publisher.publish(&event).await.unwrap();
    assert_eq!(next(&mut running).await.id, event.id);
    assert_eq!(running.calls.load(Ordering::SeqCst), 6, "five failures, then success");
    drop(running);

    // A handler that never succeeds: after `retry_for` the delivery goes
    // back to the queue, and once it has come back past the queue's
    // delivery limit the broker dead-letters it.
    let (settings, mut sub, _names) = isolated();
    sub.retry_for = Duration::from_millis(300);
    sub.delivery_limit = 1;
    let running = start_consumer(&settings, &sub, u32::MAX).await;
    let doomed = user_event();
    publisher_for(&settings).publish(&doomed).await.unwrap();
    let connection = Connection::connect(&settings.url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let found = dead_lettered(&channel, &sub)
        .await
        .expect("dead-lettered by the broker past the delivery limit");
    assert_eq!(
        found.delivery.properties.message_id().as_ref().map(|s| s.to_string()),
        Some(doomed.id)
    );
    assert!(
        running.calls.load(Ordering::SeqCst) >= 4,
        "delivered twice, tried at least twice each"
    );
    drop(running);
}

fn publisher_for(settings: &AmqpSettings) -> AmqpPublisher {
    AmqpPublisher::new(settings.clone())
}

#[test]
fn recent_ids_forget_the_oldest_beyond_capacity() {
    let ids = RecentIds::new(2);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        for id in ["a", "b", "c"] {
            fleet_kit::amqp::ProcessedEvents::remember(&ids, id).await.unwrap();
        }
        assert!(!fleet_kit::amqp::ProcessedEvents::seen(&ids, "a").await.unwrap());
        assert!(fleet_kit::amqp::ProcessedEvents::seen(&ids, "c").await.unwrap());
    });
}

#[tokio::test]
async fn a_shared_queue_is_a_quorum_queue_that_dead_letters_a_message_returned_too_often() {
    if !backend_available("RabbitMQ", BROKER).await {
        return;
    }
    let (settings, mut sub, _names) = isolated();
    sub.delivery_limit = 2;
    // The consumer declares the queue, then goes: nobody takes what follows.
    drop(start_consumer(&settings, &sub, 0).await);
    let connection = Connection::connect(&settings.url, ConnectionProperties::default())
        .await
        .unwrap();

    // A quorum queue: declaring it again as a classic one is refused.
    let classic = connection.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    // The same arguments otherwise, so that the type is what differs.
    let mut arguments = FieldTable::default();
    for (key, value) in [
        ("x-dead-letter-exchange", settings.dead_letter_exchange.as_str()),
        ("x-dead-letter-routing-key", sub.queue.as_str()),
    ] {
        arguments.insert(key.into(), AMQPValue::LongString(value.into()));
    }
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(2));
    let refused = classic
        .queue_declare(sub.queue.as_str().into(), durable, arguments)
        .await
        .expect_err("the queue's type is not classic");
    assert!(refused.to_string().contains("x-queue-type"), "{refused}");

    // A message whose consumers all vanish holding it: each return counts,
    // and past the limit the broker dead-letters it.
    let doomed = user_event();
    AmqpPublisher::new(settings.clone()).publish(&doomed).await.unwrap();
    let mut deliveries = 0;
    for _ in 0..20 {
        let channel = connection.create_channel().await.unwrap();
        let got = channel
            .basic_get(sub.queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap();
        let Some(_held) = got else {
            break;
        };
        deliveries += 1;
        // Closed unacknowledged: the message goes back to the queue.
        channel.close(200, "gone".into()).await.unwrap();
    }
    assert_eq!(deliveries, 3, "delivered once, then returned twice (the limit)");
    let channel = connection.create_channel().await.unwrap();
    let found = dead_lettered(&channel, &sub)
        .await
        .expect("the message is in the dead-letter queue");
    assert_eq!(
        found.delivery.properties.message_id().as_ref().map(|id| id.as_str()),
        Some(doomed.id.as_str())
    );
}

#[tokio::test]
async fn amqps_with_a_cacertfile_publishes_and_consumes_and_an_unknown_ca_is_refused() {
    if !backend_available("RabbitMQ", BROKER).await {
        return;
    }
    let tls = TlsRelay::start(BROKER).await;
    let (plain, sub, _names) = isolated();
    let ca = tls.ca_file.display().to_string();
    let settings = AmqpSettings {
        url: format!("amqps://guest:guest@localhost:{}/%2f?cacertfile={ca}", tls.port),
        ..plain.clone()
    };
    let mut running = start_consumer_probed(&settings, &plain.url, &sub, 0).await;
    let event = user_event();
    AmqpPublisher::new(settings.clone()).publish(&event).await.unwrap();
    assert_eq!(next(&mut running).await.id, event.id, "through TLS both ways");
    drop(running);

    // Without the CA the broker's certificate is not trusted.
    let untrusted = AmqpSettings {
        url: format!("amqps://guest:guest@localhost:{}/%2f", tls.port),
        ..plain.clone()
    };
    let refused = AmqpPublisher::new(untrusted).publish(&user_event()).await;
    assert!(refused.is_err(), "an unknown CA was trusted");
}
