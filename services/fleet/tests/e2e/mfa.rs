//! Two-factor authentication end to end: the real `fleet run`, REST through
//! the gateway, an authenticator outside Fleet (pyotp reads the otpauth URL,
//! zxing-cpp reads the QR code), and the whole flow's log searched for
//! anything secret.

use std::{io::Write, process::Stdio};

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, Fleet, PASSWORD, Proto, assert_problem};

/// The Python that has pyotp and zxing-cpp (.ci/run installs them), or
/// `None` to skip when they are missing outside CI.
pub(crate) fn python() -> Option<String> {
    python_with(&["pyotp", "zxingcpp", "PIL"])
}

/// The Python (`FLEET_PYTHON`, else python3) that can import `modules`, or
/// `None` to skip when it cannot outside CI (.ci/run installs them).
pub(crate) fn python_with(modules: &[&str]) -> Option<String> {
    let python = std::env::var("FLEET_PYTHON").unwrap_or_else(|_| "python3".into());
    let ready = std::process::Command::new(&python)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .is_ok_and(|out| out.status.success());
    if ready {
        return Some(python);
    }
    let missing = modules.join(", ");
    assert!(
        !std::env::var("FLEET_REQUIRE_BACKENDS").is_ok_and(|v| v == "1"),
        "{python} with {missing} is required in CI (FLEET_PYTHON)"
    );
    eprintln!("skipping: {python} lacks one of {missing}; .ci/run installs them");
    None
}

/// Runs tests/e2e/otp.py.
pub(crate) fn otp(python: &str, args: &[&str], stdin: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/otp.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_string()
}

/// Where `needle` occurs in `log` as a value of its own: not inside a longer
/// run of digits, and not the fraction of a timestamp.
fn occurs(log: &str, needle: &str) -> bool {
    log.match_indices(needle).any(|(at, _)| {
        let before = log[..at].chars().next_back();
        let after = log[at + needle.len()..].chars().next();
        let digits = needle.bytes().all(|b| b.is_ascii_digit());
        !digits
            || !(before.is_some_and(|c| c.is_ascii_digit() || c == '.') || after.is_some_and(|c| c.is_ascii_digit()))
    })
}

