//! The second-factor RPCs: enrolment, the login's second step, backup codes,
//! SMS codes, disabling. Every code check counts toward the account's
//! second-factor limit before it is made, and every spend is a
//! compare-and-set, so a code is good exactly once even under concurrency.

use chrono::{DateTime, Duration, Utc};
use fleet_kit::{error::Violations, events::new_event};
use fleet_proto::{
    auth::v1::{
        BackupCodes, ConfirmSmsRequest, ConfirmTotpRequest, DisableMfaRequest, EnrollSmsRequest, EnrollTotpResponse,
        LoginMfaRequest, LoginResponse, MfaStatus, RegenerateBackupCodesRequest, SendLoginSmsCodeRequest,
    },
    events::v1::{MfaEnabled, MfaReplayRejected, event::Payload},
};
use rand::{RngCore, rngs::OsRng};
use uuid::Uuid;

use super::{
    codes::{self, BACKUP_CODES_LOW},
    sms::{masked_phone, normalize_phone},
    totp::{SECRET_LEN, TotpKey},
};
use crate::{
    api::{AuthApi, ClientInfo, PASSWORD_AMR, Settled, new_opaque_token, token_hash},
    error::AuthError,
    password::Password,
    store::{Counter, CredentialRecord, MfaOutcome, PRODUCER, RevokeReason, SecondFactor, TotpRecord},
};

/// Purposes of keyed code hashes.
const BACKUP_PURPOSE: &str = "backup-code";
const SMS_ENROL_PURPOSE: &str = "sms-enrol";
const SMS_LOGIN_PURPOSE: &str = "sms-login";

/// `amr` values (RFC 8176 where one fits).
const TOTP_AMR: &str = "otp";
const SMS_AMR: &str = "sms";
const BACKUP_AMR: &str = "backup_code";
const MFA_AMR: &str = "mfa";

/// What a TOTP code turned out to be.
enum TotpCheck {
    /// The code of this step, above every step accepted before.
    Fresh(i64),
    /// The code of a step already accepted.
    Replayed,
    /// No step in the window has this code.
    Wrong,
}

fn code_violation(field: &str, message: &str) -> AuthError {
    let mut v = Violations::new();
    v.add(field, message);
    v.into()
}

/// The second factors on offer at login.
fn methods(sms: bool) -> Vec<String> {
    let mut methods = vec!["totp".to_string(), "backup_code".to_string()];
    if sms {
        methods.push("sms".into());
    }
    methods
}

fn unix_secs(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp()).unwrap_or(0)
}

impl AuthApi {
    /// Whether the account has 2FA on.
    pub(crate) async fn mfa_enabled(&self, user_id: Uuid) -> Result<bool, AuthError> {
        Ok(self.store.totp(user_id).await?.is_some_and(|t| t.enabled_at.is_some()))
    }

    async fn sms_ready(&self, user_id: Uuid) -> Result<bool, AuthError> {
        if self.sms.is_none() {
            return Ok(false);
        }
        Ok(self
            .store
            .sms_factor(user_id)
            .await?
            .is_some_and(|s| s.verified_at.is_some()))
    }

    async fn login_methods(&self, user_id: Uuid) -> Result<Vec<String>, AuthError> {
        Ok(methods(self.sms_ready(user_id).await?))
    }

    /// The answer to a right password when 2FA is on: a short-lived,
    /// single-use mfa_token for the second step.
    pub(crate) async fn mfa_challenge(&self, user_id: Uuid) -> Result<LoginResponse, AuthError> {
        let now = self.clock.now();
        let (token, hash) = new_opaque_token();
        let expires_at = now + Duration::seconds(i64::from(self.mfa.challenge_ttl_secs));
        self.store.create_challenge(&hash, user_id, expires_at, now).await?;
        Ok(LoginResponse {
            mfa_required: true,
            mfa_token: token,
            methods: self.login_methods(user_id).await?,
            ..LoginResponse::default()
        })
    }

    fn totp_key(&self, user_id: Uuid, record: &TotpRecord) -> Result<TotpKey, AuthError> {
        let secret = self.sealing.open(user_id, &record.secret)?;
        Ok(TotpKey::new(self.totp, secret, &self.mfa.issuer, "account")?)
    }

