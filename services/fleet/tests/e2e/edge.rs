//! The edge holds for gRPC pass-through as for REST: the same rate limit
//! buckets, the same body cap, and only the RPCs meant for outside callers.

use fleet_proto::{
    auth::v1::{LoginRequest, RotateSigningKeyRequest, auth_service_client::AuthServiceClient},
    users::v1::{CreateUserRequest, GetUserRequest},
};
use reqwest::Method;
use serde_json::json;
use tonic::{Code, Request, transport::Channel};

use crate::{
    grpc::{authed, gateway_channel, through_gateway},
    harness::{Api, Fleet, Proto, assert_problem},
};

async fn auth_through_gateway(fleet: &Fleet) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(gateway_channel(fleet).await)
}

/// HTTP/2 without TLS, as gRPC clients speak to the plain listener.
fn plain_h2() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().unwrap()
}

/// A wrong login, to another unknown email each time: no account's (nor
/// email's) lockout gets in the way of counting the route's limit.
fn wrong_login(i: usize) -> LoginRequest {
    LoginRequest {
        email: format!("nobody{i}@example.com"),
        password: "not the password".into(),
    }
}

#[tokio::test]
async fn grpc_logins_draw_from_the_rest_login_bucket() {
    let fleet = Fleet::start_with(&[
        ("FLEET_GATEWAY__HTTP_MODE", "serve"),
        ("FLEET_GATEWAY__RATE_LIMIT__ENABLED", "true"),
        // 10 an hour: nothing refills while the test counts.
        (
            "FLEET_GATEWAY__RATE_LIMIT__ROUTES__/api/v1/auth/login__PERIOD_SECS",
            "3600",
        ),
    ])
    .await;
    let api = Api::new(&fleet, Proto::Http2);
    let mut auth = auth_through_gateway(&fleet).await;
    // The login route allows 10 a minute per IP: 5 over REST, 5 over gRPC.
    for i in 0..5 {
        let body = json!({"email": format!("rest{i}@example.com"), "password": "not the password"});
        assert_eq!(
            api.call(Method::POST, "/api/v1/auth/login", None, Some(body))
                .await
                .status,
            401
        );
        let err = auth.login(Request::new(wrong_login(i))).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    let refused = auth.login(Request::new(wrong_login(5))).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let retry_after: u64 = refused
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=360).contains(&retry_after), "{retry_after}");
    let body = json!({"email": "rest5@example.com", "password": "not the password"});
    assert_problem(
        &api.call(Method::POST, "/api/v1/auth/login", None, Some(body)).await,
        429,
    );
}

