//! The account console: its files and policy at the gateway, the session
//! cookie that keeps the refresh token out of script, and the whole console
//! in a real browser (tests/e2e/console.py: Playwright, Debian's Chromium,
//! axe-core).

use std::{path::PathBuf, time::Duration};

use reqwest::header;
use serde_json::{Value, json};

use crate::{
    harness::{Fleet, PASSWORD, Proto, answer},
    mfa::python_with,
};

const COOKIE: &str = "__Host-fleet_session";

/// What a `Set-Cookie` of the session cookie holds: its value, or `None`
/// when it clears the cookie. Panics unless it has every attribute.
fn session_cookie(set_cookie: &str) -> Option<String> {
    let (pair, attributes) = set_cookie.split_once("; ").unwrap();
    let value = pair.strip_prefix(&format!("{COOKIE}=")).unwrap();
    assert!(
        attributes.starts_with("Path=/; Secure; HttpOnly; SameSite=Strict"),
        "{set_cookie}"
    );
    if value.is_empty() {
        assert!(attributes.ends_with("Max-Age=0"), "{set_cookie}");
        return None;
    }
    Some(value.to_string())
}

/// A call with the session header, and the cookie when given: the answer
/// and what it did to the cookie (`Some(None)`: cleared).
async fn with_cookie(
    fleet: &Fleet,
    path: &str,
    cookie: Option<&str>,
    token: Option<&str>,
    body: Option<Value>,
) -> (crate::harness::Answer, Option<Option<String>>) {
    let mut request = fleet
        .client(Proto::Http2)
        .post(fleet.url(path))
        .header("fleet-session", "cookie");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, format!("{COOKIE}={cookie}"));
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = answer(request.send().await.unwrap()).await;
    let set = answer.header("set-cookie").map(session_cookie);
    (answer, set)
}

