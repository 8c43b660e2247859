//! The `fleet.auth.v1.AuthService` RPCs.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use fleet_kit::{
    SharedClock,
    error::Violations,
    events::new_event,
    grpc::{CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER},
    outbox::OutboxRelay,
    revocation::RevokedSessions,
    time::to_timestamp,
    token::{require_identity, require_user},
};
use fleet_proto::{
    auth::v1::{
        BackupCodes, ChangePasswordRequest, ConfirmSmsRequest, ConfirmTotpRequest, DisableMfaRequest,
        EndUserSessionsRequest, EnrollSmsRequest, EnrollTotpRequest, EnrollTotpResponse, GetJwksRequest,
        GetMfaStatusRequest, IssueServiceTokenRequest, IssueServiceTokenResponse, Jwks, ListRevokedSessionsRequest,
        ListRevokedSessionsResponse, ListSessionsRequest, ListSessionsResponse, LoginMfaRequest, LoginRequest,
        LoginResponse, LogoutRequest, MfaStatus, RefreshRequest, RegenerateBackupCodesRequest, RegisterRequest,
        RegisterResponse, RevokeSessionRequest, RotateSigningKeyRequest, RotateSigningKeyResponse,
        SendLoginSmsCodeRequest, Session, auth_service_server::AuthService,
    },
    events::v1::{Event, LoginFailed, LoginSucceeded, SessionCreated, event::Payload},
    users::v1::User,
};
use rand::{RngCore, rngs::OsRng};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    directory::UserDirectory,
    error::AuthError,
    hashing::{HashingPool, Ticket},
    keys::TokenIssuer,
    lockout::{AttemptDecision, LockoutPolicy},
    metrics::AuthMetrics,
    mfa::{MfaSettings, SealingKey, sms::SmsSender, totp::TotpParams},
    password::Password,
    store::{AuthStore, Counter, CredentialRecord, NewSession, PRODUCER, Revocation, Revoke, RevokeReason, Rotation},
};

/// Who ends a failure streak after a right password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The check itself.
    Now,
    /// The caller's next write (a session's start, a password change).
    ByCaller,
}

/// Where a request came from, for sessions and the audit trail.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Client address: as the gateway forwarded it, else the peer.
    pub ip: String,
    /// The user agent, truncated.
    pub user_agent: String,
}

impl ClientInfo {
    pub(crate) fn of<T>(request: &Request<T>) -> Self {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(256).collect::<String>())
        };
        let ip = header(CLIENT_IP_HEADER)
            .or_else(|| request.remote_addr().map(|a| a.ip().to_string()))
            .unwrap_or_default();
        // Forwarded headers reach here only when a service vouched for them.
        let user_agent = header(CLIENT_USER_AGENT_HEADER).or_else(|| header("user-agent"));
        Self {
            ip,
            user_agent: user_agent.unwrap_or_default(),
        }
    }
}

/// What the auth RPCs run on.
pub struct AuthApi {
    /// Credentials, sessions, keys.
    pub store: Arc<dyn AuthStore>,
    /// Signs tokens.
    pub issuer: Arc<TokenIssuer>,
    /// The users service.
    pub directory: Arc<dyn UserDirectory>,
    /// The time source.
    pub clock: SharedClock,
    /// Failed-login limits.
    pub lockout: LockoutPolicy,
    /// How long a session lasts at most.
    pub session_ttl: Duration,
    /// Publishes committed events.
    pub relay: OutboxRelay,
    /// Sessions revoked here take effect at once in this process.
    pub revoked: RevokedSessions,
    /// Second-factor settings.
    pub mfa: MfaSettings,
    /// TOTP parameters.
    pub totp: TotpParams,
    /// Seals second-factor secrets and hashes their codes.
    pub sealing: Arc<SealingKey>,
    /// Delivers SMS codes, when they are enabled.
    pub sms: Option<Arc<dyn SmsSender>>,
    /// Where passwords are hashed and checked.
    pub hashing: Arc<HashingPool>,
    /// Login counters.
    pub metrics: AuthMetrics,
}

pub(crate) const PASSWORD_AMR: &str = "pwd";
const MAX_ATTEMPT_RACES: usize = 64;

