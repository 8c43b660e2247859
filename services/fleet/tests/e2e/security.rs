//! The edge: authentication failures, the HTTPS redirect, headers on every
//! answer, bad input, limits, CORS and TLS versions.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::json;

use crate::harness::{Answer, Api, Fleet, Proto, answer, assert_problem};

fn assert_security_headers(answer: &Answer) {
    assert!(
        answer
            .header("strict-transport-security")
            .is_some_and(|v| v.starts_with("max-age="))
    );
    assert_eq!(
        answer.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(answer.header("x-frame-options"), Some("DENY"));
    assert!(answer.header("x-request-id").is_some_and(|v| !v.is_empty()));
}

/// An access token for `sub` that expired an hour ago, signed with the
/// fleet's real key (read from its store and opened with its MFA key).
async fn expired_token(fleet: &Fleet, sub: &str) -> String {
    let url = format!("sqlite://{}", fleet.data_dir().join("auth.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (kid, der): (String, Vec<u8>) =
        sqlx::query_as("SELECT kid, private_key FROM signing_keys ORDER BY active_from DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    // Stored sealed: opened with the fleet's MFA key, as auth does.
    let sealing = fleet_auth::SealingKey::load_or_create(&fleet.data_dir().join("mfa.key")).unwrap();
    let der = fleet_auth::keys::open_signing_key(&sealing, &kid, &der).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid);
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": "fleet", "aud": "fleet-api", "sub": sub, "sid": uuid::Uuid::now_v7().to_string(),
        "role": "user", "amr": ["pwd"], "iat": now - 7200, "exp": now - 3600, "jti": "x",
    });
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der)).unwrap()
}

#[tokio::test]
async fn missing_tampered_and_expired_tokens_get_401_problems() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http2);
    let (user, token) = api.signed_in("ada@example.com", "Ada").await;

    let none = api.call(Method::GET, "/api/v1/users/me", None, None).await;
    assert_problem(&none, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));

    let (head, rest) = token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["role"] = json!("admin");
    let forged = format!("{head}.{}.{signature}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    for bad in [forged.as_str(), "not-a-jwt", &token[..token.len() - 4]] {
        let answer = api.call(Method::GET, "/api/v1/users/me", Some(bad), None).await;
        assert_problem(&answer, 401);
        assert!(
            answer
                .header("www-authenticate")
                .is_some_and(|v| v.contains("invalid_token"))
        );
    }

    let expired = expired_token(&fleet, user["id"].as_str().unwrap()).await;
    let answer = api.call(Method::GET, "/api/v1/users/me", Some(&expired), None).await;
    assert_problem(&answer, 401);
    assert_eq!(answer.body["detail"], "token expired");
}

