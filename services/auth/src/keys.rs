//! Signing keys and token issuance. Access tokens are Ed25519 JWTs with a
//! `kid`; keys are persisted in the auth store and rotate: a new key signs
//! from its creation on, and retired keys stay in the JWKS until every token
//! they signed has expired. Private keys are stored sealed with the MFA
//! key (bound to their `kid`): a copy of the database cannot mint tokens.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use fleet_kit::{
    SharedClock,
    token::{ACCESS_TOKEN_TYPE, AccessClaims, KeySource, SERVICE_ROLE, SERVICE_SUBJECT_PREFIX, TokenSettings},
};
use fleet_proto::auth::v1::{Jwk, Jwks};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::{RngCore, rngs::OsRng};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    mfa::sealing::{SealingKey, is_sealed},
    store::{AuthStore, SigningKeyRecord},
};

/// Service tokens are minted per call and live briefly.
pub const SERVICE_TOKEN_TTL_SECS: i64 = 300;
/// A rotated key signs only after this delay: longer than the interval at
/// which verifiers may refetch the key set, so none meets an unknown `kid`.
pub const KEY_ACTIVATION_DELAY_SECS: i64 = 60;

struct LoadedKey {
    kid: String,
    key: EncodingKey,
    active_from: DateTime<Utc>,
}

/// Signs access and service tokens with the key active at the time.
pub struct TokenIssuer {
    settings: TokenSettings,
    store: Arc<dyn AuthStore>,
    clock: SharedClock,
    sealing: Arc<SealingKey>,
    /// Every key, in activation order.
    keys: RwLock<Vec<LoadedKey>>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a signing key's seal is bound to.
fn seal_context(kid: &str) -> Vec<u8> {
    format!("fleet-signing-key:{kid}").into_bytes()
}

/// The PKCS#8 private key of a stored (sealed) signing key.
pub fn open_signing_key(sealing: &SealingKey, kid: &str, stored: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(sealing.open_bound(&seal_context(kid), stored)?.0)
}

/// A new key record, its private half PKCS#8-encoded and sealed.
fn generate_key(
    sealing: &SealingKey,
    created_at: DateTime<Utc>,
    active_from: DateTime<Utc>,
) -> anyhow::Result<SigningKeyRecord> {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    let private = signing.to_pkcs8_der().context("encoding a signing key")?;
    let public = signing.verifying_key().to_bytes().to_vec();
    let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&public)[..12]);
    let private_key = sealing.seal_bound(&seal_context(&kid), private.as_bytes())?;
    Ok(SigningKeyRecord {
        kid,
        private_key,
        public_key: public,
        created_at,
        active_from,
    })
}

impl TokenIssuer {
    /// Loads the keys, creating the first one (active at once) if there is none.
    pub async fn load(
        store: Arc<dyn AuthStore>,
        settings: TokenSettings,
        clock: SharedClock,
        sealing: Arc<SealingKey>,
    ) -> anyhow::Result<Self> {
        let issuer = Self {
            settings,
            store,
            clock,
            sealing,
            keys: RwLock::new(Vec::new()),
        };
        if !issuer.reload().await? {
            let now = issuer.clock.now();
            issuer
                .store
                .add_signing_key(&generate_key(&issuer.sealing, now, now)?)
                .await?;
            issuer.reload().await?;
            tracing::info!("created the first signing key");
        }
        Ok(issuer)
    }

    /// Re-reads the keys (another replica may have rotated); false when
    /// there are none. A key stored in the clear (before keys were sealed)
    /// or sealed with a previous MFA key is sealed anew with the current one.
    pub async fn reload(&self) -> anyhow::Result<bool> {
        let mut keys = Vec::new();
        for record in self.store.signing_keys().await? {
            let context = seal_context(&record.kid);
            let (der, reseal) = if is_sealed(&record.private_key) {
                self.sealing
                    .open_bound(&context, &record.private_key)
                    .with_context(|| format!("opening signing key {}", record.kid))?
            } else {
                (record.private_key.clone(), true)
            };
            if reseal {
                let sealed = self.sealing.seal_bound(&context, &der)?;
                self.store.reseal_signing_key(&record.kid, &sealed).await?;
                tracing::info!(kid = record.kid, "sealed a signing key with the current MFA key");
            }
            keys.push(LoadedKey {
                key: EncodingKey::from_ed_der(&der),
                kid: record.kid,
                active_from: record.active_from,
            });
        }
        let found = !keys.is_empty();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(found)
    }