#[tokio::test]
async fn internal_rpcs_are_refused_at_the_edge_even_for_an_admin() {
    let fleet = Fleet::start_with(&[("FLEET_GATEWAY__HTTP_MODE", "serve")]).await;
    let api = Api::new(&fleet, Proto::Http2);
    api.register("ada@example.com", "Ada").await;
    assert!(fleet.command(&["user", "promote", "ada@example.com"]).status.success());
    let admin = api.login("ada@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let mut auth = auth_through_gateway(&fleet).await;
    let rotate = auth
        .rotate_signing_key(authed(RotateSigningKeyRequest {}, &admin))
        .await
        .unwrap_err();
    assert_eq!(rotate.code(), Code::PermissionDenied, "{rotate:?}");
    let mut users = through_gateway(&fleet).await;
    let create = CreateUserRequest {
        email: "eve@example.com".into(),
        display_name: "Eve".into(),
    };
    let created = users.create_user(authed(create, &admin)).await.unwrap_err();
    assert_eq!(created.code(), Code::PermissionDenied, "{created:?}");
    // No user was made behind the refusal.
    let listed = api
        .call(Method::GET, "/api/v1/users?limit=10", Some(&admin), None)
        .await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "{}", listed.body);

    // A made-up method is unimplemented, under one metric label.
    let made_up = plain_h2()
        .post(format!(
            "http://127.0.0.1:{}/fleet.users.v1.UsersService/Frobnicate",
            fleet.http
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    assert_eq!(made_up.headers().get("grpc-status").unwrap(), "12");
    let metrics = counted(&fleet, r#"endpoint="unknown""#).await;
    assert!(!metrics.contains("Frobnicate"), "a made-up path became a label");
    assert!(!metrics.contains("RotateSigningKey"), "an internal path became a label");
}

#[tokio::test]
async fn the_body_cap_holds_for_grpc_streamed_or_declared() {
    let fleet = Fleet::start_with(&[
        ("FLEET_GATEWAY__HTTP_MODE", "serve"),
        ("FLEET_GATEWAY__MAX_BODY_BYTES", "4096"),
    ])
    .await;
    let api = Api::new(&fleet, Proto::Http2);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    let mut users = through_gateway(&fleet).await;
    let small = users
        .get_user(authed(GetUserRequest { id: "x".repeat(100) }, &token))
        .await
        .unwrap_err();
    assert_eq!(small.code(), Code::InvalidArgument, "{small:?}");
    // tonic streams the body without a length: the gateway counts it.
    let big = users
        .get_user(authed(GetUserRequest { id: "x".repeat(10_000) }, &token))
        .await
        .unwrap_err();
    assert_eq!(big.code(), Code::ResourceExhausted, "{big:?}");
    // A declared length past the cap is refused before anything is sent on.
    let declared = plain_h2()
        .post(format!(
            "http://127.0.0.1:{}/fleet.users.v1.UsersService/GetUser",
            fleet.http
        ))
        .header("content-type", "application/grpc")
        .header("authorization", format!("Bearer {token}"))
        .body(vec![0u8; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(declared.headers().get("grpc-status").unwrap(), "8");
}

/// The metrics once `label` shows: a request is counted as its log line is
/// written, just after its answer.
async fn counted(fleet: &Fleet, label: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let metrics = fleet.metrics().await;
        if metrics.contains(label) {
            return metrics;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "no {label} in {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn made_up_http_methods_share_one_metric_label() {
    let fleet = Fleet::start().await;
    let client = fleet.client(Proto::Http1);
    let frob = Method::from_bytes(b"FROBNICATE").unwrap();
    let answer = client
        .request(frob, fleet.url("/api/v1/users/me"))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_client_error(), "{}", answer.status());
    let metrics = counted(&fleet, r#"method="OTHER""#).await;
    assert!(!metrics.contains("FROBNICATE"), "a made-up method became a label");
}

/// The caller's session as the session list shows it.
async fn current_session(api: &Api<'_>, token: &str) -> serde_json::Value {
    let listed = api.call(Method::GET, "/api/v1/auth/sessions", Some(token), None).await;
    let items = listed.body["items"].as_array().cloned().unwrap_or_default();
    items.into_iter().find(|s| s["current"] == true).unwrap_or_default()
}

#[tokio::test]
async fn sessions_record_the_forwarded_client_and_direct_callers_cannot_forge_it() {
    let fleet = Fleet::start_with(&[(
        "FLEET_GATEWAY__RATE_LIMIT__TRUSTED_PROXIES",
        "[\"127.0.0.1/32\", \"::1/128\"]",
    )])
    .await;
    let api = Api::new(&fleet, Proto::Http1);
    api.register("ada@example.com", "Ada").await;
    let body = json!({"email": "ada@example.com", "password": crate::harness::PASSWORD});
    // Through the gateway: the client's own address and user agent, once the
    // gateway holds its service token (fetched as it starts).
    let started = std::time::Instant::now();
    let session = loop {
        let login = api
            .client
            .post(fleet.url("/api/v1/auth/login"))
            .header("user-agent", "FleetTest/1.0")
            .header("x-forwarded-for", "203.0.113.7")
            .json(&body)
            .send()
            .await
            .unwrap();
        let token = crate::harness::answer(login).await.body["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let session = current_session(&api, &token).await;
        if session["user_agent"] == "FleetTest/1.0" || started.elapsed() > std::time::Duration::from_secs(5) {
            break session;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        (session["ip"].as_str(), session["user_agent"].as_str()),
        (Some("203.0.113.7"), Some("FleetTest/1.0")),
        "{session}"
    );

    // Straight to auth, with the gateway's header names and a made-up voucher.
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", fleet.service_ports()[0]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut auth = AuthServiceClient::new(channel);
    let mut request = Request::new(LoginRequest {
        email: "ada@example.com".into(),
        password: crate::harness::PASSWORD.into(),
    });
    for (name, value) in [
        ("x-fleet-client-ip", "198.51.100.66"),
        ("x-fleet-client-user-agent", "Forged/1.0"),
        ("x-fleet-forwarder", "Bearer not-a-service-token"),
    ] {
        request.metadata_mut().insert(name, value.parse().unwrap());
    }
    let token = auth.login(request).await.unwrap().into_inner().access_token;
    let forged = current_session(&api, &token).await;
    assert_eq!(forged["ip"], "127.0.0.1", "{forged}");
    assert_ne!(forged["user_agent"], "Forged/1.0", "{forged}");
}
