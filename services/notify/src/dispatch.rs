//! Delivery: due rows of the store are taken under a lease, attempted side
//! by side (a slow endpoint holds one slot, not the queue), and their
//! outcomes written back in batches. A process that dies mid-attempt loses
//! nothing: the lease runs out and the delivery is attempted again, with the
//! same `webhook-id`.

use std::{sync::Arc, time::Duration};

use fleet_kit::SharedClock;
use rand::Rng;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    email::Mailer,
    metrics::NotifyMetrics,
    store::{Attempted, Claimed, NotifyStore, channel, micros, status},
    webhook::{WebhookClient, sign},
};

/// When attempts are made: the first at once, then after each of these
/// delays (Standard Webhooks' schedule); a message not delivered by then
/// fails.
pub const SCHEDULE: [Duration; 10] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(24 * 3600),
];

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long a taken delivery is another taker's only after this: longer
/// than an attempt's timeout and the write of its outcome.
const LEASE: Duration = Duration::from_secs(60);
/// Attempts in flight at once.
const IN_FLIGHT: usize = 256;
/// Outcomes written per transaction at most.
const WRITE_BATCH: usize = 256;
/// How long an idle dispatcher sleeps before it looks again (other
/// replicas queue deliveries too).
const IDLE: Duration = Duration::from_secs(1);

/// The delay before the attempt after `made` failed attempts, with up to
/// 10% jitter; `None` once the schedule is spent. A `Retry-After` longer
/// than the schedule's delay is honoured.
pub fn next_delay(made: usize, retry_after: Option<Duration>, jitter: f64) -> Option<Duration> {
    let scheduled = *SCHEDULE.get(made)?;
    let jittered = scheduled.mul_f64(1.0 + jitter.clamp(-0.1, 0.1));
    Some(retry_after.map_or(jittered, |r| r.min(MAX_RETRY_AFTER).max(jittered)))
}

/// Attempts due deliveries.
pub struct Dispatcher {
    store: Arc<dyn NotifyStore>,
    webhooks: WebhookClient,
    mailer: Mailer,
    clock: SharedClock,
    wake: Notify,
    metrics: NotifyMetrics,
}

impl Dispatcher {
    /// A dispatcher of `store`'s deliveries.
    pub fn new(
        store: Arc<dyn NotifyStore>,
        webhooks: WebhookClient,
        mailer: Mailer,
        clock: SharedClock,
        metrics: NotifyMetrics,
    ) -> Self {
        Self {
            store,
            webhooks,
            mailer,
            clock,
            wake: Notify::new(),
            metrics,
        }
    }

    /// Whether email is sent at all.
    pub fn sends_email(&self) -> bool {
        self.mailer.enabled()
    }

