//! Access tokens: the claims every Fleet token carries and their verification
//! against the auth service's public keys (JWKS). Every service verifies the
//! bearer token again (zero trust inside the cluster) through [`AuthLayer`].

use std::{sync::Arc, time::Duration as StdDuration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use fleet_proto::auth::v1::{GetJwksRequest, Jwk, Jwks, auth_service_client::AuthServiceClient};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tonic::{Request, Status};

use crate::grpc::FreshChannel;
use uuid::Uuid;

use self::keyset::KeySet;
use crate::{clock::SharedClock, revocation::RevokedSessions};

mod keyset;

pub use keyset::KEYS_MAX_AGE;

/// The `typ` header of an access token (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// The role of internal callers acting without an end user.
pub const SERVICE_ROLE: &str = "service";
/// The prefix of a service token's subject (`service:auth`).
pub const SERVICE_SUBJECT_PREFIX: &str = "service:";
/// Leeway for clock differences between the issuer and a verifier.
const EXPIRY_LEEWAY_SECS: i64 = 5;

/// Issuer, audience and lifetime shared by the signer and every verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenSettings {
    /// The `iss` claim.
    pub issuer: String,
    /// The `aud` claim.
    pub audience: String,
    /// Access-token lifetime, seconds.
    pub access_ttl_secs: u32,
    /// What fleet components present to auth for a service token (the
    /// gateway, to vouch for the client address it forwards). Unset: a
    /// key in `<data_dir>/service.key`, good for one host only.
    pub service_secret: crate::Secret,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: "fleet".into(),
            audience: "fleet-api".into(),
            access_ttl_secs: 900,
            service_secret: crate::Secret::default(),
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user id, or `service:<name>` for a service token.
    pub sub: String,
    /// The session id (user tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// "user", "admin" or "service".
    pub role: String,
    /// Authentication methods used (RFC 8176: "pwd", "otp", ...).
    #[serde(default)]
    pub amr: Vec<String>,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

/// Who is calling, as established from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An end user in a session.
    User {
        /// The user id.
        id: Uuid,
        /// The session the token belongs to.
        session_id: Uuid,
    },
    /// Another Fleet service.
    Service {
        /// Its name ("auth").
        name: String,
    },
}

/// The verified caller of a request, found in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Who.
    pub principal: Principal,
    /// "user", "admin" or "service".
    pub role: String,
    /// Authentication methods.
    pub amr: Vec<String>,
    /// When the token stops being valid.
    pub expires_at: DateTime<Utc>,
}

impl Identity {
    /// The end user's id, if a user is calling.
    pub fn user_id(&self) -> Option<Uuid> {
        match &self.principal {
            Principal::User { id, .. } => Some(*id),
            Principal::Service { .. } => None,
        }
    }

    /// The session id, if a user is calling.
    pub fn session_id(&self) -> Option<Uuid> {
        match &self.principal {
            Principal::User { session_id, .. } => Some(*session_id),
            Principal::Service { .. } => None,
        }
    }

    /// An administrator?
    pub fn is_admin(&self) -> bool {
        self.role == "admin" && matches!(self.principal, Principal::User { .. })
    }

    /// Another service?
    pub fn is_service(&self) -> bool {
        matches!(self.principal, Principal::Service { .. })
    }
}

/// The verified identity of a request, or `UNAUTHENTICATED`.
pub fn require_identity<T>(request: &Request<T>) -> Result<&Identity, Status> {
    request
        .extensions()
        .get::<Identity>()
        .ok_or_else(|| Status::unauthenticated("a bearer access token is required"))
}

/// The end user of a request, or `UNAUTHENTICATED` (also for service tokens).
pub fn require_user<T>(request: &Request<T>) -> Result<(Uuid, &Identity), Status> {
    let identity = require_identity(request)?;
    let id = identity
        .user_id()
        .ok_or_else(|| Status::unauthenticated("this call needs a user's access token"))?;
    Ok((id, identity))
}

