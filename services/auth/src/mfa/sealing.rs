//! The key that protects secrets at rest: TOTP secrets, phone numbers and
//! the token signing keys are sealed with AES-256-GCM (bound to their user
//! or `kid`), and one-time codes are kept only as keyed hashes
//! (HMAC-SHA-256), so that a copy of the database alone yields neither
//! secrets, codes nor the power to mint tokens. Previous keys, while a key
//! is being rotated, still open what they sealed.

use std::path::Path;

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hkdf, hmac,
    rand::{SecureRandom, SystemRandom},
};
use uuid::Uuid;

/// Length of the configured key material.
pub const KEY_LEN: usize = 32;
/// The version byte in front of every sealed value.
const SEALED_V1: u8 = 1;

/// Whether `value` is in the sealed format (a version byte first).
pub fn is_sealed(value: &[u8]) -> bool {
    value.first() == Some(&SEALED_V1)
}

/// Seals secrets and hashes codes.
pub struct SealingKey {
    aead: LessSafeKey,
    /// Keys of before a rotation: they open, never seal.
    previous: Vec<LessSafeKey>,
    mac: hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(***)")
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(prk: &hkdf::Prk, label: &[u8]) -> anyhow::Result<[u8; KEY_LEN]> {
    let mut out = [0u8; KEY_LEN];
    let info = [label];
    prk.expand(&info, Len(KEY_LEN))
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| anyhow::anyhow!("deriving a key"))?;
    Ok(out)
}

impl SealingKey {
    /// A key from 32 bytes of key material; the encryption and the hashing
    /// keys are derived from it separately (HKDF-SHA-256).
    pub fn from_bytes(material: &[u8]) -> anyhow::Result<Self> {
        if material.len() != KEY_LEN {
            bail!("the MFA key must be {KEY_LEN} bytes, not {}", material.len());
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"fleet-auth-mfa").extract(material);
        let aead = UnboundKey::new(&AES_256_GCM, &derive(&prk, b"seal")?)
            .map_err(|_| anyhow::anyhow!("building the sealing key"))?;
        Ok(Self {
            aead: LessSafeKey::new(aead),
            previous: Vec::new(),
            mac: hmac::Key::new(hmac::HMAC_SHA256, &derive(&prk, b"hash")?),
            rng: SystemRandom::new(),
        })
    }

    /// Adds the keys of before a rotation (base64 each): what they sealed
    /// still opens; everything new is sealed with this key.
    pub fn with_previous(mut self, encoded: &[&str]) -> anyhow::Result<Self> {
        for (i, key) in encoded.iter().enumerate() {
            let old = Self::from_base64(key).with_context(|| format!("previous MFA key {i}"))?;
            self.previous.push(old.aead);
        }
        Ok(self)
    }

    /// A key from its configured form: base64 of 32 bytes.
    pub fn from_base64(encoded: &str) -> anyhow::Result<Self> {
        let material = STANDARD
            .decode(encoded.trim())
            .context("the MFA key is not valid base64")?;
        Self::from_bytes(&material)
    }

    /// A fresh random key, in its configured form.
    pub fn generate_base64() -> anyhow::Result<String> {
        Ok(fleet_kit::secret::generate_key_base64())
    }

