//! The password-hashing pool. argon2id costs ~19 MiB and tens of milliseconds
//! of one core per hash, so it runs on a fixed number of threads of its own,
//! at a lower CPU priority than request handling, behind an admission bound:
//! during a login storm the machine hashes at its capacity, memory stays
//! bounded, other requests keep their latency, and what exceeds the queue is
//! refused at once (UNAVAILABLE with a retry hint) rather than held until the
//! caller's deadline.

use std::{
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, Sender, channel},
    },
    time::Duration,
};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::{
    metrics::AuthMetrics,
    password::{self, Password},
};

/// How the pool is sized (`auth.hashing.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HashingSettings {
    /// Threads that hash; 0: one per core.
    pub workers: usize,
    /// Requests that may wait for a thread; more are refused at once.
    pub max_queued: usize,
    /// The threads' nice value (0 to 19): above 0, request handling runs first
    /// when both want the CPU.
    pub nice: i32,
}

impl Default for HashingSettings {
    fn default() -> Self {
        Self {
            workers: 0,
            max_queued: 32,
            nice: 10,
        }
    }
}

/// How long a refused caller is told to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The pool was full: nothing was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once; try again shortly")]
pub struct Overloaded;

type Job = Box<dyn FnOnce() + Send>;

/// Threads that hash, and the admission bound in front of them.
pub struct HashingPool {
    admission: Arc<Semaphore>,
    jobs: Sender<Job>,
    capacity: usize,
    workers: usize,
    metrics: AuthMetrics,
}

impl std::fmt::Debug for HashingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingPool")
            .field("workers", &self.workers)
            .field("capacity", &self.capacity)
            .field("available", &self.admission.available_permits())
            .finish()
    }
}

impl HashingPool {
    /// Starts the threads; they end when the pool is dropped.
    pub fn start(settings: &HashingSettings, metrics: AuthMetrics) -> anyhow::Result<Arc<Self>> {
        let workers = match settings.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let nice = settings.nice.clamp(0, 19);
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..workers {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("fleet-argon2-{n}"))
                .spawn(move || work(&queue, nice))
                .context("starting a password-hashing thread")?;
        }
        let capacity = workers + settings.max_queued;
        Ok(Arc::new(Self {
            admission: Arc::new(Semaphore::new(capacity)),
            jobs,
            capacity,
            workers,
            metrics,
        }))
    }

    /// A place in the pool for one request's hashing, or [`Overloaded`] at
    /// once when every thread is busy and the queue is full.
    pub fn admit(self: &Arc<Self>) -> Result<Ticket, Overloaded> {
        match self.admission.clone().try_acquire_owned() {
            Ok(permit) => Ok(Ticket {
                pool: self.clone(),
                permit: Arc::new(permit),
            }),
            Err(_) => {
                self.metrics.hash_refused();
                Err(Overloaded)
            }
        }
    }

    /// Requests admitted and not yet finished.
    pub fn in_use(&self) -> usize {
        self.capacity - self.admission.available_permits()
    }
}

fn work(queue: &Mutex<Receiver<Job>>, nice: i32) {
    if nice > 0
        && let Err(err) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
    {
        tracing::warn!(%err, nice, "could not lower the priority of a password-hashing thread");
    }
    loop {
        // The lock is held only while waiting for the next job.
        let job = match queue.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            // A panicking job loses its answer (the caller hears that the
            // thread failed), not the thread.
            Ok(job) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a password-hashing job panicked");
                }
            }
            Err(_) => return, // the pool is gone
        }
    }
}

/// One admitted request's place in the pool; hashing through it needs no
/// further admission. The place is held until the ticket and every job it
/// queued are finished, so a caller that gives up cannot overfill the queue.
pub struct Ticket {
    pool: Arc<HashingPool>,
    permit: Arc<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket")
    }
}

impl Ticket {
    /// Hashes a new password (PHC string).
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let password = password.clone();
        self.run(move || password::hash_now(&password)).await?
    }

    /// Whether `password` matches `phc`. With no hash (unknown account) a
    /// dummy one is checked, and the answer is false.
    pub async fn verify(&self, password: &Password, phc: Option<String>) -> anyhow::Result<bool> {
        let password = password.clone();
        self.run(move || password::verify_now(&password, phc)).await?
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let (answer, answered) = oneshot::channel();
        let permit = self.permit.clone();
        let job: Job = Box::new(move || {
            let _ = answer.send(f());
            drop(permit);
        });
        self.pool
            .jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the password-hashing threads stopped"))?;
        answered.await.context("a password-hashing thread failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(workers: usize, max_queued: usize) -> Arc<HashingPool> {
        let settings = HashingSettings {
            workers,
            max_queued,
            nice: 10,
        };
        HashingPool::start(&settings, AuthMetrics::default()).unwrap()
    }

    #[tokio::test]
    async fn hashes_and_verifies_through_the_pool() {
        let pool = pool(1, 0);
        let pw = Password::parse_new("correct horse battery", "password").unwrap();
        let ticket = pool.admit().unwrap();
        let phc = ticket.hash(&pw).await.unwrap();
        assert!(ticket.verify(&pw, Some(phc.clone())).await.unwrap());
        assert!(!ticket.verify(&Password::presented("wrong"), Some(phc)).await.unwrap());
        assert!(!ticket.verify(&pw, None).await.unwrap());
    }

    #[tokio::test]
    async fn past_the_threads_and_the_queue_requests_are_refused_at_once() {
        let pool = pool(2, 3);
        let held: Vec<Ticket> = (0..5).map(|_| pool.admit().unwrap()).collect();
        assert_eq!(pool.in_use(), 5);
        assert_eq!(pool.admit().unwrap_err(), Overloaded);
        drop(held);
        assert_eq!(pool.in_use(), 0);
        assert!(pool.admit().is_ok());
    }

    #[tokio::test]
    async fn a_place_is_held_until_the_work_it_queued_is_done() {
        let pool = pool(1, 0);
        let ticket = pool.admit().unwrap();
        let pw = Password::presented("a password to check");
        // The caller gives up right after queueing: its future is dropped,
        // but the thread still has the work to do.
        let work = ticket.verify(&pw, None);
        let _ = tokio::time::timeout(Duration::from_millis(1), work).await;
        drop(ticket);
        assert_eq!(
            pool.admit().unwrap_err(),
            Overloaded,
            "the queued check still holds the place"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while pool.in_use() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the place was never given back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(pool.admit().is_ok());
    }

    #[tokio::test]
    async fn a_panicking_job_fails_its_caller_and_keeps_its_thread() {
        let pool = pool(1, 0);
        let ticket = pool.admit().unwrap();
        #[allow(clippy::panic)]
        let failed = ticket.run(|| -> u8 { panic!("a job that panics") }).await;
        assert!(failed.is_err());
        // The one thread still works.
        assert_eq!(ticket.run(|| 7u8).await.unwrap(), 7);
    }

    #[test]
    fn hashing_threads_run_at_the_configured_lower_priority() {
        let pool = pool(1, 0);
        let ours = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let ticket = pool.admit().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let nice = runtime
            .block_on(ticket.run(move || {
                let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
                let _ = tx.send(());
                nice
            }))
            .unwrap();
        rx.recv().unwrap();
        assert_eq!(nice, ours.max(10));
        // Only the pool's threads are lowered.
        assert_eq!(
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap(),
            ours
        );
    }
}