/// A service caller, or `PERMISSION_DENIED`.
pub fn require_service<T>(request: &Request<T>) -> Result<&Identity, Status> {
    let identity = require_identity(request)?;
    if identity.is_service() {
        Ok(identity)
    } else {
        Err(Status::permission_denied("internal call"))
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, or one we cannot parse.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm outside the allow-list (only EdDSA).
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// Not an access token (`typ`).
    #[error("not an access token")]
    WrongType,
    /// No key with that `kid`, even after refetching the key set.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// `iss` is not ours.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` is not ours.
    #[error("token audience not accepted")]
    WrongAudience,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Its session was revoked.
    #[error("session revoked")]
    Revoked,
    /// The key set could not be fetched.
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

impl From<TokenError> for Status {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::KeysUnavailable => Status::unavailable(err.to_string()),
            _ => Status::unauthenticated(err.to_string()),
        }
    }
}

/// Where a verifier gets the signer's public keys.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync + 'static {
    /// The current key set.
    async fn fetch(&self) -> anyhow::Result<Jwks>;
}

/// The auth service's `GetJwks`, over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcKeySource {
    client: AuthServiceClient<FreshChannel>,
}

impl GrpcKeySource {
    /// Fetches from the auth service behind `channel`.
    pub fn new(channel: FreshChannel) -> Self {
        Self {
            client: AuthServiceClient::new(channel),
        }
    }
}

#[async_trait::async_trait]
impl KeySource for GrpcKeySource {
    async fn fetch(&self) -> anyhow::Result<Jwks> {
        let mut client = self.client.clone();
        Ok(client.get_jwks(GetJwksRequest {}).await?.into_inner())
    }
}

/// The decoding key of an Ed25519 JWK, if it is one.
pub fn decoding_key(jwk: &Jwk) -> Option<DecodingKey> {
    let x = URL_SAFE_NO_PAD.decode(&jwk.x).ok()?;
    (jwk.kty == "OKP" && jwk.crv == "Ed25519" && x.len() == 32)
        .then(|| DecodingKey::from_ed_components(&jwk.x).ok())
        .flatten()
}

/// Verifies access tokens: algorithm allow-list, `typ`, `kid` against a
/// key set that is kept fresh (see [`keyset`]), signature, `iss`, `aud`,
/// expiry by the injected clock, and revocation.
pub struct TokenVerifier {
    settings: TokenSettings,
    clock: SharedClock,
    revoked: RevokedSessions,
    keys: KeySet,
    /// Tokens that verified, by SHA-256, with their `kid`: a signature is
    /// checked once, not on every request. Expiry, revocation and that the
    /// key is still in the key set are checked on every use.
    verified: moka::sync::Cache<[u8; 32], (Identity, Arc<str>)>,
}

