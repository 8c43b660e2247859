//! Every read of the activity log is served by an index: PostgreSQL's plan
//! for each statement, with sequential scans priced out of reach, must not
//! scan the activity table (it would mean no index can serve the query, and
//! the query would slow down with the table).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fleet_kit::{
    Db,
    testing::{TestBackend, database},
};
use fleet_stats::sql;
use sqlx::{Postgres, postgres::PgArguments, query::Query};
use uuid::Uuid;

const DAY: i64 = 86_400_000_000;

fn with<'q>(sql: &'q str, binds: &[Bind]) -> Query<'q, Postgres, PgArguments> {
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = match bind {
            Bind::Id(id) => query.bind(*id),
            Bind::Int(n) => query.bind(*n),
            Bind::Text(t) => query.bind(t.to_string()),
        };
    }
    query
}

enum Bind {
    Id(Uuid),
    Int(i64),
    Text(&'static str),
}

#[tokio::test]
async fn every_read_of_the_activity_log_uses_an_index() {
    let Some(database) = database(TestBackend::Postgres).await else {
        return;
    };
    let db = Db::connect(&database.url, "stats").await.unwrap();
    fleet_stats::migrate(&db).await.unwrap();
    let Db::Postgres(pool) = &db else { panic!("PostgreSQL") };
    let user = Uuid::now_v7();
    let kind = Bind::Text("auth.login_succeeded");
    let statements: Vec<(&str, &str, Vec<Bind>)> = vec![
        (
            "page",
            sql::PAGE,
            vec![
                Bind::Id(user),
                Bind::Int(0),
                Bind::Int(DAY),
                Bind::Id(Uuid::nil()),
                Bind::Int(20),
            ],
        ),
        (
            "page of a kind",
            sql::PAGE_OF_KIND,
            vec![
                Bind::Id(user),
                Bind::Int(0),
                Bind::Int(DAY),
                Bind::Id(Uuid::nil()),
                Bind::Int(20),
                Bind::Text("auth.login_failed"),
            ],
        ),
        (
            "export page",
            sql::EXPORT_PAGE,
            vec![Bind::Id(user), Bind::Int(0), Bind::Id(Uuid::nil()), Bind::Int(500)],
        ),
        ("daily", sql::DAILY, vec![Bind::Id(user), Bind::Int(0), Bind::Int(30)]),
        (
            "daily of a kind",
            sql::DAILY_OF_KIND,
            vec![Bind::Id(user), Bind::Int(0), Bind::Int(30), Bind::Text("x")],
        ),
        (
            "count of a kind",
            sql::COUNT_OF_KIND,
            vec![Bind::Id(user), Bind::Text("x")],
        ),
        ("count", sql::COUNT, vec![Bind::Id(user)]),
        (
            "latest of a kind",
            sql::LATEST_OF_KIND,
            vec![Bind::Id(user), Bind::Text("x")],
        ),
        (
            "earliest of a kind",
            sql::EARLIEST_OF_KIND,
            vec![Bind::Id(user), Bind::Text("x")],
        ),
        ("active users", sql::ACTIVE_USERS, vec![Bind::Int(0), kind]),
        (
            "fleet days",
            sql::FLEET_DAYS,
            vec![Bind::Int(0), Bind::Int(30), Bind::Text("a"), Bind::Text("b")],
        ),
        ("prune", sql::PRUNE, vec![Bind::Int(DAY), Bind::Int(1000)]),
        ("erase", sql::ERASE, vec![Bind::Id(user)]),
        ("erase counts", sql::ERASE_DAYS, vec![Bind::Id(user)]),
        ("prune counts", sql::PRUNE_DAYS, vec![Bind::Int(30)]),
    ];
    let mut conn = pool.inner().acquire().await.unwrap();
    // Without this, a small table is always cheapest to scan.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (name, statement, binds) in &statements {
        let explain = format!("EXPLAIN {statement}");
        let rows = with(&explain, binds).fetch_all(&mut *conn).await.unwrap();
        let plan: Vec<String> = rows.iter().map(|row| sqlx::Row::get::<String, _>(row, 0)).collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan on activity"),
            "{name} scans the table:\n{plan}"
        );
        assert!(
            plan.contains("Index Cond"),
            "{name} is not bounded by an index:\n{plan}"
        );
    }
}
