//! One-time codes: backup codes (80 random bits each, shown once) and the
//! six-digit codes sent by SMS, with the normalisation that lets people type
//! them loosely.

use data_encoding::BASE32_NOPAD;
use rand::{Rng, RngCore, rngs::OsRng};

/// Backup codes per set.
pub const BACKUP_CODES_PER_SET: usize = 10;
/// Random bytes per backup code: 80 bits.
const BACKUP_CODE_BYTES: usize = 10;
/// With this many left, the user is told to make a new set.
pub const BACKUP_CODES_LOW: u32 = 3;

/// A new set of backup codes, formatted `xxxx-xxxx-xxxx-xxxx`.
pub fn new_backup_codes() -> Vec<String> {
    (0..BACKUP_CODES_PER_SET)
        .map(|_| {
            let mut raw = [0u8; BACKUP_CODE_BYTES];
            OsRng.fill_bytes(&mut raw);
            let text = BASE32_NOPAD.encode(&raw).to_ascii_lowercase();
            text.as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// A backup code as typed → its canonical form, or `None` when it cannot be
/// one (wrong length or alphabet).
pub fn normalize_backup_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let raw = BASE32_NOPAD.decode(code.as_bytes()).ok()?;
    (raw.len() == BACKUP_CODE_BYTES).then_some(code)
}

/// A new six-digit code.
pub fn new_numeric_code() -> String {
    format!("{:06}", OsRng.gen_range(0..1_000_000u32))
}

/// A code as typed → digits only, if it is `digits` long.
pub fn normalize_numeric_code(typed: &str, digits: usize) -> Option<String> {
    let code: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    (code.len() == digits && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn backup_codes_are_distinct_formatted_and_normalise_back() {
        let codes = new_backup_codes();
        assert_eq!(codes.len(), BACKUP_CODES_PER_SET);
        assert_eq!(codes.iter().collect::<HashSet<_>>().len(), BACKUP_CODES_PER_SET);
        for code in &codes {
            assert_eq!(code.len(), 19, "{code}");
            let canonical = normalize_backup_code(code).unwrap();
            assert_eq!(
                normalize_backup_code(&code.to_uppercase().replace('-', " ")),
                Some(canonical)
            );
        }
        assert_eq!(normalize_backup_code("abcd"), None);
        assert_eq!(normalize_backup_code("1111-1111-1111-1111"), None, "not base32");
    }

    #[test]
    fn numeric_codes_have_six_digits() {
        for _ in 0..100 {
            let code = new_numeric_code();
            assert_eq!(normalize_numeric_code(&code, 6).as_deref(), Some(code.as_str()));
        }
        assert_eq!(normalize_numeric_code("123 456", 6).as_deref(), Some("123456"));
        assert_eq!(normalize_numeric_code("12345", 6), None);
        assert_eq!(normalize_numeric_code("12345a", 6), None);
    }
}