    /// The key kept in `path`, created (readable by its owner only) when the
    /// file does not exist yet. For single-host setups without a configured key.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        let key =
            fleet_kit::secret::configured_or_file(&fleet_kit::Secret::default(), path, "auth.mfa.encryption_key")?;
        Self::from_base64(key.expose()).with_context(|| format!("reading {}", path.display()))
    }

    /// Encrypts `plain` for `user`: version, nonce, ciphertext and tag.
    pub fn seal(&self, user: Uuid, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.seal_bound(user.as_bytes(), plain)
    }

    /// Decrypts what [`Self::seal`] made for the same user.
    pub fn open(&self, user: Uuid, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(self.open_bound(user.as_bytes(), sealed)?.0)
    }

    /// Encrypts `plain` bound to `context` (it opens only with the same).
    pub fn seal_bound(&self, context: &[u8], plain: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut body)
            .map_err(|_| anyhow::anyhow!("sealing a secret"))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts what [`Self::seal_bound`] made for the same context, with
    /// this key or a previous one; says whether it was a previous one (the
    /// value is then best sealed again).
    pub fn open_bound(&self, context: &[u8], sealed: &[u8]) -> anyhow::Result<(Vec<u8>, bool)> {
        if !is_sealed(sealed) {
            bail!("unknown sealed-secret format");
        }
        let rest = &sealed[1..];
        if rest.len() < NONCE_LEN {
            bail!("sealed secret too short");
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        for (i, key) in std::iter::once(&self.aead).chain(&self.previous).enumerate() {
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
            let mut body = body.to_vec();
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(context), &mut body) {
                return Ok((plain.to_vec(), i > 0));
            }
        }
        bail!("a sealed secret does not open with the configured MFA key (nor a previous one)")
    }

    /// The keyed hash of a one-time code of `user` for `purpose`.
    pub fn code_hash(&self, purpose: &str, user: Uuid, code: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(purpose.as_bytes());
        ctx.update(&[0]);
        ctx.update(user.as_bytes());
        ctx.update(code.as_bytes());
        ctx.sign().as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealingKey {
        SealingKey::from_base64(&SealingKey::generate_base64().unwrap()).unwrap()
    }

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key() {
        let k = key();
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let sealed = k.seal(alice, b"secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(k.open(alice, &sealed).unwrap(), b"secret");
        assert!(k.open(bob, &sealed).is_err(), "bound to its user");
        assert!(key().open(alice, &sealed).is_err(), "bound to its key");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.open(alice, &tampered).is_err());
        assert_ne!(k.seal(alice, b"secret").unwrap(), sealed, "fresh nonce each time");
    }

    #[test]
    fn previous_keys_open_what_they_sealed_and_say_so() {
        let (old, new) = (
            SealingKey::generate_base64().unwrap(),
            SealingKey::generate_base64().unwrap(),
        );
        let sealed = SealingKey::from_base64(&old)
            .unwrap()
            .seal_bound(b"k1", b"secret")
            .unwrap();
        let rotated = SealingKey::from_base64(&new).unwrap().with_previous(&[&old]).unwrap();
        assert_eq!(rotated.open_bound(b"k1", &sealed).unwrap(), (b"secret".to_vec(), true));
        let resealed = rotated.seal_bound(b"k1", b"secret").unwrap();
        assert_eq!(
            rotated.open_bound(b"k1", &resealed).unwrap(),
            (b"secret".to_vec(), false)
        );
        assert!(rotated.open_bound(b"k2", &resealed).is_err(), "bound to its context");
        assert!(
            SealingKey::from_base64(&new)
                .unwrap()
                .open_bound(b"k1", &sealed)
                .is_err()
        );
        assert!(!is_sealed(b"0\x82plain DER"));
    }

    #[test]
    fn code_hashes_depend_on_key_user_and_purpose() {
        let k = key();
        let user = Uuid::now_v7();
        let h = k.code_hash("backup", user, "abcd");
        assert_eq!(h, k.code_hash("backup", user, "abcd"));
        assert_ne!(h, k.code_hash("sms", user, "abcd"));
        assert_ne!(h, k.code_hash("backup", Uuid::now_v7(), "abcd"));
        assert_ne!(h, key().code_hash("backup", user, "abcd"));
    }

    #[test]
    fn bad_key_material_is_refused() {
        assert!(SealingKey::from_base64("not base64!").is_err());
        assert!(SealingKey::from_bytes(&[0; 16]).is_err());
    }

    #[test]
    fn a_key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/mfa.key");
        let user = Uuid::now_v7();
        let sealed = SealingKey::load_or_create(&path).unwrap().seal(user, b"x").unwrap();
        assert_eq!(
            SealingKey::load_or_create(&path).unwrap().open(user, &sealed).unwrap(),
            b"x"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