    /// Classifies a TOTP code against the factor's window and last step.
    fn check_totp(&self, user_id: Uuid, record: &TotpRecord, code: &str) -> Result<TotpCheck, AuthError> {
        let key = self.totp_key(user_id, record)?;
        let Some(step) = key.matching_step(code, unix_secs(self.clock.now())) else {
            return Ok(TotpCheck::Wrong);
        };
        let step = i64::try_from(step).map_err(|_| AuthError::BadSecondFactor)?;
        if record.last_step.is_some_and(|last| step <= last) {
            return Ok(TotpCheck::Replayed);
        }
        Ok(TotpCheck::Fresh(step))
    }

    /// A replayed TOTP code: refused, logged (without the code) and announced.
    async fn replay_rejected(&self, user_id: Uuid, during: &str, client: &ClientInfo) -> Result<(), AuthError> {
        tracing::warn!(%user_id, during, ip = %client.ip, "a TOTP code was presented again and refused");
        self.announce(
            user_id,
            Payload::MfaReplayRejected(MfaReplayRejected {
                during: during.into(),
                ip: client.ip.clone(),
                user_agent: client.user_agent.clone(),
            }),
        )
        .await
    }

    async fn credentials_of(&self, user_id: Uuid) -> Result<CredentialRecord, AuthError> {
        self.store.credentials(user_id).await?.ok_or(AuthError::SessionEnded)
    }

    /// A wrong second factor (counted already): announced, then `refusal`.
    async fn factor_failed(&self, user_id: Uuid, failures: u32, client: &ClientInfo, refusal: AuthError) -> AuthError {
        match self.emit_failure(user_id, "bad_second_factor", failures, client).await {
            Ok(()) => refusal,
            Err(err) => err,
        }
    }

    /// A wrong second factor at login: unauthenticated.
    async fn second_factor_failed(&self, user_id: Uuid, failures: u32, client: &ClientInfo) -> AuthError {
        self.factor_failed(user_id, failures, client, AuthError::BadSecondFactor)
            .await
    }

    /// The second step of a login.
    pub(crate) async fn login_mfa(&self, req: LoginMfaRequest, client: ClientInfo) -> Result<LoginResponse, AuthError> {
        // The contract's rules require mfa_token and exactly one of code and
        // backup_code; they were checked when the request was decoded.
        let challenge_hash = token_hash(&req.mfa_token);
        let now = self.clock.now();
        let challenge = self
            .store
            .challenge(&challenge_hash, now)
            .await?
            .ok_or(AuthError::InvalidMfaToken)?;
        let user_id = challenge.user_id;
        let (failures, _) = self
            .count_attempt(self.credentials_of(user_id).await?, Counter::SecondFactor, &client)
            .await?;
        let factor = if req.backup_code.is_empty() {
            let Some(code) = codes::normalize_numeric_code(&req.code, self.totp.digits) else {
                return Err(self.second_factor_failed(user_id, failures, &client).await);
            };
            let totp = self.store.totp(user_id).await?.filter(|t| t.enabled_at.is_some());
            let Some(totp) = totp else {
                return Err(AuthError::InvalidMfaToken);
            };
            match self.check_totp(user_id, &totp, &code)? {
                TotpCheck::Fresh(step) => SecondFactor::Totp { step },
                TotpCheck::Replayed => {
                    self.replay_rejected(user_id, "login", &client).await?;
                    return Err(self.second_factor_failed(user_id, failures, &client).await);
                }
                TotpCheck::Wrong if self.sms.is_some() => SecondFactor::Sms {
                    hash: self.sealing.code_hash(SMS_LOGIN_PURPOSE, user_id, &code),
                },
                TotpCheck::Wrong => return Err(self.second_factor_failed(user_id, failures, &client).await),
            }
        } else {
            let Some(code) = codes::normalize_backup_code(&req.backup_code) else {
                return Err(self.second_factor_failed(user_id, failures, &client).await);
            };
            SecondFactor::BackupCode {
                hash: self.sealing.code_hash(BACKUP_PURPOSE, user_id, &code),
            }
        };
        let user = self
            .directory
            .get(user_id)
            .await
            .map_err(AuthError::from_users)?
            .filter(|u| u.status.as_deref() == Some("active"))
            .ok_or(AuthError::Disabled)?;
        let used = match factor {
            SecondFactor::Totp { .. } => TOTP_AMR,
            SecondFactor::Sms { .. } => SMS_AMR,
            SecondFactor::BackupCode { .. } => BACKUP_AMR,
        };
        let amr = vec![PASSWORD_AMR.to_string(), used.to_string(), MFA_AMR.to_string()];
        let (session, events, refresh_token) = self.new_session(&user, amr, client.clone(), now)?;
        match self
            .store
            .complete_mfa(&challenge_hash, &factor, &session, &events, now)
            .await?
        {
            MfaOutcome::Done => {
                self.relay.wake();
                self.token_pair(user, session.id, &session.amr, refresh_token)
            }
            MfaOutcome::ChallengeGone => Err(AuthError::InvalidMfaToken),
            MfaOutcome::FactorRefused => {
                if let SecondFactor::Totp { .. } = factor {
                    // Another request accepted this step first.
                    self.replay_rejected(user_id, "login", &client).await?;
                }
                Err(self.second_factor_failed(user_id, failures, &client).await)
            }
        }
    }

