//! Notifications end to end: what a person is told after a new-device login,
//! a password change and 2FA on and off (once each, on `fleet run` and as
//! `--target` processes on PostgreSQL and RabbitMQ); the feed's read marks
//! and unread count; the webhook URLs refused for reaching inside.

use std::time::{Duration, Instant};

use fleet_kit::testing::{TestBackend, backend_available, database};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    harness::{Api, Fleet, PASSWORD, Proto, answer, assert_problem},
    mfa::{confirm_totp, python},
};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
pub(crate) const NEW_PASSWORD: &str = "an entirely new passphrase";
const TRUSTED: (&str, &str) = (
    "FLEET_GATEWAY__RATE_LIMIT__TRUSTED_PROXIES",
    "[\"127.0.0.1/32\", \"::1/128\"]",
);
pub(crate) const ALLOW_HTTP: (&str, &str) = ("FLEET_NOTIFY__WEBHOOKS__ALLOW_HTTP", "true");
pub(crate) const ALLOW_PRIVATE: (&str, &str) = ("FLEET_NOTIFY__WEBHOOKS__ALLOW_PRIVATE_NETWORKS", "true");

/// Logs in as if from `user_agent` at `ip` (through a trusted proxy).
async fn login_from(api: &Api<'_>, email: &str, password: &str, user_agent: &str, ip: &str) -> String {
    let response = api
        .client
        .post(api.fleet.url("/api/v1/auth/login"))
        .header("user-agent", user_agent)
        .header("x-forwarded-for", ip)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let login = answer(response).await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    login.body["access_token"].as_str().unwrap().to_string()
}

