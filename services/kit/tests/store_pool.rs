//! The pools' settings against this machine's servers: a call that finds no
//! free connection in time is UNAVAILABLE, a statement the server cancels at
//! `statement_timeout` is DEADLINE_EXCEEDED, a connection cut while idle is
//! checked and replaced before it is lent, and SQLite's writers queue in the
//! process instead of meeting a taken lock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use fleet_kit::{
    Db, PoolSettings,
    error::internal,
    store::{CHECKED_IDLE, StorePool, check_before_lending},
    testing::{TcpRelay, TestBackend, database},
};
use sqlx::{
    postgres::PgConnectOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};
use tonic::Code;

fn pool(db: &Db) -> &sqlx::PgPool {
    let Db::Postgres(pool) = db else {
        panic!("not PostgreSQL")
    };
    pool.inner()
}

#[tokio::test]
async fn a_busy_pool_is_unavailable_and_a_long_statement_is_cancelled_at_its_timeout() {
    let Some(test_db) = database(TestBackend::Postgres).await else {
        return;
    };
    let settings = PoolSettings {
        max_connections: 1,
        acquire_timeout_ms: 200,
        statement_timeout_ms: 100,
        transaction_pooling: false,
    };
    let db = Db::connect_with(&test_db.url, "pool_check", &settings).await.unwrap();
    assert_eq!(pool(&db).options().get_max_connections(), 1);

    let held = pool(&db).acquire().await.unwrap();
    let waited = pool(&db).acquire().await.map(|_| ()).context("reading");
    let err = waited.expect_err("the only connection is taken");
    assert_eq!(internal(&err).code(), Code::Unavailable, "{err:#}");
    drop(held);

    let slow = sqlx::query("SELECT pg_sleep(2)")
        .execute(pool(&db))
        .await
        .map(|_| ())
        .context("a slow read");
    let err = slow.expect_err("cancelled at the statement timeout");
    assert_eq!(internal(&err).code(), Code::DeadlineExceeded, "{err:#}");
    // The connection is still good for the next statement.
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(pool(&db)).await.unwrap();
    assert_eq!(one, 1);
}

#[test]
fn a_connection_is_checked_before_lending_only_after_it_sat_idle() {
    // Just released (and pinged on the way back): lent as it is.
    assert!(!check_before_lending(Duration::ZERO));
    assert!(!check_before_lending(CHECKED_IDLE - Duration::from_millis(1)));
    assert!(check_before_lending(CHECKED_IDLE));
    assert!(check_before_lending(Duration::from_secs(3600)));
}

#[tokio::test]
async fn a_connection_cut_while_idle_is_replaced_before_it_is_lent() {
    let Some(test_db) = database(TestBackend::Postgres).await else {
        return;
    };
    let options = PgConnectOptions::from_str(&test_db.url).unwrap();
    let server = format!("{}:{}", options.get_host(), options.get_port());
    let relay = TcpRelay::start(&server).await;
    let relayed = test_db.url.replacen(&server, &format!("127.0.0.1:{}", relay.port), 1);
    assert_ne!(relayed, test_db.url, "{server} is not in {}", test_db.url);
    let settings = PoolSettings {
        max_connections: 1,
        ..PoolSettings::default()
    };
    let db = Db::connect_with(&relayed, "pool_lending", &settings).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(pool(&db)).await.unwrap();
    assert_eq!(one, 1);

    // Back in the idle queue (checked on its way there)…
    while pool(&db).num_idle() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // …the pool's one connection dies while it waits there, long
    // enough that it is checked before it is lent again (sqlx measures
    // idleness on its own clock); then the server can be reached again.
    relay.set_cut(true);
    tokio::time::sleep(CHECKED_IDLE + Duration::from_millis(100)).await;
    relay.set_cut(false);
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(pool(&db))
        .await
        .expect("the dead connection is replaced, not lent");
    assert_eq!(one, 1);
}

#[tokio::test]
async fn sqlite_writers_wait_their_turn_instead_of_meeting_a_taken_lock() {
    let test_db = database(TestBackend::Sqlite).await.unwrap();
    // No busy handler at all: a writer that found the lock taken would fail
    // at once with "database is locked".
    let options = SqliteConnectOptions::from_str(&test_db.url)
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::ZERO);
    let pool = StorePool::new(
        SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap(),
    );
    sqlx::query("CREATE TABLE written (writer INTEGER NOT NULL, step INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let writers = (0..16).map(|writer| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin_write().await.context("begin")?;
            for step in 0..2 {
                sqlx::query("INSERT INTO written (writer, step) VALUES (?, ?)")
                    .bind(writer)
                    .bind(step)
                    .execute(&mut *tx)
                    .await
                    .context("insert")?;
                // Hold the lock across an await, as a store's transaction does.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tx.commit().await.context("commit")
        })
    });
    // Statements sent alone for their effect are writes too.
    let lone = (16..32).map(|writer| {
        let pool = pool.clone();
        tokio::spawn(async move {
            sqlx::query("INSERT INTO written (writer, step) VALUES (?, 0)")
                .bind(writer)
                .execute(&pool)
                .await
                .context("a lone insert")
                .map(|_| ())
        })
    });
    let (writers, lone) =
        futures::future::join(futures::future::join_all(writers), futures::future::join_all(lone)).await;
    for writer in writers.into_iter().chain(lone) {
        writer.unwrap().unwrap();
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM written")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 48);
}
