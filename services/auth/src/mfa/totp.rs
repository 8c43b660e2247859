//! TOTP (RFC 6238) with totp-rs for the arithmetic. The verifier answers
//! which time step a code belongs to, so that the caller can refuse any step
//! at or before the last one it accepted: a code is good once.

use totp_rs::{Algorithm, TOTP};

/// The parameters every common authenticator app understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    /// HMAC algorithm.
    pub algorithm: Algorithm,
    /// Code length.
    pub digits: usize,
    /// Seconds per step.
    pub step_secs: u64,
    /// Steps accepted either side of the current one.
    pub skew: u64,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::SHA1,
            digits: 6,
            step_secs: 30,
            skew: 1,
        }
    }
}

/// Length of a new secret in bytes: 160 bits, as RFC 4226 recommends.
pub const SECRET_LEN: usize = 20;

/// One user's TOTP generator and verifier.
pub struct TotpKey {
    totp: TOTP,
    params: TotpParams,
}

impl std::fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpKey")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl TotpKey {
    /// A key over `secret`, labelled `issuer:account` in apps.
    pub fn new(params: TotpParams, secret: Vec<u8>, issuer: &str, account: &str) -> anyhow::Result<Self> {
        // Apps split the label at ':'; neither part may contain one.
        let issuer = issuer.replace(':', " ");
        let account = account.replace(':', " ");
        let totp = TOTP::new(
            params.algorithm,
            params.digits,
            u8::try_from(params.skew).unwrap_or(u8::MAX),
            params.step_secs,
            secret,
            Some(issuer),
            account,
        )
        .map_err(|e| anyhow::anyhow!("building a TOTP key: {e:?}"))?;
        Ok(Self { totp, params })
    }

    /// The step that `unix_secs` falls in.
    pub fn step_at(&self, unix_secs: u64) -> u64 {
        unix_secs / self.params.step_secs
    }

    /// The code of one step.
    pub fn code_for_step(&self, step: u64) -> String {
        self.totp.generate(step.saturating_mul(self.params.step_secs))
    }

    /// The step within the skew window around `unix_secs` whose code is
    /// `code`, the latest if several are. Comparisons take constant time.
    pub fn matching_step(&self, code: &str, unix_secs: u64) -> Option<u64> {
        let current = self.step_at(unix_secs);
        let first = current.saturating_sub(self.params.skew);
        let last = current.saturating_add(self.params.skew);
        let mut found = None;
        for step in first..=last {
            if constant_time_eq(self.code_for_step(step).as_bytes(), code.as_bytes()) {
                found = Some(step);
            }
        }
        found
    }

    /// The secret in base32, for typing into an app.
    pub fn secret_base32(&self) -> String {
        self.totp.get_secret_base32()
    }

    /// The `otpauth://totp/...` URL.
    pub fn url(&self) -> String {
        self.totp.get_url()
    }

    /// The URL as a QR code: PNG, base64.
    pub fn qr_png_base64(&self) -> anyhow::Result<String> {
        self.totp
            .get_qr_base64()
            .map_err(|e| anyhow::anyhow!("drawing the QR code: {e}"))
    }
}

/// Equality without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_key(algorithm: Algorithm) -> TotpKey {
        // RFC 6238 Appendix B: the seed is "1234567890" repeated to the
        // length of the hash's output.
        let len = match algorithm {
            Algorithm::SHA1 => 20,
            Algorithm::SHA256 => 32,
            Algorithm::SHA512 => 64,
        };
        let seed: Vec<u8> = b"1234567890".iter().copied().cycle().take(len).collect();
        let params = TotpParams {
            algorithm,
            digits: 8,
            step_secs: 30,
            skew: 0,
        };
        TotpKey::new(params, seed, "Fleet", "rfc@example.com").unwrap()
    }

    #[test]
    fn rfc_6238_appendix_b_vectors() {
        let vectors: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        let keys = [
            rfc_key(Algorithm::SHA1),
            rfc_key(Algorithm::SHA256),
            rfc_key(Algorithm::SHA512),
        ];
        for (time, sha1, sha256, sha512) in vectors {
            for (key, expected) in keys.iter().zip([sha1, sha256, sha512]) {
                assert_eq!(key.code_for_step(key.step_at(time)), expected, "T={time}");
                assert_eq!(key.matching_step(expected, time), Some(time / 30), "T={time}");
                assert_eq!(key.matching_step(expected, time + 30), None, "T={time}, no skew");
            }
        }
    }

    #[test]
    fn one_step_either_way_is_accepted_two_are_not() {
        let key = TotpKey::new(TotpParams::default(), vec![7; SECRET_LEN], "Fleet", "a@example.com").unwrap();
        let now = 1_700_000_000;
        let step = key.step_at(now);
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let s = step.checked_add_signed(offset).unwrap();
            let code = key.code_for_step(s);
            let expected = accepted.then_some(s);
            assert_eq!(key.matching_step(&code, now), expected, "offset {offset}");
        }
        assert_eq!(key.matching_step("12345", now), None);
        assert_eq!(key.matching_step("", now), None);
    }

    #[test]
    fn the_url_names_issuer_and_account_and_the_qr_is_a_png() {
        let key = TotpKey::new(TotpParams::default(), vec![1; SECRET_LEN], "Fleet", "a:b@example.com").unwrap();
        let url = key.url();
        assert!(url.starts_with("otpauth://totp/Fleet:"), "{url}");
        assert!(url.contains(&format!("secret={}", key.secret_base32())), "{url}");
        assert!(url.contains("issuer=Fleet"), "{url}");
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(key.qr_png_base64().unwrap())
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
