//! The `fleet.auth.v1.AuthService` RPCs: a thin shell over [`AuthApi`],
//! which reads identities and client details off the request and counts
//! outcomes.

use std::sync::Arc;

use fleet_kit::{
    error::Violations,
    time::to_timestamp,
    token::{require_identity, require_user},
};
use fleet_proto::auth::v1::{
    BackupCodes, ChangePasswordRequest, ConfirmSmsRequest, ConfirmTotpRequest, DisableMfaRequest,
    EndUserSessionsRequest, EnrollSmsRequest, EnrollTotpRequest, EnrollTotpResponse, GetJwksRequest,
    GetMfaStatusRequest, IssueServiceTokenRequest, IssueServiceTokenResponse, Jwks, ListRevokedSessionsRequest,
    ListRevokedSessionsResponse, ListSessionsRequest, ListSessionsResponse, LoginMfaRequest, LoginRequest,
    LoginResponse, LogoutRequest, MfaStatus, RefreshRequest, RegenerateBackupCodesRequest, RegisterRequest,
    RegisterResponse, RevokeSessionRequest, RotateSigningKeyRequest, RotateSigningKeyResponse, SendLoginSmsCodeRequest,
    Session, auth_service_server::AuthService,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    api::{AuthApi, ClientInfo},
    error::AuthError,
    store::{Revoke, RevokeReason},
};

