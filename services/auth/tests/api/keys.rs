//! Signing keys at rest: sealed with the MFA key, those stored in the clear
//! before are sealed at start, and a rotated MFA key reseals them.

use std::sync::Arc;

use chrono::Utc;
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use fleet_auth::{
    SealingKey, TokenIssuer,
    mfa::sealing::is_sealed,
    store::{SigningKeyRecord, auth_store},
};
use fleet_kit::{
    Db, SystemClock, backend_tests,
    revocation::RevokedSessions,
    testing::{TestBackend, database},
    token::{KeySource, TokenSettings, TokenVerifier},
};

fn sealing(encoded: &str, previous: &[&str]) -> Arc<SealingKey> {
    Arc::new(
        SealingKey::from_base64(encoded)
            .unwrap()
            .with_previous(previous)
            .unwrap(),
    )
}

/// A service token from `issuer` verifies against its own key set.
async fn signs(issuer: Arc<TokenIssuer>) {
    let token = issuer.service_token("test").unwrap();
    let verifier = TokenVerifier::new(
        TokenSettings::default(),
        issuer as Arc<dyn KeySource>,
        Arc::new(SystemClock),
        RevokedSessions::new(),
    );
    assert!(verifier.verify(&token).await.unwrap().is_service());
}

async fn signing_keys_are_sealed_at_rest_and_follow_a_rotated_mfa_key(backend: TestBackend) {
    let Some(database) = database(backend).await else {
        return;
    };
    let db = Db::connect(&database.url, "auth").await.unwrap();
    fleet_auth::migrate(&db).await.unwrap();
    let store = auth_store(&db);
    let load =
        |key: Arc<SealingKey>| TokenIssuer::load(store.clone(), TokenSettings::default(), Arc::new(SystemClock), key);

    // A key stored in the clear, as before keys were sealed.
    let signing = SigningKey::from_bytes(&[9u8; 32]);
    let der = signing.to_pkcs8_der().unwrap().as_bytes().to_vec();
    let now = Utc::now();
    let legacy = SigningKeyRecord {
        kid: "legacy".into(),
        private_key: der.clone(),
        public_key: signing.verifying_key().to_bytes().to_vec(),
        created_at: now,
        active_from: now,
    };
    store.add_signing_key(&legacy).await.unwrap();

    let old = SealingKey::generate_base64().unwrap();
    signs(Arc::new(load(sealing(&old, &[])).await.unwrap())).await;
    let stored = store.signing_keys().await.unwrap();
    assert!(is_sealed(&stored[0].private_key), "sealed at start");
    assert!(
        !stored[0]
            .private_key
            .windows(32)
            .any(|w| der.windows(32).any(|d| d == w)),
        "no part of the private key is left in the clear"
    );
    // A rotation adds a key sealed like the first.
    let issuer = Arc::new(load(sealing(&old, &[])).await.unwrap());
    issuer.rotate().await.unwrap();
    assert!(
        store
            .signing_keys()
            .await
            .unwrap()
            .iter()
            .all(|k| is_sealed(&k.private_key))
    );

    // The MFA key rotates: the new key with the old one as previous...
    let new = SealingKey::generate_base64().unwrap();
    signs(Arc::new(load(sealing(&new, &[&old])).await.unwrap())).await;
    // ...after which the new key alone opens every signing key.
    signs(Arc::new(load(sealing(&new, &[])).await.unwrap())).await;

    // A wrong key refuses to start and says which key it could not open.
    let stranger = SealingKey::generate_base64().unwrap();
    let err = load(sealing(&stranger, &[])).await.err().unwrap();
    assert!(format!("{err:#}").contains("opening signing key"), "{err:#}");
}

backend_tests!(signing_keys_are_sealed_at_rest_and_follow_a_rotated_mfa_key);
