//! What users are told: the kinds of notification, which of them cannot be
//! switched off, and the wording of each, drawn from the event it tells of.
//! A notification states facts (an address, a user agent, a count) and never
//! a secret.

use chrono::{DateTime, Utc};
use fleet_kit::time::from_timestamp;
use fleet_proto::events::v1::{Event, event::Payload};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::device::Device;

/// A kind of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Its name, in the API and the preferences (`password_changed`).
    pub name: &'static str,
    /// Security notices cannot be switched off.
    pub security: bool,
}

const fn kind(name: &'static str, security: bool) -> Kind {
    Kind { name, security }
}

/// A login from a device or network not seen for the account before.
pub const NEW_DEVICE_LOGIN: Kind = kind("new_device_login", true);
/// The password changed.
pub const PASSWORD_CHANGED: Kind = kind("password_changed", true);
/// Two-factor authentication was turned on.
pub const MFA_ENABLED: Kind = kind("mfa_enabled", true);
/// Two-factor authentication was turned off.
pub const MFA_DISABLED: Kind = kind("mfa_disabled", true);
/// A backup code was used.
pub const BACKUP_CODE_USED: Kind = kind("backup_code_used", true);
/// A backup code was used and two or fewer are left.
pub const BACKUP_CODES_LOW: Kind = kind("backup_codes_low", true);
/// A TOTP code that was already used was presented again.
pub const TOTP_REPLAY_REJECTED: Kind = kind("totp_replay_rejected", true);
/// Failed logins locked the account.
pub const ACCOUNT_LOCKED: Kind = kind("account_locked", true);
/// Someone else (an administrator) ended a session.
pub const SESSION_REVOKED: Kind = kind("session_revoked", true);
/// A spent refresh token was presented again, and its session ended.
pub const REFRESH_TOKEN_REUSE: Kind = kind("refresh_token_reuse", true);
/// Webhook deliveries stopped: the endpoint answered 410 or kept failing.
pub const WEBHOOK_DISABLED: Kind = kind("webhook_disabled", true);
/// An export of the account's data finished.
pub const EXPORT_COMPLETED: Kind = kind("export_completed", false);
/// An import into the account finished.
pub const IMPORT_COMPLETED: Kind = kind("import_completed", false);

/// Every kind, security ones first.
pub const ALL: [Kind; 13] = [
    NEW_DEVICE_LOGIN,
    PASSWORD_CHANGED,
    MFA_ENABLED,
    MFA_DISABLED,
    BACKUP_CODE_USED,
    BACKUP_CODES_LOW,
    TOTP_REPLAY_REJECTED,
    ACCOUNT_LOCKED,
    SESSION_REVOKED,
    REFRESH_TOKEN_REUSE,
    WEBHOOK_DISABLED,
    EXPORT_COMPLETED,
    IMPORT_COMPLETED,
];

/// The kind named `name`.
pub fn by_name(name: &str) -> Option<Kind> {
    ALL.into_iter().find(|k| k.name == name)
}

/// Backup codes left at or below which the user is warned.
pub const FEW_BACKUP_CODES: u32 = 2;

/// A notification to write, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Its id: the event's, so a redelivery writes nothing.
    pub id: Uuid,
    /// Whose.
    pub user_id: Uuid,
    /// What kind.
    pub kind: Kind,
    /// A short title.
    pub title: String,
    /// A sentence or two for a person.
    pub body: String,
    /// The facts it states.
    pub data: Value,
    /// When what it tells of happened.
    pub at: DateTime<Utc>,
}

/// What an event means to the notify service.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing to do.
    Ignore,
    /// A notification, subject to the user's preferences.
    Notify(Draft),
    /// A successful login: news only from a device or network not seen
    /// before.
    Login {
        /// The notification should it be news.
        draft: Draft,
        /// Where the login came from.
        device: Device,
    },
    /// The account's address (created, or changed).
    Address {
        /// Whose.
        user_id: Uuid,
        /// The address.
        email: String,
    },
    /// The account is gone: everything kept about it goes.
    Erase {
        /// Whose.
        user_id: Uuid,
    },
}

/// Why an event cannot be used: a poison message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct Malformed(pub &'static str);

