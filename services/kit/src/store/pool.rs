//! A store's connections, and how its statements reach PostgreSQL through a
//! pooler in transaction mode (PgBouncer `pool_mode = transaction`,
//! `database.transaction_pooling`).
//!
//! Such a pooler lends a server connection for one transaction at a time.
//! Two things that hold across transactions then break: settings made once
//! per connection (`search_path`, `statement_timeout`), and prepared
//! statements (sqlx prepares and caches them per client connection, and
//! parses a statement in one round trip and executes it in the next: two
//! transactions when nothing holds them together). Pinned, a pool therefore
//! runs every statement inside a transaction, and every transaction opens
//! by forgetting the client's prepared statements, dropping whatever
//! statements the lent server connection still holds (`DEALLOCATE ALL`:
//! it is this transaction's alone), and applying the settings (`SET
//! LOCAL`). A statement sent to the pool by itself gets a transaction of
//! its own; a transaction the store begins is opened the same way. That
//! costs up to three round trips per transaction, and only in that mode.
//!
//! Writes on SQLite wait their turn in the process, first come first served:
//! a write transaction ([`StorePool::begin_write`]) before `BEGIN
//! IMMEDIATE`, a statement sent alone for its effect (`execute`) before it
//! runs. Reads never wait. A write sent alone through `fetch…` (`RETURNING`)
//! does not queue, and meets the busy handler as before. SQLite
//! lets one writer in at a time; a writer that finds the lock taken sleeps
//! in its busy handler in growing steps (up to 100 ms) and retries, so under
//! contention writers were let in in no order and some waited hundreds of
//! milliseconds while the lock sat free. In a queue the next writer starts
//! as soon as the one before it ends.

use std::{
    fmt,
    ops::{Deref, DerefMut},
    sync::Arc,
};

use futures::{
    StreamExt, TryStreamExt,
    future::BoxFuture,
    stream::{self, BoxStream},
};
use sqlx::{Connection, Database, Either, Error, Execute, Executor, Pool, Postgres, Sqlite, Transaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Backend;

/// How long a write waits for its turn before it fails: as long as SQLite's
/// busy handler waits for the lock (`Db::connect_with`), which the turn
/// stands in front of for the process's own writers.
pub const TURN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A store's pool: the sqlx pool, and under transaction pooling the
/// settings each transaction opens with. It does not hand out the sqlx pool
/// (no `Deref`): statements reach the store through its `Executor` and its
/// transactions, where the rules above hold, and only [`StorePool::inner`]
/// goes around them, by name.
pub struct StorePool<DB: Database> {
    pool: Pool<DB>,
    /// `SET LOCAL …` for every transaction, when connections are lent per
    /// transaction; `None` when each connection keeps its own settings.
    pinned: Option<Arc<str>>,
    /// The turn to write, for a backend that lets one writer in at a time.
    writers: Arc<Semaphore>,
}

impl<DB: Database> StorePool<DB> {
    /// A pool whose connections keep their settings.
    pub fn new(pool: Pool<DB>) -> Self {
        Self {
            pool,
            pinned: None,
            writers: Arc::new(Semaphore::new(1)),
        }
    }

    /// A pool behind a transaction-mode pooler: every transaction opens
    /// with `settings` (`SET LOCAL` statements), after `DEALLOCATE ALL`.
    pub fn pinned(pool: Pool<DB>, settings: &str) -> Self {
        Self {
            pinned: Some(format!("DEALLOCATE ALL; {settings}").into()),
            ..Self::new(pool)
        }
    }

    /// The process's turn to write, when `one_writer`: waited for first come
    /// first served, for as long as SQLite's busy handler would have
    /// waited for the lock ([`TURN_TIMEOUT`]).
    async fn turn_to_write(&self, one_writer: bool) -> Result<Option<OwnedSemaphorePermit>, Error> {
        if !one_writer {
            return Ok(None);
        }
        match tokio::time::timeout(TURN_TIMEOUT, self.writers.clone().acquire_owned()).await {
            Ok(Ok(turn)) => Ok(Some(turn)),
            // The semaphore is never closed.
            Ok(Err(_)) => Err(Error::PoolClosed),
            Err(_) => Err(Error::PoolTimedOut),
        }
    }

    /// Whether statements are wrapped in transactions of their own.
    pub fn is_pinned(&self) -> bool {
        self.pinned.is_some()
    }

    /// Connections open now, lent or idle.
    pub fn size(&self) -> u32 {
        self.pool.size()
    }

    /// Connections open and idle now.
    pub fn num_idle(&self) -> usize {
        self.pool.num_idle()
    }

    /// Closes every connection, once the lent ones come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The sqlx pool itself, for what goes around this pool's rules on
    /// purpose (migrations, which bring their own transactions).
    pub fn inner(&self) -> &Pool<DB> {
        &self.pool
    }
}

impl<DB: Database> Clone for StorePool<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            pinned: self.pinned.clone(),
            writers: self.writers.clone(),
        }
    }
}

