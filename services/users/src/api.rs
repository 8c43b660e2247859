//! The `fleet.users.v1.UsersService` RPCs.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use fleet_kit::{
    SharedClock,
    error::Violations,
    outbox::OutboxRelay,
    time::to_timestamp,
    token::{Identity, require_identity, require_service, require_user},
};
use fleet_proto::users::v1::{
    CreateUserRequest, DeleteUserRequest, GetMeRequest, GetUserByEmailRequest, GetUserRequest, ListUsersRequest,
    ListUsersResponse, UpdateMeRequest, UpdateUserRequest, User, users_service_server::UsersService,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{DisplayName, Email, Role, Status as AccountStatus},
    error::UsersError,
    store::{ListQuery, NewUser, UserPatch, UserRecord, UserStore},
};

/// Default and largest page sizes.
const DEFAULT_LIMIT: u32 = 20;

/// The users service.
#[derive(Clone)]
pub struct UsersApi {
    store: Arc<dyn UserStore>,
    relay: OutboxRelay,
    clock: SharedClock,
}

impl UsersApi {
    /// The service over `store`, waking `relay` after each change.
    pub fn new(store: Arc<dyn UserStore>, relay: OutboxRelay, clock: SharedClock) -> Self {
        Self { store, relay, clock }
    }
}

/// Every field, for the user themself, admins and services.
pub fn full_view(user: &UserRecord) -> User {
    User {
        id: user.id.to_string(),
        email: Some(user.email.clone()),
        display_name: user.display_name.clone(),
        role: Some(user.role.clone()),
        status: Some(user.status.clone()),
        created_at: Some(to_timestamp(user.created_at)),
        updated_at: Some(to_timestamp(user.updated_at)),
        version: Some(u64::try_from(user.version).unwrap_or_default()),
    }
}

/// The public fields only: id, display_name, created_at.
pub fn public_view(user: &UserRecord) -> User {
    User {
        id: user.id.to_string(),
        display_name: user.display_name.clone(),
        created_at: Some(to_timestamp(user.created_at)),
        ..User::default()
    }
}

/// Who is calling, as the store has it now: a token's role is as old as the
/// token, so rights come from the caller's own record, read per call.
#[derive(Debug, Clone, Copy)]
struct Caller {
    /// The calling user; `None` for a service.
    id: Option<Uuid>,
    /// An active administrator, or a service.
    privileged: bool,
}

impl Caller {
    fn view(self, user: &UserRecord) -> User {
        if self.privileged || self.id == Some(user.id) {
            full_view(user)
        } else {
            public_view(user)
        }
    }
}

fn parse_id(field: &str, raw: &str) -> Result<Uuid, UsersError> {
    Uuid::parse_str(raw).map_err(|_| {
        let mut v = Violations::new();
        v.add(field, "must be a UUID");
        UsersError::Invalid(v)
    })
}

fn parse_version(v: &mut Violations, raw: Option<u64>) -> Option<i64> {
    raw.and_then(|raw| v.check("version", i64::try_from(raw).map_err(|_| "is out of range")))
}

/// Cursors are opaque: the last id of the previous page, base64url.
fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(raw: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    Uuid::from_slice(&bytes).ok()
}

impl UsersApi {
    /// The caller's rights now. A user whose record is gone or disabled has
    /// none: its tokens are refused although their signatures still hold.
    async fn caller(&self, identity: &Identity) -> Result<Caller, UsersError> {
        let Some(id) = identity.user_id() else {
            return Ok(Caller {
                id: None,
                privileged: identity.is_service(),
            });
        };
        match self.store.get(id).await? {
            Some(user) if user.status == AccountStatus::Active.as_str() => Ok(Caller {
                id: Some(id),
                privileged: user.role == Role::Admin.as_str(),
            }),
            _ => Err(UsersError::Forbidden("this account is disabled or deleted")),
        }
    }

    async fn create_user(&self, req: CreateUserRequest) -> Result<User, UsersError> {
        let mut v = Violations::new();
        let email = v.check("email", Email::parse(&req.email));
        let name = v.check("display_name", DisplayName::parse(&req.display_name));
        let (Some(email), Some(display_name)) = (email, name) else {
            return Err(v.into());
        };
        let new = NewUser {
            email,
            display_name,
            role: Role::User,
        };
        let user = self.store.create(new, self.clock.now()).await?;
        self.relay.wake();
        Ok(full_view(&user))
    }

    async fn update(&self, id: Uuid, patch: UserPatch) -> Result<UserRecord, UsersError> {
        let user = self.store.update(id, patch, self.clock.now()).await?;
        self.relay.wake();
        Ok(user)
    }