/// How long a verified token is remembered: a key withdrawn from the JWKS
/// stops being honoured within this time.
const VERIFIED_TTL: StdDuration = StdDuration::from_secs(60);

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier of tokens issued under `settings`, keys from `source`.
    pub fn new(
        settings: TokenSettings,
        source: Arc<dyn KeySource>,
        clock: SharedClock,
        revoked: RevokedSessions,
    ) -> Self {
        Self {
            settings,
            keys: KeySet::new(source, clock.clone()),
            clock,
            revoked,
            verified: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(VERIFIED_TTL)
                .build(),
        }
    }

    /// Changes how often an unknown `kid` may trigger a refetch.
    pub fn with_refetch_interval(mut self, interval: StdDuration) -> Self {
        self.keys.refetch_interval = Duration::from_std(interval).unwrap_or(self.keys.refetch_interval);
        self
    }

    /// Changes how old the key set may grow before it is fetched again.
    pub fn with_keys_max_age(mut self, age: StdDuration) -> Self {
        self.keys.max_age = Duration::from_std(age).unwrap_or(self.keys.max_age);
        self
    }

    /// The settings tokens are checked against.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// The identity a token proves, or why it proves none.
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let identity = match self.verified.get(&digest) {
            Some((identity, kid)) => {
                // A key withdrawn from the key set ends its tokens too.
                self.keys.key(&kid).await?;
                identity
            }
            None => {
                let (identity, kid) = self.verify_signed(token).await?;
                self.verified.insert(digest, (identity.clone(), kid));
                identity
            }
        };
        let now = self.clock.now();
        if now.timestamp() > identity.expires_at.timestamp() + EXPIRY_LEEWAY_SECS {
            return Err(TokenError::Expired);
        }
        if let Principal::User { session_id, .. } = &identity.principal
            && self.revoked.is_revoked(*session_id, now)
        {
            return Err(TokenError::Revoked);
        }
        Ok(identity)
    }

    /// Full verification: header, key, signature, claims.
    async fn verify_signed(&self, token: &str) -> Result<(Identity, Arc<str>), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(TokenError::WrongType);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.key(&kid).await?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        // Expiry is checked below against the injected clock.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed,
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        let expires_at = DateTime::from_timestamp(claims.exp, 0).ok_or(TokenError::Malformed)?;
        let principal = principal(&claims)?;
        let identity = Identity {
            principal,
            role: claims.role,
            amr: claims.amr,
            expires_at,
        };
        Ok((identity, Arc::from(kid)))
    }
}

fn principal(claims: &AccessClaims) -> Result<Principal, TokenError> {
    if let Some(name) = claims.sub.strip_prefix(SERVICE_SUBJECT_PREFIX) {
        if claims.role != SERVICE_ROLE || name.is_empty() {
            return Err(TokenError::Malformed);
        }
        return Ok(Principal::Service { name: name.to_string() });
    }
    if claims.role == SERVICE_ROLE {
        return Err(TokenError::Malformed);
    }
    let id = Uuid::parse_str(&claims.sub).map_err(|_| TokenError::Malformed)?;
    let session_id = claims
        .sid
        .as_deref()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or(TokenError::Malformed)?;
    Ok(Principal::User { id, session_id })
}