/// The tonic service: a thin shell over [`AuthApi`].
#[derive(Clone)]
pub struct AuthGrpc(pub Arc<AuthApi>);

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        Ok(Response::new(self.0.register(request.into_inner()).await?))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let client = ClientInfo::of(&request);
        let result = self.0.login(request.into_inner(), client).await;
        if !matches!(result, Err(AuthError::Invalid(_))) {
            self.0.metrics.login(result.is_ok());
        }
        Ok(Response::new(result?))
    }

    async fn login_mfa(&self, request: Request<LoginMfaRequest>) -> Result<Response<LoginResponse>, Status> {
        let client = ClientInfo::of(&request);
        let result = self.0.login_mfa(request.into_inner(), client).await;
        if !matches!(result, Err(AuthError::Invalid(_))) {
            self.0.metrics.mfa(result.is_ok());
        }
        Ok(Response::new(result?))
    }

    async fn send_login_sms_code(&self, request: Request<SendLoginSmsCodeRequest>) -> Result<Response<()>, Status> {
        self.0.send_login_sms(request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn refresh(&self, request: Request<RefreshRequest>) -> Result<Response<LoginResponse>, Status> {
        Ok(Response::new(self.0.refresh(request.into_inner()).await?))
    }

    async fn get_mfa_status(&self, request: Request<GetMfaStatusRequest>) -> Result<Response<MfaStatus>, Status> {
        let identity = require_identity(&request)?;
        let user_id = self.0.subject(identity, &request.get_ref().user_id).await?;
        Ok(Response::new(self.0.mfa_status(user_id).await?))
    }

    async fn enroll_totp(&self, request: Request<EnrollTotpRequest>) -> Result<Response<EnrollTotpResponse>, Status> {
        let (user_id, _) = require_user(&request)?;
        Ok(Response::new(self.0.enroll_totp(user_id).await?))
    }

    async fn confirm_totp(&self, request: Request<ConfirmTotpRequest>) -> Result<Response<BackupCodes>, Status> {
        let client = ClientInfo::of(&request);
        let (user_id, _) = require_user(&request)?;
        Ok(Response::new(
            self.0.confirm_totp(user_id, request.into_inner(), client).await?,
        ))
    }

    async fn disable_mfa(&self, request: Request<DisableMfaRequest>) -> Result<Response<()>, Status> {
        let client = ClientInfo::of(&request);
        let (user_id, identity) = require_user(&request)?;
        let session = identity.session_id().ok_or(AuthError::SessionEnded)?;
        self.0
            .disable_mfa(user_id, session, request.into_inner(), client)
            .await?;
        Ok(Response::new(()))
    }

    async fn regenerate_backup_codes(
        &self,
        request: Request<RegenerateBackupCodesRequest>,
    ) -> Result<Response<BackupCodes>, Status> {
        let client = ClientInfo::of(&request);
        let (user_id, identity) = require_user(&request)?;
        let session = identity.session_id().ok_or(AuthError::SessionEnded)?;
        Ok(Response::new(
            self.0
                .regenerate_backup_codes(user_id, session, request.into_inner(), client)
                .await?,
        ))
    }

    async fn enroll_sms(&self, request: Request<EnrollSmsRequest>) -> Result<Response<()>, Status> {
        let (user_id, _) = require_user(&request)?;
        self.0.enroll_sms(user_id, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn confirm_sms(&self, request: Request<ConfirmSmsRequest>) -> Result<Response<()>, Status> {
        let client = ClientInfo::of(&request);
        let (user_id, _) = require_user(&request)?;
        self.0.confirm_sms(user_id, request.into_inner(), client).await?;
        Ok(Response::new(()))
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Result<Response<()>, Status> {
        let (user_id, identity) = require_user(&request)?;
        let session = identity.session_id().ok_or(AuthError::SessionEnded)?;
        self.0
            .revoke_own(user_id, Revoke::One(session), RevokeReason::Logout)
            .await?;
        Ok(Response::new(()))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let identity = require_identity(&request)?;
        let user_id = self.0.subject(identity, &request.get_ref().user_id).await?;
        let current = identity.session_id().filter(|_| identity.user_id() == Some(user_id));
        let sessions = self
            .0
            .store
            .active_sessions(user_id, self.0.clock.now())
            .await
            .map_err(AuthError::from)?;
        let items = sessions
            .into_iter()
            .map(|s| Session {
                id: s.id.to_string(),
                created_at: Some(to_timestamp(s.created_at)),
                last_used_at: Some(to_timestamp(s.last_used_at)),
                expires_at: Some(to_timestamp(s.expires_at)),
                ip: s.ip,
                user_agent: s.user_agent,
                current: Some(s.id) == current,
            })
            .collect();
        Ok(Response::new(ListSessionsResponse { items }))
    }

    async fn revoke_session(&self, request: Request<RevokeSessionRequest>) -> Result<Response<()>, Status> {
        let (user_id, _) = require_user(&request)?;
        let Ok(id) = Uuid::parse_str(&request.get_ref().id) else {
            let mut v = Violations::new();
            v.add("id", "must be a UUID");
            return Err(AuthError::from(v).into());
        };
        let revoked = self
            .0
            .revoke_own(user_id, Revoke::One(id), RevokeReason::Revoked)
            .await?;
        if revoked.is_empty() {
            return Err(AuthError::SessionNotFound.into());
        }
        Ok(Response::new(()))
    }

    async fn change_password(&self, request: Request<ChangePasswordRequest>) -> Result<Response<()>, Status> {
        let client = ClientInfo::of(&request);
        let (user_id, identity) = require_user(&request)?;
        let session = identity.session_id().ok_or(AuthError::SessionEnded)?;
        self.0
            .change_password(user_id, session, request.into_inner(), client)
            .await?;
        Ok(Response::new(()))
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<Jwks>, Status> {
        Ok(Response::new(self.0.issuer.jwks().await.map_err(AuthError::from)?))
    }

    async fn issue_service_token(
        &self,
        request: Request<IssueServiceTokenRequest>,
    ) -> Result<Response<IssueServiceTokenResponse>, Status> {
        Ok(Response::new(self.0.issue_service_token(request.get_ref())?))
    }

    async fn list_revoked_sessions(
        &self,
        _request: Request<ListRevokedSessionsRequest>,
    ) -> Result<Response<ListRevokedSessionsResponse>, Status> {
        Ok(Response::new(self.0.revoked_sessions().await?))
    }

    async fn end_user_sessions(&self, request: Request<EndUserSessionsRequest>) -> Result<Response<()>, Status> {
        let identity = require_identity(&request)?;
        self.0.end_user_sessions(identity, &request.get_ref().id).await?;
        Ok(Response::new(()))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<RotateSigningKeyResponse>, Status> {
        self.0.require_admin_now(require_identity(&request)?).await?;
        let (kid, active_from) = self.0.issuer.rotate().await.map_err(AuthError::from)?;
        Ok(Response::new(RotateSigningKeyResponse {
            kid,
            active_from: Some(to_timestamp(active_from)),
        }))
    }
}
