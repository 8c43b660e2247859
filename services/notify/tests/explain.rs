//! Every read the notify API and dispatcher make is served by an index:
//! PostgreSQL's plan for each statement, with sequential scans priced out of
//! reach, must be bounded by an index condition (a feed or a queue read must
//! not slow down with the table).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fleet_kit::{
    Db,
    testing::{TestBackend, database},
};
use fleet_notify::{sql, store::FIRST};
use uuid::Uuid;

#[tokio::test]
async fn every_read_of_the_feed_and_the_queue_uses_an_index() {
    let Some(database) = database(TestBackend::Postgres).await else {
        return;
    };
    let db = Db::connect(&database.url, "notify").await.unwrap();
    fleet_notify::migrate(&db).await.unwrap();
    let Db::Postgres(pool) = &db else { panic!("PostgreSQL") };
    let user = Uuid::now_v7();
    let mut conn = pool.inner().acquire().await.unwrap();
    // Without this, a small table is always cheapest to scan.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let explain = |statement: &str| format!("EXPLAIN {statement}");
    let mut plans = Vec::new();
    for (name, statement) in [
        ("feed", sql::FEED),
        ("unread feed", sql::FEED_UNREAD),
        ("deliveries", sql::DELIVERIES),
    ] {
        let rows = sqlx::query(&explain(statement))
            .bind(user)
            .bind(FIRST.0)
            .bind(FIRST.1)
            .bind(20_i64)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        plans.push((name, rows));
    }
    let unread = sqlx::query(&explain(sql::UNREAD))
        .bind(user)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    plans.push(("unread count", unread));
    let due = sqlx::query(&explain(sql::DUE))
        .bind(0_i64)
        .bind(256_i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    plans.push(("due deliveries", due));
    for (name, rows) in plans {
        let plan: Vec<String> = rows.iter().map(|row| sqlx::Row::get::<String, _>(row, 0)).collect();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{name} scans a table:\n{plan}");
        assert!(
            plan.contains("Index Cond"),
            "{name} is not bounded by an index:\n{plan}"
        );
    }
}
