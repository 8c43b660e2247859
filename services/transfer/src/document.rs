//! The export document, format version 1: what a user's personal data looks
//! like outside the fleet. Its parts are explicit types, so the format is
//! written down once and changes only with `FORMAT_VERSION`:
//!
//! ```json
//! {"user_id": "…", "exported_at": "…", "format_version": 1,
//!  "data": {"profile": {…}, "sessions": […], "mfa": {…},
//!           "activity_log": [{"id", "kind", "occurred_at", "ip", "user_agent", "details"}, …]}}
//! ```
//!
//! Never part of it: password hashes, TOTP secrets, backup or SMS codes,
//! refresh tokens, signing keys. None of them reaches the transfer service:
//! it reads only what the owning services show the user.

use chrono::{DateTime, SecondsFormat, Utc};
use fleet_kit::{structs::from_struct, time::from_timestamp};
use fleet_proto::{
    auth::v1::{MfaStatus, Session},
    stats::v1::ActivityEntry,
    users::v1::User,
};
use serde::{Deserialize, Serialize};

/// The version of the layout this service writes.
pub const FORMAT_VERSION: u32 = 1;

/// An instant as the REST API prints it: RFC 3339 in UTC.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn timestamp(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    ts.and_then(from_timestamp).map(rfc3339)
}

/// The account's profile. (Reading back, a missing field is its default,
/// and the rules of `ExportDocument` say which must be there.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    pub id: String,
    pub email: Option<String>,
    pub display_name: String,
    pub role: Option<String>,
    pub status: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<&User> for Profile {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            role: user.role.clone(),
            status: user.status.clone(),
            created_at: timestamp(user.created_at.as_ref()),
            updated_at: timestamp(user.updated_at.as_ref()),
        }
    }
}

/// One active session: the device and network it was opened from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionRecord {
    pub id: String,
    pub created_at: Option<String>,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub ip: String,
    pub user_agent: String,
}

impl From<&Session> for SessionRecord {
    fn from(s: &Session) -> Self {
        Self {
            id: s.id.clone(),
            created_at: timestamp(s.created_at.as_ref()),
            last_used_at: timestamp(s.last_used_at.as_ref()),
            expires_at: timestamp(s.expires_at.as_ref()),
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
        }
    }
}

/// Which second factors are on: never a secret or a code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfaRecord {
    pub enabled: bool,
    pub methods: Vec<String>,
    pub backup_codes_remaining: u32,
    pub sms_enabled: bool,
}

impl From<&MfaStatus> for MfaRecord {
    fn from(m: &MfaStatus) -> Self {
        Self {
            enabled: m.enabled,
            methods: m.methods.clone(),
            backup_codes_remaining: m.backup_codes_remaining,
            sms_enabled: m.sms_enabled,
        }
    }
}

/// One entry of the activity log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityRecord {
    pub id: String,
    pub kind: String,
    pub occurred_at: String,
    pub ip: String,
    pub user_agent: String,
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl From<ActivityEntry> for ActivityRecord {
    fn from(e: ActivityEntry) -> Self {
        Self {
            id: e.id,
            kind: e.kind,
            occurred_at: timestamp(e.occurred_at.as_ref()).unwrap_or_default(),
            ip: e.ip,
            user_agent: e.user_agent,
            details: e.details.map(from_struct).unwrap_or_default(),
        }
    }
}

/// What opens the document, up to the activity log's first entry.
#[derive(Debug, Serialize)]
pub struct Head<'a> {
    pub user_id: &'a str,
    pub exported_at: String,
    pub format_version: u32,
    pub profile: &'a Profile,
    pub sessions: &'a [SessionRecord],
    pub mfa: &'a MfaRecord,
}

impl Head<'_> {
    /// `{"user_id":…,"data":{"profile":…,"sessions":…,"mfa":…,"activity_log":[`
    pub fn opening(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"user_id\":");
        serde_json::to_writer(&mut out, self.user_id)?;
        out.extend_from_slice(b",\"exported_at\":");
        serde_json::to_writer(&mut out, &self.exported_at)?;
        out.extend_from_slice(b",\"format_version\":");
        serde_json::to_writer(&mut out, &self.format_version)?;
        out.extend_from_slice(b",\"data\":{\"profile\":");
        serde_json::to_writer(&mut out, self.profile)?;
        out.extend_from_slice(b",\"sessions\":");
        serde_json::to_writer(&mut out, self.sessions)?;
        out.extend_from_slice(b",\"mfa\":");
        serde_json::to_writer(&mut out, self.mfa)?;
        out.extend_from_slice(b",\"activity_log\":[");
        Ok(out)
    }
}

/// What closes the document after the last entry.
pub const CLOSING: &[u8] = b"]}}";

/// The whole document, for reading one back (import, tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub exported_at: String,
    #[serde(default)]
    pub format_version: u32,
    /// Absent only in a document that is refused for it.
    #[serde(default)]
    pub data: Option<Data>,
}

/// The document's data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// Absent only in a document that is refused for it.
    #[serde(default)]
    pub profile: Option<Profile>,
    #[serde(default)]
    pub sessions: Vec<SessionRecord>,
    pub mfa: Option<MfaRecord>,
    #[serde(default)]
    pub activity_log: Vec<ActivityRecord>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn mfa() -> MfaRecord {
        MfaRecord {
            enabled: true,
            methods: vec!["totp".into()],
            backup_codes_remaining: 10,
            sms_enabled: false,
        }
    }

    pub(crate) fn profile() -> Profile {
        Profile {
            id: "0190-a".into(),
            email: Some("a@example.com".into()),
            display_name: "A \"quoted\" name".into(),
            role: Some("user".into()),
            status: Some("active".into()),
            created_at: Some("2026-01-02T03:04:05Z".into()),
            updated_at: None,
        }
    }

    #[test]
    fn the_streamed_pieces_make_one_document_that_reads_back() {
        let mfa = MfaRecord {
            enabled: true,
            methods: vec!["totp".into(), "backup_code".into()],
            backup_codes_remaining: 9,
            sms_enabled: false,
        };
        let head = Head {
            user_id: "0190-a",
            exported_at: "2026-12-02T00:00:00Z".into(),
            format_version: FORMAT_VERSION,
            profile: &profile(),
            sessions: &[],
            mfa: &mfa,
        };
        let entry = ActivityRecord {
            id: "e1".into(),
            kind: "auth.login_succeeded".into(),
            occurred_at: "2026-12-01T10:00:00.5Z".into(),
            ip: "192.0.2.1".into(),
            user_agent: "curl/8".into(),
            details: serde_json::json!({"amr": ["pwd"]}).as_object().unwrap().clone(),
        };
        let mut text = head.opening().unwrap();
        serde_json::to_writer(&mut text, &entry).unwrap();
        text.push(b',');
        serde_json::to_writer(&mut text, &entry).unwrap();
        text.extend_from_slice(CLOSING);
        let doc: Document = serde_json::from_slice(&text).unwrap();
        assert_eq!(doc.format_version, 1);
        let data = doc.data.unwrap();
        assert_eq!(data.profile, Some(profile()));
        assert_eq!(data.mfa, Some(mfa));
        assert_eq!(data.activity_log, vec![entry.clone(), entry]);
    }
}
