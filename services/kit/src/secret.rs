//! Secrets in configuration: readable by the code that needs them, never by
//! `Debug`, `Display` or a serialized config dump.

use std::{fmt, fs, io::Write, path::Path};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::STANDARD};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration string that must never be printed (passwords, URLs with
/// credentials, keys).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// 32 random bytes, base64: the form of every generated key.
pub fn generate_key_base64() -> String {
    STANDARD.encode(rand::random::<[u8; 32]>())
}

/// The configured key, or else the one in the file at `path`, generated
/// (32 random bytes, base64, mode 0600) the first time. Such a key serves
/// one host only: the warning names `setting`, which replicas must share.
pub fn configured_or_file(configured: &Secret, path: &Path, setting: &str) -> anyhow::Result<Secret> {
    if !configured.expose().is_empty() {
        return Ok(configured.clone());
    }
    match fs::read_to_string(path) {
        Ok(encoded) => Ok(Secret::new(encoded.trim())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let encoded = generate_key_base64();
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.write_all(encoded.as_bytes())?;
            file.sync_all()?;
            tracing::warn!(path = %path.display(), "generated a key for this host; configure {setting} for replicas");
            Ok(Secret::new(encoded))
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Defaults are serialized into the config layering; a secret only
        // ever has an empty default, and real values must not leak through.
        if self.0.is_empty() {
            serializer.serialize_str("")
        } else {
            serializer.serialize_str("***")
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_made_once_private_and_a_configured_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/some.key");
        let made = configured_or_file(&Secret::default(), &path, "x.key").unwrap();
        assert_eq!(STANDARD.decode(made.expose()).unwrap().len(), 32);
        assert_eq!(configured_or_file(&Secret::default(), &path, "x.key").unwrap(), made);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let set = Secret::new("configured");
        assert_eq!(configured_or_file(&set, &path, "x.key").unwrap(), set);
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("postgres://user:hunter2@db/fleet");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{secret}").contains("hunter2"));
        assert!(!serde_json::to_string(&secret).unwrap().contains("hunter2"));
        assert_eq!(secret.expose(), "postgres://user:hunter2@db/fleet");
    }
}
