//! Two-factor authentication over real gRPC with an injected clock: TOTP
//! enrolment and the login's second step, replay and skew, backup codes,
//! mfa_token rules, the second-factor limit, disabling, SMS codes through a
//! webhook, and what is kept at rest.

use std::{sync::Arc, time::Duration as StdDuration};

use base64::Engine;
use chrono::Duration;
use fleet_auth::{
    AuthSettings,
    mfa::{
        sms::SenderKind,
        totp::{TotpKey, TotpParams},
    },
};
use fleet_kit::{backend_tests, testing::TestBackend};
use fleet_proto::{
    auth::v1::{
        ConfirmSmsRequest, ConfirmTotpRequest, DisableMfaRequest, EnrollSmsRequest, EnrollTotpRequest,
        GetMfaStatusRequest, LoginMfaRequest, LoginResponse, MfaStatus, RefreshRequest, RegenerateBackupCodesRequest,
        SendLoginSmsCodeRequest,
    },
    events::v1::Event,
    users::v1::GetMeRequest,
};
use tokio::sync::{broadcast, mpsc};
use tonic::{Code, Status};

use crate::helpers::{PASSWORD, Stack, authed, violated_fields};

const EMAIL: &str = "ada@example.com";

/// An account with 2FA on, as its owner sees it.
struct Enrolled {
    /// The access token of the session that enrolled.
    token: String,
    /// Its refresh token.
    refresh: String,
    /// The authenticator app.
    app: TotpKey,
    /// The first backup codes.
    backup_codes: Vec<String>,
}

fn app(secret_base32: &str) -> TotpKey {
    let secret = data_encoding::BASE32_NOPAD.decode(secret_base32.as_bytes()).unwrap();
    TotpKey::new(TotpParams::default(), secret, "Fleet", "app").unwrap()
}

impl Stack {
    fn step(&self) -> u64 {
        u64::try_from(self.clock_now().timestamp()).unwrap() / 30
    }

    /// The app's code for the current step, after moving the clock on one
    /// step so that it was never accepted before.
    fn fresh_code(&self, app: &TotpKey) -> String {
        self.clock.advance(Duration::seconds(30));
        app.code_for_step(self.step())
    }

    async fn enrolled(&self, email: &str) -> Enrolled {
        self.register(email, "Ada").await;
        let login = self.login(email).await;
        let mut auth = self.auth.clone();
        let enrolment = auth
            .enroll_totp(authed(EnrollTotpRequest {}, &login.access_token))
            .await
            .unwrap()
            .into_inner();
        let app = app(&enrolment.secret);
        let code = app.code_for_step(self.step());
        let codes = auth
            .confirm_totp(authed(ConfirmTotpRequest { code }, &login.access_token))
            .await
            .unwrap()
            .into_inner();
        Enrolled {
            token: login.access_token,
            refresh: login.refresh_token,
            app,
            backup_codes: codes.backup_codes,
        }
    }

    async fn challenge(&self, email: &str) -> String {
        let first = self.login(email).await;
        assert!(first.mfa_required, "{first:?}");
        assert!(first.access_token.is_empty() && first.refresh_token.is_empty());
        first.mfa_token
    }

