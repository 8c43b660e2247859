//! Export through the gateway: the whole document, streamed as one chunked
//! body, an attachment named for the user and the day, the user's own data
//! only (an administrator may name another user), and never a secret.

use std::time::{Duration, Instant};

use fleet_kit::testing::{TestBackend, backend_available, database};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    harness::{Api, Fleet, PASSWORD, Proto, assert_problem},
    mfa::{confirm_totp, python},
};

/// The raw answer of `GET path`: status, headers, body text.
pub(crate) async fn fetch(
    fleet: &Fleet,
    proto: Proto,
    path: &str,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let response = fleet
        .client(proto)
        .get(fleet.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Reads the user's activity until it holds `kind`, boundedly.
pub(crate) async fn activity_with(api: &Api<'_>, token: &str, kind: &str) -> Value {
    let started = Instant::now();
    loop {
        let page = api
            .call(Method::GET, "/api/v1/stats/activity?limit=100", Some(token), None)
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let items = page.body["items"].as_array().unwrap();
        if let Some(found) = items.iter().find(|i| i["kind"] == kind) {
            return found.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no {kind} in {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every object key of `value`, at any depth.
fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Checks the headers of an export answer in `format` (`json`, `csv`).
pub(crate) fn assert_attachment(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    user_id: &str,
    format: &str,
) {
    assert_eq!(status, 200, "{body}");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let media = if format == "csv" {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    };
    assert_eq!(header("content-type"), Some(media));
    let today = chrono::Utc::now().format("%Y-%m-%d");
    assert_eq!(
        header("content-disposition"),
        Some(format!("attachment; filename=\"fleet-export-{user_id}-{today}.{format}\"").as_str())
    );
    assert_eq!(header("cache-control"), Some("no-store"));
}

/// Checks the headers of a JSON export answer and parses its document.
pub(crate) fn document(status: u16, headers: &reqwest::header::HeaderMap, body: &str, user_id: &str) -> Value {
    assert_attachment(status, headers, body, user_id, "json");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The document's shape: the seed's top level, and data in its parts.
fn assert_shape(doc: &Value, user_id: &str, email: &str) {
    let top: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(top, ["data", "exported_at", "format_version", "user_id"], "{doc}");
    assert_eq!(doc["user_id"], user_id);
    assert_eq!(doc["format_version"], 1);
    assert!(chrono::DateTime::parse_from_rfc3339(doc["exported_at"].as_str().unwrap()).is_ok());
    let data: Vec<&String> = doc["data"].as_object().unwrap().keys().collect();
    assert_eq!(data, ["activity_log", "mfa", "profile", "sessions"], "{doc}");
    assert_eq!(doc["data"]["profile"]["id"], user_id);
    assert_eq!(doc["data"]["profile"]["email"], email);
    let log = doc["data"]["activity_log"].as_array().unwrap();
    assert_eq!(log[0]["kind"], "user.created", "oldest first: {doc}");
    for entry in log {
        for field in ["id", "kind", "occurred_at", "ip", "user_agent", "details"] {
            assert!(!entry[field].is_null(), "{field} in {entry}");
        }
    }
}

#[tokio::test]
async fn an_export_is_the_whole_document_streamed_as_an_attachment_and_holds_no_secret() {
    let Some(python) = python() else {
        return;
    };
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http1);
    let ada = api.register("ada@example.com", "Ada").await;
    let ada_id = ada["id"].as_str().unwrap().to_string();
    let login = api.login("ada@example.com").await;
    let token = login["access_token"].as_str().unwrap().to_string();
    let mut secrets: Vec<String> = vec![
        PASSWORD.into(),
        token.clone(),
        login["refresh_token"].as_str().unwrap().into(),
    ];
    let enrolment = api
        .call(Method::POST, "/api/v1/auth/2fa/totp/enroll", Some(&token), None)
        .await;
    assert_eq!(enrolment.status, 200, "{}", enrolment.body);
    let url = enrolment.body["otpauth_url"].as_str().unwrap().to_string();
    secrets.push(enrolment.body["secret"].as_str().unwrap().into());
    let (_, backup) = confirm_totp(&api, &python, &token, &url).await;
    for code in backup {
        secrets.extend([code.replace('-', ""), code]);
    }
    secrets.push(url);
    activity_with(&api, &token, "mfa.enabled").await;

    let (status, headers, body) = fetch(&fleet, Proto::Http1, "/api/v1/export", &token).await;
    let doc = document(status, &headers, &body, &ada_id);
    assert_eq!(
        headers.get("transfer-encoding").and_then(|v| v.to_str().ok()),
        Some("chunked"),
        "streamed, not sized up front"
    );
    assert!(headers.get("content-length").is_none());
    assert_shape(&doc, &ada_id, "ada@example.com");
    assert_eq!(doc["data"]["mfa"]["enabled"], true, "{doc}");
    assert_eq!(doc["data"]["mfa"]["backup_codes_remaining"], 10, "{doc}");
    assert_eq!(doc["data"]["sessions"].as_array().unwrap().len(), 1, "{doc}");
    let kinds: Vec<&str> = doc["data"]["activity_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["user.created", "auth.login_succeeded", "session.created", "mfa.enabled"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }

    // No secret, by value anywhere in the text, or by name anywhere in it.
    for secret in &secrets {
        assert!(!body.contains(secret.as_str()), "a secret in the export: {secret}");
    }
    let mut names = Vec::new();
    keys(&doc, &mut names);
    for name in &names {
        let lower = name.to_lowercase();
        let secretive = ["secret", "hash", "token", "password", "phone"]
            .iter()
            .any(|word| lower.contains(word))
            || lower == "code"
            || lower == "backup_codes";
        assert!(!secretive, "a secret's field in the export: {name}");
    }

    // The same over HTTP/2, but for the time it was made.
    let (status, headers, body) = fetch(&fleet, Proto::Http2, "/api/v1/export?format=json", &token).await;
    let mut again = document(status, &headers, &body, &ada_id);
    let mut first = doc.clone();
    for d in [&mut first, &mut again] {
        d["exported_at"] = Value::Null;
        d["data"]["sessions"][0]["last_used_at"] = Value::Null;
        let log = d["data"]["activity_log"].as_array_mut().unwrap();
        log.retain(|e| e["kind"] != "transfer.export_completed");
    }
    assert_eq!(first, again);

    // The export is itself in the user's activity, with counts, never content.
    let logged = activity_with(&api, &token, "transfer.export_completed").await;
    assert_eq!(logged["details"]["format"], "json", "{logged}");
    assert_eq!(logged["details"]["requested_by"], ada_id.as_str(), "{logged}");
    assert!(logged["details"]["activity_entries"].as_u64().unwrap() >= 4, "{logged}");

    // CSV: one table, and cells a spreadsheet would run are guarded.
    let formula = "=HYPERLINK(\"http://example.com\",\"x\")";
    let renamed = api
        .call(
            Method::PATCH,
            "/api/v1/users/me",
            Some(&token),
            Some(json!({"display_name": formula})),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    let (status, headers, csv) = fetch(&fleet, Proto::Http1, "/api/v1/export?format=csv", &token).await;
    assert_attachment(status, &headers, &csv, &ada_id, "csv");
    assert!(
        csv.starts_with("section,id,kind,occurred_at,ip,user_agent,details,field,value\r\n"),
        "{csv}"
    );
    assert!(
        csv.contains("\r\nprofile,,,,,,,display_name,\"'=HYPERLINK(\"\"http://example.com\"\",\"\"x\"\")\"\r\n"),
        "{csv}"
    );
    let rows: Vec<&str> = csv.split("\r\n").filter(|r| !r.is_empty()).collect();
    let activity_rows = rows.iter().filter(|r| r.starts_with("activity,")).count();
    assert!(activity_rows >= kinds.len(), "{csv}");
    assert!(
        rows.iter().any(|r| r.starts_with("meta,,,,,,,format_version,1")),
        "{csv}"
    );
    assert!(rows.iter().any(|r| r.starts_with("mfa,,,,,,,enabled,true")), "{csv}");
    assert_eq!(rows.iter().filter(|r| r.starts_with("session,")).count(), 1, "{csv}");
    for secret in &secrets {
        assert!(!csv.contains(secret.as_str()), "a secret in the CSV export: {secret}");
    }

    // Bad input, no token, and another user's data.
    let bad = api
        .call(Method::GET, "/api/v1/export?format=xml", Some(&token), None)
        .await;
    assert_problem(&bad, 400);
    assert_eq!(bad.body["errors"][0]["field"], "format", "{}", bad.body);
    assert_problem(&api.call(Method::GET, "/api/v1/export", None, None).await, 401);
    let (_, bob) = api.signed_in("bob@example.com", "Bob").await;
    let of_ada = format!("/api/v1/export?user_id={ada_id}");
    assert_problem(&api.call(Method::GET, &of_ada, Some(&bob), None).await, 403);
    assert!(fleet.command(&["user", "promote", "bob@example.com"]).status.success());
    let admin = api.login("bob@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, headers, body) = fetch(&fleet, Proto::Http1, &of_ada, &admin).await;
    let by_admin = document(status, &headers, &body, &ada_id);
    assert_shape(&by_admin, &ada_id, "ada@example.com");
    assert_eq!(
        by_admin["data"]["sessions"].as_array().unwrap().len(),
        1,
        "Ada's, not Bob's"
    );
    let logged = activity_with(&api, &token, "transfer.export_completed").await;
    assert!(logged["details"]["requested_by"].is_string());
}

#[tokio::test]
async fn export_and_import_through_split_processes_on_postgresql_and_rabbitmq() {
    if !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let Some(db) = database(TestBackend::Postgres).await else {
        return;
    };
    let split = Fleet::split(&[("FLEET_DATABASE_URL", db.url.as_str())]).await;
    let api = Api::new(&split.gateway, Proto::Http1);
    let (ada, token) = api.signed_in("ada@example.com", "Ada").await;
    let ada_id = ada["id"].as_str().unwrap();
    // Users and auth publish from processes of their own: either's events
    // may reach stats first.
    activity_with(&api, &token, "user.created").await;
    activity_with(&api, &token, "session.created").await;
    let (status, headers, body) = fetch(&split.gateway, Proto::Http1, "/api/v1/export", &token).await;
    let doc = document(status, &headers, &body, ada_id);
    assert_eq!(
        headers.get("transfer-encoding").and_then(|v| v.to_str().ok()),
        Some("chunked"),
        "{headers:?}"
    );
    assert_shape(&doc, ada_id, "ada@example.com");
    assert_eq!(doc["data"]["mfa"]["enabled"], false);
    activity_with(&api, &token, "transfer.export_completed").await;
    let (status, headers, csv) = fetch(&split.gateway, Proto::Http2, "/api/v1/export?format=csv", &token).await;
    assert_attachment(status, &headers, &csv, ada_id, "csv");
    assert!(csv.contains("\r\nactivity,"), "{csv}");

    // Into another account on the same processes: the same entries.
    let (_, bob) = api.signed_in("bob@example.com", "Bob").await;
    let imported = split
        .gateway
        .client(Proto::Http1)
        .post(split.gateway.url("/api/v1/import"))
        .bearer_auth(&bob)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200);
    let counts: Value = imported.json().await.unwrap();
    let entries = doc["data"]["activity_log"].as_array().unwrap().len();
    assert_eq!(counts["activity_imported"], entries, "{counts}");
    let (status, headers, body) = fetch(&split.gateway, Proto::Http1, "/api/v1/export", &bob).await;
    assert_eq!(status, 200, "{headers:?}");
    let bobs: Value = serde_json::from_str(&body).unwrap();
    for entry in doc["data"]["activity_log"].as_array().unwrap() {
        let found = bobs["data"]["activity_log"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == entry["id"]);
        assert_eq!(found, Some(entry));
    }
    let log = split.transfer.log();
    assert!(!log.contains("\"ERROR\""), "transfer logged errors: {log}");
}

/// The export records of a fleet on embedded defaults: status and entries.
async fn export_records(fleet: &Fleet) -> Vec<(String, i64)> {
    let url = format!("sqlite://{}", fleet.data_dir().join("transfer.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = sqlx::query_as("SELECT status, activity_entries FROM exports ORDER BY started_us")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

#[tokio::test]
async fn a_client_that_goes_away_mid_export_ends_the_export_upstream() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http1);
    let (ada, token) = api.signed_in("ada@example.com", "Ada").await;
    activity_with(&api, &token, "session.created").await;
    // A long history, far more than the sockets between here and the
    // service hold, written straight into the stats store.
    const ENTRIES: i64 = 100_000;
    let user = uuid::Uuid::parse_str(ada["id"].as_str().unwrap()).unwrap();
    let url = format!("sqlite://{}", fleet.data_dir().join("stats.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..ENTRIES {
        sqlx::query(
            "INSERT INTO activity (id, user_id, kind, occurred_us, ip, user_agent, details) \
             VALUES ($1, $2, 'auth.login_succeeded', $3, '192.0.2.1', 'bench/1', '{\"amr\":[\"pwd\"]}')",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(user)
        .bind(1_700_000_000_000_000 + i)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;

    let mut response = fleet
        .client(Proto::Http1)
        .get(fleet.url("/api/v1/export"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"{\"user_id\":"), "{first:?}");
    drop(response);

    let started = Instant::now();
    let (status, entries) = loop {
        let records = export_records(&fleet).await;
        assert_eq!(records.len(), 1, "{records:?}");
        if records[0].0 != "running" {
            break records[0].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the export kept running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, "failed", "ended by the client, not completed");
    assert!(entries < ENTRIES, "it stopped part way: {entries}");

    // A whole export of the same history still works, and completes.
    let (status, _, body) = fetch(&fleet, Proto::Http2, "/api/v1/export", &token).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["data"]["activity_log"].as_array().unwrap().len() > ENTRIES as usize);
    let records = export_records(&fleet).await;
    assert_eq!(records[1].0, "completed", "{records:?}");
}
