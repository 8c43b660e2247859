//! Consuming from the backbone: a queue declared with its dead-letter queue
//! (shared queues are quorum queues), deliveries handled in batches or one
//! at a time with retries, acknowledged, returned to the queue (a failure
//! that lasts: a dependency is down) or dead-lettered (refused), and a
//! reconnect with backoff whenever the connection goes.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use fleet_proto::events::v1::Event;
use futures::{FutureExt, StreamExt};
use lapin::{
    Channel, Connection, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    AmqpSettings, EventHandler, HandleError, ProcessedEvents, Subscription, TRACE_HEADERS, connect, declare_exchange,
};

/// How long a consumer's connection, channel, queue and subscription may
/// take to set up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a consumer that waits for deliveries checks that its connection
/// and channel still stand: it does not rely on the deliveries' stream
/// ending when the connection goes.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Resolves once `connection` or `channel` is no longer connected.
async fn lost(connection: &Connection, channel: &Channel) {
    loop {
        tokio::time::sleep(LIVENESS_CHECK).await;
        if !connection.status().connected() || !channel.status().connected() {
            return;
        }
    }
}

/// The longest pause between two tries of a delivery that fails transiently.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// The longest wait between reconnects: a consumer is back within this of
/// the broker's return.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);
/// The wait before reconnecting after a connection that was consuming.
const FIRST_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Consumes `subscription` until `shutdown`, reconnecting with backoff.
pub async fn consume(
    settings: AmqpSettings,
    subscription: Subscription,
    handler: Arc<dyn EventHandler>,
    processed: Arc<dyn ProcessedEvents>,
    shutdown: CancellationToken,
) {
    let mut backoff = FIRST_RECONNECT_BACKOFF;
    let mut reconnect = false;
    while !shutdown.is_cancelled() {
        let mut consumed = false;
        let run = consume_once(
            &settings,
            &subscription,
            handler.as_ref(),
            processed.as_ref(),
            &shutdown,
            reconnect,
            &mut consumed,
        );
        reconnect = true;
        let result = run.await;
        // A connection that got as far as consuming starts the backoff
        // afresh: only attempts that fail one after another wait longer.
        if consumed {
            backoff = FIRST_RECONNECT_BACKOFF;
        }
        match result {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(
                    queue = subscription.queue,
                    error = format!("{err:#}"),
                    "consumer disconnected; reconnecting"
                );
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
    }
}

/// How long an acknowledgement (or a return, or a dead-lettering) may take
/// to be sent: on a connection that died under it, lapin may never answer,
/// and a consumer waiting on it would never notice the loss and reconnect.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settles a delivery within [`SETTLE_TIMEOUT`]; a delivery left unsettled
/// comes again after the reconnect, and handlers are idempotent.
async fn settle<T>(
    settling: impl std::future::Future<Output = Result<T, lapin::Error>>,
    what: &'static str,
) -> anyhow::Result<()> {
    tokio::time::timeout(SETTLE_TIMEOUT, settling)
        .await
        .with_context(|| format!("{what} timed out"))?
        .context(what)?;
    Ok(())
}

/// Declares the queue with its dead-letter queue and bindings.
/// Shared queues are quorum queues: replicated across a cluster's nodes,
/// and counting each message's returns for `x-delivery-limit`.
fn queue_arguments(sub: &Subscription) -> FieldTable {
    let mut arguments = FieldTable::default();
    if !sub.private {
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    }
    arguments
}

async fn declare_queue(channel: &Channel, settings: &AmqpSettings, sub: &Subscription) -> anyhow::Result<()> {
    declare_exchange(channel, &settings.exchange, ExchangeKind::Topic).await?;
    declare_exchange(channel, &settings.dead_letter_exchange, ExchangeKind::Direct).await?;
    let dead = format!("{}.dead", sub.queue);
    // A private queue's dead letters go with its connection, as the queue
    // does: nobody consumes them, so auto-delete alone would keep the queue
    // on the broker for ever, one more for every process ever started.
    let options = QueueDeclareOptions {
        durable: !sub.private,
        exclusive: sub.private,
        auto_delete: sub.private,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(dead.as_str().into(), options, queue_arguments(sub))
        .await
        .with_context(|| declare_failed(&dead))?;
    channel
        .queue_bind(
            dead.as_str().into(),
            settings.dead_letter_exchange.as_str().into(),
            sub.queue.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("binding the dead-letter queue")?;
    let mut arguments = queue_arguments(sub);
    if !sub.private {
        let limit = i64::from(sub.delivery_limit.max(1));
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
    }
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(settings.dead_letter_exchange.as_str().into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(sub.queue.as_str().into()),
    );
    let options = QueueDeclareOptions {
        durable: !sub.private,
        exclusive: sub.private,
        auto_delete: sub.private,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(sub.queue.as_str().into(), options, arguments)
        .await
        .with_context(|| declare_failed(&sub.queue))?;
    for key in &sub.bindings {
        channel
            .queue_bind(
                sub.queue.as_str().into(),
                settings.exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {} to {key}", sub.queue))?;
    }
    Ok(())
}

/// What a failed queue declaration says: most often a queue of that name
/// declared earlier with other arguments (a classic queue from an older
/// version), which the broker will not change in place.
fn declare_failed(queue: &str) -> String {
    format!(
        "declaring queue {queue} (if it exists with other arguments, such as a classic queue an older \
         version declared, let it drain, then delete it: the broker does not change a queue's type in place)"
    )
}

fn trace_headers(headers: Option<&FieldTable>, event: &mut Event) {
    let Some(headers) = headers else { return };
    for name in TRACE_HEADERS {
        let key = ShortString::from(name);
        if let Some(AMQPValue::LongString(value)) = headers.inner().get(&key) {
            event
                .trace_context
                .entry(name.to_string())
                .or_insert_with(|| value.to_string());
        }
    }
}

async fn consume_once(
    settings: &AmqpSettings,
    sub: &Subscription,
    handler: &dyn EventHandler,
    processed: &dyn ProcessedEvents,
    shutdown: &CancellationToken,
    reconnect: bool,
    consumed: &mut bool,
) -> anyhow::Result<()> {
    // Every step is bounded: a step the broker never answers (a connection
    // lost halfway) must end in a reconnect, not a wait.
    let setup = async {
        let connection = connect(settings).await?;
        let channel = connection.create_channel().await.context("opening a channel")?;
        declare_queue(&channel, settings, sub).await?;
        channel
            .basic_qos(sub.prefetch.max(1), BasicQosOptions::default())
            .await
            .context("setting the prefetch")?;
        let deliveries = channel
            .basic_consume(
                sub.queue.as_str().into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("starting to consume")?;
        anyhow::Ok((connection, channel, deliveries))
    };
    let (connection, channel, mut deliveries) = tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .context("setting up the consumer timed out")??;
    tracing::info!(queue = sub.queue, "consuming events");
    *consumed = true;
    if reconnect {
        handler.reconnected();
    }
    let queue_label = crate::metrics::QueueLabels {
        queue: sub.queue.clone(),
    };
    let batch_size = handler.batch_size().max(1);
    loop {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = deliveries.next() => next,
            () = lost(&connection, &channel) => bail!("the connection to RabbitMQ was lost"),
        };
        let Some(delivery) = delivery else {
            bail!("the broker ended the subscription");
        };
        // The deliveries already waiting join the first, up to the batch size.
        let mut batch = vec![delivery.context("receiving a delivery")?];
        while batch.len() < batch_size {
            match deliveries.next().now_or_never() {
                Some(Some(next)) => batch.push(next.context("receiving a delivery")?),
                Some(None) => bail!("the broker ended the subscription"),
                None => break,
            }
        }
        let mut decoded = Vec::with_capacity(batch.len());
        for delivery in batch {
            match Event::decode(delivery.data.as_slice()) {
                Ok(mut event) => {
                    trace_headers(delivery.properties.headers().as_ref(), &mut event);
                    decoded.push((delivery, event));
                }
                Err(err) => {
                    tracing::error!(queue = sub.queue, error = %err, "undecodable message dead-lettered");
                    let dead_letter = BasicNackOptions {
                        requeue: false,
                        ..BasicNackOptions::default()
                    };
                    settle(delivery.acker.nack(dead_letter), "dead-lettering").await?;
                    crate::metrics::events().dead_lettered.get_or_create(&queue_label).inc();
                }
            }
        }
        if let [(_, event)] = decoded.as_slice() {
            let span = crate::trace::event_span(&sub.queue, event);
            let Some((delivery, event)) = decoded.pop() else {
                continue;
            };
            handle_delivery(delivery, &event, sub, handler, processed)
                .instrument(span)
                .await?;
        } else if !decoded.is_empty() {
            handle_batch(decoded, sub, handler, processed).await?;
        }
    }
}

/// Handles deliveries together: what was processed already is acknowledged,
/// the rest goes to the handler at once; what succeeded is acknowledged, a
/// rejected event is dead-lettered, and one that failed transiently goes
/// through the one-at-a-time path, with its retries.
async fn handle_batch(
    decoded: Vec<(lapin::message::Delivery, Event)>,
    sub: &Subscription,
    handler: &dyn EventHandler,
    processed: &dyn ProcessedEvents,
) -> anyhow::Result<()> {
    let queue_label = crate::metrics::QueueLabels {
        queue: sub.queue.clone(),
    };
    let mut fresh = Vec::with_capacity(decoded.len());
    for (delivery, event) in decoded {
        if processed.seen(&event.id).await? {
            settle(delivery.acker.ack(BasicAckOptions::default()), "acknowledging").await?;
        } else {
            fresh.push((delivery, event));
        }
    }
    let events: Vec<Event> = fresh.iter().map(|(_, event)| event.clone()).collect();
    let mut results = handler.handle_batch(&events).await;
    // A handler that answered for fewer events leaves the rest to the
    // one-at-a-time path, never unacknowledged.
    while results.len() < events.len() {
        results.push(Err(HandleError::Retry(anyhow::anyhow!(
            "the batch handler gave no result"
        ))));
    }
    // All handled, the usual case: one acknowledgement covers the batch (the
    // deliveries before it on this channel are all settled by now).
    if results.iter().all(Result::is_ok)
        && let Some((last, _)) = fresh.last()
    {
        for (_, event) in &fresh {
            processed.remember(&event.id).await?;
        }
        let all = BasicAckOptions { multiple: true };
        settle(last.acker.ack(all), "acknowledging").await?;
        crate::metrics::events()
            .consumed
            .get_or_create(&queue_label)
            .inc_by(fresh.len() as u64);
        return Ok(());
    }
    for ((delivery, event), result) in fresh.into_iter().zip(results) {
        match result {
            Ok(()) => {
                processed.remember(&event.id).await?;
                settle(delivery.acker.ack(BasicAckOptions::default()), "acknowledging").await?;
                crate::metrics::events().consumed.get_or_create(&queue_label).inc();
            }
            Err(HandleError::Retry(_)) => {
                let span = crate::trace::event_span(&sub.queue, &event);
                handle_delivery(delivery, &event, sub, handler, processed)
                    .instrument(span)
                    .await?;
            }
            Err(err @ HandleError::Reject(_)) => {
                tracing::error!(event_id = event.id, queue = sub.queue, error = %err, "event dead-lettered");
                let dead_letter = BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                };
                settle(delivery.acker.nack(dead_letter), "dead-lettering").await?;
                crate::metrics::events().dead_lettered.get_or_create(&queue_label).inc();
            }
        }
    }
    Ok(())
}

/// Handles one decoded delivery: skips what was processed already, retries
/// transient failures, acknowledges, returns to the queue or dead-letters.
async fn handle_delivery(
    delivery: lapin::message::Delivery,
    event: &Event,
    sub: &Subscription,
    handler: &dyn EventHandler,
    processed: &dyn ProcessedEvents,
) -> anyhow::Result<()> {
    let queue_label = crate::metrics::QueueLabels {
        queue: sub.queue.clone(),
    };
    let dead_letter = BasicNackOptions {
        requeue: false,
        ..BasicNackOptions::default()
    };
    if processed.seen(&event.id).await? {
        settle(delivery.acker.ack(BasicAckOptions::default()), "acknowledging").await?;
        return Ok(());
    }
    // A transient failure is tried again in place, with backoff, for
    // `retry_for`: a dependency that is down (a store restarting) is waited
    // out with the delivery held, and nothing is lost. A failure that lasts
    // longer sends the delivery back to the queue; on a shared queue, the
    // broker dead-letters one returned past its delivery limit.
    let started = tokio::time::Instant::now();
    let mut attempt: u32 = 1;
    let outcome = loop {
        match handler.handle(event).await {
            Ok(()) => break Ok(()),
            Err(HandleError::Retry(err)) if attempt == 1 || started.elapsed() < sub.retry_for => {
                tracing::warn!(
                    event_id = event.id,
                    attempt,
                    error = format!("{err:#}"),
                    "event handling failed; retrying"
                );
                let pause = Duration::from_millis(100 * 2u64.pow(attempt.min(6))).min(MAX_RETRY_PAUSE);
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(err) => break Err(err),
        }
    };
    match outcome {
        Ok(()) => {
            processed.remember(&event.id).await?;
            settle(delivery.acker.ack(BasicAckOptions::default()), "acknowledging").await?;
            crate::metrics::events().consumed.get_or_create(&queue_label).inc();
        }
        Err(HandleError::Retry(err)) => {
            tracing::warn!(
                event_id = event.id,
                queue = sub.queue,
                error = format!("{err:#}"),
                "event returned to the queue after failing for {:?}",
                sub.retry_for
            );
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            settle(delivery.acker.nack(requeue), "returning to the queue").await?;
        }
        Err(err) => {
            tracing::error!(event_id = event.id, queue = sub.queue, error = %err, "event dead-lettered");
            settle(delivery.acker.nack(dead_letter), "dead-lettering").await?;
            crate::metrics::events().dead_lettered.get_or_create(&queue_label).inc();
        }
    }
    Ok(())
}
