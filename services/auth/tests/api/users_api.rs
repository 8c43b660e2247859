//! The users RPCs over real gRPC: visibility, pagination, concurrency, roles.

use std::collections::HashSet;

use fleet_kit::{backend_tests, testing::TestBackend};
use fleet_proto::users::v1::{
    CreateUserRequest, DeleteUserRequest, GetMeRequest, GetUserRequest, ListUsersRequest, UpdateMeRequest,
    UpdateUserRequest,
};
use tonic::{Code, Request};

use crate::helpers::{Stack, authed, violated_fields};

async fn list_users_paginates_with_a_stable_cursor_while_users_are_inserted(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let (_, token) = stack.signed_in("reader@example.com", "Reader").await;
    for i in 0..24 {
        stack
            .register(&format!("user{i}@example.com"), &format!("User {i}"))
            .await;
    }
    let mut users = stack.users.clone();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut inserted = 0;
    loop {
        let page = users
            .list_users(authed(
                ListUsersRequest {
                    limit: Some(10),
                    cursor: cursor.clone(),
                    q: String::new(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().map(|u| u.id.clone()));
        // Users arrive while the reader pages through.
        if inserted < 2 {
            stack.register(&format!("late{inserted}@example.com"), "Late").await;
            inserted += 1;
        }
        match page.next_cursor {
            Some(next) => cursor = next,
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no user appears twice");
    assert_eq!(
        seen.len(),
        25 + 2,
        "everyone, including those inserted meanwhile (they sort last)"
    );
}

async fn a_non_admin_sees_only_public_fields_of_others(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let (me, token) = stack.signed_in("ada@example.com", "Ada").await;
    let other = stack.register("bob@example.com", "Bob").await;
    let mut users = stack.users.clone();
    let page = users
        .list_users(authed(
            ListUsersRequest {
                limit: None,
                cursor: String::new(),
                q: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.items.len(), 2);
    assert!(page.next_cursor.is_none());
    for item in &page.items {
        assert!(!item.id.is_empty() && !item.display_name.is_empty() && item.created_at.is_some());
        if item.id == me.id {
            assert_eq!(
                item.email.as_deref(),
                Some("ada@example.com"),
                "a user sees their own fields"
            );
        } else {
            assert!(item.email.is_none() && item.role.is_none() && item.status.is_none() && item.updated_at.is_none());
        }
    }
    let bob = users
        .get_user(authed(GetUserRequest { id: other.id.clone() }, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((bob.email.as_deref(), bob.display_name.as_str()), (None, "Bob"));
    // Emails are not searchable by non-admins.
    let search = users
        .list_users(authed(
            ListUsersRequest {
                limit: Some(10),
                cursor: String::new(),
                q: "bob@".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(search.items.is_empty());

    let admin = stack.admin("root@example.com").await;
    let bob = users
        .get_user(authed(GetUserRequest { id: other.id }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.email.as_deref(), Some("bob@example.com"));
    let search = users
        .list_users(authed(
            ListUsersRequest {
                limit: Some(10),
                cursor: String::new(),
                q: "bob@".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(search.items.len(), 1);
}

async fn an_update_with_a_stale_version_is_refused(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let (me, token) = stack.signed_in("ada@example.com", "Ada").await;
    assert_eq!(me.version, Some(1));
    let mut users = stack.users.clone();
    let updated = users
        .update_me(authed(
            UpdateMeRequest {
                display_name: Some("Ada L.".into()),
                email: None,
                version: Some(1),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((updated.display_name.as_str(), updated.version), ("Ada L.", Some(2)));
    let stale = users
        .update_me(authed(
            UpdateMeRequest {
                display_name: Some("Stale".into()),
                email: None,
                version: Some(1),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let me = users
        .get_me(authed(GetMeRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.display_name, "Ada L.");
}

async fn only_admins_change_roles_and_only_self_or_admin_delete(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let (ada, ada_token) = stack.signed_in("ada@example.com", "Ada").await;
    let (bob, bob_token) = stack.signed_in("bob@example.com", "Bob").await;
    let mut users = stack.users.clone();
    let promote = UpdateUserRequest {
        id: ada.id.clone(),
        role: Some("admin".into()),
        ..Default::default()
    };
    let denied = users
        .update_user(authed(promote.clone(), &ada_token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = users
        .delete_user(authed(DeleteUserRequest { id: ada.id.clone() }, &bob_token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let admin = stack.admin("root@example.com").await;
    // The promotion comes after ada's login.
    stack.clock.advance(chrono::Duration::seconds(1));
    let promoted = users.update_user(authed(promote, &admin)).await.unwrap().into_inner();
    assert_eq!(promoted.role.as_deref(), Some("admin"));
    let bad = users
        .update_user(authed(
            UpdateUserRequest {
                id: ada.id.clone(),
                role: Some("root".into()),
                status: Some("gone".into()),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["role", "status"]);
    users
        .delete_user(authed(DeleteUserRequest { id: bob.id.clone() }, &admin))
        .await
        .unwrap();
    let gone = users
        .get_user(authed(GetUserRequest { id: bob.id }, &admin))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    // The promotion ended ada's session (its token claims the old role); a
    // new login carries the new one.
    let started = std::time::Instant::now();
    while users.get_me(authed(GetMeRequest {}, &ada_token)).await.is_ok() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "ada's old session lives on"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ada_token = stack.login("ada@example.com").await.access_token;
    users
        .delete_user(authed(DeleteUserRequest { id: ada.id }, &ada_token))
        .await
        .unwrap();
}

async fn internal_rpcs_and_anonymous_calls_are_refused(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let (_, token) = stack.signed_in("ada@example.com", "Ada").await;
    let mut users = stack.users.clone();
    let create = CreateUserRequest {
        email: "x@example.com".into(),
        display_name: "X".into(),
    };
    assert_eq!(
        users
            .create_user(authed(create.clone(), &token))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        users.create_user(Request::new(create)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        users.get_me(Request::new(GetMeRequest {})).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let garbage = users.get_me(authed(GetMeRequest {}, "not.a.token")).await.unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated);
    let bad_id = users
        .get_user(authed(GetUserRequest { id: "42".into() }, &token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad_id), ["id"]);
    let bad_page = users
        .list_users(authed(
            ListUsersRequest {
                limit: Some(101),
                cursor: "%%%".into(),
                q: String::new(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad_page), ["limit", "cursor"]);
}

async fn sql_injection_strings_in_every_field_round_trip_literally(backend: TestBackend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let name = "Robert'); DROP TABLE users;--";
    let email = "'or'1'='1--@example.com";
    let password = "' OR '1'='1'; DROP TABLE credentials; --";
    let user = stack
        .auth
        .clone()
        .register(fleet_proto::auth::v1::RegisterRequest {
            email: email.into(),
            password: password.into(),
            display_name: name.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!((user.email.as_deref(), user.display_name.as_str()), (Some(email), name));
    let mut login = Request::new(fleet_proto::auth::v1::LoginRequest {
        email: email.into(),
        password: password.into(),
    });
    let agent = "Mozilla'); DELETE FROM sessions;--";
    login.metadata_mut().insert("user-agent", agent.parse().unwrap());
    let tokens = stack.auth.clone().login(login).await.unwrap().into_inner();
    let mut users = stack.users.clone();
    let renamed = "x' || (SELECT email FROM users) || '";
    let me = users
        .update_me(authed(
            UpdateMeRequest {
                display_name: Some(renamed.into()),
                email: None,
                version: None,
            },
            &tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.display_name, renamed);
    let found = users
        .list_users(authed(
            ListUsersRequest {
                limit: Some(10),
                cursor: String::new(),
                q: "' OR 1=1 --".into(),
            },
            &tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(found.items.is_empty());
    let sessions = stack
        .auth
        .clone()
        .list_sessions(authed(
            fleet_proto::auth::v1::ListSessionsRequest::default(),
            &tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        sessions.items[0]
            .user_agent
            .starts_with("Mozilla'); DELETE FROM sessions;--")
    );
}

backend_tests!(
    list_users_paginates_with_a_stable_cursor_while_users_are_inserted,
    a_non_admin_sees_only_public_fields_of_others,
    an_update_with_a_stale_version_is_refused,
    only_admins_change_roles_and_only_self_or_admin_delete,
    internal_rpcs_and_anonymous_calls_are_refused,
    sql_injection_strings_in_every_field_round_trip_literally,
);
