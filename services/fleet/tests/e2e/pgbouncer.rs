//! The fleet on PostgreSQL through a real PgBouncer, in session pooling and
//! in transaction pooling (`database.transaction_pooling`, with fewer
//! server connections than the services hold): every service migrates and
//! works in its own schema, and events still flow from the outboxes to
//! stats.

use fleet_kit::testing::{TestBackend, database, pgbouncer::PgBouncer};
use reqwest::Method;
use serde_json::json;

use crate::{
    harness::{Api, Fleet, Proto},
    stats::until,
};

#[tokio::test]
async fn the_fleet_runs_on_postgresql_through_pgbouncer() {
    // Session pooling holds a server connection per client connection:
    // enough for every service's pool.
    through_pgbouncer("session", 60, &[]).await;
}

#[tokio::test]
async fn the_fleet_runs_on_postgresql_through_pgbouncer_in_transaction_pooling() {
    through_pgbouncer("transaction", 4, &[("FLEET_DATABASE__TRANSACTION_POOLING", "true")]).await;
}

async fn through_pgbouncer(mode: &'static str, servers: u32, extra: &[(&str, &str)]) {
    let Some(db) = database(TestBackend::Postgres).await else {
        return;
    };
    let Some(bouncer) = tokio::task::spawn_blocking(move || PgBouncer::start_with(mode, servers))
        .await
        .unwrap()
    else {
        return;
    };
    let url = bouncer.url_for(&db.url);
    let mut env = vec![("FLEET_DATABASE_URL", url.as_str())];
    env.extend_from_slice(extra);
    let fleet = Fleet::start_with(&env).await;
    let api = Api::new(&fleet, Proto::Http1);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;

    let rename = json!({"display_name": "Ada L."});
    let renamed = api
        .call(Method::PATCH, "/api/v1/users/me", Some(&token), Some(rename))
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    let me = api.call(Method::GET, "/api/v1/users/me", Some(&token), None).await;
    assert_eq!(me.body["display_name"], "Ada L.");
    until(&api, "/api/v1/stats/user", &token, |s| s["logins_total"] == 1).await;

    // Forty callers at once: every service's connections share the
    // bouncer's few server connections.
    let burst = (0..40).map(|i| {
        let (api, token) = (&api, token.as_str());
        async move {
            let (method, path, body) = match i % 4 {
                0 => (
                    Method::PATCH,
                    "/api/v1/users/me",
                    Some(json!({"display_name": format!("Ada {i}")})),
                ),
                1 => (Method::GET, "/api/v1/auth/sessions", None),
                2 => (Method::GET, "/api/v1/notifications", None),
                _ => (Method::GET, "/api/v1/users/me", None),
            };
            let answer = api.call(method, path, Some(token), body).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        }
    });
    futures::future::join_all(burst).await;
}
