//! From an event to what the activity log keeps of it: one entry per event
//! about a user, the session it starts or ends, or the erasure of a user.
//! Only what is safe to show is kept: never a secret, hash, code or token.

use chrono::{DateTime, Utc};
use fleet_kit::time::from_timestamp;
use fleet_proto::events::v1::{Event, event::Payload};
use serde_json::{Value, json};
use uuid::Uuid;

/// What an event does to the stats store.
#[derive(Debug, Clone, PartialEq)]
pub enum Projected {
    /// One more entry of a user's activity.
    Entry(Entry),
    /// The user is gone: erase everything kept about them.
    Erase {
        /// Whose data.
        user_id: Uuid,
        /// When the deletion happened.
        at: DateTime<Utc>,
    },
}

/// An activity entry, with the change to a session it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The event's id: the entry's identity, so a redelivery adds nothing.
    pub id: Uuid,
    /// Whose activity.
    pub user_id: Uuid,
    /// The event's type (`auth.login_succeeded`).
    pub kind: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The client's address, when the event names one.
    pub ip: String,
    /// The client's user agent, when the event names one.
    pub user_agent: String,
    /// The rest of what the event says that is safe to show.
    pub details: Value,
    /// The session it starts or ends.
    pub session: Option<SessionChange>,
}

/// A session's start or end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// A session began.
    Started {
        /// Its id.
        id: Uuid,
        /// The client's user agent.
        user_agent: String,
    },
    /// A session ended.
    Ended {
        /// Its id.
        id: Uuid,
        /// Why (`logout`, `revoked`, `refresh_reuse`...).
        reason: String,
    },
}

/// Why an event was not projected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unprojectable {
    /// It concerns no user (nothing to keep).
    #[error("the event concerns no user")]
    NoSubject,
    /// Stats' own notice that it projected something.
    #[error("stats' own event")]
    Own,
    /// A field it must have is missing or malformed: a poison message.
    #[error("malformed event: {0}")]
    Malformed(&'static str),
}

/// What `event` does to the stats store.
pub fn project(event: &Event) -> Result<Projected, Unprojectable> {
    if matches!(event.payload, Some(Payload::StatsProjected(_))) {
        return Err(Unprojectable::Own);
    }
    if event.subject_user_id.is_empty() {
        return Err(Unprojectable::NoSubject);
    }
    let user_id = Uuid::parse_str(&event.subject_user_id).map_err(|_| Unprojectable::Malformed("subject_user_id"))?;
    let occurred_at = event
        .occurred_at
        .as_ref()
        .and_then(from_timestamp)
        .ok_or(Unprojectable::Malformed("occurred_at"))?;
    let id = Uuid::parse_str(&event.id).map_err(|_| Unprojectable::Malformed("id"))?;
    let mut entry = Entry {
        id,
        user_id,
        kind: event.r#type.clone(),
        occurred_at,
        ip: String::new(),
        user_agent: String::new(),
        details: json!({}),
        session: None,
    };
    let session_id = |raw: &str| Uuid::parse_str(raw).map_err(|_| Unprojectable::Malformed("session_id"));
    match &event.payload {
        Some(Payload::UserDeleted(_)) => {
            return Ok(Projected::Erase {
                user_id,
                at: occurred_at,
            });
        }
        Some(Payload::UserCreated(_)) | None => {}
        Some(Payload::UserUpdated(p)) => entry.details = json!({"changed": p.changed}),
        Some(Payload::LoginSucceeded(p)) => {
            (entry.ip, entry.user_agent) = (p.ip.clone(), p.user_agent.clone());
            entry.details = json!({"amr": p.amr});
            entry.session = Some(SessionChange::Started {
                id: session_id(&p.session_id)?,
                user_agent: p.user_agent.clone(),
            });
        }
        Some(Payload::LoginFailed(p)) => {
            (entry.ip, entry.user_agent) = (p.ip.clone(), p.user_agent.clone());
            entry.details = json!({"reason": p.reason, "consecutive_failures": p.consecutive_failures});
        }
        Some(Payload::SessionCreated(p)) => {
            (entry.ip, entry.user_agent) = (p.ip.clone(), p.user_agent.clone());
            entry.session = Some(SessionChange::Started {
                id: session_id(&p.session_id)?,
                user_agent: p.user_agent.clone(),
            });
        }
        Some(Payload::SessionRevoked(p)) => {
            entry.details = json!({"reason": p.reason});
            entry.session = Some(SessionChange::Ended {
                id: session_id(&p.session_id)?,
                reason: p.reason.clone(),
            });
        }
        Some(Payload::PasswordChanged(p)) => entry.details = json!({"sessions_revoked": p.sessions_revoked}),
        Some(Payload::MfaEnabled(p)) => entry.details = json!({"methods": p.methods}),
        Some(Payload::MfaDisabled(p)) => {
            entry.details = json!({"confirmed_with": p.confirmed_with, "sessions_revoked": p.sessions_revoked});
        }
        Some(Payload::MfaBackupCodeUsed(p)) => {
            entry.ip = p.ip.clone();
            entry.details = json!({"remaining": p.remaining});
        }
        Some(Payload::MfaReplayRejected(p)) => {
            (entry.ip, entry.user_agent) = (p.ip.clone(), p.user_agent.clone());
            entry.details = json!({"during": p.during});
        }
        Some(Payload::TransferExportCompleted(p)) => {
            entry.details = json!({
                "format": p.format,
                "activity_entries": p.activity_entries,
                "requested_by": p.requested_by,
            });
        }
        Some(Payload::TransferImportCompleted(p)) => {
            entry.details = json!({
                "format": p.format,
                "profile_updated": p.profile_updated,
                "activity_imported": p.activity_imported,
                "activity_skipped": p.activity_skipped,
                "requested_by": p.requested_by,
            });
        }
        Some(Payload::StatsProjected(_)) => return Err(Unprojectable::Own),
    }
    Ok(Projected::Entry(entry))
}

