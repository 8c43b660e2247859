//! The fleet on PostgreSQL through a real PgBouncer (session pooling): every
//! service migrates and works in its own schema, and events still flow from
//! the outboxes to stats.

use fleet_kit::testing::{TestBackend, database, pgbouncer::PgBouncer};
use reqwest::Method;
use serde_json::json;

use crate::{
    harness::{Api, Fleet, Proto},
    stats::until,
};

#[tokio::test]
async fn the_fleet_runs_on_postgresql_through_pgbouncer() {
    let Some(db) = database(TestBackend::Postgres).await else {
        return;
    };
    let Some(bouncer) = tokio::task::spawn_blocking(|| PgBouncer::start("session"))
        .await
        .unwrap()
    else {
        return;
    };
    let url = bouncer.url_for(&db.url);
    let fleet = Fleet::start_with(&[("FLEET_DATABASE_URL", url.as_str())]).await;
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
}