    async fn second_step(&self, mfa_token: &str, code: &str, backup_code: &str) -> Result<LoginResponse, Status> {
        self.auth
            .clone()
            .login_mfa(LoginMfaRequest {
                mfa_token: mfa_token.into(),
                code: code.into(),
                backup_code: backup_code.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn status(&self, token: &str) -> MfaStatus {
        self.auth
            .clone()
            .get_mfa_status(authed(GetMfaStatusRequest::default(), token))
            .await
            .unwrap()
            .into_inner()
    }
}

/// The `amr` claim of an access token.
fn amr(access_token: &str) -> Vec<String> {
    let payload = access_token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    serde_json::from_value(claims["amr"].clone()).unwrap()
}

/// The next event of `kind`, skipping others.
async fn next_event(events: &mut broadcast::Receiver<Arc<Event>>, kind: &str) -> Arc<Event> {
    loop {
        let event = tokio::time::timeout(StdDuration::from_secs(10), events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event"))
            .unwrap();
        if event.r#type == kind {
            return event;
        }
    }
}

async fn totp_enrolment_and_the_second_login_step(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    stack.register(EMAIL, "Ada").await;
    let login = stack.login(EMAIL).await;
    let token = login.access_token;
    assert!(!stack.status(&token).await.enabled);
    let mut auth = stack.auth.clone();
    let mut events = stack.bus.subscribe();

    let enrolment = auth
        .enroll_totp(authed(EnrollTotpRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enrolment.secret.len(), 32, "160 bits in base32");
    assert!(
        enrolment
            .otpauth_url
            .starts_with("otpauth://totp/Fleet:ada%40example.com?")
    );
    assert!(enrolment.otpauth_url.contains("issuer=Fleet"));
    let png = base64::engine::general_purpose::STANDARD
        .decode(&enrolment.qr_png_base64)
        .unwrap();
    assert_eq!(&png[..4], b"\x89PNG");

    // Not on until confirmed: the password alone still signs in.
    assert!(!stack.login(EMAIL).await.mfa_required);
    let app = app(&enrolment.secret);
    let wrong = auth
        .confirm_totp(authed(ConfirmTotpRequest { code: "000000".into() }, &token))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    assert_eq!(violated_fields(&wrong), ["code"]);
    let confirmed_code = app.code_for_step(stack.step());
    let codes = auth
        .confirm_totp(authed(
            ConfirmTotpRequest {
                code: confirmed_code.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(codes.backup_codes.len(), 10);
    assert_eq!(next_event(&mut events, "mfa.enabled").await.producer, "auth");
    let status = stack.status(&token).await;
    assert!(status.enabled);
    assert_eq!(status.methods, ["totp", "backup_code"]);
    assert_eq!(status.backup_codes_remaining, 10);
    let again = auth
        .enroll_totp(authed(EnrollTotpRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // The password now only opens the second step.
    let first = stack.login(EMAIL).await;
    assert!(first.mfa_required);
    assert_eq!(first.methods, ["totp", "backup_code"]);
    assert!(first.user.is_none());

    // The code that confirmed enrolment is spent: replay refused and announced.
    let replay = stack
        .second_step(&first.mfa_token, &confirmed_code, "")
        .await
        .unwrap_err();
    assert_eq!(replay.code(), Code::Unauthenticated);
    let rejected = next_event(&mut events, "mfa.replay_rejected").await;
    assert!(matches!(
        &rejected.payload,
        Some(fleet_proto::events::v1::event::Payload::MfaReplayRejected(r)) if r.during == "login"
    ));

    // A fresh code completes the login; the token tells both factors.
    let code = stack.fresh_code(&app);
    let tokens = stack.second_step(&first.mfa_token, &code, "").await.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(amr(&tokens.access_token), ["pwd", "otp", "mfa"]);
    let me = stack
        .users
        .clone()
        .get_me(authed(GetMeRequest {}, &tokens.access_token))
        .await
        .unwrap();
    assert_eq!(me.into_inner().email.as_deref(), Some(EMAIL));

    // The mfa_token is spent, and the code cannot open another login.
    let spent = stack.second_step(&first.mfa_token, &code, "").await.unwrap_err();
    assert_eq!(spent.code(), Code::Unauthenticated);
    let other = stack.challenge(EMAIL).await;
    let reused = stack.second_step(&other, &code, "").await.unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);
    // Bad input is a field error, not an attempt.
    let both = stack.second_step(&other, &code, "abcd").await.unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
}

async fn one_step_of_skew_either_way_and_no_more(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let enrolled = stack.enrolled(EMAIL).await;
    stack.clock.advance(Duration::seconds(120));
    let now = stack.step();
    for step in [now - 2, now + 2] {
        let challenge = stack.challenge(EMAIL).await;
        let code = enrolled.app.code_for_step(step);
        let refused = stack.second_step(&challenge, &code, "").await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "step {step} of {now}");
    }
    let challenge = stack.challenge(EMAIL).await;
    let behind = enrolled.app.code_for_step(now - 1);
    stack.second_step(&challenge, &behind, "").await.unwrap();

    stack.clock.advance(Duration::seconds(90));
    let now = stack.step();
    let challenge = stack.challenge(EMAIL).await;
    let ahead = enrolled.app.code_for_step(now + 1);
    stack.second_step(&challenge, &ahead, "").await.unwrap();
    // The next step is at or before the one just accepted: never again.
    let challenge = stack.challenge(EMAIL).await;
    let current = enrolled.app.code_for_step(now);
    let refused = stack.second_step(&challenge, &current, "").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

async fn the_same_code_twice_at_once_is_accepted_once(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let enrolled = stack.enrolled(EMAIL).await;
    for _ in 0..3 {
        let (a, b) = (stack.challenge(EMAIL).await, stack.challenge(EMAIL).await);
        let code = stack.fresh_code(&enrolled.app);
        let (first, second) = tokio::join!(stack.second_step(&a, &code, ""), stack.second_step(&b, &code, ""));
        let accepted = [first.is_ok(), second.is_ok()];
        assert_eq!(accepted.iter().filter(|ok| **ok).count(), 1, "{first:?} {second:?}");
        // And the same mfa_token twice at once yields one session.
        let c = stack.challenge(EMAIL).await;
        let code = stack.fresh_code(&enrolled.app);
        let (first, second) = tokio::join!(stack.second_step(&c, &code, ""), stack.second_step(&c, &code, ""));
        assert_eq!([first.is_ok(), second.is_ok()].iter().filter(|ok| **ok).count(), 1);
    }
}

async fn backup_codes_work_once_and_a_new_set_cancels_the_old(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let enrolled = stack.enrolled(EMAIL).await;
    let mut events = stack.bus.subscribe();
    let codes = &enrolled.backup_codes;

    let challenge = stack.challenge(EMAIL).await;
    let tokens = stack.second_step(&challenge, "", &codes[0]).await.unwrap();
    assert_eq!(amr(&tokens.access_token), ["pwd", "backup_code", "mfa"]);
    let used = next_event(&mut events, "mfa.backup_code_used").await;
    assert!(matches!(
        &used.payload,
        Some(fleet_proto::events::v1::event::Payload::MfaBackupCodeUsed(u)) if u.remaining == 9
    ));
    let challenge = stack.challenge(EMAIL).await;
    let again = stack.second_step(&challenge, "", &codes[0]).await.unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated);
    // Typed loosely: upper case, spaces instead of dashes.
    let loose = codes[1].to_uppercase().replace('-', " ");
    stack.second_step(&challenge, "", &loose).await.unwrap();
    for code in &codes[2..7] {
        let challenge = stack.challenge(EMAIL).await;
        stack.second_step(&challenge, "", code).await.unwrap();
    }
    let status = stack.status(&enrolled.token).await;
    assert_eq!(status.backup_codes_remaining, 3);
    assert!(status.backup_codes_running_low);

    // A new set needs a current code, cancels the old and ends other sessions.
    let mut auth = stack.auth.clone();
    let wrong = auth
        .regenerate_backup_codes(authed(
            RegenerateBackupCodesRequest { code: "123456".into() },
            &tokens.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    let code = stack.fresh_code(&enrolled.app);
    let fresh = auth
        .regenerate_backup_codes(authed(RegenerateBackupCodesRequest { code }, &tokens.access_token))
        .await
        .unwrap()
        .into_inner()
        .backup_codes;
    assert_eq!(fresh.len(), 10);
    assert!(fresh.iter().all(|c| !codes.contains(c)));
    let challenge = stack.challenge(EMAIL).await;
    let cancelled = stack.second_step(&challenge, "", &codes[8]).await.unwrap_err();
    assert_eq!(cancelled.code(), Code::Unauthenticated);
    stack.second_step(&challenge, "", &fresh[0]).await.unwrap();
    let ended = auth
        .refresh(RefreshRequest {
            refresh_token: enrolled.refresh.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "the other sessions end");
    assert!(stack.status(&tokens.access_token).await.enabled);
}

async fn mfa_tokens_are_brief_single_use_and_never_access_tokens(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    // Someone without 2FA holds an ordinary access token.
    let (_, access) = stack.signed_in("bob@example.com", "Bob").await;
    let enrolled = stack.enrolled(EMAIL).await;
    let challenge = stack.challenge(EMAIL).await;

    let as_access = stack
        .users
        .clone()
        .get_me(authed(GetMeRequest {}, &challenge))
        .await
        .unwrap_err();
    assert_eq!(as_access.code(), Code::Unauthenticated);
    let code = stack.fresh_code(&enrolled.app);
    for token in [&access, &enrolled.token] {
        let as_mfa = stack.second_step(token, &code, "").await.unwrap_err();
        assert_eq!(as_mfa.code(), Code::Unauthenticated);
    }
    stack.clock.advance(Duration::seconds(301));
    let code = enrolled.app.code_for_step(stack.step());
    let expired = stack.second_step(&challenge, &code, "").await.unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert!(expired.message().contains("mfa_token"), "{}", expired.message());
    // A fresh login with the same code works: the expired token spent nothing.
    let challenge = stack.challenge(EMAIL).await;
    stack.second_step(&challenge, &code, "").await.unwrap();
}

async fn wrong_second_factors_have_a_race_safe_limit_of_their_own(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let enrolled = stack.enrolled(EMAIL).await;
    let challenge = stack.challenge(EMAIL).await;
    let attempts = (0..20).map(|i| {
        let challenge = challenge.clone();
        let stack = &stack;
        async move {
            let wrong = format!("{:06}", 111_111 + i);
            stack.second_step(&challenge, &wrong, "").await.unwrap_err().code()
        }
    });
    let codes = futures::future::join_all(attempts).await;
    let checked = codes.iter().filter(|c| **c == Code::Unauthenticated).count();
    let refused = codes.iter().filter(|c| **c == Code::ResourceExhausted).count();
    assert_eq!((checked, refused), (5, 15), "{codes:?}");
    // Locked: even a right code is refused until the delay has passed...
    let code = enrolled.app.code_for_step(stack.step() + 1);
    let locked = stack.second_step(&challenge, &code, "").await.unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
    // ...while the password counter is untouched: the first step still works.
    stack.clock.advance(Duration::seconds(31));
    let challenge = stack.challenge(EMAIL).await;
    let code = enrolled.app.code_for_step(stack.step());
    stack.second_step(&challenge, &code, "").await.unwrap();
}

async fn disabling_needs_proof_and_ends_the_other_sessions(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let enrolled = stack.enrolled(EMAIL).await;
    let mut events = stack.bus.subscribe();
    let mut auth = stack.auth.clone();
    let challenge = stack.challenge(EMAIL).await;
    let other = stack
        .second_step(&challenge, "", &enrolled.backup_codes[0])
        .await
        .unwrap();

    let neither = auth
        .disable_mfa(authed(DisableMfaRequest::default(), &enrolled.token))
        .await
        .unwrap_err();
    assert_eq!(neither.code(), Code::InvalidArgument);
    let wrong = auth
        .disable_mfa(authed(
            DisableMfaRequest {
                password: "not the password".into(),
                ..Default::default()
            },
            &enrolled.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    auth.disable_mfa(authed(
        DisableMfaRequest {
            password: PASSWORD.into(),
            ..Default::default()
        },
        &enrolled.token,
    ))
    .await
    .unwrap();
    assert!(matches!(
        &next_event(&mut events, "mfa.disabled").await.payload,
        Some(fleet_proto::events::v1::event::Payload::MfaDisabled(d)) if d.confirmed_with == "password" && d.sessions_revoked == 1
    ));
    // The wrong password counted once; the right one ended the streak.
    let me = stack
        .users
        .clone()
        .get_me(authed(GetMeRequest {}, &enrolled.token))
        .await
        .unwrap()
        .into_inner();
    let creds = fleet_auth::store::auth_store(&stack.auth_db)
        .credentials(me.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.failures(fleet_auth::store::Counter::Password).0, 0);
    let ended = auth
        .refresh(RefreshRequest {
            refresh_token: other.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated);
    assert_eq!(stack.status(&enrolled.token).await, MfaStatus::default());
    assert!(!stack.login(EMAIL).await.mfa_required);

    // Again, and off with a current code this time.
    let enrolment = auth
        .enroll_totp(authed(EnrollTotpRequest {}, &enrolled.token))
        .await
        .unwrap()
        .into_inner();
    let app = app(&enrolment.secret);
    let code = stack.fresh_code(&app);
    auth.confirm_totp(authed(ConfirmTotpRequest { code: code.clone() }, &enrolled.token))
        .await
        .unwrap();
    let replayed = auth
        .disable_mfa(authed(
            DisableMfaRequest {
                code,
                ..Default::default()
            },
            &enrolled.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Code::PermissionDenied, "the confirming code is spent");
    let code = stack.fresh_code(&app);
    auth.disable_mfa(authed(
        DisableMfaRequest {
            code,
            ..Default::default()
        },
        &enrolled.token,
    ))
    .await
    .unwrap();
    assert!(!stack.status(&enrolled.token).await.enabled);
}

/// Every blob and text column of the second-factor tables.
async fn mfa_rows(stack: &Stack) -> Vec<Vec<u8>> {
    let queries = [
        "SELECT secret FROM totp_factors",
        "SELECT code_hash FROM backup_codes",
        "SELECT phone FROM sms_factors",
        "SELECT token_hash FROM mfa_challenges",
    ];
    let mut rows = Vec::new();
    for query in queries {
        let found: Vec<(Vec<u8>,)> = match &stack.auth_db {
            fleet_kit::Db::Postgres(pool) => sqlx::query_as(query).fetch_all(pool).await.unwrap(),
            fleet_kit::Db::Sqlite(pool) => sqlx::query_as(query).fetch_all(pool).await.unwrap(),
        };
        rows.extend(found.into_iter().map(|(b,)| b));
    }
    rows
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn secrets_and_codes_are_not_kept_in_the_clear(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    stack.register(EMAIL, "Ada").await;
    let token = stack.login(EMAIL).await.access_token;
    let mut auth = stack.auth.clone();
    let enrolment = auth
        .enroll_totp(authed(EnrollTotpRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    let secret = data_encoding::BASE32_NOPAD.decode(enrolment.secret.as_bytes()).unwrap();
    let code = app(&enrolment.secret).code_for_step(stack.step());
    let codes = auth
        .confirm_totp(authed(ConfirmTotpRequest { code }, &token))
        .await
        .unwrap()
        .into_inner()
        .backup_codes;
    let rows = mfa_rows(&stack).await;
    assert_eq!(rows.len(), 11);
    for row in &rows {
        assert!(!contains(row, &secret), "the TOTP secret is sealed");
        assert!(!contains(row, enrolment.secret.as_bytes()));
        for code in &codes {
            let canonical = code.replace('-', "").to_uppercase();
            assert!(!contains(row, code.as_bytes()) && !contains(row, canonical.as_bytes()));
            use sha2::Digest;
            assert_ne!(
                row.as_slice(),
                &sha2::Sha256::digest(canonical.as_bytes())[..],
                "keyed, not plain"
            );
        }
    }
}

/// A webhook that hands every posted SMS to the test.
async fn sms_webhook() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/sms",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                tx.send(serde_json::from_slice(&body).unwrap()).unwrap();
                "queued"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn sent_code(inbox: &mut mpsc::UnboundedReceiver<serde_json::Value>, to: &str) -> String {
    let sms = tokio::time::timeout(StdDuration::from_secs(10), inbox.recv())
        .await
        .expect("an SMS is posted")
        .unwrap();
    assert_eq!(sms["to"], to);
    let body = sms["body"].as_str().unwrap();
    body.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {body:?}"))
        .to_string()
}

async fn sms_codes_through_the_webhook_sender(backend: TestBackend) {
    let (url, mut inbox) = sms_webhook().await;
    let mut settings = AuthSettings::default();
    settings.mfa.sms.enabled = true;
    settings.mfa.sms.sender = Some(SenderKind::Webhook);
    settings.mfa.sms.webhook_url = url;
    let Some(stack) = Stack::start_with(backend, settings).await else {
        return;
    };
    let enrolled = stack.enrolled(EMAIL).await;
    let mut auth = stack.auth.clone();
    let bad = auth
        .enroll_sms(authed(EnrollSmsRequest { phone: "0151".into() }, &enrolled.token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["phone"]);
    auth.enroll_sms(authed(
        EnrollSmsRequest {
            phone: "+49 151 1234 5678".into(),
        },
        &enrolled.token,
    ))
    .await
    .unwrap();
    let code = sent_code(&mut inbox, "+4915112345678").await;
    assert!(
        !stack.status(&enrolled.token).await.sms_enabled,
        "not before the code came back"
    );
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let refused = auth
        .confirm_sms(authed(ConfirmSmsRequest { code: wrong.into() }, &enrolled.token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), ["code"]);
    auth.confirm_sms(authed(ConfirmSmsRequest { code: code.clone() }, &enrolled.token))
        .await
        .unwrap();
    let status = stack.status(&enrolled.token).await;
    assert!(status.sms_enabled);
    assert_eq!(status.methods, ["totp", "backup_code", "sms"]);

    let first = stack.login(EMAIL).await;
    assert_eq!(first.methods, ["totp", "backup_code", "sms"]);
    auth.send_login_sms_code(SendLoginSmsCodeRequest {
        mfa_token: first.mfa_token.clone(),
    })
    .await
    .unwrap();
    let code = sent_code(&mut inbox, "+4915112345678").await;
    let tokens = stack.second_step(&first.mfa_token, &code, "").await.unwrap();
    assert_eq!(amr(&tokens.access_token), ["pwd", "sms", "mfa"]);
    // Single use, and bound to its login.
    let other = stack.challenge(EMAIL).await;
    let reused = stack.second_step(&other, &code, "").await.unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);
}

async fn sms_is_off_by_default(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let enrolled = stack.enrolled(EMAIL).await;
    let off = stack
        .auth
        .clone()
        .enroll_sms(authed(
            EnrollSmsRequest {
                phone: "+4915112345678".into(),
            },
            &enrolled.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(off.code(), Code::FailedPrecondition);
    let challenge = stack.challenge(EMAIL).await;
    let off = stack
        .auth
        .clone()
        .send_login_sms_code(SendLoginSmsCodeRequest { mfa_token: challenge })
        .await
        .unwrap_err();
    assert_eq!(off.code(), Code::FailedPrecondition);
}

backend_tests!(
    totp_enrolment_and_the_second_login_step,
    one_step_of_skew_either_way_and_no_more,
    the_same_code_twice_at_once_is_accepted_once,
    backup_codes_work_once_and_a_new_set_cancels_the_old,
    mfa_tokens_are_brief_single_use_and_never_access_tokens,
    wrong_second_factors_have_a_race_safe_limit_of_their_own,
    disabling_needs_proof_and_ends_the_other_sessions,
    secrets_and_codes_are_not_kept_in_the_clear,
    sms_codes_through_the_webhook_sender,
    sms_is_off_by_default,
);