    async fn update_me(&self, id: Uuid, req: UpdateMeRequest) -> Result<User, UsersError> {
        let mut v = Violations::new();
        let patch = UserPatch {
            email: req.email.as_deref().and_then(|e| v.check("email", Email::parse(e))),
            display_name: req
                .display_name
                .as_deref()
                .and_then(|n| v.check("display_name", DisplayName::parse(n))),
            expected_version: parse_version(&mut v, req.version),
            ..UserPatch::default()
        };
        v.into_result()?;
        Ok(full_view(&self.update(id, patch).await?))
    }

    async fn update_user(&self, identity: &Identity, req: UpdateUserRequest) -> Result<User, UsersError> {
        if !self.caller(identity).await?.privileged {
            return Err(UsersError::Forbidden("only administrators may change other users"));
        }
        let id = parse_id("id", &req.id)?;
        let mut v = Violations::new();
        let patch = UserPatch {
            display_name: req
                .display_name
                .as_deref()
                .and_then(|n| v.check("display_name", DisplayName::parse(n))),
            role: req.role.as_deref().and_then(|r| v.check("role", Role::parse(r))),
            status: req
                .status
                .as_deref()
                .and_then(|s| v.check("status", AccountStatus::parse(s))),
            expected_version: parse_version(&mut v, req.version),
            ..UserPatch::default()
        };
        v.into_result()?;
        Ok(full_view(&self.update(id, patch).await?))
    }

    async fn list_users(&self, identity: &Identity, req: ListUsersRequest) -> Result<ListUsersResponse, UsersError> {
        // Bounds, the cursor's form and the query's length are field rules,
        // checked when the request was decoded.
        let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
        let after = if req.cursor.is_empty() {
            None
        } else {
            let Some(cursor) = decode_cursor(&req.cursor) else {
                let mut v = Violations::new();
                v.add("cursor", "must be a next_cursor this API returned");
                return Err(v.into());
            };
            Some(cursor)
        };
        let q = req.q.trim();
        let caller = self.caller(identity).await?;
        let privileged = caller.privileged;
        let query = ListQuery {
            after,
            q: (!q.is_empty()).then(|| q.to_string()),
            q_matches_email: privileged,
            limit: limit + 1,
        };
        let mut rows = self.store.list(&query).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|u| encode_cursor(u.id))
        } else {
            None
        };
        Ok(ListUsersResponse {
            items: rows.iter().map(|u| caller.view(u)).collect(),
            next_cursor,
        })
    }

    async fn delete_user(&self, identity: &Identity, req: DeleteUserRequest) -> Result<(), UsersError> {
        let id = parse_id("id", &req.id)?;
        let caller = self.caller(identity).await?;
        if !(caller.privileged || caller.id == Some(id)) {
            return Err(UsersError::Forbidden(
                "only the user or an administrator may delete a user",
            ));
        }
        self.store.delete(id, self.clock.now()).await?;
        self.relay.wake();
        Ok(())
    }
}

#[tonic::async_trait]
impl UsersService for UsersApi {
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        require_service(&request)?;
        Ok(Response::new(self.create_user(request.into_inner()).await?))
    }

    async fn get_user_by_email(&self, request: Request<GetUserByEmailRequest>) -> Result<Response<User>, Status> {
        require_service(&request)?;
        // An unparseable address cannot belong to anyone.
        let Ok(email) = Email::parse(&request.get_ref().email) else {
            return Err(UsersError::NotFound.into());
        };
        let user = self.store.get_by_email(&email).await.map_err(UsersError::from)?;
        Ok(Response::new(full_view(&user.ok_or(UsersError::NotFound)?)))
    }

    async fn get_me(&self, request: Request<GetMeRequest>) -> Result<Response<User>, Status> {
        let (id, _) = require_user(&request)?;
        let user = self.store.get(id).await.map_err(UsersError::from)?;
        Ok(Response::new(full_view(&user.ok_or(UsersError::NotFound)?)))
    }

    async fn update_me(&self, request: Request<UpdateMeRequest>) -> Result<Response<User>, Status> {
        let (id, _) = require_user(&request)?;
        Ok(Response::new(self.update_me(id, request.into_inner()).await?))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let identity = require_identity(&request)?.clone();
        Ok(Response::new(self.list_users(&identity, request.into_inner()).await?))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let caller = self.caller(require_identity(&request)?).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let user = self.store.get(id).await.map_err(UsersError::from)?;
        Ok(Response::new(caller.view(&user.ok_or(UsersError::NotFound)?)))
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Result<Response<User>, Status> {
        let identity = require_identity(&request)?.clone();
        Ok(Response::new(self.update_user(&identity, request.into_inner()).await?))
    }

    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Result<Response<()>, Status> {
        let identity = require_identity(&request)?.clone();
        self.delete_user(&identity, request.into_inner()).await?;
        Ok(Response::new(()))
    }
}
