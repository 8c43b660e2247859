//! gRPC clients reach the services through the gateway, under the same
//! authentication.

use fleet_proto::users::v1::{GetUserRequest, users_service_client::UsersServiceClient};
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};

use crate::harness::{Api, Fleet, Proto};

/// A channel to the gateway's plain listener (not a service's own port).
pub(crate) async fn gateway_channel(fleet: &Fleet) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{}", fleet.http))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A users client through the gateway.
pub(crate) async fn through_gateway(fleet: &Fleet) -> UsersServiceClient<Channel> {
    UsersServiceClient::new(gateway_channel(fleet).await)
}

pub(crate) fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test]
async fn a_tonic_client_reaches_users_get_user_through_the_gateway() {
    let fleet = Fleet::start_with(&[("FLEET_GATEWAY__HTTP_MODE", "serve")]).await;
    let api = Api::new(&fleet, Proto::Http2);
    let (user, token) = api.signed_in("ada@example.com", "Ada").await;
    let id = user["id"].as_str().unwrap().to_string();

    let mut client = through_gateway(&fleet).await;
    let found = client
        .get_user(authed(GetUserRequest { id: id.clone() }, &token))
        .await
        .unwrap();
    assert_eq!(found.metadata().get("x-content-type-options").unwrap(), "nosniff");
    assert_eq!(found.into_inner().email.as_deref(), Some("ada@example.com"));

    let anonymous = client
        .get_user(Request::new(GetUserRequest { id: id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let forged = client
        .get_user(authed(GetUserRequest { id }, "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_pass_through_to_a_service_that_is_down_is_unavailable() {
    let fleet = Fleet::start_with(&[
        ("FLEET_GATEWAY__HTTP_MODE", "serve"),
        ("FLEET_USERS__URL", crate::harness::DEAD_UPSTREAM),
    ])
    .await;
    let mut client = through_gateway(&fleet).await;
    let err = client
        .get_user(Request::new(GetUserRequest { id: "x".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}
