//! Registration, login, refresh, logout, lockout and password change over
//! real gRPC.

use chrono::Duration;
use fleet_auth::{
    HashingSettings,
    store::{Counter, auth_store},
};
use fleet_kit::{backend_tests, testing::TestBackend};
use fleet_proto::{
    auth::v1::{
        ChangePasswordRequest, GetJwksRequest, GetMfaStatusRequest, ListSessionsRequest, LogoutRequest, RefreshRequest,
        RegisterRequest, RevokeSessionRequest, RotateSigningKeyRequest,
    },
    users::v1::GetMeRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{PASSWORD, Stack, authed, violated_fields};

async fn register_login_refresh_reuse_and_logout(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let user = stack.register("ada@example.com", "Ada").await;
    assert_eq!(user.email.as_deref(), Some("ada@example.com"));

    let login = stack.login("ada@example.com").await;
    assert_eq!(login.token_type, "Bearer");
    assert_eq!(login.expires_in, 900);
    assert!(!login.mfa_required);
    assert_eq!(login.user.unwrap().id, user.id);
    let me = stack
        .users
        .clone()
        .get_me(authed(GetMeRequest {}, &login.access_token))
        .await
        .unwrap();
    assert_eq!(me.into_inner().id, user.id);

    // Rotation: the refresh token is spent and a new pair comes back.
    let mut auth = stack.auth.clone();
    let first = login.refresh_token;
    let second = auth
        .refresh(RefreshRequest {
            refresh_token: first.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.refresh_token, first);
    assert_eq!(second.user.unwrap().id, user.id);

    // Presenting the spent one again revokes the whole family...
    let reuse = auth.refresh(RefreshRequest { refresh_token: first }).await.unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    // ...so the fresh token of that family is dead too, and so are its access tokens.
    let dead = auth
        .refresh(RefreshRequest {
            refresh_token: second.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(dead.code(), Code::Unauthenticated);
    let revoked = stack
        .users
        .clone()
        .get_me(authed(GetMeRequest {}, &second.access_token))
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);

    // A new session, then logout ends it at once.
    let session = stack.login("ada@example.com").await;
    auth.logout(authed(LogoutRequest {}, &session.access_token))
        .await
        .unwrap();
    let after = auth
        .refresh(RefreshRequest {
            refresh_token: session.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated);
    let me = stack
        .users
        .clone()
        .get_me(authed(GetMeRequest {}, &session.access_token))
        .await
        .unwrap_err();
    assert_eq!(me.code(), Code::Unauthenticated);
}

async fn duplicate_emails_in_any_case_already_exist(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    stack.register("ada@example.com", "Ada").await;
    for email in ["ada@example.com", "ADA@Example.COM"] {
        let err = stack
            .auth
            .clone()
            .register(RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: "Again".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{email}");
    }
}

async fn bad_input_is_invalid_argument_with_field_details(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let mut auth = stack.auth.clone();
    let bad_email = auth
        .register(RegisterRequest {
            email: "not-an-email".into(),
            password: PASSWORD.into(),
            display_name: "Ada".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_email.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&bad_email), ["email"]);

    let short = auth
        .register(RegisterRequest {
            email: "ada@example.com".into(),
            password: "short".into(),
            display_name: "Ada".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&short), ["password"]);

    let both = auth
        .register(RegisterRequest {
            email: "x@".into(),
            password: PASSWORD.into(),
            display_name: "  ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&both), ["email", "display_name"]);
    // Nothing half-made: the address is still free.
    stack.register("ada@example.com", "Ada").await;
}

async fn a_wrong_password_and_an_unknown_email_answer_alike(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    stack.register("ada@example.com", "Ada").await;
    let wrong = stack
        .login_with("ada@example.com", "not the password")
        .await
        .unwrap_err();
    let unknown = stack
        .login_with("nobody@example.com", "not the password")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!((wrong.code(), wrong.message()), (unknown.code(), unknown.message()));
    assert_eq!(wrong.details(), unknown.details());
}

async fn a_lockout_answers_alike_for_an_existing_account_and_an_unknown_email(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    stack.register("ada@example.com", "Ada").await;
    // Every attempt answers the same for both, the sixth included (a lock).
    for attempt in 1..=7 {
        let known = stack.login_with("ada@example.com", "a wrong guess!").await.unwrap_err();
        let unknown = stack
            .login_with("Nobody@Example.com ", "a wrong guess!")
            .await
            .unwrap_err();
        assert_eq!(
            (known.code(), known.message(), known.metadata().get("retry-after")),
            (unknown.code(), unknown.message(), unknown.metadata().get("retry-after")),
            "attempt {attempt}"
        );
        let retry = |s: &tonic::Status| s.get_details_retry_info().and_then(|r| r.retry_delay);
        assert_eq!(retry(&known), retry(&unknown), "attempt {attempt}");
        let expected = if attempt <= 5 {
            Code::Unauthenticated
        } else {
            Code::ResourceExhausted
        };
        assert_eq!(known.code(), expected, "attempt {attempt}");
    }
    // The same email in another spelling shares the count.
    let spelled = stack
        .login_with("nobody@example.com", "a wrong guess!")
        .await
        .unwrap_err();
    assert_eq!(spelled.code(), Code::ResourceExhausted);
    // After the delay both are tried again.
    stack.clock.advance(Duration::seconds(31));
    let unknown = stack
        .login_with("nobody@example.com", "a wrong guess!")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
}

async fn the_failed_login_limit_holds_under_concurrent_attempts(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    stack.register("ada@example.com", "Ada").await;
    let attempts = (0..20).map(|_| {
        let mut auth = stack.auth.clone();
        async move {
            auth.login(fleet_proto::auth::v1::LoginRequest {
                email: "ada@example.com".into(),
                password: "a wrong guess!".into(),
            })
            .await
            .unwrap_err()
            .code()
        }
    });
    let codes = futures::future::join_all(attempts).await;
    let checked = codes.iter().filter(|c| **c == Code::Unauthenticated).count();
    let refused = codes.iter().filter(|c| **c == Code::ResourceExhausted).count();
    assert_eq!((checked, refused), (5, 15), "{codes:?}");

    // Locked: even the right password is refused, until the delay has passed.
    let locked = stack.login_with("ada@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
    stack.clock.advance(Duration::seconds(31));
    stack.login("ada@example.com").await;
}

async fn a_full_hashing_pool_refuses_at_once_and_counts_no_failure(backend: TestBackend) {
    let settings = fleet_auth::AuthSettings {
        hashing: HashingSettings {
            workers: 1,
            max_queued: 1,
            nice: 10,
        },
        ..Default::default()
    };
    let Some(stack) = Stack::start_with(backend, settings).await else {
        return;
    };
    let ada = stack.register("ada@example.com", "Ada").await;
    // Every place taken, as by a storm of logins in flight. The sign-up's
    // place is given back by the worker just after its answer: wait for it.
    let started = std::time::Instant::now();
    let admit = || loop {
        match stack.hashing.admit() {
            Ok(ticket) => return ticket,
            Err(_) => {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(5),
                    "the pool never freed"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    };
    let held = [admit(), admit()];

    let mut refusals = Vec::new();
    for password in [PASSWORD, "a wrong guess!", "another wrong guess"] {
        refusals.push(stack.login_with("ada@example.com", password).await.unwrap_err());
    }
    refusals.push(stack.login_with("nobody@example.com", PASSWORD).await.unwrap_err());
    let register = stack
        .auth
        .clone()
        .register(RegisterRequest {
            email: "grace@example.com".into(),
            password: PASSWORD.into(),
            display_name: "Grace".into(),
        })
        .await;
    refusals.push(register.unwrap_err());
    for refused in &refusals {
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        let retry = refused.get_details_retry_info().and_then(|r| r.retry_delay);
        assert_eq!(retry, Some(std::time::Duration::from_secs(1)), "{refused:?}");
    }

    // Refused attempts were never counted against the account.
    let user_id = ada.id.parse().unwrap();
    let creds = auth_store(&stack.auth_db).credentials(user_id).await.unwrap().unwrap();
    assert_eq!(creds.failures(Counter::Password).0, 0);
    drop(held);
    stack.login("ada@example.com").await;
}

async fn changing_the_password_revokes_the_other_sessions(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    stack.register("ada@example.com", "Ada").await;
    let here = stack.login("ada@example.com").await;
    let elsewhere = stack.login("ada@example.com").await;
    let mut auth = stack.auth.clone();
    let sessions = auth
        .list_sessions(authed(ListSessionsRequest::default(), &here.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sessions.items.len(), 2);
    assert_eq!(sessions.items.iter().filter(|s| s.current).count(), 1);

    let new_password = "a brand new passphrase";
    let wrong = auth
        .change_password(authed(
            ChangePasswordRequest {
                current_password: "wrong".into(),
                new_password: new_password.into(),
            },
            &here.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    auth.change_password(authed(
        ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: new_password.into(),
        },
        &here.access_token,
    ))
    .await
    .unwrap();

    // The other session is gone: refresh and access token both fail.
    let refresh = auth
        .refresh(RefreshRequest {
            refresh_token: elsewhere.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(refresh.code(), Code::Unauthenticated);
    let me = stack
        .users
        .clone()
        .get_me(authed(GetMeRequest {}, &elsewhere.access_token))
        .await
        .unwrap_err();
    assert_eq!(me.code(), Code::Unauthenticated);
    // This one lives on; the old password is dead, the new one works.
    auth.refresh(RefreshRequest {
        refresh_token: here.refresh_token,
    })
    .await
    .unwrap();
    let sessions = auth
        .list_sessions(authed(ListSessionsRequest::default(), &here.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sessions.items.len(), 1);
    assert_eq!(
        stack.login_with("ada@example.com", PASSWORD).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    stack.login_with("ada@example.com", new_password).await.unwrap();
}

async fn a_user_revokes_only_their_own_sessions(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let (_, ada) = stack.signed_in("ada@example.com", "Ada").await;
    let (_, bob) = stack.signed_in("bob@example.com", "Bob").await;
    let mut auth = stack.auth.clone();
    let bobs = auth
        .list_sessions(authed(ListSessionsRequest::default(), &bob))
        .await
        .unwrap()
        .into_inner();
    let bob_session = bobs.items[0].id.clone();
    let err = auth
        .revoke_session(authed(
            RevokeSessionRequest {
                id: bob_session.clone(),
            },
            &ada,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    auth.revoke_session(authed(RevokeSessionRequest { id: bob_session }, &bob))
        .await
        .unwrap();
    let me = stack
        .users
        .clone()
        .get_me(authed(GetMeRequest {}, &bob))
        .await
        .unwrap_err();
    assert_eq!(me.code(), Code::Unauthenticated);
    let bad = auth
        .revoke_session(authed(RevokeSessionRequest { id: "nope".into() }, &ada))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["id"]);
}

async fn an_expired_access_token_is_refused(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let (_, token) = stack.signed_in("ada@example.com", "Ada").await;
    stack.clock.advance(Duration::minutes(16));
    let err = stack
        .users
        .clone()
        .get_me(authed(GetMeRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

async fn deleting_an_account_ends_its_sessions_and_credentials(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let (user, token) = stack.signed_in("ada@example.com", "Ada").await;
    let login = stack.login("ada@example.com").await;
    stack
        .users
        .clone()
        .delete_user(authed(
            fleet_proto::users::v1::DeleteUserRequest { id: user.id.clone() },
            &token,
        ))
        .await
        .unwrap();
    // The deletion reaches auth through the event bus: credentials go.
    let user_id = uuid::Uuid::parse_str(&user.id).unwrap();
    let store = fleet_auth::store::auth_store(&stack.auth_db);
    let mut gone = false;
    for _ in 0..100 {
        if store.credentials(user_id).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "credentials of a deleted account were not removed");
    assert!(
        store
            .active_sessions(user_id, stack.clock_now())
            .await
            .unwrap()
            .is_empty()
    );
    let refreshed = stack
        .auth
        .clone()
        .refresh(RefreshRequest {
            refresh_token: login.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(refreshed.code(), Code::Unauthenticated);
    assert_eq!(
        stack.login_with("ada@example.com", PASSWORD).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // The address is free again.
    stack.register("ada@example.com", "Ada again").await;
}

async fn a_failed_credential_write_undoes_the_new_account(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let rename = "ALTER TABLE credentials RENAME TO credentials_broken";
    match &stack.auth_db {
        fleet_kit::Db::Postgres(pool) => sqlx::query(rename).execute(pool).await.map(|_| ()),
        fleet_kit::Db::Sqlite(pool) => sqlx::query(rename).execute(pool).await.map(|_| ()),
    }
    .unwrap();
    let err = stack
        .auth
        .clone()
        .register(RegisterRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
            display_name: "Ada".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        !err.message().contains("credentials"),
        "no internals leak: {}",
        err.message()
    );
    let users = fleet_users::store::user_store(&stack.users_db);
    let left = users
        .get_by_email(&fleet_users::domain::Email::parse("ada@example.com").unwrap())
        .await
        .unwrap();
    assert!(left.is_none(), "the account made in the first step was removed");
}

async fn only_an_admin_reads_another_users_sessions_and_second_factors(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let (ada, _) = stack.signed_in("ada@example.com", "Ada").await;
    let (bob, bob_token) = stack.signed_in("bob@example.com", "Bob").await;
    let admin = stack.admin("root@example.com").await;
    let mut auth = stack.auth.clone();
    let about = |id: &str| ListSessionsRequest { user_id: id.into() };
    let denied = auth
        .list_sessions(authed(about(&ada.id), &bob_token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = auth
        .get_mfa_status(authed(
            GetMfaStatusRequest {
                user_id: ada.id.clone(),
            },
            &bob_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Naming oneself is reading one's own.
    let own = auth
        .list_sessions(authed(about(&bob.id), &bob_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.items.len(), 1);
    assert!(own.items[0].current);

    let adas = auth
        .list_sessions(authed(about(&ada.id), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(adas.items.len(), 1);
    assert!(!adas.items[0].current, "the admin's token is not Ada's session");
    let status = auth
        .get_mfa_status(authed(
            GetMfaStatusRequest {
                user_id: ada.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!status.enabled);
    let missing = auth
        .list_sessions(authed(about(&uuid::Uuid::now_v7().to_string()), &admin))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

async fn rotated_keys_sign_new_tokens_while_old_tokens_still_verify(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let (_, old) = stack.signed_in("ada@example.com", "Ada").await;
    let mut users = stack.users.clone();
    users.get_me(authed(GetMeRequest {}, &old)).await.unwrap();
    let admin = stack.admin("root@example.com").await;
    let mut auth = stack.auth.clone();
    let denied = auth
        .rotate_signing_key(authed(RotateSigningKeyRequest {}, &old))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let rotated = auth
        .rotate_signing_key(authed(RotateSigningKeyRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    let kid = rotated.kid;
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();
    let kids = |jwks: fleet_proto::auth::v1::Jwks| jwks.keys.into_iter().map(|k| k.kid).collect::<Vec<_>>();
    let jwks = auth.get_jwks(GetJwksRequest {}).await.unwrap().into_inner();
    assert!(
        jwks.keys
            .iter()
            .all(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.alg == "EdDSA")
    );
    assert_eq!(
        kids(jwks),
        [old_kid.clone(), kid.clone()],
        "the new key is published before it signs"
    );

    // Until it is active, the old key still signs, and everything works.
    let before = stack.login("ada@example.com").await.access_token;
    assert_eq!(jsonwebtoken::decode_header(&before).unwrap().kid, Some(old_kid));
    users.get_me(authed(GetMeRequest {}, &before)).await.unwrap();

    stack
        .clock
        .advance(Duration::seconds(fleet_auth::keys::KEY_ACTIVATION_DELAY_SECS + 1));
    let new = stack.login("ada@example.com").await.access_token;
    assert_eq!(jsonwebtoken::decode_header(&new).unwrap().kid, Some(kid.clone()));
    users.get_me(authed(GetMeRequest {}, &new)).await.unwrap();
    users.get_me(authed(GetMeRequest {}, &old)).await.unwrap();
    // Once every token of the old key has expired, it leaves the set.
    stack.clock.advance(Duration::minutes(20));
    let jwks = auth.get_jwks(GetJwksRequest {}).await.unwrap().into_inner();
    assert_eq!(kids(jwks), [kid]);
}

async fn logins_publish_their_audit_events(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let user = stack.register("ada@example.com", "Ada").await;
    let mut events = stack.bus.subscribe();
    stack.login_with("ada@example.com", "a wrong guess!").await.unwrap_err();
    let session = stack.login("ada@example.com").await;
    stack
        .auth
        .clone()
        .logout(authed(LogoutRequest {}, &session.access_token))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
            .await
            .expect("the relay publishes within seconds")
            .unwrap();
        assert_eq!(event.subject_user_id, user.id);
        // The users service's user.created may still be on its way.
        if event.producer == "users" {
            continue;
        }
        assert_eq!(event.producer, "auth");
        kinds.push(event.r#type.clone());
    }
    assert_eq!(
        kinds,
        [
            "auth.login_failed",
            "auth.login_succeeded",
            "session.created",
            "session.revoked"
        ]
    );
}

async fn a_refresh_during_a_users_outage_spends_nothing_and_its_retry_works(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    stack.register("ada@example.com", "Ada").await;
    let tokens = stack.login("ada@example.com").await;
    let mut auth = stack.auth.clone();
    let refresh = RefreshRequest {
        refresh_token: tokens.refresh_token.clone(),
    };
    stack.users_link.set_cut(true);
    let failed = auth.refresh(refresh.clone()).await.unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    stack.users_link.set_cut(false);
    // The client retries the same token: no reuse, the session lives.
    let mut retried = auth.refresh(refresh.clone()).await;
    for _ in 0..50 {
        if !matches!(&retried, Err(s) if s.code() == Code::Unavailable) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        retried = auth.refresh(refresh.clone()).await;
    }
    let next = retried.unwrap().into_inner();
    assert_ne!(next.refresh_token, tokens.refresh_token);
    auth.refresh(RefreshRequest {
        refresh_token: next.refresh_token,
    })
    .await
    .unwrap();
}

backend_tests!(
    only_an_admin_reads_another_users_sessions_and_second_factors,
    a_refresh_during_a_users_outage_spends_nothing_and_its_retry_works,
    rotated_keys_sign_new_tokens_while_old_tokens_still_verify,
    logins_publish_their_audit_events,
    a_failed_credential_write_undoes_the_new_account,
    register_login_refresh_reuse_and_logout,
    duplicate_emails_in_any_case_already_exist,
    bad_input_is_invalid_argument_with_field_details,
    a_wrong_password_and_an_unknown_email_answer_alike,
    a_lockout_answers_alike_for_an_existing_account_and_an_unknown_email,
    the_failed_login_limit_holds_under_concurrent_attempts,
    a_full_hashing_pool_refuses_at_once_and_counts_no_failure,
    changing_the_password_revokes_the_other_sessions,
    a_user_revokes_only_their_own_sessions,
    an_expired_access_token_is_refused,
    deleting_an_account_ends_its_sessions_and_credentials,
);
