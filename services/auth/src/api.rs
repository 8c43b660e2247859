//! What the auth RPCs do: registration, logins under the lockout policy,
//! refresh, sessions and passwords; the tonic shell is in [`crate::grpc`].

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
};
use fleet_proto::{
    auth::v1::{ChangePasswordRequest, LoginRequest, LoginResponse, RefreshRequest, RegisterRequest, RegisterResponse},
    events::v1::{Event, LoginFailed, LoginSucceeded, SessionCreated, event::Payload},
    users::v1::User,
};
use rand::{RngCore, rngs::OsRng};
use sha2::{Digest, Sha256};
use tonic::Request;
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

    pub(crate) async fn register(&self, req: RegisterRequest) -> Result<RegisterResponse, AuthError> {
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
        let locked = match reason {
            "bad_password" => self.lockout.locks_account(failures),
            "bad_second_factor" => self.mfa.lockout.locks_account(failures),
            _ => false,
        };
        self.announce(
            user_id,
            Payload::LoginFailed(LoginFailed {
                reason: reason.into(),
                ip: client.ip.clone(),
                user_agent: client.user_agent.clone(),
                consecutive_failures: failures,
                locked,
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

    pub(crate) async fn login(&self, req: LoginRequest, client: ClientInfo) -> Result<LoginResponse, AuthError> {
        // Both fields are required by the contract's rules, checked on decode.
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
        if user.status.as_deref() != Some("active") {
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
        let (access_token, _) =
            self.issuer
                .access_token(user_id, session_id, user.role.as_deref().unwrap_or("user"), amr)?;
        Ok(LoginResponse {
            access_token,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: self.issuer.settings().access_ttl_secs,
            user: Some(user),
            ..LoginResponse::default()
        })
    }

    pub(crate) async fn refresh(&self, req: RefreshRequest) -> Result<LoginResponse, AuthError> {
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
            .filter(|u| u.status.as_deref() == Some("active"));
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

    pub(crate) async fn revoke_own(
        &self,
        user_id: Uuid,
        which: Revoke,
        reason: RevokeReason,
    ) -> Result<Vec<Uuid>, AuthError> {
        let how = self.revocation(reason);
        let ids = self.store.revoke(user_id, which, how).await?;
        self.revoked_here(&ids, &how);
        Ok(ids)
    }

    pub(crate) async fn change_password(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        req: ChangePasswordRequest,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        // current_password is required by the contract's rules.
        let mut v = Violations::new();
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

    /// Ends the sessions of a user that `which` names (an account change,
    /// or an admin's order); returns how many ended.
    pub async fn end_sessions(&self, user_id: Uuid, which: Revoke, reason: RevokeReason) -> anyhow::Result<usize> {
        let how = self.revocation(reason);
        let ids = self.store.revoke(user_id, which, how).await?;
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
