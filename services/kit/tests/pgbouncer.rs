//! The stores through a real PgBouncer (Debian's 1.18) in session pooling,
//! in front of this machine's PostgreSQL: each connection's schema and
//! statement timeout are set by statements PgBouncer passes on (it refuses
//! the `options` startup parameter), and migrations, writes and reads work
//! on every pooled connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Context;
use fleet_kit::{
    Db, PoolSettings,
    error::internal,
    testing::{TestBackend, database, pgbouncer::PgBouncer},
};
use tonic::Code;

fn pool(db: &Db) -> &sqlx::PgPool {
    let Db::Postgres(pool) = db else {
        panic!("not PostgreSQL")
    };
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_works_through_pgbouncer_with_its_schema_and_statement_timeout() {
    let Some(test_db) = database(TestBackend::Postgres).await else {
        return;
    };
    let Some(bouncer) = PgBouncer::start("session") else {
        return;
    };
    let settings = PoolSettings {
        max_connections: 4,
        acquire_timeout_ms: 5_000,
        statement_timeout_ms: 200,
    };
    let db = Db::connect_with(&bouncer.url_for(&test_db.url), "bounced", &settings)
        .await
        .expect("connected through PgBouncer");
    sqlx::query("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(pool(&db))
        .await
        .unwrap();

    // Every pooled connection writes into the service's schema.
    let writes = (0..40).map(|id| {
        let pool = pool(&db).clone();
        async move {
            sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
                .bind(id)
                .bind(format!("note {id}"))
                .execute(&pool)
                .await
        }
    });
    for written in futures::future::join_all(writes).await {
        written.unwrap();
    }
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM bounced.notes")
        .fetch_one(pool(&db))
        .await
        .unwrap();
    assert_eq!(counted, 40);
    let path: String = sqlx::query_scalar("SHOW search_path")
        .fetch_one(pool(&db))
        .await
        .unwrap();
    assert_eq!(path, "bounced");

    // The statement timeout holds through PgBouncer too.
    let slow = sqlx::query("SELECT pg_sleep(2)")
        .execute(pool(&db))
        .await
        .map(|_| ())
        .context("a slow read");
    let err = slow.expect_err("cancelled at the statement timeout");
    assert_eq!(internal(&err).code(), Code::DeadlineExceeded, "{err:#}");
}
