//! Identity changes take effect at once: a demoted admin loses its rights
//! with its old token, a disabled user's tokens stop working, and an admin
//! can end every session of a user.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, Fleet, Proto, assert_problem};

fn user_path(user: &Value) -> String {
    format!("/api/v1/users/{}", user["id"].as_str().unwrap())
}

async fn admin(api: &Api<'_>, email: &str) -> String {
    let out = api.fleet.command(&["user", "promote", email]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    api.login(email).await["access_token"].as_str().unwrap().to_string()
}

/// Waits, boundedly, until `token` is refused; the time it took.
async fn refused_within(api: &Api<'_>, token: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let answer = api.call(Method::GET, "/api/v1/users/me", Some(token), None).await;
        if answer.status == 401 {
            return started.elapsed();
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(started.elapsed() < limit, "the token still works after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_demoted_admin_loses_its_rights_at_once_and_cannot_promote_itself_back() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http2);
    let ada = api.register("ada@example.com", "Ada").await;
    api.register("bob@example.com", "Bob").await;
    let ada_admin = admin(&api, "ada@example.com").await;
    let bob_admin = admin(&api, "bob@example.com").await;

    let demote = json!({"role": "user"});
    let demoted = api
        .call(Method::PATCH, &user_path(&ada), Some(&bob_admin), Some(demote))
        .await;
    assert_eq!(demoted.status, 200, "{}", demoted.body);
    // Straight after the demotion the old token cannot promote itself back:
    // users refuses it from the record (403), or, once the demotion's event
    // has ended the session, the edge does (401). Which comes first is a
    // race; the users crate's own test pins the record check alone.
    let again = json!({"role": "admin"});
    let refused = api
        .call(Method::PATCH, &user_path(&ada), Some(&ada_admin), Some(again))
        .await;
    assert!(matches!(refused.status, 401 | 403), "{}", refused.body);
    assert_problem(&refused, refused.status);
    let stored = api.call(Method::GET, &user_path(&ada), Some(&bob_admin), None).await;
    assert_eq!(stored.body["role"], "user", "{}", stored.body);
    let listed = api
        .call(Method::GET, "/api/v1/users?limit=10", Some(&ada_admin), None)
        .await;
    if listed.status == 200 {
        let emails = listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["email"].is_string())
            .count();
        assert_eq!(emails, 1, "a demoted admin sees only its own email: {}", listed.body);
    }
    // And the old token's session ends.
    refused_within(&api, &ada_admin, Duration::from_secs(5)).await;
    // A new login works, with the new role.
    let fresh = api.login("ada@example.com").await;
    assert_eq!(fresh["user"]["role"], "user", "{fresh}");
}

#[tokio::test]
async fn a_disabled_user_is_refused_and_an_admin_can_end_every_session_of_a_user() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http2);
    let (carol, carol_token) = api.signed_in("carol@example.com", "Carol").await;
    let (dave, dave_token) = api.signed_in("dave@example.com", "Dave").await;
    let dave_second = api.login("dave@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    api.register("ada@example.com", "Ada").await;
    let ada_admin = admin(&api, "ada@example.com").await;

    let disable = json!({"status": "disabled"});
    let disabled = api
        .call(Method::PATCH, &user_path(&carol), Some(&ada_admin), Some(disable))
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    refused_within(&api, &carol_token, Duration::from_secs(5)).await;
    assert_problem(
        &api.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "carol@example.com", "password": crate::harness::PASSWORD})),
        )
        .await,
        403,
    );

    // Only an admin may end another user's sessions.
    let sessions = format!("{}/sessions", user_path(&dave));
    assert_problem(
        &api.call(Method::DELETE, &sessions, Some(&carol_token), None).await,
        401,
    );
    let (_, eve_token) = api.signed_in("eve@example.com", "Eve").await;
    assert_problem(&api.call(Method::DELETE, &sessions, Some(&eve_token), None).await, 403);
    assert_eq!(
        api.call(Method::GET, "/api/v1/users/me", Some(&dave_token), None)
            .await
            .status,
        200
    );
    assert_eq!(
        api.call(Method::DELETE, &sessions, Some(&ada_admin), None).await.status,
        204
    );
    // Both of dave's sessions end at once: the gateway learns it from the same process.
    for token in [&dave_token, &dave_second] {
        refused_within(&api, token, Duration::from_secs(5)).await;
    }
    let unknown = "/api/v1/users/0190a1b2-0000-7000-8000-000000000000/sessions";
    assert_problem(&api.call(Method::DELETE, unknown, Some(&ada_admin), None).await, 404);
    assert_problem(
        &api.call(Method::DELETE, "/api/v1/users/nope/sessions", Some(&ada_admin), None)
            .await,
        400,
    );
}

#[tokio::test]
async fn a_gateway_started_after_a_logout_refuses_the_token() {
    if !fleet_kit::testing::backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let front = Fleet::start().await;
    let api = Api::new(&front, Proto::Http2);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    assert_eq!(
        api.call(Method::POST, "/api/v1/auth/logout", Some(&token), None)
            .await
            .status,
        204
    );
    // A gateway that never heard the event (as after a restart) reads auth's
    // durable list of revocations when it starts.
    let late = Fleet::gateway_for(&front, &[]).await;
    let late_api = Api::new(&late, Proto::Http2);
    let started = Instant::now();
    loop {
        let answer = late_api.call(Method::GET, "/api/v1/users/me", Some(&token), None).await;
        if answer.status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the revoked token works: {}",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