/// A write transaction: the sqlx transaction, and on SQLite the process's
/// turn to write, given back when it ends (commit, rollback or drop).
/// Statements run on it as on the transaction (`&mut *tx`).
pub struct WriteTx<DB: Database> {
    tx: Transaction<'static, DB>,
    _turn: Option<OwnedSemaphorePermit>,
}

impl<DB: Database> WriteTx<DB> {
    /// Commits.
    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), Error> {
        self.tx.rollback().await
    }
}

impl<DB: Database> Deref for WriteTx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: Database> DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

impl<DB: Database> fmt::Debug for StorePool<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorePool")
            .field("pool", &self.pool)
            .field("pinned", &self.pinned.is_some())
            .finish()
    }
}

macro_rules! store_pool {
    ($db:ty, one_writer: $one_writer:expr) => {
        impl StorePool<$db> {
            /// Begins a write transaction ([`Backend::BEGIN_WRITE`]), on a
            /// backend with one writer at a time after waiting its turn in
            /// the process (see the module's documentation).
            pub async fn begin_write(&self) -> Result<WriteTx<$db>, Error> {
                let turn = self.turn_to_write($one_writer).await?;
                let tx = self.begin_with(<$db as Backend>::BEGIN_WRITE).await?;
                Ok(WriteTx { tx, _turn: turn })
            }

            /// Begins a transaction with `statement` (`BEGIN …`); pinned, it
            /// then starts from no prepared statement on either side and
            /// applies the settings.
            pub async fn begin_with(&self, statement: &'static str) -> Result<Transaction<'static, $db>, Error> {
                let mut tx = self.pool.begin_with(statement).await?;
                if let Some(settings) = &self.pinned {
                    tx.clear_cached_statements().await?;
                    (&mut *tx).execute(sqlx::raw_sql(settings)).await?;
                }
                Ok(tx)
            }

            /// Begins a transaction (see [`Self::begin_with`]).
            pub async fn begin(&self) -> Result<Transaction<'static, $db>, Error> {
                self.begin_with("BEGIN").await
            }
        }

        impl<'p> Executor<'p> for &'p StorePool<$db> {
            type Database = $db;

            /// A statement run for its effect is taken for a write: on a
            /// backend with one writer at a time it waits its turn, like
            /// [`StorePool::begin_write`]. Reads (`fetch…`) never wait.
            fn execute<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<<$db as Database>::QueryResult, Error>>
            where
                'p: 'e,
                E: 'q + Execute<'q, $db>,
            {
                Box::pin(async move {
                    let _turn = self.turn_to_write($one_writer).await?;
                    self.execute_many(query).try_collect().await
                })
            }

            fn fetch_many<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxStream<'e, Result<Either<<$db as Database>::QueryResult, <$db as Database>::Row>, Error>>
            where
                'p: 'e,
                E: 'q + Execute<'q, $db>,
            {
                if self.pinned.is_none() {
                    return self.pool.fetch_many(query);
                }
                // Read whole inside the transaction, then handed out.
                stream::once(async move {
                    let mut tx = self.begin().await?;
                    let results: Vec<_> = (&mut *tx).fetch_many(query).try_collect().await?;
                    tx.commit().await?;
                    Ok::<_, Error>(stream::iter(results.into_iter().map(Ok)))
                })
                .try_flatten()
                .boxed()
            }

            fn fetch_optional<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxFuture<'e, Result<Option<<$db as Database>::Row>, Error>>
            where
                'p: 'e,
                E: 'q + Execute<'q, $db>,
            {
                if self.pinned.is_none() {
                    return self.pool.fetch_optional(query);
                }
                Box::pin(async move {
                    let mut tx = self.begin().await?;
                    let row = (&mut *tx).fetch_optional(query).await?;
                    tx.commit().await?;
                    Ok(row)
                })
            }

            fn prepare_with<'e, 'q: 'e>(
                self,
                sql: &'q str,
                parameters: &'e [<$db as Database>::TypeInfo],
            ) -> BoxFuture<'e, Result<<$db as Database>::Statement<'q>, Error>>
            where
                'p: 'e,
            {
                self.pool.prepare_with(sql, parameters)
            }

            fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<sqlx::Describe<$db>, Error>>
            where
                'p: 'e,
            {
                self.pool.describe(sql)
            }
        }
    };
}

store_pool!(Postgres, one_writer: false);
store_pool!(Sqlite, one_writer: true);
