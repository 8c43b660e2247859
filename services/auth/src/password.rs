//! Password hashing: argon2id at OWASP parameters, run on the threads of the
//! [`HashingPool`](crate::hashing::HashingPool). Unknown accounts are checked against a dummy hash so that the
//! answer takes comparable work whether or not the email exists.

use std::sync::{Arc, OnceLock};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version, password_hash::SaltString,
};
use rand::rngs::OsRng;

use fleet_kit::error::FieldViolation;

/// The shortest and longest passwords accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Long enough for passphrases, short enough to bound hashing work.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// A password that passed the policy. Never printed.
#[derive(Clone)]
pub struct Password(Arc<String>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// Checks a new password against the policy; `field` names it in errors.
    pub fn parse_new(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("must be at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        Ok(Self(Arc::new(raw.to_string())))
    }

    /// A password as presented at login: no policy, only the length bound.
    pub fn presented(raw: &str) -> Self {
        let bounded: String = raw.chars().take(MAX_PASSWORD_CHARS + 1).collect();
        Self(Arc::new(bounded))
    }
}

fn argon2() -> Argon2<'static> {
    // OWASP: m = 19 MiB, t = 2, p = 1.
    #[allow(clippy::unwrap_used)] // constant, valid parameters
    let params = Params::new(19_456, 2, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password (PHC string) on the calling thread: callers go through
/// the [`HashingPool`](crate::hashing::HashingPool).
pub(crate) fn hash_now(password: &Password) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.0.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// Whether `password` matches `phc`, on the calling thread. With no hash
/// (unknown account) a dummy one is checked, and the answer is false.
pub(crate) fn verify_now(password: &Password, phc: Option<String>) -> anyhow::Result<bool> {
    let known = phc.is_some();
    let phc = phc.unwrap_or_else(|| dummy_hash().to_string());
    let parsed = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("a stored hash does not parse: {e}"))?;
    let matches = argon2().verify_password(password.0.as_bytes(), &parsed).is_ok();
    Ok(known && matches)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(b"no account has this password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_at_owasp_parameters_and_verify() {
        let pw = Password::parse_new("correct horse battery", "password").unwrap();
        let phc = hash_now(&pw).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_now(&pw, Some(phc.clone())).unwrap());
        assert!(!verify_now(&Password::presented("wrong"), Some(phc)).unwrap());
        assert!(!verify_now(&pw, None).unwrap());
    }

    #[test]
    fn the_contract_states_the_policy() {
        for field in [
            "fleet.auth.v1.RegisterRequest.password",
            "fleet.auth.v1.ChangePasswordRequest.new_password",
        ] {
            for chars in [
                0,
                1,
                MIN_PASSWORD_CHARS - 1,
                MIN_PASSWORD_CHARS,
                MAX_PASSWORD_CHARS,
                MAX_PASSWORD_CHARS + 1,
            ] {
                let typed = "x".repeat(chars);
                let contract = fleet_proto::rules::check_text(field, &typed);
                assert_eq!(
                    contract.is_none(),
                    Password::parse_new(&typed, "p").is_ok(),
                    "{field}: {chars}"
                );
            }
        }
    }

    #[test]
    fn the_policy_bounds_length_and_passwords_never_print() {
        assert!(Password::parse_new("short", "password").is_err());
        assert!(Password::parse_new(&"x".repeat(129), "password").is_err());
        let pw = Password::parse_new("a long enough secret", "password").unwrap();
        assert!(!format!("{pw:?}").contains("secret"));
    }
}