    /// Sends an SMS code for a pending login.
    pub(crate) async fn send_login_sms(&self, req: SendLoginSmsCodeRequest) -> Result<(), AuthError> {
        let Some(sender) = self.sms.clone() else {
            return Err(AuthError::MfaState("SMS codes are not enabled"));
        };
        let now = self.clock.now();
        let challenge_hash = token_hash(&req.mfa_token);
        let challenge = self
            .store
            .challenge(&challenge_hash, now)
            .await?
            .ok_or(AuthError::InvalidMfaToken)?;
        let user_id = challenge.user_id;
        let Some(phone) = self
            .store
            .sms_factor(user_id)
            .await?
            .filter(|s| s.verified_at.is_some())
        else {
            return Err(AuthError::MfaState("this account has no verified phone"));
        };
        let phone = String::from_utf8(self.sealing.open(user_id, &phone.phone)?)
            .map_err(|_| anyhow::anyhow!("a stored phone is not text"))?;
        let code = codes::new_numeric_code();
        let expires_at = (now + Duration::seconds(i64::from(self.mfa.sms.code_ttl_secs))).min(challenge.expires_at);
        let hash = self.sealing.code_hash(SMS_LOGIN_PURPOSE, user_id, &code);
        if !self
            .store
            .set_challenge_sms_code(&challenge_hash, &hash, expires_at, now)
            .await?
        {
            return Err(AuthError::InvalidMfaToken);
        }
        self.send_sms(sender.as_ref(), user_id, &phone, &code).await
    }

    async fn send_sms(
        &self,
        sender: &dyn super::sms::SmsSender,
        user_id: Uuid,
        phone: &str,
        code: &str,
    ) -> Result<(), AuthError> {
        let minutes = self.mfa.sms.code_ttl_secs.div_ceil(60);
        let body = format!("{} code: {code}. It expires in {minutes} minutes.", self.mfa.issuer);
        sender.send(phone, &body).await.map_err(|err| {
            tracing::error!(%user_id, to = %masked_phone(phone), error = format!("{err:#}"), "could not send an SMS");
            AuthError::SmsUndeliverable
        })
    }

    /// The caller's 2FA state.
    pub(crate) async fn mfa_status(&self, user_id: Uuid) -> Result<MfaStatus, AuthError> {
        if !self.mfa_enabled(user_id).await? {
            return Ok(MfaStatus::default());
        }
        let remaining = self.store.backup_codes_left(user_id).await?;
        let sms_enabled = self.sms_ready(user_id).await?;
        Ok(MfaStatus {
            enabled: true,
            methods: methods(sms_enabled),
            backup_codes_remaining: remaining,
            backup_codes_running_low: remaining <= BACKUP_CODES_LOW,
            sms_enabled,
        })
    }