/// What `event` means.
pub fn plan(event: &Event) -> Result<Plan, Malformed> {
    if event.subject_user_id.is_empty() {
        return Ok(Plan::Ignore);
    }
    let user_id = Uuid::parse_str(&event.subject_user_id).map_err(|_| Malformed("subject_user_id"))?;
    let id = Uuid::parse_str(&event.id).map_err(|_| Malformed("id"))?;
    let at = event
        .occurred_at
        .as_ref()
        .and_then(from_timestamp)
        .ok_or(Malformed("occurred_at"))?;
    let draft = |kind: Kind, title: &str, body: String, data: Value| {
        Ok(Plan::Notify(Draft {
            id,
            user_id,
            kind,
            title: title.to_string(),
            body,
            data,
            at,
        }))
    };
    let Some(payload) = &event.payload else {
        return Ok(Plan::Ignore);
    };
    match payload {
        Payload::UserCreated(p) => Ok(Plan::Address {
            user_id,
            email: p.email.clone(),
        }),
        Payload::UserUpdated(p) if !p.email.is_empty() => Ok(Plan::Address {
            user_id,
            email: p.email.clone(),
        }),
        Payload::UserDeleted(_) => Ok(Plan::Erase { user_id }),
        Payload::LoginSucceeded(p) => {
            let device = Device::of(&p.user_agent, &p.ip);
            let body = format!(
                "Your account was signed in to from {} at {}. If this was not you, change your password \
                 and end your other sessions.",
                device.family, p.ip
            );
            Ok(Plan::Login {
                draft: Draft {
                    id,
                    user_id,
                    kind: NEW_DEVICE_LOGIN,
                    title: "New sign-in to your account".into(),
                    body,
                    data: json!({"ip": p.ip, "user_agent": p.user_agent, "device": device.family, "network": device.network}),
                    at,
                },
                device,
            })
        }
        Payload::LoginFailed(p) if p.locked => draft(
            ACCOUNT_LOCKED,
            "Your account is locked",
            format!(
                "After {} failed sign-in attempts, the last from {}, sign-ins to your account are paused.",
                p.consecutive_failures, p.ip
            ),
            json!({"ip": p.ip, "user_agent": p.user_agent, "consecutive_failures": p.consecutive_failures, "reason": p.reason}),
        ),
        Payload::PasswordChanged(p) => draft(
            PASSWORD_CHANGED,
            "Your password was changed",
            "Your password was changed and your other sessions were ended. If this was not you, reset \
             your password at once."
                .into(),
            json!({"sessions_revoked": p.sessions_revoked}),
        ),
        Payload::MfaEnabled(p) => draft(
            MFA_ENABLED,
            "Two-factor authentication is on",
            "Signing in to your account now takes a second factor.".into(),
            json!({"methods": p.methods}),
        ),
        Payload::MfaDisabled(p) => draft(
            MFA_DISABLED,
            "Two-factor authentication is off",
            "Signing in to your account no longer takes a second factor. If this was not you, change \
             your password and turn it on again."
                .into(),
            json!({"confirmed_with": p.confirmed_with, "sessions_revoked": p.sessions_revoked}),
        ),
        Payload::MfaBackupCodeUsed(p) if p.remaining <= FEW_BACKUP_CODES => draft(
            BACKUP_CODES_LOW,
            "Few backup codes left",
            format!(
                "A backup code was used to sign in from {}; {} left. Generate new codes before you run out.",
                p.ip, p.remaining
            ),
            json!({"ip": p.ip, "remaining": p.remaining}),
        ),
        Payload::MfaBackupCodeUsed(p) => draft(
            BACKUP_CODE_USED,
            "A backup code was used",
            format!("A backup code was used to sign in from {}; {} left.", p.ip, p.remaining),
            json!({"ip": p.ip, "remaining": p.remaining}),
        ),
        Payload::MfaReplayRejected(p) => draft(
            TOTP_REPLAY_REJECTED,
            "A used sign-in code was tried again",
            format!(
                "Someone at {} presented an authenticator code that had already been used. Your password \
                 may be known to someone else.",
                p.ip
            ),
            json!({"ip": p.ip, "user_agent": p.user_agent, "during": p.during}),
        ),
        Payload::SessionRevoked(p) if p.reason == "ended_by_admin" => draft(
            SESSION_REVOKED,
            "A session was ended by an administrator",
            "An administrator ended one of your sessions.".into(),
            json!({"session_id": p.session_id, "reason": p.reason}),
        ),
        Payload::SessionRevoked(p) if p.reason == "refresh_reuse" => draft(
            REFRESH_TOKEN_REUSE,
            "A session was ended to protect your account",
            "A sign-in token that had already been used was presented again, so the session it belonged \
             to was ended. Sign in again; if this keeps happening, change your password."
                .into(),
            json!({"session_id": p.session_id, "reason": p.reason}),
        ),
        Payload::TransferExportCompleted(p) => draft(
            EXPORT_COMPLETED,
            "Your export is ready",
            format!(
                "An export of your data ({}, {} activity entries) finished.",
                p.format, p.activity_entries
            ),
            json!({"export_id": p.export_id, "format": p.format, "activity_entries": p.activity_entries}),
        ),
        Payload::TransferImportCompleted(p) => draft(
            IMPORT_COMPLETED,
            "Your import finished",
            format!(
                "An import into your account finished: {} activity entries added, {} already there.",
                p.activity_imported, p.activity_skipped
            ),
            json!({
                "import_id": p.import_id,
                "format": p.format,
                "profile_updated": p.profile_updated,
                "activity_imported": p.activity_imported,
                "activity_skipped": p.activity_skipped,
            }),
        ),
        _ => Ok(Plan::Ignore),
    }
}

