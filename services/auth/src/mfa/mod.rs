//! Two-factor authentication: TOTP, backup codes and optional SMS codes, the
//! key that protects them at rest, and their settings.

pub mod codes;
mod flow;
pub mod sealing;
pub mod sms;
pub mod totp;

use std::path::Path;

use fleet_kit::secret::Secret;
use serde::{Deserialize, Serialize};

pub use sealing::SealingKey;

use crate::lockout::LockoutPolicy;

/// Second-factor settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MfaSettings {
    /// Base64 of 32 random bytes; seals TOTP secrets and phones and keys the
    /// code hashes. Unset: a key file in the data directory (one host only).
    pub encryption_key: Secret,
    /// Keys replaced by `encryption_key` (base64 each): they still open what
    /// they sealed, which is sealed anew where it is read.
    pub previous_encryption_keys: Vec<Secret>,
    /// The issuer shown in authenticator apps.
    pub issuer: String,
    /// How long the `mfa_token` of a login's first step lives, seconds.
    pub challenge_ttl_secs: u32,
    /// Limits on consecutive wrong second factors of one account, counted
    /// apart from wrong passwords.
    pub lockout: LockoutPolicy,
    /// Optional SMS codes.
    pub sms: sms::SmsSettings,
}

impl Default for MfaSettings {
    fn default() -> Self {
        Self {
            encryption_key: Secret::default(),
            previous_encryption_keys: Vec::new(),
            issuer: "Fleet".into(),
            challenge_ttl_secs: 300,
            lockout: LockoutPolicy {
                free_attempts: 5,
                base_delay_secs: 30,
                max_delay_secs: 3600,
                max_failures: 50,
            },
            sms: sms::SmsSettings::default(),
        }
    }
}

impl MfaSettings {
    /// The configured key, or else the one in `key_file` (created if missing).
    pub fn sealing_key(&self, key_file: &Path) -> anyhow::Result<SealingKey> {
        let key = if self.encryption_key.expose().is_empty() {
            SealingKey::load_or_create(key_file)?
        } else {
            SealingKey::from_base64(self.encryption_key.expose())?
        };
        let previous: Vec<&str> = self.previous_encryption_keys.iter().map(Secret::expose).collect();
        key.with_previous(&previous)
    }
}