/// Waits until the gateway forwards clients' addresses (it does once it
/// holds its service token), with an account of its own.
async fn until_forwarded(api: &Api<'_>) {
    api.register("warm-up@example.com", "Warm").await;
    let started = Instant::now();
    loop {
        let token = login_from(api, "warm-up@example.com", PASSWORD, "WarmUp/1.0", "192.0.2.1").await;
        let sessions = api.call(Method::GET, "/api/v1/auth/sessions", Some(&token), None).await;
        let forwarded = sessions.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["current"] == true && s["ip"] == "192.0.2.1");
        if forwarded {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the gateway never forwarded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn feed(api: &Api<'_>, token: &str, query: &str) -> Value {
    let page = api
        .call(Method::GET, &format!("/api/v1/notifications{query}"), Some(token), None)
        .await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    page.body
}

/// The feed once it holds `n` notifications, boundedly.
pub(crate) async fn feed_of(api: &Api<'_>, token: &str, n: usize) -> Value {
    let started = Instant::now();
    loop {
        let page = feed(api, token, "?limit=100").await;
        if page["items"].as_array().unwrap().len() >= n {
            return page;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "fewer than {n}: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn kinds(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect()
}

/// The spec's flow: each change is told once; read marks and the unread
/// count; nobody else sees or marks them.
async fn told_once_each(api: &Api<'_>, python: &str) {
    until_forwarded(api).await;
    api.register("ada@example.com", "Ada").await;
    let token = login_from(api, "ada@example.com", PASSWORD, "FleetTest/1.0", "203.0.113.7").await;
    // The same device on the same network, then a new device and network.
    login_from(api, "ada@example.com", PASSWORD, "FleetTest/1.1", "203.0.113.99").await;
    login_from(api, "ada@example.com", PASSWORD, FIREFOX, "198.51.100.9").await;
    let change = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let changed = api
        .call(Method::POST, "/api/v1/auth/password", Some(&token), Some(change))
        .await;
    assert_eq!(changed.status, 204, "{:?}", changed.body);
    let enrolment = api
        .call(Method::POST, "/api/v1/auth/2fa/totp/enroll", Some(&token), None)
        .await;
    assert_eq!(enrolment.status, 200, "{:?}", enrolment.body);
    let url = enrolment.body["otpauth_url"].as_str().unwrap().to_string();
    confirm_totp(api, python, &token, &url).await;
    let disabled = api
        .call(
            Method::POST,
            "/api/v1/auth/2fa/totp/disable",
            Some(&token),
            Some(json!({"password": NEW_PASSWORD})),
        )
        .await;
    assert_eq!(disabled.status, 204, "{:?}", disabled.body);
    let token = login_from(api, "ada@example.com", NEW_PASSWORD, "FleetTest/1.0", "203.0.113.7").await;

    feed_of(api, &token, 4).await;
    // Anything more would have come by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page = feed(api, &token, "").await;
    assert_eq!(
        kinds(&page),
        vec!["mfa_disabled", "mfa_enabled", "password_changed", "new_device_login"],
        "{page}"
    );
    assert_eq!(page["unread_count"], 4);
    assert!(page["next_cursor"].is_null());
    let login = &page["items"][3];
    assert_eq!(login["data"]["ip"], "198.51.100.9");
    assert_eq!(login["data"]["user_agent"], FIREFOX);
    assert!(login["read_at"].is_null());
    let text = page.to_string();
    for secret in [PASSWORD, NEW_PASSWORD, token.as_str()] {
        assert!(!text.contains(secret), "a secret in the feed");
    }

    // Read one: the count and the unread filter follow.
    let newest = page["items"][0]["id"].as_str().unwrap().to_string();
    let read = format!("/api/v1/notifications/{newest}/read");
    assert_eq!(api.call(Method::POST, &read, Some(&token), None).await.status, 204);
    let unread = feed(api, &token, "?unread=true").await;
    assert_eq!(unread["unread_count"], 3);
    assert_eq!(
        kinds(&unread),
        vec!["mfa_enabled", "password_changed", "new_device_login"]
    );
    assert!(feed(api, &token, "").await["items"][0]["read_at"].is_string());
    let paged = feed(api, &token, "?limit=2").await;
    let next = paged["next_cursor"].as_str().unwrap();
    assert_eq!(
        kinds(&feed(api, &token, &format!("?limit=2&cursor={next}")).await).len(),
        2
    );

    // Bob sees none of it and can mark none of it.
    let (_, bob) = api.signed_in("bob@example.com", "Bob").await;
    let bobs = feed(api, &bob, "").await;
    assert_eq!(
        (bobs["items"].as_array().unwrap().len(), &bobs["unread_count"]),
        (0, &json!(0))
    );
    let theirs = format!(
        "/api/v1/notifications/{}/read",
        page["items"][1]["id"].as_str().unwrap()
    );
    assert_problem(&api.call(Method::POST, &theirs, Some(&bob), None).await, 404);
    let all = "/api/v1/notifications/read-all";
    assert_eq!(api.call(Method::POST, all, Some(&bob), None).await.status, 204);
    assert_eq!(feed(api, &token, "").await["unread_count"], 3);
    assert_problem(
        &api.call(Method::POST, "/api/v1/notifications/nope/read", Some(&token), None)
            .await,
        400,
    );

    assert_eq!(api.call(Method::POST, all, Some(&token), None).await.status, 204);
    let none = feed(api, &token, "?unread=true").await;
    assert_eq!(
        (none["items"].as_array().unwrap().len(), &none["unread_count"]),
        (0, &json!(0))
    );
}

#[tokio::test]
async fn each_change_is_told_once_on_fleet_run() {
    let Some(python) = python() else { return };
    let fleet = Fleet::start_with(&[TRUSTED]).await;
    told_once_each(&Api::new(&fleet, Proto::Http1), &python).await;
}

#[tokio::test]
async fn each_change_is_told_once_by_split_processes_on_postgresql_and_rabbitmq() {
    let Some(python) = python() else { return };
    if !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let Some(db) = database(TestBackend::Postgres).await else {
        return;
    };
    // The gateway forwards clients' addresses with a service token, which
    // auth issues only to holders of the fleet's shared service secret.
    let secret = fleet_kit::secret::generate_key_base64();
    let split = Fleet::split(&[
        ("FLEET_DATABASE_URL", db.url.as_str()),
        ("FLEET_TOKENS__SERVICE_SECRET", secret.as_str()),
        TRUSTED,
    ])
    .await;
    told_once_each(&Api::new(&split.gateway, Proto::Http1), &python).await;
    let log = split.notify.log();
    assert!(!log.contains("\"ERROR\""), "notify logged errors: {log}");
}

#[tokio::test]
async fn webhook_urls_that_reach_inside_are_refused_with_a_field_error() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http1);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",
        "ftp://example.com/hook",
        "garbage",
    ] {
        let body = json!({"email": false, "webhook_url": url, "events": []});
        let refused = api
            .call(
                Method::PUT,
                "/api/v1/notifications/preferences",
                Some(&token),
                Some(body),
            )
            .await;
        assert_problem(&refused, 400);
        let fields: Vec<&str> = refused.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, vec!["webhook_url"], "{url}: {:?}", refused.body);
    }
    let body = json!({"email": false, "webhook_url": "", "events": ["password_changed", "nope"]});
    let refused = api
        .call(
            Method::PUT,
            "/api/v1/notifications/preferences",
            Some(&token),
            Some(body),
        )
        .await;
    assert_problem(&refused, 400);
    assert_eq!(refused.body["errors"][0]["field"], "events[1]");
    // Nothing was kept of the refused ones.
    let prefs = api
        .call(Method::GET, "/api/v1/notifications/preferences", Some(&token), None)
        .await;
    assert_eq!(prefs.body["webhook_url"], "");
    assert_eq!(prefs.body["email"], false);
    assert_eq!(prefs.body["events"].as_array().unwrap().len(), 13);
}
