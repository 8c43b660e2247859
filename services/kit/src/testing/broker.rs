//! RabbitMQ names a test made up, removed when the test ends however it
//! ends. Shared queues are durable quorum queues: each one the broker keeps
//! is a replicated log with processes of its own, so a test suite that left
//! its queues behind would slow the broker down run after run until its
//! calls time out.

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

use crate::amqp::{AmqpSettings, connect};

/// How long removing a test's names may take before it is given up (a
/// broker that is down leaves nothing to remove).
const CLEANUP_DEADLINE: Duration = Duration::from_secs(10);

/// Queues (each with its `<queue>.dead`) and exchanges deleted on drop.
#[derive(Debug)]
pub struct BrokerNames {
    url: String,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl BrokerNames {
    /// Names on the broker at `url` (`amqp://…`).
    pub fn new(url: &str) -> BrokerNames {
        BrokerNames {
            url: url.to_string(),
            queues: Vec::new(),
            exchanges: Vec::new(),
        }
    }

    /// Deletes `queue` and `<queue>.dead` when dropped.
    pub fn queue(&mut self, queue: &str) -> &mut Self {
        self.queues.push(queue.to_string());
        self.queues.push(format!("{queue}.dead"));
        self
    }

    /// Deletes `exchange` when dropped.
    pub fn exchange(&mut self, exchange: &str) -> &mut Self {
        self.exchanges.push(exchange.to_string());
        self
    }

    /// Deletes now what was named, on a thread of its own so that a drop
    /// inside a Tokio runtime may wait for it.
    fn delete(&self) {
        if self.url.is_empty() || (self.queues.is_empty() && self.exchanges.is_empty()) {
            return;
        }
        let settings = AmqpSettings {
            url: self.url.clone(),
            ..AmqpSettings::default()
        };
        let (queues, exchanges) = (self.queues.clone(), self.exchanges.clone());
        let deleting = async move {
            let connection = connect(&settings).await?;
            remove(&connection, &queues, &exchanges).await
        };
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async { tokio::time::timeout(CLEANUP_DEADLINE, deleting).await? })
        })
        .join();
        if let Ok(Err(err)) = outcome {
            eprintln!("test broker names left behind: {err:#}");
        }
    }
}

/// Deletes each name on a channel of its own, so that a refusal (the broker
/// closes the channel) does not stop the others.
async fn remove(connection: &lapin::Connection, queues: &[String], exchanges: &[String]) -> anyhow::Result<()> {
    for queue in queues {
        let channel = connection.create_channel().await?;
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in exchanges {
        let channel = connection.create_channel().await?;
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "test ended".into()).await;
    Ok(())
}

impl Drop for BrokerNames {
    fn drop(&mut self) {
        self.delete();
    }
}
