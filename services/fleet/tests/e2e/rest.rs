//! Every auth and users row of the REST API, through the gateway over HTTPS,
//! on HTTP/1.1 and HTTP/2.

use reqwest::Method;
use serde_json::json;

use crate::harness::{Api, Fleet, PASSWORD, Proto, assert_problem};

async fn auth_rows(api: &Api<'_>) {
    let user = api.register("ada@example.com", "Ada").await;
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["role"], "user");

    let dup = json!({"email": "ADA@example.com", "password": PASSWORD, "display_name": "Again"});
    assert_problem(
        &api.call(Method::POST, "/api/v1/auth/register", None, Some(dup)).await,
        409,
    );
    // Every broken field is reported in one answer.
    let bad = json!({"email": "nope", "password": "short", "display_name": " "});
    let bad = api.call(Method::POST, "/api/v1/auth/register", None, Some(bad)).await;
    assert_problem(&bad, 400);
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "password", "display_name"], "{}", bad.body);

    let login = api.login("ada@example.com").await;
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 900);
    assert_eq!(login["user"]["id"], user["id"]);
    let access = login["access_token"].as_str().unwrap().to_string();

    let wrong = json!({"email": "ada@example.com", "password": "not the password!"});
    let wrong = api.call(Method::POST, "/api/v1/auth/login", None, Some(wrong)).await;
    let unknown = json!({"email": "nobody@example.com", "password": "not the password!"});
    let unknown = api.call(Method::POST, "/api/v1/auth/login", None, Some(unknown)).await;
    assert_problem(&wrong, 401);
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("request_id");
        v
    };
    assert_eq!(
        strip(wrong.body),
        strip(unknown.body),
        "same answer whether or not the email exists"
    );

    let refresh = json!({"refresh_token": login["refresh_token"]});
    let refreshed = api
        .call(Method::POST, "/api/v1/auth/refresh", None, Some(refresh.clone()))
        .await;
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.body);
    assert_ne!(refreshed.body["refresh_token"], login["refresh_token"]);
    assert_problem(
        &api.call(Method::POST, "/api/v1/auth/refresh", None, Some(refresh))
            .await,
        401,
    );

    // The reuse above revoked the first session; two fresh ones now.
    assert_problem(
        &api.call(Method::GET, "/api/v1/users/me", Some(&access), None).await,
        401,
    );
    let spare = api.login("ada@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let second = api.login("ada@example.com").await;
    let token = second["access_token"].as_str().unwrap().to_string();
    let sessions = api.call(Method::GET, "/api/v1/auth/sessions", Some(&token), None).await;
    assert_eq!(sessions.status, 200);
    let items = sessions.body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    let other = items.iter().find(|s| s["current"] != true).unwrap();
    let other_path = format!("/api/v1/auth/sessions/{}", other["id"].as_str().unwrap());
    assert_eq!(
        api.call(Method::DELETE, &other_path, Some(&token), None).await.status,
        204
    );
    assert_problem(
        &api.call(Method::GET, "/api/v1/users/me", Some(&spare), None).await,
        401,
    );
    assert_problem(&api.call(Method::DELETE, &other_path, Some(&token), None).await, 404);

    let third = api.login("ada@example.com").await;
    let third_access = third["access_token"].as_str().unwrap().to_string();
    let change = json!({"current_password": PASSWORD, "new_password": "an entirely new passphrase"});
    assert_eq!(
        api.call(Method::POST, "/api/v1/auth/password", Some(&token), Some(change))
            .await
            .status,
        204
    );
    assert_problem(
        &api.call(Method::GET, "/api/v1/users/me", Some(&third_access), None)
            .await,
        401,
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/users/me", Some(&token), None)
            .await
            .status,
        200
    );

    let jwks = api.call(Method::GET, "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.body["keys"][0]["kty"], "OKP");

    assert_eq!(
        api.call(Method::POST, "/api/v1/auth/logout", Some(&token), None)
            .await
            .status,
        204
    );
    assert_problem(
        &api.call(Method::GET, "/api/v1/users/me", Some(&token), None).await,
        401,
    );
}

async fn users_rows(api: &Api<'_>) {
    let (ada, ada_token) = api.signed_in("ada@example.com", "Ada").await;
    let (bob, bob_token) = api.signed_in("bob@example.com", "Bob").await;

    let me = api.call(Method::GET, "/api/v1/users/me", Some(&ada_token), None).await;
    assert_eq!(me.status, 200);
    for field in [
        "id",
        "email",
        "display_name",
        "role",
        "status",
        "created_at",
        "updated_at",
    ] {
        assert!(!me.body[field].is_null(), "{field} missing");
    }
    let patch = json!({"display_name": "Ada L."});
    let patched = api
        .call(Method::PATCH, "/api/v1/users/me", Some(&ada_token), Some(patch))
        .await;
    assert_eq!(
        (patched.status, patched.body["display_name"].as_str()),
        (200, Some("Ada L."))
    );
    let stale = json!({"display_name": "Stale", "version": 1});
    assert_problem(
        &api.call(Method::PATCH, "/api/v1/users/me", Some(&ada_token), Some(stale))
            .await,
        409,
    );

    let page = api
        .call(Method::GET, "/api/v1/users?limit=1", Some(&ada_token), None)
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 1);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    let next = api
        .call(
            Method::GET,
            &format!("/api/v1/users?limit=1&cursor={cursor}"),
            Some(&ada_token),
            None,
        )
        .await;
    assert_eq!(next.status, 200);
    assert!(next.body["next_cursor"].is_null());
    let public = &next.body["items"][0];
    assert!(
        public["email"].is_null() && public["display_name"].is_string(),
        "public fields only: {public}"
    );
    assert_problem(&api.call(Method::GET, "/api/v1/users", None, None).await, 401);

    let bob_path = format!("/api/v1/users/{}", bob["id"].as_str().unwrap());
    let seen = api.call(Method::GET, &bob_path, Some(&ada_token), None).await;
    assert_eq!((seen.status, seen.body["email"].is_null()), (200, true));
    let promote = json!({"role": "admin"});
    assert_problem(
        &api.call(Method::PATCH, &bob_path, Some(&ada_token), Some(promote.clone()))
            .await,
        403,
    );
    assert_problem(&api.call(Method::DELETE, &bob_path, Some(&ada_token), None).await, 403);

    // The first admin comes from the command line, while the fleet runs.
    let out = api.fleet.command(&["user", "promote", "ada@example.com"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = api.login("ada@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let seen = api.call(Method::GET, &bob_path, Some(&admin), None).await;
    assert_eq!(seen.body["email"], "bob@example.com");
    let promoted = api.call(Method::PATCH, &bob_path, Some(&admin), Some(promote)).await;
    assert_eq!((promoted.status, promoted.body["role"].as_str()), (200, Some("admin")));

    // The promotion ended bob's sessions: his token claims the old role.
    let ada_path = format!("/api/v1/users/{}", ada["id"].as_str().unwrap());
    let started = std::time::Instant::now();
    while api
        .call(Method::GET, "/api/v1/users/me", Some(&bob_token), None)
        .await
        .status
        != 401
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "bob's old session lives on"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let bob_token = api.login("bob@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        api.call(Method::DELETE, &bob_path, Some(&bob_token), None).await.status,
        204
    );
    assert_problem(&api.call(Method::GET, &bob_path, Some(&admin), None).await, 404);
    assert_eq!(
        api.call(Method::DELETE, &ada_path, Some(&admin), None).await.status,
        204
    );
}

#[tokio::test]
async fn auth_rows_work_over_http1() {
    let fleet = Fleet::start().await;
    auth_rows(&Api::new(&fleet, Proto::Http1)).await;
}

#[tokio::test]
async fn auth_rows_work_over_http2() {
    let fleet = Fleet::start().await;
    auth_rows(&Api::new(&fleet, Proto::Http2)).await;
}

#[tokio::test]
async fn users_rows_work_over_http1() {
    let fleet = Fleet::start().await;
    users_rows(&Api::new(&fleet, Proto::Http1)).await;
}

#[tokio::test]
async fn users_rows_work_over_http2() {
    let fleet = Fleet::start().await;
    users_rows(&Api::new(&fleet, Proto::Http2)).await;
}

#[tokio::test]
async fn a_literal_segment_is_its_own_resource_and_options_lists_its_methods() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http2);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;

    let options = api.call(Method::OPTIONS, "/api/v1/users/me", None, None).await;
    assert_eq!(options.status, 204);
    assert_eq!(options.header("allow"), Some("GET, HEAD, OPTIONS, PATCH"));
    let by_id = api.call(Method::OPTIONS, "/api/v1/users/abc", None, None).await;
    assert_eq!(by_id.header("allow"), Some("DELETE, GET, HEAD, OPTIONS, PATCH"));

    // DELETE /users/me is not delete-by-id with "me" for an id.
    let deleted = api.call(Method::DELETE, "/api/v1/users/me", Some(&token), None).await;
    assert_problem(&deleted, 405);
    assert_eq!(deleted.header("allow"), Some("GET, HEAD, OPTIONS, PATCH"));
    assert_eq!(
        api.call(Method::GET, "/api/v1/users/me", Some(&token), None)
            .await
            .status,
        200
    );
    assert_problem(&api.call(Method::OPTIONS, "/api/v1/nothing", None, None).await, 404);
}

#[tokio::test]
async fn every_declared_field_is_in_every_answer_even_when_empty() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http2);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    let login = api.login("ada@example.com").await;
    assert_eq!(
        (login["mfa_required"].clone(), login["methods"].clone()),
        (json!(false), json!([]))
    );
    assert_eq!(login["mfa_token"], "", "{login}");

    // The session that did not ask has `current: false`, printed.
    let sessions = api.call(Method::GET, "/api/v1/auth/sessions", Some(&token), None).await;
    let items = sessions.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", sessions.body);
    let current: Vec<&serde_json::Value> = items.iter().map(|s| &s["current"]).collect();
    assert!(
        current.contains(&&json!(false)) && current.contains(&&json!(true)),
        "{}",
        sessions.body
    );

    // An empty page still has its items.
    let empty = api
        .call(Method::GET, "/api/v1/users?q=nobody-has-this", Some(&token), None)
        .await;
    assert_eq!(empty.body, json!({"items": [], "next_cursor": null}));

    // Another user's public view: private fields are null, not missing.
    let bob = api.register("bob@example.com", "Bob").await;
    let public = api
        .call(
            Method::GET,
            &format!("/api/v1/users/{}", bob["id"].as_str().unwrap()),
            Some(&token),
            None,
        )
        .await;
    let keys: Vec<&String> = public.body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 8, "{}", public.body);
    for private in ["email", "role", "status", "updated_at", "version"] {
        assert!(public.body[private].is_null(), "{private} in {}", public.body);
    }

    // A 2FA status with nothing on prints its zeros and falses.
    let mfa = api.call(Method::GET, "/api/v1/auth/2fa", Some(&token), None).await;
    assert_eq!(
        mfa.body,
        json!({"enabled": false, "methods": [], "backup_codes_remaining": 0, "backup_codes_running_low": false, "sms_enabled": false})
    );
}