/// Confirms a TOTP enrolment (its otpauth `url`) with pyotp's current code:
/// the code, and the ten backup codes shown once.
pub(crate) async fn confirm_totp(api: &Api<'_>, python: &str, token: &str, url: &str) -> (String, Vec<String>) {
    let code = otp(python, &["code", url], "");
    let confirmed = api
        .call(
            Method::POST,
            "/api/v1/auth/2fa/totp/confirm",
            Some(token),
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    let backup: Vec<String> = confirmed.body["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(backup.len(), 10);
    (code, backup)
}

/// Every sealed secret and code hash the auth store holds, hex and base64.
async fn stored_blobs(fleet: &Fleet) -> Vec<String> {
    let url = format!("sqlite://{}", fleet.data_dir().join("auth.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut found = Vec::new();
    for query in [
        "SELECT secret FROM totp_factors",
        "SELECT code_hash FROM backup_codes",
        "SELECT token_hash FROM mfa_challenges",
    ] {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(query).fetch_all(&pool).await.unwrap();
        for (blob,) in rows {
            let hex: String = blob.iter().map(|b| format!("{b:02x}")).collect();
            found.push(hex);
            found.push(base64::engine::general_purpose::STANDARD_NO_PAD.encode(&blob));
            found.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&blob));
        }
    }
    pool.close().await;
    found
}

#[tokio::test]
async fn the_whole_2fa_flow_through_the_gateway_with_an_outside_authenticator() {
    let Some(python) = python() else {
        return;
    };
    // Debug logs: the strictest setting for the search at the end.
    let fleet = Fleet::start_with(&[("FLEET_LOG__LEVEL", "debug")]).await;
    let api = Api::new(&fleet, Proto::Http1);
    let mut secrets: Vec<String> = vec![PASSWORD.into()];

    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    secrets.push(token.clone());
    let enrolment = api
        .call(Method::POST, "/api/v1/auth/2fa/totp/enroll", Some(&token), None)
        .await;
    assert_eq!(enrolment.status, 200, "{:?}", enrolment.body);
    let url = text(&enrolment.body["otpauth_url"]);
    let secret = text(&enrolment.body["secret"]);
    let qr = text(&enrolment.body["qr_png_base64"]);
    assert!(url.starts_with("otpauth://totp/Fleet:ada%40example.com?"), "{url}");
    assert_eq!(otp(&python, &["qr"], &qr), url, "the QR code holds the otpauth URL");
    secrets.extend([secret, url.clone(), qr[..64].to_string()]);

    // Confirm with pyotp's current code: 2FA is on, backup codes shown once.
    let (code, backup) = confirm_totp(&api, &python, &token, &url).await;
    secrets.push(code);
    for code in &backup {
        secrets.push(code.clone());
        secrets.push(code.replace('-', "").to_uppercase());
    }
    let logout = api.call(Method::POST, "/api/v1/auth/logout", Some(&token), None).await;
    assert_eq!(logout.status, 204);

    // Login: the password opens the second step only.
    let first = api.login("ada@example.com").await;
    assert_eq!(first["mfa_required"], true, "{first}");
    assert_eq!(first["methods"], json!(["totp", "backup_code"]));
    assert!(first.get("access_token").is_none_or(|t| t == ""), "{first}");
    let mfa_token = text(&first["mfa_token"]);
    secrets.push(mfa_token.clone());
    // The mfa_token is no access token.
    let me = api.call(Method::GET, "/api/v1/users/me", Some(&mfa_token), None).await;
    assert_problem(&me, 401);

    // The next step's code (pyotp, one step ahead) completes the login.
    let code = otp(&python, &["code", &url, "1"], "");
    secrets.push(code.clone());
    let second = json!({"mfa_token": mfa_token, "code": code});
    let tokens = api
        .call(Method::POST, "/api/v1/auth/login/mfa", None, Some(second.clone()))
        .await;
    assert_eq!(tokens.status, 200, "{:?}", tokens.body);
    let access = text(&tokens.body["access_token"]);
    secrets.extend([access.clone(), text(&tokens.body["refresh_token"])]);
    let me = api.call(Method::GET, "/api/v1/users/me", Some(&access), None).await;
    assert_eq!(me.status, 200);
    // Neither the mfa_token nor the code works twice.
    let again = api
        .call(Method::POST, "/api/v1/auth/login/mfa", None, Some(second))
        .await;
    assert_problem(&again, 401);
    let other = text(&api.login("ada@example.com").await["mfa_token"]);
    secrets.push(other.clone());
    let replay = api
        .call(
            Method::POST,
            "/api/v1/auth/login/mfa",
            None,
            Some(json!({"mfa_token": other, "code": code})),
        )
        .await;
    assert_problem(&replay, 401);

    // A backup code, once.
    let by_backup = api
        .call(
            Method::POST,
            "/api/v1/auth/login/mfa",
            None,
            Some(json!({"mfa_token": other, "backup_code": backup[0]})),
        )
        .await;
    assert_eq!(by_backup.status, 200, "{:?}", by_backup.body);
    let access = text(&by_backup.body["access_token"]);
    secrets.extend([access.clone(), text(&by_backup.body["refresh_token"])]);
    let third = text(&api.login("ada@example.com").await["mfa_token"]);
    secrets.push(third.clone());
    let spent = api
        .call(
            Method::POST,
            "/api/v1/auth/login/mfa",
            None,
            Some(json!({"mfa_token": third, "backup_code": backup[0]})),
        )
        .await;
    assert_problem(&spent, 401);
    let status = api.call(Method::GET, "/api/v1/auth/2fa", Some(&access), None).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.body["enabled"], true);
    assert_eq!(status.body["backup_codes_remaining"], 9);
    let blobs = stored_blobs(&fleet).await;
    assert!(blobs.len() >= 3 * 11, "{}", blobs.len());
    secrets.extend(blobs);

    // Off with the password: the password alone signs in again.
    let disabled = api
        .call(
            Method::POST,
            "/api/v1/auth/2fa/totp/disable",
            Some(&access),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(disabled.status, 204, "{:?}", disabled.body);
    let plain = api.login("ada@example.com").await;
    assert_eq!(plain["token_type"], "Bearer", "{plain}");

    // Nothing secret in the log of all that, though it did log the flow.
    let log = fleet.log();
    assert!(log.contains("a TOTP code was presented again"), "the replay is logged");
    for secret in &secrets {
        assert!(!occurs(&log, secret), "the log holds a secret: {secret}");
    }
}
