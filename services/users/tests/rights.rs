//! Rights come from the caller's stored record, read on every call, never
//! from the role a token was issued with.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use chrono::{Duration, Utc};
use fleet_kit::{
    Db, SharedClock, SystemClock,
    events::InProcessBus,
    outbox::OutboxRelay,
    testing::{TestBackend, database},
    token::{Identity, Principal},
};
use fleet_proto::users::v1::{UpdateUserRequest, users_service_server::UsersService};
use fleet_users::{
    UsersApi,
    domain::{DisplayName, Email, Role},
    store::{NewUser, UserPatch, user_store},
};
use tonic::{Code, Request};
use uuid::Uuid;

/// A request as the gRPC layer hands it over once `id`'s token is verified:
/// the token says "admin", whatever the store says now.
fn as_token_admin(id: Uuid, message: UpdateUserRequest) -> Request<UpdateUserRequest> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(Identity {
        principal: Principal::User {
            id,
            session_id: Uuid::now_v7(),
        },
        role: "admin".to_string(),
        amr: vec!["pwd".to_string()],
        expires_at: Utc::now() + Duration::minutes(15),
    });
    request
}

#[tokio::test]
async fn a_demoted_admin_with_an_admin_token_is_refused_by_its_record() {
    let database = database(TestBackend::Sqlite).await.unwrap();
    let db = Db::connect(&database.url, "users").await.unwrap();
    fleet_users::migrate(&db).await.unwrap();
    let store = user_store(&db);
    let clock: SharedClock = Arc::new(SystemClock);
    let relay = OutboxRelay::new(&db, Arc::new(InProcessBus::default()), clock.clone());
    let api = UsersApi::new(store.clone(), relay, clock);
    let new_user = |email: &str, role| NewUser {
        email: Email::parse(email).unwrap(),
        display_name: DisplayName::parse("Someone").unwrap(),
        role,
    };
    let ada = store
        .create(new_user("ada@example.com", Role::Admin), Utc::now())
        .await
        .unwrap();
    let bob = store
        .create(new_user("bob@example.com", Role::User), Utc::now())
        .await
        .unwrap();
    let rename = |id: Uuid| UpdateUserRequest {
        id: id.to_string(),
        display_name: Some("Renamed".to_string()),
        ..UpdateUserRequest::default()
    };

    // While the record says admin, the admin token works.
    api.update_user(as_token_admin(ada.id, rename(bob.id))).await.unwrap();

    // Demoted in the store; the token still claims admin.
    let demote = UserPatch {
        role: Some(Role::User),
        ..UserPatch::default()
    };
    store.update(ada.id, demote, Utc::now()).await.unwrap();
    let promote_back = UpdateUserRequest {
        id: ada.id.to_string(),
        role: Some("admin".to_string()),
        ..UpdateUserRequest::default()
    };
    let refused = api.update_user(as_token_admin(ada.id, promote_back)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = api
        .update_user(as_token_admin(ada.id, rename(bob.id)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(store.get(ada.id).await.unwrap().unwrap().role, "user");
}