    /// Says that deliveries were queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Attempts due deliveries until `shutdown`; attempts in flight then
    /// finish (15 s at most) and their outcomes are written.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let (outcomes, received) = mpsc::channel::<Attempted>(IN_FLIGHT * 2);
        let writer = tokio::spawn(write_outcomes(
            self.store.clone(),
            self.clock.clone(),
            received,
            self.metrics.clone(),
        ));
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    permit = slots.acquire() => drop(permit),
                }
                continue;
            }
            let now = self.clock.now();
            let lease = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
            let taken = match self.store.claim_due(now, lease, free as i64).await {
                Ok(taken) => taken,
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "taking due deliveries failed");
                    self.idle(&shutdown, IDLE).await;
                    continue;
                }
            };
            if taken.is_empty() {
                let wait = match self.store.next_due().await {
                    Ok(Some(at)) => (at - self.clock.now()).to_std().unwrap_or_default().min(IDLE),
                    _ => IDLE,
                };
                self.idle(&shutdown, wait).await;
                continue;
            }
            for claimed in taken {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let this = self.clone();
                let outcomes = outcomes.clone();
                tokio::spawn(async move {
                    let attempted = this.attempt(claimed).await;
                    let _ = outcomes.send(attempted).await;
                    drop(slot);
                });
            }
        }
        // In-flight attempts end within their timeout.
        let _ = tokio::time::timeout(Duration::from_secs(20), slots.acquire_many(IN_FLIGHT as u32)).await;
        drop(outcomes);
        let _ = writer.await;
    }

    async fn idle(&self, shutdown: &CancellationToken, wait: Duration) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = self.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    /// One attempt of a taken delivery.
    pub async fn attempt(&self, claimed: Claimed) -> Attempted {
        let mut attempted = Attempted {
            id: claimed.id,
            user_id: claimed.user_id,
            channel: claimed.channel.clone(),
            attempted: true,
            status: status::PENDING,
            response_code: 0,
            latency_ms: 0,
            error: String::new(),
            next_attempt_us: None,
            disable_webhook: None,
        };
        let account = &claimed.account;
        let (retry_after, permanent) = if claimed.channel == channel::WEBHOOK {
            if !account.webhook_active() {
                return closed(attempted, "the webhook was removed or disabled");
            }
            let now = self.clock.now();
            let id = format!("msg_{}", claimed.id.simple());
            let timestamp = now.timestamp();
            let mut signatures = Vec::with_capacity(2);
            let mut secrets = vec![account.webhook_secret.as_str()];
            if !account.previous_secret.is_empty() && account.previous_secret_until_us > micros(now) {
                secrets.push(account.previous_secret.as_str());
            }
            for secret in secrets {
                match sign(secret, &id, timestamp, &claimed.payload) {
                    Ok(signature) => signatures.push(signature),
                    Err(err) => return closed(attempted, &format!("{err:#}")),
                }
            }
            let answer = self
                .webhooks
                .post(
                    &account.webhook_url,
                    &id,
                    timestamp,
                    claimed.payload,
                    &signatures.join(" "),
                )
                .await;
            attempted.response_code = answer.status.map_or(0, i32::from);
            attempted.latency_ms = i32::try_from(answer.latency.as_millis()).unwrap_or(i32::MAX);
            attempted.error = answer.error;
            match answer.status {
                Some(200..=299) => {
                    attempted.status = status::DELIVERED;
                    self.metrics
                        .attempt(channel::WEBHOOK, "delivered", answer.latency.as_secs_f64());
                    return attempted;
                }
                Some(410) => {
                    attempted.status = status::FAILED;
                    attempted.disable_webhook = Some("the endpoint answered 410 Gone".into());
                    self.metrics
                        .attempt(channel::WEBHOOK, "disabled", answer.latency.as_secs_f64());
                    return attempted;
                }
                _ => (answer.retry_after, false),
            }
        } else {
            if !self.mailer.enabled() {
                return closed(attempted, "email is off");
            }
            if !account.email_enabled || account.email.is_empty() {
                return closed(attempted, "email was switched off");
            }
            let started = std::time::Instant::now();
            let sent = self.mailer.send(&account.email, &claimed.payload).await;
            attempted.latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
            match sent {
                Ok(()) => {
                    attempted.status = status::DELIVERED;
                    self.metrics
                        .attempt(channel::EMAIL, "delivered", started.elapsed().as_secs_f64());
                    return attempted;
                }
                Err(failed) => {
                    attempted.error = failed.error;
                    (None, failed.permanent)
                }
            }
        };
        let jitter = rand::thread_rng().gen_range(-0.1..=0.1);
        let made = usize::try_from(claimed.attempts).unwrap_or(0) + 1;
        match next_delay(made, retry_after, jitter).filter(|_| !permanent) {
            Some(delay) => {
                let due = self.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
                attempted.next_attempt_us = Some(micros(due));
                self.metrics
                    .attempt(&claimed.channel, "retry", f64::from(attempted.latency_ms) / 1000.0);
            }
            None => {
                attempted.status = status::FAILED;
                self.metrics
                    .attempt(&claimed.channel, "failed", f64::from(attempted.latency_ms) / 1000.0);
            }
        }
        attempted
    }
}

/// A delivery closed without an attempt.
fn closed(mut attempted: Attempted, why: &str) -> Attempted {
    attempted.attempted = false;
    attempted.status = status::DISABLED;
    attempted.error = why.to_string();
    attempted
}

/// Writes outcomes as they come, a batch per transaction; a batch that
/// cannot be written is tried again (its leases keep others off meanwhile).
async fn write_outcomes(
    store: Arc<dyn NotifyStore>,
    clock: SharedClock,
    mut received: mpsc::Receiver<Attempted>,
    metrics: NotifyMetrics,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while received.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for attempt in 1.. {
            match store.finish(&batch, clock.now()).await {
                Ok(stopped) => {
                    metrics.webhooks_disabled.inc_by(stopped.len() as u64);
                    for user in stopped {
                        tracing::info!(user_id = %user, "webhook deliveries stopped");
                    }
                    break;
                }
                Err(err) if attempt < 10 => {
                    tracing::warn!(error = format!("{err:#}"), "writing delivery outcomes failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(err) => {
                    // The leases run out and the deliveries are attempted again.
                    tracing::error!(error = format!("{err:#}"), "delivery outcomes were not written");
                    break;
                }
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_specifications_and_runs_out() {
        assert_eq!(next_delay(1, None, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(2, None, 0.0), Some(Duration::from_secs(300)));
        assert_eq!(next_delay(9, None, 0.0), Some(Duration::from_secs(24 * 3600)));
        assert_eq!(next_delay(10, None, 0.0), None);
        let jittered = next_delay(3, None, 0.5).unwrap();
        assert_eq!(jittered, Duration::from_secs(30 * 60).mul_f64(1.1));
    }

    #[test]
    fn retry_after_is_honoured_up_to_a_day() {
        assert_eq!(
            next_delay(1, Some(Duration::from_secs(60)), 0.0),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            next_delay(2, Some(Duration::from_secs(1)), 0.0),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            next_delay(1, Some(Duration::from_secs(10 * 86_400)), 0.0),
            Some(MAX_RETRY_AFTER)
        );
    }
}