    /// A new TOTP secret for the caller; 2FA stays off until confirmed.
    pub(crate) async fn enroll_totp(&self, user_id: Uuid) -> Result<EnrollTotpResponse, AuthError> {
        if self.mfa_enabled(user_id).await? {
            return Err(AuthError::MfaState("2FA is already on; disable it first"));
        }
        let user = self
            .directory
            .get(user_id)
            .await
            .map_err(AuthError::from_users)?
            .ok_or(AuthError::SessionEnded)?;
        let mut secret = vec![0u8; SECRET_LEN];
        OsRng.fill_bytes(&mut secret);
        let sealed = self.sealing.seal(user_id, &secret)?;
        let key = TotpKey::new(
            self.totp,
            secret,
            &self.mfa.issuer,
            user.email.as_deref().unwrap_or_default(),
        )?;
        if !self.store.begin_totp(user_id, &sealed, self.clock.now()).await? {
            return Err(AuthError::MfaState("2FA is already on; disable it first"));
        }
        Ok(EnrollTotpResponse {
            secret: key.secret_base32(),
            otpauth_url: key.url(),
            qr_png_base64: key.qr_png_base64()?,
        })
    }

    /// A new set of backup codes and their hashes.
    fn backup_codes(&self, user_id: Uuid) -> (Vec<String>, Vec<Vec<u8>>) {
        let codes = codes::new_backup_codes();
        let hashes = codes
            .iter()
            .filter_map(|c| codes::normalize_backup_code(c))
            .map(|c| self.sealing.code_hash(BACKUP_PURPOSE, user_id, &c))
            .collect();
        (codes, hashes)
    }

    /// Turns 2FA on with a code of the enrolled secret.
    pub(crate) async fn confirm_totp(
        &self,
        user_id: Uuid,
        req: ConfirmTotpRequest,
        client: ClientInfo,
    ) -> Result<BackupCodes, AuthError> {
        let Some(code) = codes::normalize_numeric_code(&req.code, self.totp.digits) else {
            return Err(code_violation(
                "code",
                "must be the 6-digit code of the authenticator app",
            ));
        };
        let record = match self.store.totp(user_id).await? {
            None => return Err(AuthError::MfaState("enrol first: no TOTP secret is pending")),
            Some(r) if r.enabled_at.is_some() => return Err(AuthError::MfaState("2FA is already on")),
            Some(r) => r,
        };
        let (failures, _) = self
            .count_attempt(self.credentials_of(user_id).await?, Counter::SecondFactor, &client)
            .await?;
        let step = match self.check_totp(user_id, &record, &code)? {
            TotpCheck::Fresh(step) => step,
            TotpCheck::Replayed => {
                self.replay_rejected(user_id, "confirm", &client).await?;
                return Err(self.wrong_code(user_id, failures, &client).await);
            }
            TotpCheck::Wrong => return Err(self.wrong_code(user_id, failures, &client).await),
        };
        let (codes, hashes) = self.backup_codes(user_id);
        let now = self.clock.now();
        let enabled = new_event(
            PRODUCER,
            Some(user_id),
            now,
            Payload::MfaEnabled(MfaEnabled {
                methods: vec!["totp".into()],
            }),
        );
        if !self.store.confirm_totp(user_id, step, &hashes, &[enabled], now).await? {
            return Err(self.wrong_code(user_id, failures, &client).await);
        }
        self.relay.wake();
        self.store
            .clear_failures(user_id, &[Counter::SecondFactor], now)
            .await?;
        Ok(BackupCodes { backup_codes: codes })
    }

    /// A wrong code on an authenticated request: forbidden, naming the field.
    async fn wrong_code(&self, user_id: Uuid, failures: u32, client: &ClientInfo) -> AuthError {
        let mut v = Violations::new();
        v.add("code", "is incorrect or already used");
        let refusal = AuthError::WrongCode(v);
        self.factor_failed(user_id, failures, client, refusal).await
    }

    /// Proves the caller holds the enabled TOTP factor with a fresh code,
    /// spending its step.
    async fn prove_totp(&self, user_id: Uuid, code: &str, during: &str, client: &ClientInfo) -> Result<(), AuthError> {
        let Some(code) = codes::normalize_numeric_code(code, self.totp.digits) else {
            return Err(code_violation(
                "code",
                "must be the 6-digit code of the authenticator app",
            ));
        };
        let Some(record) = self.store.totp(user_id).await?.filter(|t| t.enabled_at.is_some()) else {
            return Err(AuthError::MfaState("2FA is not on"));
        };
        let (failures, _) = self
            .count_attempt(self.credentials_of(user_id).await?, Counter::SecondFactor, client)
            .await?;
        match self.check_totp(user_id, &record, &code)? {
            TotpCheck::Fresh(step) if self.store.accept_totp_step(user_id, step).await? => {
                self.store
                    .clear_failures(user_id, &[Counter::SecondFactor], self.clock.now())
                    .await?;
                Ok(())
            }
            TotpCheck::Fresh(_) | TotpCheck::Replayed => {
                self.replay_rejected(user_id, during, client).await?;
                Err(self.wrong_code(user_id, failures, client).await)
            }
            TotpCheck::Wrong => Err(self.wrong_code(user_id, failures, client).await),
        }
    }

