//! Domain events: construction, routing keys, and the bus they travel on.
//! The in-process bus is the embedded default; RabbitMQ plugs in behind the
//! same [`EventPublisher`] port.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fleet_proto::events::v1::{Event, event::Payload};
use tokio::sync::broadcast;
use uuid::Uuid;

/// The routing key of a payload: `<aggregate>.<event>`.
pub fn event_type(payload: &Payload) -> &'static str {
    match payload {
        Payload::UserCreated(_) => "user.created",
        Payload::UserUpdated(_) => "user.updated",
        Payload::UserDeleted(_) => "user.deleted",
        Payload::LoginSucceeded(_) => "auth.login_succeeded",
        Payload::LoginFailed(_) => "auth.login_failed",
        Payload::SessionCreated(_) => "session.created",
        Payload::SessionRevoked(_) => "session.revoked",
        Payload::PasswordChanged(_) => "password.changed",
        Payload::MfaEnabled(_) => "mfa.enabled",
        Payload::MfaDisabled(_) => "mfa.disabled",
        Payload::MfaBackupCodeUsed(_) => "mfa.backup_code_used",
        Payload::MfaReplayRejected(_) => "mfa.replay_rejected",
        Payload::StatsProjected(_) => "stats.projected",
        Payload::TransferExportCompleted(_) => "transfer.export_completed",
        Payload::TransferImportCompleted(_) => "transfer.import_completed",
    }
}

/// A new event about `subject` (a user id), produced by `producer` at `at`,
/// carrying the trace context of the span it is made in, so that its
/// consumers continue the request's trace.
pub fn new_event(producer: &str, subject: Option<Uuid>, at: DateTime<Utc>, payload: Payload) -> Event {
    Event {
        id: Uuid::now_v7().to_string(),
        r#type: event_type(&payload).to_string(),
        occurred_at: Some(crate::time::to_timestamp(at)),
        subject_user_id: subject.map(|s| s.to_string()).unwrap_or_default(),
        trace_context: crate::trace::current_context(),
        producer: producer.to_string(),
        payload: Some(payload),
    }
}

/// Where the outbox relay hands events over.
#[async_trait::async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes one event; `Ok` only once the bus has taken it.
    async fn publish(&self, event: &Event) -> anyhow::Result<()>;
}

/// The embedded event bus: a broadcast channel inside the process.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    tx: broadcast::Sender<Arc<Event>>,
    /// Counts the times events may have been missed (a consumer that fed
    /// the bus reconnected: what was published meanwhile never came).
    missed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl InProcessBus {
    /// A bus that buffers up to `capacity` events per slow subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        let (missed, _) = tokio::sync::watch::channel(0);
        Self {
            tx,
            missed: Arc::new(missed),
        }
    }

    /// Receives every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Tells every follower that events may have been missed.
    pub fn missed(&self) {
        self.missed.send_modify(|times| *times += 1);
    }

    /// Changes each time events may have been missed.
    pub fn subscribe_missed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.missed.subscribe()
    }
}

#[async_trait::async_trait]
impl EventPublisher for InProcessBus {
    async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        // No subscriber is not a failure: nobody is listening yet.
        let _ = self.tx.send(Arc::new(event.clone()));
        Ok(())
    }
}
