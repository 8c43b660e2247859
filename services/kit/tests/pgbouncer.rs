//! The stores through a real PgBouncer (Debian's 1.18) in front of this
//! machine's PostgreSQL. In session pooling, each connection's schema and
//! statement timeout are set by statements PgBouncer passes on (it refuses
//! the `options` startup parameter). In transaction pooling, with fewer
//! server connections than clients, every statement runs in a transaction
//! of its own that carries the schema and timeout, statements are never
//! named, and migrations run in one transaction.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Context;
use fleet_kit::{
    Db, PoolSettings,
    error::internal,
    testing::{TestBackend, database, pgbouncer::PgBouncer},
};
use tonic::Code;

fn pool(db: &Db) -> &fleet_kit::StorePool<sqlx::Postgres> {
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
        transaction_pooling: false,
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
    settings_hold(&db, "bounced", 40).await;
}

/// The service's schema holds `notes` rows written, `search_path` is the
/// schema, and the statement timeout cancels a slow statement (504).
async fn settings_hold(db: &Db, schema: &str, notes: i64) {
    let counted: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.notes"))
        .fetch_one(pool(db))
        .await
        .unwrap();
    assert_eq!(counted, notes);
    let path: String = sqlx::query_scalar("SHOW search_path")
        .fetch_one(pool(db))
        .await
        .unwrap();
    assert_eq!(path, schema);
    let slow = sqlx::query("SELECT pg_sleep(2)")
        .execute(pool(db))
        .await
        .map(|_| ())
        .context("a slow read");
    let err = slow.expect_err("cancelled at the statement timeout");
    assert_eq!(internal(&err).code(), Code::DeadlineExceeded, "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_works_through_pgbouncer_in_transaction_pooling() {
    let Some(test_db) = database(TestBackend::Postgres).await else {
        return;
    };
    // Two server connections for eight clients: consecutive transactions
    // of one client land on either.
    let Some(bouncer) = PgBouncer::start_with("transaction", 2) else {
        return;
    };
    let settings = PoolSettings {
        max_connections: 8,
        acquire_timeout_ms: 5_000,
        statement_timeout_ms: 200,
        transaction_pooling: true,
    };
    let db = Db::connect_with(&bouncer.url_for(&test_db.url), "pooled", &settings)
        .await
        .expect("connected through PgBouncer");
    // Migrations (the kit's outbox) in one transaction, twice: the second
    // finds them applied.
    for _ in 0..2 {
        let none = fleet_kit::store::Migrations {
            postgres: sqlx::migrate::Migrator::DEFAULT,
            sqlite: sqlx::migrate::Migrator::DEFAULT,
        };
        db.migrate(&none).await.expect("migrated through PgBouncer");
    }
    let outbox: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'outbox'",
    )
    .bind("pooled")
    .fetch_one(pool(&db))
    .await
    .unwrap();
    assert_eq!(outbox, 1, "the outbox is in the service's schema");
    sqlx::query("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(pool(&db))
        .await
        .unwrap();

    // Many parameterised statements at once, each by itself and inside
    // the store's own transactions, over the two shared server connections.
    let writes = (0..200).map(|id| {
        let pool = pool(&db).clone();
        async move {
            if id % 2 == 0 {
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
                    .bind(id)
                    .bind(format!("note {id}"))
                    .execute(&pool)
                    .await?;
            } else {
                let mut tx = pool.begin_with("BEGIN").await?;
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
                    .bind(id)
                    .bind(format!("note {id}"))
                    .execute(&mut *tx)
                    .await?;
                let body: String = sqlx::query_scalar("SELECT body FROM notes WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                assert_eq!(body, format!("note {id}"));
                tx.commit().await?;
            }
            let read: Vec<(i32, String)> = sqlx::query_as("SELECT id, body FROM notes WHERE id <= $1 ORDER BY id")
                .bind(id)
                .fetch_all(&pool)
                .await?;
            assert!(read.iter().any(|(found, _)| *found == id));
            Ok::<_, sqlx::Error>(())
        }
    });
    for written in futures::future::join_all(writes).await {
        written.unwrap();
    }
    settings_hold(&db, "pooled", 200).await;
    // The statement timeout holds inside a store transaction too.
    let mut tx = pool(&db).begin().await.unwrap();
    let slow = sqlx::query("SELECT pg_sleep(2)").execute(&mut *tx).await;
    assert!(slow.is_err(), "cancelled inside a store transaction too");
}
