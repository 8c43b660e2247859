//! The PostgreSQL pool's settings against this machine's server: a call that
//! finds no free connection in time is UNAVAILABLE, and a statement the
//! server cancels at `statement_timeout` is DEADLINE_EXCEEDED.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Context;
use fleet_kit::{
    Db, PoolSettings,
    error::internal,
    testing::{TestBackend, database},
};
use tonic::Code;

fn pool(db: &Db) -> &sqlx::PgPool {
    let Db::Postgres(pool) = db else {
        panic!("not PostgreSQL")
    };
    pool
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