    /// Adds a key that is published now and signs after
    /// [`KEY_ACTIVATION_DELAY_SECS`]; returns its `kid` and activation time.
    pub async fn rotate(&self) -> anyhow::Result<(String, DateTime<Utc>)> {
        let now = self.clock.now();
        let active_from = now + Duration::seconds(KEY_ACTIVATION_DELAY_SECS);
        let record = generate_key(&self.sealing, now, active_from)?;
        let kid = record.kid.clone();
        self.store.add_signing_key(&record).await?;
        self.reload().await?;
        tracing::info!(kid, %active_from, "signing key added");
        Ok((kid, active_from))
    }

    /// The issuance settings.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        let now = self.clock.now();
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        // The newest active key; before any is active, the oldest.
        let active = keys
            .iter()
            .rev()
            .find(|k| k.active_from <= now)
            .or_else(|| keys.first())
            .context("no signing key loaded")?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        header.kid = Some(active.kid.clone());
        jsonwebtoken::encode(&header, claims, &active.key).context("signing a token")
    }

    /// An access token for a user's session; returns it with its expiry.
    pub fn access_token(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        role: &str,
        amr: &[String],
    ) -> anyhow::Result<(String, DateTime<Utc>)> {
        let now = self.clock.now();
        let exp = now + Duration::seconds(i64::from(self.settings.access_ttl_secs));
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: user_id.to_string(),
            sid: Some(session_id.to_string()),
            role: role.to_string(),
            amr: amr.to_vec(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            jti: Uuid::now_v7().to_string(),
        };
        Ok((self.sign(&claims)?, exp))
    }

    /// A short-lived token for calls the service `name` makes on its own.
    pub fn service_token(&self, name: &str) -> anyhow::Result<String> {
        let now = self.clock.now();
        self.sign(&AccessClaims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: format!("{SERVICE_SUBJECT_PREFIX}{name}"),
            sid: None,
            role: SERVICE_ROLE.into(),
            amr: Vec::new(),
            iat: now.timestamp(),
            exp: (now + Duration::seconds(SERVICE_TOKEN_TTL_SECS)).timestamp(),
            jti: Uuid::now_v7().to_string(),
        })
    }

    /// The public keys a verifier must know: keys not yet active, the active
    /// one, and older ones whose tokens may still be valid.
    pub async fn jwks(&self) -> anyhow::Result<Jwks> {
        let now = self.clock.now();
        let lifetime = i64::from(self.settings.access_ttl_secs).max(SERVICE_TOKEN_TTL_SECS);
        let horizon = Duration::seconds(lifetime + 60);
        let records = self.store.signing_keys().await?;
        // A key is superseded once the next one in activation order is active.
        let superseded: Vec<Option<DateTime<Utc>>> = (0..records.len())
            .map(|i| records.get(i + 1).map(|next| next.active_from).filter(|at| *at <= now))
            .collect();
        let keys = records
            .into_iter()
            .zip(superseded)
            .filter(|(_, superseded)| superseded.is_none_or(|at| at + horizon > now))
            .map(|(k, _)| Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(&k.public_key),
                kid: k.kid,
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect();
        Ok(Jwks { keys })
    }
}

/// The auth service's own verifier reads keys straight from the issuer.
#[async_trait::async_trait]
impl KeySource for TokenIssuer {
    async fn fetch(&self) -> anyhow::Result<Jwks> {
        self.jwks().await
    }
}