#[tokio::test]
async fn the_console_is_served_at_the_root_under_its_own_policy() {
    let fleet = Fleet::start().await;
    let client = fleet.client(Proto::Http2);
    let page = client.get(fleet.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let text = page.text().await.unwrap();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(text.contains(r#"<script type="module" src="/console/app.js">"#));
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(headers["x-frame-options"], "DENY");

    // Every file the page loads is there; unchanged files answer 304.
    let etag = headers["etag"].to_str().unwrap().to_string();
    for (path, kind) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/pages/security.js", "text/javascript; charset=utf-8"),
        ("/console/style.css", "text/css; charset=utf-8"),
    ] {
        let file = client.get(fleet.url(path)).send().await.unwrap();
        assert_eq!(
            (
                file.status().as_u16(),
                &file.headers()["content-type"].to_str().unwrap()
            ),
            (200, &kind),
            "{path}"
        );
        let again = client
            .get(fleet.url(path))
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    let missing = client.get(fleet.url("/console/nothing.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    // The API keeps its own, stricter policy.
    let api = client.get(fleet.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(
        api.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );

    // Turned off, the root is an API 404 like any unknown path.
    let off = Fleet::start_with(&[("FLEET_GATEWAY__CONSOLE", "false")]).await;
    let root = off.client(Proto::Http2).get(off.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 404);
}

#[tokio::test]
async fn the_refresh_token_lives_in_the_session_cookie_for_clients_that_ask() {
    let fleet = Fleet::start().await;
    let api = crate::harness::Api::new(&fleet, Proto::Http2);
    api.register("ada@example.com", "Ada").await;
    let credentials = json!({"email": "ada@example.com", "password": PASSWORD});

    // Asked for: the token goes to the cookie, and the body keeps the field, empty.
    let (login, set) = with_cookie(&fleet, "/api/v1/auth/login", None, None, Some(credentials.clone())).await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    assert_eq!(login.body["refresh_token"], "");
    assert!(login.body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    let first = set.flatten().expect("the login keeps its refresh token in the cookie");

    // A refresh with an empty body takes the cookie and rotates it.
    let (refreshed, set) = with_cookie(&fleet, "/api/v1/auth/refresh", Some(&first), None, Some(json!({}))).await;
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.body);
    assert_eq!(refreshed.body["refresh_token"], "");
    let second = set.flatten().unwrap();
    assert_ne!(first, second);
    assert!(refreshed.body["access_token"].as_str().is_some_and(|t| !t.is_empty()));

    // Without the header, the cookie is not read and the body is as always.
    let mut plain = fleet.client(Proto::Http2).post(fleet.url("/api/v1/auth/refresh"));
    plain = plain
        .header(header::COOKIE, format!("{COOKIE}={second}"))
        .json(&json!({}));
    let plain = answer(plain.send().await.unwrap()).await;
    assert_eq!(plain.status, 400, "{:?}", plain.body);
    assert!(plain.header("set-cookie").is_none());
    let direct = api.login("ada@example.com").await;
    assert!(direct["refresh_token"].as_str().is_some_and(|t| !t.is_empty()));

    // A spent token in the cookie is refused, and the cookie cleared.
    let (reused, set) = with_cookie(&fleet, "/api/v1/auth/refresh", Some(&first), None, Some(json!({}))).await;
    assert_eq!(reused.status, 401, "{:?}", reused.body);
    assert_eq!(set, Some(None));

    // Logout clears it. (Reuse ended the family above, so log in again.)
    let (login, set) = with_cookie(&fleet, "/api/v1/auth/login", None, None, Some(credentials)).await;
    let cookie = set.flatten().unwrap();
    let access_now = login.body["access_token"].as_str().unwrap();
    let (out, set) = with_cookie(&fleet, "/api/v1/auth/logout", Some(&cookie), Some(access_now), None).await;
    assert_eq!(out.status, 204);
    assert_eq!(set, Some(None));
    let (after, _) = with_cookie(&fleet, "/api/v1/auth/refresh", Some(&cookie), None, Some(json!({}))).await;
    assert_eq!(after.status, 401);
}

/// The tool a browser test needs, from `var`, else `fallback` when it
/// exists; `None` to skip outside CI.
fn tool(var: &str, fallback: &str) -> Option<PathBuf> {
    let path = std::env::var(var).map_or_else(|_| PathBuf::from(fallback), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    assert!(
        !std::env::var("FLEET_REQUIRE_BACKENDS").is_ok_and(|v| v == "1"),
        "{} is required in CI ({var}; .ci/run installs it)",
        path.display()
    );
    eprintln!("skipping: {} is missing ({var})", path.display());
    None
}

#[tokio::test]
async fn a_newcomer_uses_the_whole_console_in_a_real_browser() {
    let Some(python) = python_with(&["playwright", "pyotp", "zxingcpp", "PIL"]) else {
        return;
    };
    let Some(chromium) = tool("FLEET_CHROMIUM", "/usr/bin/chromium") else {
        return;
    };
    let axe_default = format!(
        "{}/.cache/fleet/node/node_modules/axe-core/axe.min.js",
        std::env::var("HOME").unwrap_or_default()
    );
    let Some(axe) = tool("FLEET_AXE", &axe_default) else {
        return;
    };
    let fleet = Fleet::start().await;
    let limited = Fleet::start_with(&[
        ("FLEET_GATEWAY__RATE_LIMIT__ENABLED", "true"),
        ("FLEET_GATEWAY__RATE_LIMIT__ROUTES__/api/v1/auth/login__LIMIT", "2"),
        (
            "FLEET_GATEWAY__RATE_LIMIT__ROUTES__/api/v1/auth/login__PERIOD_SECS",
            "3600",
        ),
    ])
    .await;
    let api = crate::harness::Api::new(&fleet, Proto::Http2);
    api.register("root@example.com", "Root").await;
    assert!(fleet.command(&["user", "promote", "root@example.com"]).status.success());
    // Screenshots go to docs/console when asked (the README links them).
    let shots =
        std::env::var("FLEET_CONSOLE_SCREENSHOTS").map_or_else(|_| fleet.data_dir().join("screenshots"), PathBuf::from);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/console.py");
    let run = tokio::process::Command::new(python)
        .arg(script)
        .arg(fleet.url(""))
        .arg(chromium)
        .arg(axe)
        .arg(&shots)
        .args(["root@example.com", PASSWORD])
        .arg(limited.url(""))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test ended within 240 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}\n--- fleet log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        fleet.log()
    );
    assert!(stdout.contains("every step passed"), "{stdout}");
}
