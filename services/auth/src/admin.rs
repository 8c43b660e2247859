//! What administrators and the fleet's own verifiers ask of auth. Admin
//! rights come from the caller's record in the users service, read per
//! call: a token's role claim is as old as the token, and a demoted admin
//! must lose its rights at once.

use chrono::Duration;
use fleet_kit::{error::Violations, time::to_timestamp, token::Identity};
use fleet_proto::auth::v1::{
    IssueServiceTokenRequest, IssueServiceTokenResponse, ListRevokedSessionsResponse, RevokedSession,
};
use sha2::{Digest, Sha256};
use tonic::Status;
use uuid::Uuid;

use crate::{
    api::AuthApi,
    error::AuthError,
    store::{Revoke, RevokeReason},
};

impl AuthApi {
    /// Succeeds when the caller is a service, or a user who is an active
    /// administrator now.
    pub async fn require_admin_now(&self, identity: &Identity) -> Result<(), AuthError> {
        if identity.is_service() {
            return Ok(());
        }
        let forbidden = || AuthError::Upstream(Status::permission_denied("only administrators may do this"));
        let Some(id) = identity.user_id() else {
            return Err(forbidden());
        };
        let user = self.directory.get(id).await.map_err(AuthError::from_users)?;
        match user {
            Some(user) if user.role.as_deref() == Some("admin") && user.status.as_deref() == Some("active") => Ok(()),
            _ => Err(forbidden()),
        }
    }

    /// Whose data a read is about: the calling user's own when `asked` is
    /// empty or names them; otherwise the existing user it names, for an
    /// active administrator now or a service (which must name one).
    pub async fn subject(&self, identity: &Identity, asked: &str) -> Result<Uuid, AuthError> {
        let caller = identity.user_id();
        if asked.is_empty() {
            return caller.ok_or_else(|| {
                let mut v = Violations::new();
                v.add("user_id", "is required when a service calls");
                v.into()
            });
        }
        let Ok(asked) = Uuid::parse_str(asked) else {
            let mut v = Violations::new();
            v.add("user_id", "must be a UUID");
            return Err(v.into());
        };
        if Some(asked) == caller {
            return Ok(asked);
        }
        self.require_admin_now(identity).await?;
        match self.directory.get(asked).await.map_err(AuthError::from_users)? {
            Some(_) => Ok(asked),
            None => Err(AuthError::Upstream(Status::not_found("user not found"))),
        }
    }

    /// An administrator ends every session of the user `target`.
    pub async fn end_user_sessions(&self, identity: &Identity, target: &str) -> Result<(), AuthError> {
        let Ok(target) = Uuid::parse_str(target) else {
            let mut v = Violations::new();
            v.add("id", "must be a UUID");
            return Err(v.into());
        };
        self.require_admin_now(identity).await?;
        let exists = self.directory.get(target).await.map_err(AuthError::from_users)?;
        if exists.is_none() {
            return Err(AuthError::Upstream(Status::not_found("user not found")));
        }
        self.end_sessions(target, Revoke::AllExcept(None), RevokeReason::EndedByAdmin)
            .await?;
        Ok(())
    }
}

impl AuthApi {
    /// Every session revoked whose access tokens may still be live.
    pub async fn revoked_sessions(&self) -> Result<ListRevokedSessionsResponse, AuthError> {
        let now = self.clock.now();
        let ttl = Duration::seconds(i64::from(self.issuer.settings().access_ttl_secs));
        let revoked = self.store.revoked_since(now - ttl).await?;
        let sessions = revoked
            .into_iter()
            .map(|(id, at)| RevokedSession {
                session_id: id.to_string(),
                tokens_expire_at: Some(to_timestamp(self.access_expiry(at))),
            })
            .collect();
        Ok(ListRevokedSessionsResponse { sessions })
    }
}

impl AuthApi {
    /// A service token for a fleet component that holds the service secret.
    pub fn issue_service_token(&self, req: &IssueServiceTokenRequest) -> Result<IssueServiceTokenResponse, AuthError> {
        let name_ok =
            (1..=32).contains(&req.name.len()) && req.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
        if !name_ok {
            let mut v = Violations::new();
            v.add("name", "must be 1 to 32 lower-case letters or dashes");
            return Err(v.into());
        }
        // Digests compared: no timing tells how much of the secret was right.
        let expected = Sha256::digest(self.issuer.settings().service_secret.expose().as_bytes());
        let presented = Sha256::digest(req.secret.as_bytes());
        if self.issuer.settings().service_secret.expose().is_empty() || expected != presented {
            return Err(AuthError::Upstream(Status::permission_denied("wrong service secret")));
        }
        let token = self.issuer.service_token(&req.name)?;
        let expires_at = self.clock.now() + Duration::seconds(crate::keys::SERVICE_TOKEN_TTL_SECS);
        Ok(IssueServiceTokenResponse {
            token,
            expires_at: Some(to_timestamp(expires_at)),
        })
    }
}