/// A new opaque token (256 random bits) and its SHA-256 hash.
pub(crate) fn new_opaque_token() -> (String, Vec<u8>) {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

/// The stored form of an opaque token.
pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub(crate) fn user_id_of(user: &User) -> Result<Uuid, AuthError> {
    Uuid::parse_str(&user.id).map_err(|_| AuthError::Unexpected(anyhow::anyhow!("users service returned a bad id")))
}

impl AuthApi {
    pub(crate) fn access_expiry(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + Duration::seconds(i64::from(self.issuer.settings().access_ttl_secs))
    }

    pub(crate) fn revocation(&self, reason: RevokeReason) -> Revocation {
        let at = self.clock.now();
        Revocation {
            reason,
            at,
            tokens_expire_at: self.access_expiry(at),
        }
    }

    /// Applies revocations locally at once; other processes learn of them
    /// through the `session.revoked` events.
    pub(crate) fn revoked_here(&self, sessions: &[Uuid], how: &Revocation) {
        for id in sessions {
            self.revoked.revoke(*id, how.tokens_expire_at, how.at);
        }
        self.relay.wake();
    }

    async fn register(&self, req: RegisterRequest) -> Result<RegisterResponse, AuthError> {
        let password = Password::parse_new(&req.password, "password").map_err(Violations::from)?;
        // Hash before creating the account: nothing to undo if it fails.
        let hash = self.hashing.admit()?.hash(&password).await?;
        let user = self
            .directory
            .create(&req.email, &req.display_name)
            .await
            .map_err(AuthError::from_users)?;
        let user_id = user_id_of(&user)?;
        if let Err(err) = self.store.insert_credentials(user_id, &hash, self.clock.now()).await {
            // Compensate: an account without credentials must not remain.
            if let Err(undo) = self.directory.delete(user_id).await {
                tracing::error!(%user_id, error = %undo, "could not undo a half-finished registration");
            }
            return Err(err.context("storing credentials for a new account").into());
        }
        Ok(RegisterResponse { user: Some(user) })
    }

    /// Checks a password under the lockout policy, with a place in the
    /// hashing pool the caller took first: an attempt refused for load is
    /// never counted, and costs no lookup. The attempt is counted before
    /// the check; a right password ends the streak, at once or, when
    /// `settled` says so, in the caller's own write.
    pub(crate) async fn check_password(
        &self,
        ticket: &Ticket,
        user_id: Uuid,
        password: &Password,
        client: &ClientInfo,
        settled: Settled,
    ) -> Result<(), AuthError> {
        let Some(creds) = self.store.credentials(user_id).await? else {
            ticket.verify(password, None).await?;
            return Err(AuthError::BadCredentials);
        };
        let (failures, creds) = self.count_attempt(creds, Counter::Password, client).await?;
        if ticket.verify(password, Some(creds.password_hash)).await? {
            if settled == Settled::Now {
                self.store
                    .clear_failures(user_id, &[Counter::Password], self.clock.now())
                    .await?;
            }
            return Ok(());
        }
        self.emit_failure(user_id, "bad_password", failures, client).await?;
        Err(AuthError::BadCredentials)
    }

    /// Counts an attempt on one of the account's failure counters under its
    /// lockout policy, before the attempt is checked: a compare-and-set, so
    /// concurrent attempts cannot exceed the limit. Answers the failure count
    /// should the attempt fail, and the credentials as counted.
    pub(crate) async fn count_attempt(
        &self,
        mut creds: CredentialRecord,
        counter: Counter,
        client: &ClientInfo,
    ) -> Result<(u32, CredentialRecord), AuthError> {
        let user_id = creds.user_id;
        let policy = match counter {
            Counter::Password => &self.lockout,
            Counter::SecondFactor => &self.mfa.lockout,
        };
        let now = self.clock.now();
        for _ in 0..MAX_ATTEMPT_RACES {
            let (count, locked_until) = creds.failures(counter);
            let counted = u32::try_from(count).unwrap_or(u32::MAX);
            match policy.decide(counted, locked_until, now) {
                AttemptDecision::Locked { until } => {
                    let reason = match counter {
                        Counter::Password => "locked",
                        Counter::SecondFactor => "second_factor_locked",
                    };
                    self.emit_failure(user_id, reason, counted, client).await?;
                    let retry_after = until.and_then(|u| (u - now).to_std().ok());
                    return Err(AuthError::Locked { retry_after });
                }
                AttemptDecision::Allowed { failures, locks_until } => {
                    if self
                        .store
                        .count_attempt(user_id, counter, count, i64::from(failures), locks_until, now)
                        .await?
                    {
                        return Ok((failures, creds));
                    }
                }
            }
            creds = self
                .store
                .credentials(user_id)
                .await?
                .ok_or(AuthError::BadCredentials)?;
        }
        Err(AuthError::Locked { retry_after: None })
    }

    /// Counts a login to an email without an account under the password
    /// policy, as an account's attempts are counted: a lockout then answers
    /// alike whether the email exists or not.
    async fn count_unknown(&self, email: &str) -> Result<(), AuthError> {
        let key = Sha256::digest(email.trim().to_lowercase().as_bytes()).to_vec();
        let now = self.clock.now();
        // Idle counts are forgotten once no delay they set can still apply.
        let forget_before = now - Duration::seconds(i64::from(self.lockout.max_delay_secs)) - Duration::days(1);
        for _ in 0..MAX_ATTEMPT_RACES {
            let (count, locked_until) = self.store.unknown_failures(&key).await?;
            let counted = u32::try_from(count).unwrap_or(u32::MAX);
            match self.lockout.decide(counted, locked_until, now) {
                AttemptDecision::Locked { until } => {
                    let retry_after = until.and_then(|u| (u - now).to_std().ok());
                    return Err(AuthError::Locked { retry_after });
                }
                AttemptDecision::Allowed { failures, locks_until } => {
                    let failures = i64::from(failures);
                    if self
                        .store
                        .count_unknown_attempt(&key, count, failures, locks_until, now, forget_before)
                        .await?
                    {
                        return Ok(());
                    }
                }
            }
        }
        Err(AuthError::Locked { retry_after: None })
    }

    pub(crate) async fn emit_failure(
        &self,
        user_id: Uuid,
        reason: &str,
        failures: u32,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.announce(
            user_id,
            Payload::LoginFailed(LoginFailed {
                reason: reason.into(),
                ip: client.ip.clone(),
                user_agent: client.user_agent.clone(),
                consecutive_failures: failures,
            }),
        )
        .await
    }

    /// Writes one event about `user_id` on its own and wakes the relay.
    pub(crate) async fn announce(&self, user_id: Uuid, payload: Payload) -> Result<(), AuthError> {
        let now = self.clock.now();
        self.store
            .emit(&[new_event(PRODUCER, Some(user_id), now, payload)], now)
            .await?;
        self.relay.wake();
        Ok(())
    }

    async fn login(&self, req: LoginRequest, client: ClientInfo) -> Result<LoginResponse, AuthError> {
        let mut v = Violations::new();
        if req.email.trim().is_empty() {
            v.add("email", "is required");
        }
        if req.password.is_empty() {
            v.add("password", "is required");
        }
        v.into_result()?;
        let password = Password::presented(&req.password);
        let ticket = self.hashing.admit()?;
        let Some(user) = self
            .directory
            .find_by_email(&req.email)
            .await
            .map_err(AuthError::from_users)?
        else {
            // Alike whether or not the email exists: counted and locked out
            // the same way, and comparable work.
            self.count_unknown(&req.email).await?;
            ticket.verify(&password, None).await?;
            return Err(AuthError::BadCredentials);
        };
        let user_id = user_id_of(&user)?;
        // The session's start, or the second factor's success, ends the streak.
        self.check_password(&ticket, user_id, &password, &client, Settled::ByCaller)
            .await?;
        drop(ticket);
        if user.status != "active" {
            self.store
                .clear_failures(user_id, &[Counter::Password], self.clock.now())
                .await?;
            self.emit_failure(user_id, "disabled", 0, &client).await?;
            return Err(AuthError::Disabled);
        }
        if self.mfa_enabled(user_id).await? {
            return self.mfa_challenge(user_id).await;
        }
        self.start_session(user, vec![PASSWORD_AMR.into()], client).await
    }

    async fn start_session(
        &self,
        user: User,
        amr: Vec<String>,
        client: ClientInfo,
    ) -> Result<LoginResponse, AuthError> {
        let now = self.clock.now();
        let (session, events, refresh_token) = self.new_session(&user, amr, client, now)?;
        self.store.start_session(&session, &events, now).await?;
        self.relay.wake();
        self.token_pair(user, session.id, &session.amr, refresh_token)
    }

    /// A session for `user` with its first refresh token, and the events
    /// that announce it.
    pub(crate) fn new_session(
        &self,
        user: &User,
        amr: Vec<String>,
        client: ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<(NewSession, [Event; 2], String), AuthError> {
        let user_id = user_id_of(user)?;
        let (refresh_token, refresh_hash) = new_opaque_token();
        let session = NewSession {
            id: Uuid::now_v7(),
            user_id,
            expires_at: now + self.session_ttl,
            ip: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            amr: amr.clone(),
            refresh_hash,
        };
        let events = [
            new_event(
                PRODUCER,
                Some(user_id),
                now,
                Payload::LoginSucceeded(LoginSucceeded {
                    session_id: session.id.to_string(),
                    ip: client.ip.clone(),
                    user_agent: client.user_agent.clone(),
                    amr,
                }),
            ),
            new_event(
                PRODUCER,
                Some(user_id),
                now,
                Payload::SessionCreated(SessionCreated {
                    session_id: session.id.to_string(),
                    ip: client.ip,
                    user_agent: client.user_agent,
                }),
            ),
        ];
        Ok((session, events, refresh_token))
    }

    pub(crate) fn token_pair(
        &self,
        user: User,
        session_id: Uuid,
        amr: &[String],
        refresh_token: String,
    ) -> Result<LoginResponse, AuthError> {
        let user_id = user_id_of(&user)?;
        let (access_token, _) = self.issuer.access_token(user_id, session_id, &user.role, amr)?;
        Ok(LoginResponse {
            access_token,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: self.issuer.settings().access_ttl_secs,
            user: Some(user),
            ..LoginResponse::default()
        })
    }

    async fn refresh(&self, req: RefreshRequest) -> Result<LoginResponse, AuthError> {
        if req.refresh_token.is_empty() {
            let mut v = Violations::new();
            v.add("refresh_token", "is required");
            return Err(v.into());
        }
        // The user is looked up before anything is spent: a users outage
        // fails the call with nothing changed, and the client's retry of the
        // same token still works.
        let presented = token_hash(&req.refresh_token);
        let Some(owner) = self.store.refresh_owner(&presented).await? else {
            return Err(AuthError::InvalidRefreshToken);
        };
        let user = self
            .directory
            .get(owner)
            .await
            .map_err(AuthError::from_users)?
            .filter(|u| u.status == "active");
        let now = self.clock.now();
        let (successor, successor_hash) = new_opaque_token();
        let rotation = self
            .store
            .rotate_refresh(&presented, &successor_hash, now, self.access_expiry(now))
            .await?;
        match rotation {
            Rotation::Rotated(session) => {
                let Some(user) = user.filter(|u| u.id == session.user_id.to_string()) else {
                    let how = self.revocation(RevokeReason::Revoked);
                    let ids = self.store.revoke(session.user_id, Revoke::One(session.id), how).await?;
                    self.revoked_here(&ids, &how);
                    return Err(AuthError::InvalidRefreshToken);
                };
                self.token_pair(user, session.id, &session.amr_list(), successor)
            }
            Rotation::Reused { session_id } => {
                tracing::warn!(%session_id, "a spent refresh token was presented again; session revoked");
                let how = self.revocation(RevokeReason::RefreshReuse);
                self.revoked_here(&[session_id], &how);
                Err(AuthError::InvalidRefreshToken)
            }
            Rotation::Invalid => Err(AuthError::InvalidRefreshToken),
        }
    }

    async fn revoke_own(&self, user_id: Uuid, which: Revoke, reason: RevokeReason) -> Result<Vec<Uuid>, AuthError> {
        let how = self.revocation(reason);
        let ids = self.store.revoke(user_id, which, how).await?;
        self.revoked_here(&ids, &how);
        Ok(ids)
    }

    async fn change_password(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        req: ChangePasswordRequest,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        let mut v = Violations::new();
        if req.current_password.is_empty() {
            v.add("current_password", "is required");
        }
        let new = v.check(
            "new_password",
            Password::parse_new(&req.new_password, "new_password").map_err(|e| e.message),
        );
        if req.new_password == req.current_password && !req.new_password.is_empty() {
            v.add("new_password", "must differ from the current password");
        }
        v.into_result()?;
        let Some(new) = new else {
            return Err(AuthError::Unexpected(anyhow::anyhow!("validated password missing")));
        };
        let ticket = self.hashing.admit()?;
        // The new password's write ends the streak.
        let current = Password::presented(&req.current_password);
        self.check_password(&ticket, user_id, &current, &client, Settled::ByCaller)
            .await?;
        let hash = ticket.hash(&new).await?;
        let how = self.revocation(RevokeReason::PasswordChanged);
        let ids = self.store.change_password(user_id, &hash, session_id, how).await?;
        self.revoked_here(&ids, &how);
        Ok(())
    }

    /// Ends every session of a user started before `changed_at` (an
    /// account change, or an admin's order); returns how many ended.
    pub async fn end_sessions(
        &self,
        user_id: Uuid,
        changed_at: DateTime<Utc>,
        reason: RevokeReason,
    ) -> anyhow::Result<usize> {
        let how = self.revocation(reason);
        let ids = self
            .store
            .revoke(user_id, Revoke::StartedBefore(changed_at), how)
            .await?;
        self.revoked_here(&ids, &how);
        Ok(ids.len())
    }

    /// A deleted account: its credentials go and its sessions end.
    pub async fn forget_user(&self, user_id: Uuid) -> anyhow::Result<()> {
        let how = self.revocation(RevokeReason::UserDeleted);
        let ids = self.store.forget_user(user_id, how).await?;
        self.revoked_here(&ids, &how);
        Ok(())
    }
}

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
        let (user_id, _) = require_user(&request)?;
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
        let (user_id, identity) = require_user(&request)?;
        let current = identity.session_id();
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
