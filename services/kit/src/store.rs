//! Store connections from a URL (`postgres://` or `sqlite://`) and migrations
//! per backend. In PostgreSQL every service owns a schema of one database
//! (its connections' `search_path`); embedded, every service owns a SQLite file.
//!
//! Stores are written once per service and instantiated for both backends on
//! their native sqlx types (see [`Backend`]); the same contract tests run
//! against each.

mod pool;

use std::{path::Path, str::FromStr, time::Duration};

use anyhow::{Context, bail};
pub use pool::{StorePool, WriteTx};
use sqlx::{
    Executor, Postgres, Sqlite,
    migrate::Migrator,
    pool::PoolOptions,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};

/// How long a connection may sit idle in the pool and still be lent without
/// a round trip to check it. sqlx checks every connection as it goes back
/// (a ping, on its way into the idle queue), so one lent again soon after
/// is known to work; checking it again on the way out (sqlx's default,
/// `test_before_acquire`) added a second round trip to every statement sent
/// to the pool: for SQLite a hop to the connection's worker thread and
/// back, for PostgreSQL one to the server. Past this, a connection may have
/// been closed while it waited (a server restart, an idle timeout between
/// here and the server), and it is checked first.
pub const CHECKED_IDLE: Duration = Duration::from_secs(1);

/// Whether a connection idle for `idle_for` is checked before it is lent.
pub fn check_before_lending(idle_for: Duration) -> bool {
    idle_for >= CHECKED_IDLE
}

/// Pool options both backends share: connections are checked on their way
/// out only when they have been idle (see [`CHECKED_IDLE`]).
fn lending<DB: sqlx::Database>(options: PoolOptions<DB>) -> PoolOptions<DB> {
    options.test_before_acquire(false).before_acquire(|connection, meta| {
        Box::pin(async move {
            if check_before_lending(meta.idle_for) {
                sqlx::Connection::ping(connection).await?;
            }
            Ok(true)
        })
    })
}

/// What differs between the backends, for code written once for both.
pub trait Backend: sqlx::Database {
    /// The statement that opens a write transaction. SQLite takes the write
    /// lock up front so concurrent writers queue instead of failing.
    const BEGIN_WRITE: &'static str;
    /// The statement that opens a read transaction whose statements all see
    /// one snapshot, so figures read together agree with each other.
    const BEGIN_SNAPSHOT: &'static str;
}

impl Backend for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
}

impl Backend for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // In WAL mode a deferred transaction reads one snapshot from its first read.
    const BEGIN_SNAPSHOT: &'static str = "BEGIN";
}

/// A connected store of one service.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL, with `search_path` set to the service's schema.
    Postgres(StorePool<Postgres>),
    /// An embedded SQLite file.
    Sqlite(StorePool<Sqlite>),
}

/// A service's migrations, one set per backend.
#[derive(Debug)]
pub struct Migrations {
    /// Migrations for PostgreSQL.
    pub postgres: Migrator,
    /// Migrations for SQLite.
    pub sqlite: Migrator,
}

/// The outbox migrations every service runs before its own. Their versions
/// are below 100; services number theirs from 100.
fn kit_migrations() -> Migrations {
    Migrations {
        postgres: sqlx::migrate!("migrations/postgres"),
        sqlite: sqlx::migrate!("migrations/sqlite"),
    }
}

/// How a service's PostgreSQL pool behaves (`database.*` in the
/// configuration). SQLite files keep their own settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PoolSettings {
    /// Connections per service and process at most.
    pub max_connections: u32,
    /// How long a call waits for a free connection before the store counts
    /// as unavailable (503).
    pub acquire_timeout_ms: u64,
    /// The server cancels a statement that runs longer (PostgreSQL's
    /// `statement_timeout`; 504 at the gateway); 0, the default: no limit.
    /// It applies to migrations too, which a long index build may exceed.
    pub statement_timeout_ms: u64,
    /// PostgreSQL is reached through a pooler that lends a server
    /// connection per transaction (PgBouncer `pool_mode = transaction`):
    /// every statement then runs in a transaction, each transaction opens
    /// with no prepared statement and the schema and timeout (`SET
    /// LOCAL`), and migrations run in one transaction (see [`StorePool`]).
    pub transaction_pooling: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 0,
            transaction_pooling: false,
        }
    }
}

impl Db {
    /// Connects to `url` with the default pool settings; in PostgreSQL the
    /// service's tables live in `schema`, which is created when missing.
    pub async fn connect(url: &str, schema: &str) -> anyhow::Result<Db> {
        Self::connect_with(url, schema, &PoolSettings::default()).await
    }