/// The notice that webhook deliveries stopped.
pub fn webhook_disabled(user_id: Uuid, url: &str, why: &str, at: DateTime<Utc>) -> Draft {
    Draft {
        id: Uuid::now_v7(),
        user_id,
        kind: WEBHOOK_DISABLED,
        title: "Webhook deliveries stopped".into(),
        body: format!("Deliveries to {url} stopped: {why}. Set the webhook URL again to resume them."),
        data: json!({"webhook_url": url, "reason": why}),
        at,
    }
}

#[cfg(test)]
mod tests {
    use fleet_kit::events::new_event;
    use fleet_proto::events::v1::{LoginFailed, MfaBackupCodeUsed, SessionRevoked};

    use super::*;

    fn planned(payload: Payload) -> Plan {
        plan(&new_event("auth", Some(Uuid::now_v7()), Utc::now(), payload)).unwrap()
    }

    fn kind_of(plan: &Plan) -> Option<&'static str> {
        match plan {
            Plan::Notify(draft) => Some(draft.kind.name),
            _ => None,
        }
    }

    #[test]
    fn names_are_unique_and_found() {
        for k in ALL {
            assert_eq!(by_name(k.name), Some(k));
        }
        assert_eq!(by_name("nope"), None);
        assert!(ALL.iter().filter(|k| !k.security).count() == 2);
    }

    #[test]
    fn a_backup_code_warns_when_few_are_left() {
        let used = |remaining| {
            planned(Payload::MfaBackupCodeUsed(MfaBackupCodeUsed {
                remaining,
                ip: "198.51.100.7".into(),
            }))
        };
        assert_eq!(kind_of(&used(3)), Some("backup_code_used"));
        assert_eq!(kind_of(&used(2)), Some("backup_codes_low"));
        assert_eq!(kind_of(&used(0)), Some("backup_codes_low"));
    }

    #[test]
    fn only_a_locking_failure_and_others_revocations_are_news() {
        let failed = |locked| {
            planned(Payload::LoginFailed(LoginFailed {
                reason: "bad_password".into(),
                consecutive_failures: 5,
                locked,
                ..LoginFailed::default()
            }))
        };
        assert_eq!(kind_of(&failed(false)), None);
        assert_eq!(kind_of(&failed(true)), Some("account_locked"));
        let revoked = |reason: &str| {
            planned(Payload::SessionRevoked(SessionRevoked {
                reason: reason.into(),
                ..SessionRevoked::default()
            }))
        };
        assert_eq!(kind_of(&revoked("logout")), None);
        assert_eq!(kind_of(&revoked("revoked")), None);
        assert_eq!(kind_of(&revoked("password_changed")), None);
        assert_eq!(kind_of(&revoked("ended_by_admin")), Some("session_revoked"));
        assert_eq!(kind_of(&revoked("refresh_reuse")), Some("refresh_token_reuse"));
    }

    #[test]
    fn events_without_a_subject_are_ignored_and_bad_ids_are_poison() {
        let mut event = new_event("auth", None, Utc::now(), Payload::UserDeleted(Default::default()));
        assert_eq!(plan(&event), Ok(Plan::Ignore));
        event.subject_user_id = "not-a-uuid".into();
        assert_eq!(plan(&event), Err(Malformed("subject_user_id")));
    }
}