    /// Turns 2FA off, proven by a current code or the password; the
    /// caller's other sessions end.
    pub(crate) async fn disable_mfa(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        req: DisableMfaRequest,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        // Exactly one of code and password is given: the contract's
        // exactly_one_of, checked when the request was decoded.
        let confirmed_with = if req.password.is_empty() {
            self.prove_totp(user_id, &req.code, "disable", &client).await?;
            "code"
        } else {
            if !self.mfa_enabled(user_id).await? {
                return Err(AuthError::MfaState("2FA is not on"));
            }
            let ticket = self.hashing.admit()?;
            let password = Password::presented(&req.password);
            self.check_password(&ticket, user_id, &password, &client, Settled::Now)
                .await?;
            "password"
        };
        let how = self.revocation(RevokeReason::MfaChanged);
        let ids = self.store.disable_mfa(user_id, session_id, confirmed_with, how).await?;
        self.revoked_here(&ids, &how);
        Ok(())
    }

    /// A new set of backup codes, proven by a current code; the caller's
    /// other sessions end.
    pub(crate) async fn regenerate_backup_codes(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        req: RegenerateBackupCodesRequest,
        client: ClientInfo,
    ) -> Result<BackupCodes, AuthError> {
        self.prove_totp(user_id, &req.code, "backup_codes", &client).await?;
        let (codes, hashes) = self.backup_codes(user_id);
        let how = self.revocation(RevokeReason::MfaChanged);
        let ids = self
            .store
            .replace_backup_codes(user_id, &hashes, session_id, how)
            .await?;
        self.revoked_here(&ids, &how);
        Ok(BackupCodes { backup_codes: codes })
    }

    /// Registers a phone for SMS codes and sends it a code.
    pub(crate) async fn enroll_sms(&self, user_id: Uuid, req: EnrollSmsRequest) -> Result<(), AuthError> {
        let Some(sender) = self.sms.clone() else {
            return Err(AuthError::MfaState("SMS codes are not enabled"));
        };
        let Some(phone) = normalize_phone(&req.phone) else {
            return Err(code_violation(
                "phone",
                "must be an international number, e.g. +4915112345678",
            ));
        };
        if !self.mfa_enabled(user_id).await? {
            return Err(AuthError::MfaState("turn on 2FA with an authenticator app first"));
        }
        let now = self.clock.now();
        let code = codes::new_numeric_code();
        let hash = self.sealing.code_hash(SMS_ENROL_PURPOSE, user_id, &code);
        let sealed = self.sealing.seal(user_id, phone.as_bytes())?;
        let expires_at = now + Duration::seconds(i64::from(self.mfa.sms.code_ttl_secs));
        self.store.begin_sms(user_id, &sealed, &hash, expires_at, now).await?;
        self.send_sms(sender.as_ref(), user_id, &phone, &code).await
    }

    /// Verifies the phone with the code sent to it.
    pub(crate) async fn confirm_sms(
        &self,
        user_id: Uuid,
        req: ConfirmSmsRequest,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        if self.sms.is_none() {
            return Err(AuthError::MfaState("SMS codes are not enabled"));
        }
        let Some(code) = codes::normalize_numeric_code(&req.code, 6) else {
            return Err(code_violation("code", "must be the 6-digit code sent by SMS"));
        };
        let (failures, _) = self
            .count_attempt(self.credentials_of(user_id).await?, Counter::SecondFactor, &client)
            .await?;
        let now = self.clock.now();
        let hash = self.sealing.code_hash(SMS_ENROL_PURPOSE, user_id, &code);
        if !self.store.confirm_sms(user_id, &hash, now).await? {
            return Err(self.wrong_code(user_id, failures, &client).await);
        }
        self.store
            .clear_failures(user_id, &[Counter::SecondFactor], now)
            .await?;
        Ok(())
    }
}
