//! Signing keys and token issuance. Access tokens are Ed25519 JWTs with a
//! `kid`; keys are persisted in the auth store and rotate: a new key signs
//! from its creation on, and retired keys stay in the JWKS until every token
//! they signed has expired.

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

use crate::store::{AuthStore, SigningKeyRecord};

/// Service tokens live as long as access tokens but are minted per call.
const SERVICE_TOKEN_TTL_SECS: i64 = 300;

struct ActiveKey {
    kid: String,
    key: EncodingKey,
}

/// Signs access and service tokens with the newest key.
pub struct TokenIssuer {
    settings: TokenSettings,
    store: Arc<dyn AuthStore>,
    clock: SharedClock,
    active: RwLock<Option<ActiveKey>>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A new key record, its private half PKCS#8-encoded.
fn generate_key(at: DateTime<Utc>) -> anyhow::Result<SigningKeyRecord> {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    let private = signing.to_pkcs8_der().context("encoding a signing key")?;
    let public = signing.verifying_key().to_bytes().to_vec();
    let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&public)[..12]);
    Ok(SigningKeyRecord {
        kid,
        private_key: private.as_bytes().to_vec(),
        public_key: public,
        created_at: at,
        retired_at: None,
    })
}

impl TokenIssuer {
    /// Loads the newest key, creating the first one if there is none.
    pub async fn load(store: Arc<dyn AuthStore>, settings: TokenSettings, clock: SharedClock) -> anyhow::Result<Self> {
        let issuer = Self {
            settings,
            store,
            clock,
            active: RwLock::new(None),
        };
        if !issuer.reload().await? {
            issuer.rotate().await?;
        }
        Ok(issuer)
    }

    /// Re-reads the newest key (another replica may have rotated); false
    /// when there is none.
    pub async fn reload(&self) -> anyhow::Result<bool> {
        let keys = self.store.signing_keys().await?;
        let Some(newest) = keys
            .into_iter()
            .filter(|k| k.retired_at.is_none())
            .max_by_key(|k| k.created_at)
        else {
            return Ok(false);
        };
        let active = ActiveKey {
            kid: newest.kid,
            key: EncodingKey::from_ed_der(&newest.private_key),
        };
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Some(active);
        Ok(true)
    }

    /// Adds a new key and signs with it from now on; returns its `kid`.
    pub async fn rotate(&self) -> anyhow::Result<String> {
        let record = generate_key(self.clock.now())?;
        let kid = record.kid.clone();
        self.store.add_signing_key(&record).await?;
        self.reload().await?;
        tracing::info!(kid, "signing key rotated");
        Ok(kid)
    }

    /// The issuance settings.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        let guard = self.active.read().unwrap_or_else(|p| p.into_inner());
        let active = guard.as_ref().context("no signing key loaded")?;
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

    /// The public keys a verifier must know: the active ones, and retired
    /// ones whose tokens may still be valid.
    pub async fn jwks(&self) -> anyhow::Result<Jwks> {
        let now = self.clock.now();
        let horizon = Duration::seconds(i64::from(self.settings.access_ttl_secs).max(SERVICE_TOKEN_TTL_SECS) + 60);
        let keys = self
            .store
            .signing_keys()
            .await?
            .into_iter()
            .filter(|k| k.retired_at.is_none_or(|at| at + horizon > now))
            .map(|k| Jwk {
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
