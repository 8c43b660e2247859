//! The users service as auth sees it: create, look up and delete accounts.
//! Auth owns no profile data; it asks users over gRPC with a service token.

use std::sync::Arc;

use fleet_proto::users::v1::{
    CreateUserRequest, DeleteUserRequest, GetUserByEmailRequest, GetUserRequest, User,
    users_service_client::UsersServiceClient,
};
use tonic::{
    Code, Request, Status,
    service::{Interceptor, interceptor::InterceptedService},
};
use uuid::Uuid;

use fleet_kit::grpc::FreshChannel;

use crate::keys::TokenIssuer;

/// The users port.
#[async_trait::async_trait]
pub trait UserDirectory: Send + Sync + 'static {
    /// Creates an account; the users service validates the fields.
    async fn create(&self, email: &str, display_name: &str) -> Result<User, Status>;
    /// An account by email, any letter case.
    async fn find_by_email(&self, email: &str) -> Result<Option<User>, Status>;
    /// An account by id.
    async fn get(&self, id: Uuid) -> Result<Option<User>, Status>;
    /// Deletes an account (compensation of a failed registration).
    async fn delete(&self, id: Uuid) -> Result<(), Status>;
}

/// Attaches a fresh service token to every call.
#[derive(Clone)]
pub struct ServiceCredentials {
    issuer: Arc<TokenIssuer>,
}

impl Interceptor for ServiceCredentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = self
            .issuer
            .service_token(crate::store::PRODUCER)
            .map_err(|e| fleet_kit::error::internal(&e))?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("service token is not a header value"))?;
        request.metadata_mut().insert("authorization", value);
        // The users service continues the trace of the call being answered.
        fleet_kit::trace::inject_metadata(request.metadata_mut());
        Ok(request)
    }
}

/// The users service over gRPC.
#[derive(Clone)]
pub struct GrpcDirectory {
    client: UsersServiceClient<InterceptedService<FreshChannel, ServiceCredentials>>,
}

impl GrpcDirectory {
    /// Talks to the users service behind `channel`.
    pub fn new(channel: FreshChannel, issuer: Arc<TokenIssuer>) -> Self {
        Self {
            client: UsersServiceClient::with_interceptor(channel, ServiceCredentials { issuer }),
        }
    }
}

fn not_found_as_none(result: Result<tonic::Response<User>, Status>) -> Result<Option<User>, Status> {
    match result {
        Ok(user) => Ok(Some(user.into_inner())),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(status),
    }
}

#[async_trait::async_trait]
impl UserDirectory for GrpcDirectory {
    async fn create(&self, email: &str, display_name: &str) -> Result<User, Status> {
        let request = CreateUserRequest {
            email: email.into(),
            display_name: display_name.into(),
        };
        Ok(self.client.clone().create_user(request).await?.into_inner())
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<User>, Status> {
        let request = GetUserByEmailRequest { email: email.into() };
        not_found_as_none(self.client.clone().get_user_by_email(request).await)
    }

    async fn get(&self, id: Uuid) -> Result<Option<User>, Status> {
        let request = GetUserRequest { id: id.to_string() };
        not_found_as_none(self.client.clone().get_user(request).await)
    }

    async fn delete(&self, id: Uuid) -> Result<(), Status> {
        let request = DeleteUserRequest { id: id.to_string() };
        match self.client.clone().delete_user(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(status),
        }
    }
}