#[cfg(test)]
mod tests {
    use fleet_kit::events::new_event;
    use fleet_proto::events::v1::{LoginFailed, LoginSucceeded, SessionRevoked, UserDeleted};

    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_login_is_an_entry_that_starts_a_session() {
        let user = Uuid::now_v7();
        let session = Uuid::now_v7();
        let event = new_event(
            "auth",
            Some(user),
            at(),
            Payload::LoginSucceeded(LoginSucceeded {
                session_id: session.to_string(),
                ip: "192.0.2.7".into(),
                user_agent: "curl/8".into(),
                amr: vec!["pwd".into()],
            }),
        );
        let Projected::Entry(entry) = project(&event).unwrap() else {
            panic!("an entry")
        };
        assert_eq!(entry.id.to_string(), event.id);
        assert_eq!((entry.user_id, entry.kind.as_str()), (user, event.r#type.as_str()));
        assert_eq!((entry.ip.as_str(), entry.user_agent.as_str()), ("192.0.2.7", "curl/8"));
        assert_eq!(entry.occurred_at, at());
        assert_eq!(entry.details, json!({"amr": ["pwd"]}));
        assert_eq!(
            entry.session,
            Some(SessionChange::Started {
                id: session,
                user_agent: "curl/8".into()
            })
        );
    }

    #[test]
    fn failures_revocations_and_deletions_project_as_they_should() {
        let user = Uuid::now_v7();
        let failed = new_event(
            "auth",
            Some(user),
            at(),
            Payload::LoginFailed(LoginFailed {
                reason: "bad_password".into(),
                ip: "198.51.100.1".into(),
                user_agent: "ua".into(),
                consecutive_failures: 2,
                locked: false,
            }),
        );
        let Projected::Entry(entry) = project(&failed).unwrap() else {
            panic!("an entry")
        };
        assert_eq!(
            entry.details,
            json!({"reason": "bad_password", "consecutive_failures": 2})
        );
        assert_eq!(entry.session, None);

        let session = Uuid::now_v7();
        let revoked = new_event(
            "auth",
            Some(user),
            at(),
            Payload::SessionRevoked(SessionRevoked {
                session_id: session.to_string(),
                reason: "logout".into(),
                tokens_expire_at: None,
            }),
        );
        let Projected::Entry(entry) = project(&revoked).unwrap() else {
            panic!("an entry")
        };
        assert_eq!(
            entry.session,
            Some(SessionChange::Ended {
                id: session,
                reason: "logout".into()
            })
        );

        let deleted = new_event("users", Some(user), at(), Payload::UserDeleted(UserDeleted {}));
        assert_eq!(
            project(&deleted).unwrap(),
            Projected::Erase {
                user_id: user,
                at: at()
            }
        );
    }

    #[test]
    fn events_without_a_user_with_bad_ids_or_of_stats_itself_are_not_projected() {
        let own = new_event(
            "stats",
            Some(Uuid::now_v7()),
            at(),
            Payload::StatsProjected(fleet_proto::events::v1::StatsProjected { events: 1 }),
        );
        assert_eq!(project(&own), Err(Unprojectable::Own));
        let mut event = new_event("users", None, at(), Payload::UserDeleted(UserDeleted {}));
        assert_eq!(project(&event), Err(Unprojectable::NoSubject));
        event.subject_user_id = "not-a-uuid".into();
        assert_eq!(project(&event), Err(Unprojectable::Malformed("subject_user_id")));
        let mut event = new_event(
            "auth",
            Some(Uuid::now_v7()),
            at(),
            Payload::SessionRevoked(SessionRevoked::default()),
        );
        assert_eq!(project(&event), Err(Unprojectable::Malformed("session_id")));
        event.occurred_at = None;
        assert_eq!(project(&event), Err(Unprojectable::Malformed("occurred_at")));
    }
}
