//! Contract tests of the auth store, run against SQLite and PostgreSQL.

use std::sync::Arc;

use chrono::{Duration, Utc};
use fleet_auth::store::{
    AuthStore, Counter, NewSession, Revocation, Revoke, RevokeReason, Rotation, SigningKeyRecord, auth_store,
};
use fleet_kit::{
    Db, SystemClock, backend_tests,
    events::InProcessBus,
    outbox::OutboxRelay,
    testing::{TestBackend, TestDatabase, database},
};
use uuid::Uuid;

struct Fixture {
    db: Db,
    store: Arc<dyn AuthStore>,
    _database: TestDatabase,
}

async fn fixture(backend: TestBackend) -> Option<Fixture> {
    let database = database(backend).await?;
    let db = Db::connect(&database.url, "auth").await.unwrap();
    fleet_auth::migrate(&db).await.unwrap();
    Some(Fixture {
        store: auth_store(&db),
        db,
        _database: database,
    })
}

fn session(user_id: Uuid, token: &[u8]) -> NewSession {
    NewSession {
        id: Uuid::now_v7(),
        user_id,
        expires_at: Utc::now() + Duration::days(30),
        ip: "203.0.113.7".into(),
        user_agent: "test".into(),
        amr: vec!["pwd".into()],
        refresh_hash: token.to_vec(),
    }
}

fn revocation(reason: RevokeReason) -> Revocation {
    let at = Utc::now();
    Revocation {
        reason,
        at,
        tokens_expire_at: at + Duration::minutes(15),
    }
}

async fn attempts_are_counted_by_compare_and_set(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let user = Uuid::now_v7();
    f.store
        .insert_credentials(user, "$argon2id$hash", Utc::now())
        .await
        .unwrap();
    for counter in [Counter::Password, Counter::SecondFactor] {
        let other = if counter == Counter::Password {
            Counter::SecondFactor
        } else {
            Counter::Password
        };
        assert!(
            f.store
                .count_attempt(user, counter, 0, 1, None, Utc::now())
                .await
                .unwrap()
        );
        assert!(
            !f.store
                .count_attempt(user, counter, 0, 1, None, Utc::now())
                .await
                .unwrap(),
            "a stale count loses"
        );
        let until = Utc::now() + Duration::seconds(30);
        assert!(
            f.store
                .count_attempt(user, counter, 1, 2, Some(until), Utc::now())
                .await
                .unwrap()
        );
        let creds = f.store.credentials(user).await.unwrap().unwrap();
        assert_eq!(creds.failures(counter).0, 2);
        assert_eq!(
            creds.failures(counter).1.map(|t| t.timestamp()),
            Some(until.timestamp())
        );
        assert_eq!(creds.failures(other), (0, None), "the counters are apart");
        assert!(f.store.clear_failures(user, &[other], Utc::now()).await.unwrap());
        assert_eq!(f.store.credentials(user).await.unwrap().unwrap().failures(counter).0, 2);
        assert!(f.store.clear_failures(user, &[counter], Utc::now()).await.unwrap());
        let creds = f.store.credentials(user).await.unwrap().unwrap();
        assert_eq!(creds.failures(counter), (0, None));
    }
}

async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let user = Uuid::now_v7();
    let s = session(user, b"first");
    f.store.start_session(&s, &[], Utc::now()).await.unwrap();
    let expiry = Utc::now() + Duration::minutes(15);
    match f
        .store
        .rotate_refresh(b"first", b"second", Utc::now(), expiry)
        .await
        .unwrap()
    {
        Rotation::Rotated(rotated) => assert_eq!(rotated.id, s.id),
        other => panic!("expected a rotation, got {other:?}"),
    }
    assert!(matches!(
        f.store.rotate_refresh(b"first", b"third", Utc::now(), expiry).await.unwrap(),
        Rotation::Reused { session_id } if session_id == s.id
    ));
    assert!(!f.store.session(s.id).await.unwrap().unwrap().is_active(Utc::now()));
    assert!(matches!(
        f.store
            .rotate_refresh(b"second", b"fourth", Utc::now(), expiry)
            .await
            .unwrap(),
        Rotation::Invalid
    ));
    assert!(matches!(
        f.store
            .rotate_refresh(b"never", b"x", Utc::now(), expiry)
            .await
            .unwrap(),
        Rotation::Invalid
    ));
}

async fn revocations_write_session_revoked_events(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let user = Uuid::now_v7();
    let keep = session(user, b"a");
    let other = session(user, b"b");
    f.store.start_session(&keep, &[], Utc::now()).await.unwrap();
    f.store.start_session(&other, &[], Utc::now()).await.unwrap();
    f.store.insert_credentials(user, "old", Utc::now()).await.unwrap();
    let revoked = f
        .store
        .change_password(user, "new", keep.id, revocation(RevokeReason::PasswordChanged))
        .await
        .unwrap();
    assert_eq!(revoked, [other.id]);
    assert_eq!(f.store.credentials(user).await.unwrap().unwrap().password_hash, "new");
    let active: Vec<Uuid> = f
        .store
        .active_sessions(user, Utc::now())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(active, [keep.id]);

    let bus = InProcessBus::default();
    let mut events = bus.subscribe();
    let relay = OutboxRelay::new(&f.db, Arc::new(bus), Arc::new(SystemClock));
    assert_eq!(relay.publish_pending().await.unwrap(), 2);
    let first = events.recv().await.unwrap();
    let second = events.recv().await.unwrap();
    assert_eq!(
        (first.r#type.as_str(), second.r#type.as_str()),
        ("session.revoked", "password.changed")
    );

    assert!(
        f.store
            .revoke(user, Revoke::One(other.id), revocation(RevokeReason::Revoked))
            .await
            .unwrap()
            .is_empty()
    );
    let gone = f
        .store
        .forget_user(user, revocation(RevokeReason::UserDeleted))
        .await
        .unwrap();
    assert_eq!(gone, [keep.id]);
    assert!(f.store.credentials(user).await.unwrap().is_none());
}

async fn signing_keys_are_kept_in_activation_order(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let key = |kid: &str, at, active_from| SigningKeyRecord {
        kid: kid.into(),
        private_key: vec![1, 2, 3],
        public_key: vec![4; 32],
        created_at: at,
        active_from,
    };
    let t0 = Utc::now();
    f.store
        .add_signing_key(&key("k2", t0, t0 + Duration::seconds(60)))
        .await
        .unwrap();
    f.store.add_signing_key(&key("k1", t0, t0)).await.unwrap();
    let keys = f.store.signing_keys().await.unwrap();
    assert_eq!(keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
    assert_eq!(
        keys[1].active_from.timestamp(),
        (t0 + Duration::seconds(60)).timestamp()
    );
    assert_eq!(keys[1].public_key, vec![4; 32]);
}

backend_tests!(
    attempts_are_counted_by_compare_and_set,
    refresh_tokens_rotate_once_and_reuse_revokes_the_family,
    revocations_write_session_revoked_events,
    signing_keys_are_kept_in_activation_order,
);