    /// Connects to `url` with `pool`'s settings.
    pub async fn connect_with(url: &str, schema: &str, pool: &PoolSettings) -> anyhow::Result<Db> {
        if !schema.chars().all(|c| c.is_ascii_lowercase() || c == '_') || schema.is_empty() {
            bail!("schema name {schema:?} must be lowercase letters and underscores");
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
            let settings = pool;
            let builder = lending(PgPoolOptions::new())
                .max_connections(settings.max_connections.max(1))
                .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms.max(1)));
            let pool = if settings.transaction_pooling {
                let pool = builder
                    .connect_with(options)
                    .await
                    .context("connecting to PostgreSQL")?;
                let local = format!(
                    "SET LOCAL search_path TO {schema}; SET LOCAL statement_timeout = {}",
                    settings.statement_timeout_ms
                );
                StorePool::pinned(pool, &local)
            } else {
                // Set on each new connection by statements, not as startup
                // parameters (`options`), which PgBouncer refuses. The schema
                // name was checked above; identifiers cannot be bound.
                let session = format!(
                    "SET search_path TO {schema}; SET statement_timeout = {}",
                    settings.statement_timeout_ms
                );
                let pool = builder
                    .after_connect(move |connection, _| {
                        let session = session.clone();
                        Box::pin(async move {
                            connection.execute(sqlx::raw_sql(&session)).await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
                    .context("connecting to PostgreSQL")?;
                StorePool::new(pool)
            };
            // The name was checked above; identifiers cannot be bound.
            let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
            if let Err(err) = sqlx::query(&create).execute(&pool).await {
                // Two processes creating the schema at once: one loses the race.
                let raced = err.as_database_error().is_some_and(|e| e.is_unique_violation());
                if !raced {
                    return Err(err).context("creating the service schema");
                }
            }
            Ok(Db::Postgres(pool))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or(path);
            if let Some(dir) = Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let options = SqliteConnectOptions::from_str(url)
                .context("invalid SQLite URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(pool::TURN_TIMEOUT)
                .foreign_keys(true);
            let pool = lending(SqlitePoolOptions::new())
                .max_connections(4)
                .connect_with(options)
                .await
                .with_context(|| format!("opening SQLite database {file}"))?;
            Ok(Db::Sqlite(StorePool::new(pool)))
        } else {
            bail!("unsupported database URL: expected postgres:// or sqlite://")
        }
    }

    /// Runs the outbox migrations, then the service's.
    pub async fn migrate(&self, service: &Migrations) -> anyhow::Result<()> {
        let kit = kit_migrations();
        match self {
            // Behind a transaction-mode pooler, one transaction holds the
            // server connection (and the migrator's lock) throughout; each
            // migration is a savepoint in it.
            Db::Postgres(pool) if pool.is_pinned() => {
                let mut tx = pool.begin().await.context("beginning the migrations")?;
                run(kit.postgres, &mut *tx).await?;
                run(clone_migrator(&service.postgres), &mut *tx).await?;
                tx.commit().await.context("committing the migrations")
            }
            Db::Postgres(pool) => {
                run(kit.postgres, pool.inner()).await?;
                run(clone_migrator(&service.postgres), pool.inner()).await
            }
            Db::Sqlite(pool) => {
                run(kit.sqlite, pool.inner()).await?;
                run(clone_migrator(&service.sqlite), pool.inner()).await
            }
        }
    }

    /// "postgres" or "sqlite".
    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// Connections checked out of the pool now.
    pub fn connections_in_use(&self) -> usize {
        match self {
            Db::Postgres(pool) => (pool.size() as usize).saturating_sub(pool.num_idle()),
            Db::Sqlite(pool) => (pool.size() as usize).saturating_sub(pool.num_idle()),
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Db::Postgres(pool) => pool.close().await,
            Db::Sqlite(pool) => pool.close().await,
        }
    }
}

fn clone_migrator(m: &Migrator) -> Migrator {
    Migrator {
        migrations: m.migrations.clone(),
        ignore_missing: m.ignore_missing,
        locking: m.locking,
        no_tx: m.no_tx,
    }
}

async fn run<'a, A>(mut migrator: Migrator, to: A) -> anyhow::Result<()>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    // The kit's and the service's migrations share one history table.
    migrator.set_ignore_missing(true);
    migrator.run(to).await.context("running migrations")
}

/// The database URL of one service: its own if configured, else the shared
/// one, else a SQLite file `<data_dir>/<service>.db`. A shared SQLite URL is
/// split per service too (`fleet.db` → `fleet-users.db`), since services
/// never share tables.
pub fn service_database_url(own: Option<&str>, shared: Option<&str>, data_dir: &Path, service: &str) -> String {
    if let Some(url) = own.filter(|u| !u.is_empty()) {
        return url.to_string();
    }
    match shared.filter(|u| !u.is_empty()) {
        Some(url) => match url.strip_prefix("sqlite://") {
            Some(rest) => {
                let (file, query) = rest.split_once('?').map_or((rest, None), |(f, q)| (f, Some(q)));
                let path = Path::new(file);
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("fleet");
                let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("db");
                let split = path.with_file_name(format!("{stem}-{service}.{ext}"));
                match query {
                    Some(q) => format!("sqlite://{}?{q}", split.display()),
                    None => format!("sqlite://{}", split.display()),
                }
            }
            None => url.to_string(),
        },
        None => format!("sqlite://{}", data_dir.join(format!("{service}.db")).display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_its_own_database_url() {
        let data = Path::new("./data");
        assert_eq!(
            service_database_url(None, None, data, "users"),
            "sqlite://./data/users.db"
        );
        assert_eq!(
            service_database_url(None, Some("postgres://db/fleet"), data, "users"),
            "postgres://db/fleet"
        );
        assert_eq!(
            service_database_url(None, Some("sqlite:///var/fleet.db?mode=rwc"), data, "auth"),
            "sqlite:///var/fleet-auth.db?mode=rwc"
        );
        assert_eq!(
            service_database_url(Some("postgres://own"), Some("postgres://shared"), data, "auth"),
            "postgres://own"
        );
    }

    #[tokio::test]
    async fn unsupported_urls_and_schema_names_are_refused() {
        assert!(Db::connect("mysql://x", "users").await.is_err());
        assert!(Db::connect("sqlite://x.db", "users; drop").await.is_err());
    }
}