/// The bearer token of an `authorization` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;
    use crate::clock::{Clock, ManualClock};

    struct StaticKeys {
        jwks: std::sync::Mutex<Jwks>,
        down: std::sync::atomic::AtomicBool,
        fetches: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl KeySource for StaticKeys {
        async fn fetch(&self) -> anyhow::Result<Jwks> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            anyhow::ensure!(!self.down.load(Ordering::SeqCst), "auth is down");
            Ok(self.jwks.lock().unwrap().clone())
        }
    }

    struct Fixture {
        key: SigningKey,
        kid: String,
        clock: ManualClock,
        keys: Arc<StaticKeys>,
        verifier: TokenVerifier,
    }

    fn jwk(key: &SigningKey, kid: &str) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
            kid: kid.into(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }
    }

    fn fixture() -> Fixture {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let kid = "k1".to_string();
        let clock = ManualClock::new(Utc::now());
        let keys = Arc::new(StaticKeys {
            jwks: std::sync::Mutex::new(Jwks {
                keys: vec![jwk(&key, &kid)],
            }),
            down: std::sync::atomic::AtomicBool::new(false),
            fetches: AtomicUsize::new(0),
        });
        let verifier = TokenVerifier::new(
            TokenSettings::default(),
            keys.clone(),
            Arc::new(clock.clone()),
            RevokedSessions::new(),
        );
        Fixture {
            key,
            kid,
            clock,
            keys,
            verifier,
        }
    }

    impl Fixture {
        fn claims(&self) -> AccessClaims {
            let now = self.clock.now().timestamp();
            AccessClaims {
                iss: "fleet".into(),
                aud: "fleet-api".into(),
                sub: Uuid::now_v7().to_string(),
                sid: Some(Uuid::now_v7().to_string()),
                role: "user".into(),
                amr: vec!["pwd".into()],
                iat: now,
                exp: now + 900,
                jti: Uuid::now_v7().to_string(),
            }
        }

        fn header(&self) -> Header {
            let mut header = Header::new(Algorithm::EdDSA);
            header.typ = Some(ACCESS_TOKEN_TYPE.into());
            header.kid = Some(self.kid.clone());
            header
        }

        fn sign(&self, header: &Header, claims: &AccessClaims) -> String {
            let der = self.key.to_pkcs8_der().unwrap();
            jsonwebtoken::encode(header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
        }
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[tokio::test]
    async fn a_valid_token_yields_the_identity() {
        let f = fixture();
        let claims = f.claims();
        let identity = f.verifier.verify(&f.sign(&f.header(), &claims)).await.unwrap();
        assert_eq!(identity.user_id().unwrap().to_string(), claims.sub);
        assert_eq!(identity.role, "user");
        assert!(!identity.is_admin());
    }

    #[tokio::test]
    async fn alg_none_is_rejected() {
        let f = fixture();
        let claims = serde_json::to_string(&f.claims()).unwrap();
        let token = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#),
            b64(&claims)
        );
        assert!(f.verifier.verify(&token).await.is_err());
    }

    #[tokio::test]
    async fn hs256_signed_with_the_public_key_is_rejected() {
        let f = fixture();
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        header.kid = Some(f.kid.clone());
        let public = f.key.verifying_key().to_bytes();
        let x = URL_SAFE_NO_PAD.encode(public);
        for secret in [public.as_slice(), x.as_bytes()] {
            let token = jsonwebtoken::encode(&header, &f.claims(), &EncodingKey::from_secret(secret)).unwrap();
            assert_eq!(f.verifier.verify(&token).await, Err(TokenError::AlgorithmNotAllowed));
        }
    }

    #[tokio::test]
    async fn a_wrong_audience_is_rejected() {
        let f = fixture();
        let claims = AccessClaims {
            aud: "someone-else".into(),
            ..f.claims()
        };
        assert_eq!(
            f.verifier.verify(&f.sign(&f.header(), &claims)).await,
            Err(TokenError::WrongAudience)
        );
    }

    #[tokio::test]
    async fn a_wrong_issuer_is_rejected() {
        let f = fixture();
        let claims = AccessClaims {
            iss: "evil".into(),
            ..f.claims()
        };
        assert_eq!(
            f.verifier.verify(&f.sign(&f.header(), &claims)).await,
            Err(TokenError::WrongIssuer)
        );
    }

    #[tokio::test]
    async fn a_wrong_typ_is_rejected() {
        let f = fixture();
        for typ in [Some("JWT"), None] {
            let mut header = f.header();
            header.typ = typ.map(str::to_string);
            assert_eq!(
                f.verifier.verify(&f.sign(&header, &f.claims())).await,
                Err(TokenError::WrongType)
            );
        }
    }

    #[tokio::test]
    async fn an_expired_token_is_rejected() {
        let f = fixture();
        let token = f.sign(&f.header(), &f.claims());
        f.clock.advance(Duration::seconds(900 + EXPIRY_LEEWAY_SECS + 1));
        assert_eq!(f.verifier.verify(&token).await, Err(TokenError::Expired));
    }

    #[tokio::test]
    async fn an_unknown_kid_is_rejected_and_refetches_at_most_once_per_interval() {
        let f = fixture();
        let mut header = f.header();
        header.kid = Some("unknown".into());
        let token = f.sign(&header, &f.claims());
        assert_eq!(f.verifier.verify(&token).await, Err(TokenError::UnknownKey));
        assert_eq!(f.verifier.verify(&token).await, Err(TokenError::UnknownKey));
        assert_eq!(f.keys.fetches.load(Ordering::SeqCst), 1);
        f.clock.advance(Duration::seconds(31));
        assert_eq!(f.verifier.verify(&token).await, Err(TokenError::UnknownKey));
        assert_eq!(f.keys.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_key_withdrawn_from_the_jwks_stops_being_trusted_once_the_set_is_old() {
        let f = fixture();
        let token = f.sign(&f.header(), &f.claims());
        f.verifier.verify(&token).await.unwrap();
        f.keys.jwks.lock().unwrap().keys.clear();
        f.clock.advance(Duration::seconds(60));
        assert!(f.verifier.verify(&token).await.is_ok(), "the set is still fresh");
        assert_eq!(f.keys.fetches.load(Ordering::SeqCst), 1);
        f.clock.advance(KEYS_MAX_AGE);
        assert_eq!(f.verifier.verify(&token).await, Err(TokenError::UnknownKey));
        assert_eq!(f.keys.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_old_set_whose_refresh_fails_keeps_serving_and_retries_after_an_interval() {
        let f = fixture();
        let token = f.sign(&f.header(), &f.claims());
        f.verifier.verify(&token).await.unwrap();
        f.keys.down.store(true, Ordering::SeqCst);
        f.clock.advance(KEYS_MAX_AGE);
        for _ in 0..3 {
            assert!(f.verifier.verify(&token).await.is_ok());
        }
        assert_eq!(f.keys.fetches.load(Ordering::SeqCst), 2, "one failed refresh, no storm");
        f.clock.advance(Duration::seconds(31));
        f.verifier.verify(&token).await.unwrap();
        assert_eq!(f.keys.fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_tampered_signature_or_payload_is_rejected() {
        let f = fixture();
        let token = f.sign(&f.header(), &f.claims());
        let (head_and_body, _) = token.rsplit_once('.').unwrap();
        let other = f.sign(&f.header(), &f.claims());
        let (_, other_sig) = other.rsplit_once('.').unwrap();
        let forged = format!("{head_and_body}.{other_sig}");
        assert_eq!(f.verifier.verify(&forged).await, Err(TokenError::BadSignature));
    }

    #[tokio::test]
    async fn a_revoked_session_is_rejected() {
        let f = fixture();
        let claims = f.claims();
        let sid = Uuid::parse_str(claims.sid.as_deref().unwrap()).unwrap();
        f.verifier
            .revoked
            .revoke(sid, f.clock.now() + Duration::minutes(15), f.clock.now());
        assert_eq!(
            f.verifier.verify(&f.sign(&f.header(), &claims)).await,
            Err(TokenError::Revoked)
        );
    }

    #[tokio::test]
    async fn service_tokens_need_the_service_role() {
        let f = fixture();
        let claims = AccessClaims {
            sub: "service:auth".into(),
            sid: None,
            role: "admin".into(),
            ..f.claims()
        };
        assert_eq!(
            f.verifier.verify(&f.sign(&f.header(), &claims)).await,
            Err(TokenError::Malformed)
        );
        let claims = AccessClaims {
            role: SERVICE_ROLE.into(),
            ..claims
        };
        let identity = f.verifier.verify(&f.sign(&f.header(), &claims)).await.unwrap();
        assert!(identity.is_service());
    }

    #[tokio::test]
    async fn a_remembered_token_still_expires_and_is_still_revoked() {
        let f = fixture();
        let claims = f.claims();
        let token = f.sign(&f.header(), &claims);
        assert!(f.verifier.verify(&token).await.is_ok());
        assert!(
            f.verifier.verify(&token).await.is_ok(),
            "served from the verified-token cache"
        );
        assert_eq!(f.keys.fetches.load(Ordering::SeqCst), 1);
        let sid = Uuid::parse_str(claims.sid.as_deref().unwrap()).unwrap();
        f.verifier
            .revoked
            .revoke(sid, f.clock.now() + Duration::minutes(15), f.clock.now());
        assert_eq!(f.verifier.verify(&token).await, Err(TokenError::Revoked));

        let other = f.sign(&f.header(), &f.claims());
        assert!(f.verifier.verify(&other).await.is_ok());
        f.clock.advance(Duration::seconds(900 + EXPIRY_LEEWAY_SECS + 1));
        assert_eq!(f.verifier.verify(&other).await, Err(TokenError::Expired));
    }

    #[test]
    fn bearer_values_are_parsed_strictly() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