#[tokio::test]
async fn plain_http_redirects_to_https_and_every_answer_carries_the_headers() {
    let fleet = Fleet::start().await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = answer(
        plain
            .get(format!("http://localhost:{}/api/v1/users?limit=2", fleet.http))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(redirect.status, 308);
    assert_eq!(
        redirect.header("location"),
        Some(format!("https://localhost:{}/api/v1/users?limit=2", fleet.https).as_str())
    );

    let api = Api::new(&fleet, Proto::Http1);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    let answers = [
        api.call(Method::GET, "/health", None, None).await,
        api.call(Method::GET, "/api/v1/users/me", Some(&token), None).await,
        api.call(Method::GET, "/api/v1/users/me", None, None).await,
        api.call(Method::GET, "/api/v1/nothing-here", None, None).await,
        api.call(Method::POST, "/api/v1/auth/logout", Some(&token), None).await,
        api.call(Method::GET, "/api/v1/openapi.json", None, None).await,
    ];
    for answer in &answers {
        assert_security_headers(answer);
    }
    // A request id sent by the client comes back.
    let traced = api
        .client
        .get(fleet.url("/health"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(traced.headers()["x-request-id"], "trace-me-123");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_problem_never_a_5xx() {
    let fleet = Fleet::start_with(&[("FLEET_GATEWAY__MAX_BODY_BYTES", "4096")]).await;
    let api = Api::new(&fleet, Proto::Http2);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    let big = format!("{{\"display_name\":\"{}\"}}", "x".repeat(5000));
    let cases: Vec<(&str, Method, &str, Vec<u8>, u16)> = vec![
        (
            "malformed JSON",
            Method::POST,
            "/api/v1/auth/login",
            b"{\"email\":".to_vec(),
            400,
        ),
        (
            "wrong type",
            Method::POST,
            "/api/v1/auth/login",
            br#"{"email":5,"password":"x"}"#.to_vec(),
            400,
        ),
        (
            "unknown field",
            Method::POST,
            "/api/v1/auth/login",
            br#"{"email":"a@b.co","admin":true}"#.to_vec(),
            400,
        ),
        (
            "body over the limit",
            Method::PATCH,
            "/api/v1/users/me",
            big.into_bytes(),
            413,
        ),
        (
            "invalid UTF-8",
            Method::POST,
            "/api/v1/auth/login",
            b"{\"email\":\"\xff\xfe\"}".to_vec(),
            400,
        ),
        (
            "non-UUID path id",
            Method::GET,
            "/api/v1/users/not-a-uuid",
            Vec::new(),
            400,
        ),
        ("unknown route", Method::GET, "/api/v1/unknown", Vec::new(), 404),
        ("wrong method", Method::PUT, "/api/v1/users/me", Vec::new(), 405),
        (
            "unknown query parameter",
            Method::GET,
            "/api/v1/users?color=red",
            Vec::new(),
            400,
        ),
        (
            "limit out of range",
            Method::GET,
            "/api/v1/users?limit=1000",
            Vec::new(),
            400,
        ),
        ("body on a GET", Method::GET, "/api/v1/users/me", b"{}".to_vec(), 400),
    ];
    for (name, method, path, body, status) in cases {
        let request = api
            .client
            .request(method, fleet.url(path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body);
        let answer = answer(request.send().await.unwrap()).await;
        assert_problem(&answer, status);
        assert!(answer.status < 500, "{name}");
        if status == 405 {
            assert!(answer.header("allow").is_some_and(|a| a.contains("GET")), "{name}");
        }
    }
    let huge = api
        .client
        .get(fleet.url("/health"))
        .header("x-filler", "y".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 431);
}

#[tokio::test]
async fn cors_follows_the_configured_origins() {
    let fleet = Fleet::start_with(&[("FLEET_GATEWAY__CORS__ALLOWED_ORIGINS", "[\"https://app.example\"]")]).await;
    let api = Api::new(&fleet, Proto::Http1);
    let preflight = |origin: &'static str| {
        api.client
            .request(Method::OPTIONS, fleet.url("/api/v1/users/me"))
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .send()
    };
    let allowed = answer(preflight("https://app.example").await.unwrap()).await;
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        allowed
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("PATCH"))
    );
    let denied = answer(preflight("https://evil.example").await.unwrap()).await;
    assert_eq!(denied.status, 403);
    assert!(denied.header("access-control-allow-origin").is_none());
}

fn handshake(port: u16, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is needed for the TLS test");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let established = text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
    (established, text)
}

#[tokio::test]
async fn old_tls_is_refused_while_tls13_and_h2_are_negotiated() {
    let fleet = Fleet::start().await;
    for old in ["-tls1", "-tls1_1"] {
        let (established, text) = handshake(fleet.https, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(!established, "{old} must be refused:\n{text}");
    }
    let (established, text) = handshake(fleet.https, &["-tls1_3", "-alpn", "h2,http/1.1"]);
    assert!(established, "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    assert!(text.contains("ALPN protocol: h2"), "{text}");
    let (established, text) = handshake(fleet.https, &["-tls1_2"]);
    assert!(established, "TLS 1.2 stays available:\n{text}");
}

#[tokio::test]
async fn an_unreachable_upstream_is_503() {
    let fleet = Fleet::start_with(&[("FLEET_USERS__URL", crate::harness::DEAD_UPSTREAM)]).await;
    let api = Api::new(&fleet, Proto::Http1);
    let down = api.call(Method::GET, "/api/v1/users", None, None).await;
    assert_problem(&down, 503);
}

#[tokio::test]
async fn a_missed_deadline_is_504() {
    // Every upstream is up: login hashes a password (tens of milliseconds)
    // against a 1 ms deadline, so only the deadline can end it.
    let fleet = Fleet::start_with(&[("FLEET_GATEWAY__ROUTE_TIMEOUTS_MS", "{\"/api/v1/auth/login\" = 1}")]).await;
    let api = Api::new(&fleet, Proto::Http1);
    let login = json!({"email": "ada@example.com", "password": "not important at all"});
    let late = api.call(Method::POST, "/api/v1/auth/login", None, Some(login)).await;
    assert_problem(&late, 504);
}
