//! Contract tests of the users store, run against SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use chrono::Utc;
use fleet_kit::{
    Db, SharedClock, SystemClock, backend_tests,
    events::InProcessBus,
    outbox::OutboxRelay,
    testing::{TestBackend, database},
};
use fleet_proto::events::v1::event::Payload;
use fleet_users::{
    domain::{DisplayName, Email, Role, Status},
    store::{ListQuery, NewUser, StoreError, UserPatch, UserStore, user_store},
};
use uuid::Uuid;

struct Fixture {
    db: Db,
    store: Arc<dyn UserStore>,
    _database: fleet_kit::testing::TestDatabase,
}

async fn fixture(backend: TestBackend) -> Option<Fixture> {
    let database = database(backend).await?;
    let db = Db::connect(&database.url, "users").await.unwrap();
    fleet_users::migrate(&db).await.unwrap();
    Some(Fixture {
        store: user_store(&db),
        db,
        _database: database,
    })
}

impl Fixture {
    /// Creates a user that must be created.
    async fn add(&self, email: &str, name: &str) -> fleet_users::store::UserRecord {
        self.store.create(new_user(email, name), Utc::now()).await.unwrap()
    }
}

fn new_user(email: &str, name: &str) -> NewUser {
    NewUser {
        email: Email::parse(email).unwrap(),
        display_name: DisplayName::parse(name).unwrap(),
        role: Role::User,
    }
}

async fn creates_and_reads_users_by_id_and_any_case_email(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let created = f.add("Ada@Example.com", "Ada").await;
    assert_eq!(created.email, "ada@example.com");
    assert_eq!(created.role, "user");
    assert_eq!(created.status, "active");
    assert_eq!(created.version, 1);
    assert_eq!(f.store.get(created.id).await.unwrap(), Some(created.clone()));
    let by_email = f
        .store
        .get_by_email(&Email::parse("ADA@EXAMPLE.COM").unwrap())
        .await
        .unwrap();
    assert_eq!(by_email, Some(created));
    assert_eq!(f.store.get(Uuid::now_v7()).await.unwrap(), None);
}

async fn a_duplicate_email_in_any_case_is_refused(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    f.add("ada@example.com", "Ada").await;
    let err = f
        .store
        .create(new_user("ADA@example.COM", "Other"), Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::EmailTaken), "{err:?}");
}

async fn updates_bump_the_version_and_a_stale_version_is_refused(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let user = f.add("ada@example.com", "Ada").await;
    let patch = UserPatch {
        display_name: Some(DisplayName::parse("Ada L.").unwrap()),
        status: Some(Status::Disabled),
        expected_version: Some(1),
        ..UserPatch::default()
    };
    let updated = f.store.update(user.id, patch.clone(), Utc::now()).await.unwrap();
    assert_eq!(
        (updated.display_name.as_str(), updated.status.as_str(), updated.version),
        ("Ada L.", "disabled", 2)
    );
    let err = f.store.update(user.id, patch, Utc::now()).await.unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict { current: 2 }), "{err:?}");
    let err = f
        .store
        .update(Uuid::now_v7(), UserPatch::default(), Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn changing_to_a_taken_email_is_refused(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    f.add("ada@example.com", "Ada").await;
    let bob = f.add("bob@example.com", "Bob").await;
    let patch = UserPatch {
        email: Some(Email::parse("Ada@Example.com").unwrap()),
        ..UserPatch::default()
    };
    assert!(matches!(
        f.store.update(bob.id, patch, Utc::now()).await,
        Err(StoreError::EmailTaken)
    ));
}

async fn deleting_removes_the_user_once(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let user = f.add("ada@example.com", "Ada").await;
    f.store.delete(user.id, Utc::now()).await.unwrap();
    assert_eq!(f.store.get(user.id).await.unwrap(), None);
    assert!(matches!(
        f.store.delete(user.id, Utc::now()).await,
        Err(StoreError::NotFound)
    ));
}

async fn listing_pages_by_id_and_filters_literally(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    for (email, name) in [
        ("a@x.io", "Alpha"),
        ("b@x.io", "50% off"),
        ("c@x.io", "alphabet"),
        ("d@x.io", "Delta"),
    ] {
        f.store.create(new_user(email, name), Utc::now()).await.unwrap();
    }
    let all = f
        .store
        .list(&ListQuery {
            after: None,
            q: None,
            q_matches_email: false,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ordered by id");
    let page = f
        .store
        .list(&ListQuery {
            after: Some(all[1].id),
            q: None,
            q_matches_email: false,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(page, all[2..].to_vec());
    let search = |q: &str, q_matches_email: bool| {
        let query = ListQuery {
            after: None,
            q: Some(q.into()),
            q_matches_email,
            limit: 10,
        };
        let store = f.store.clone();
        async move {
            let rows = store.list(&query).await.unwrap();
            rows.into_iter().map(|u| u.display_name).collect::<Vec<_>>()
        }
    };
    assert_eq!(search("ALPHA", false).await, ["Alpha", "alphabet"]);
    assert_eq!(search("%", false).await, ["50% off"]);
    assert_eq!(search("d@x", true).await, ["Delta"]);
    assert!(
        search("d@x", false).await.is_empty(),
        "emails are searched for admins only"
    );
}

async fn sql_injection_strings_are_stored_and_returned_literally(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let name = "Robert'); DROP TABLE users;--";
    let email = "'or'1'='1--@example.com";
    let user = f.store.create(new_user(email, name), Utc::now()).await.unwrap();
    let read = f.store.get(user.id).await.unwrap().unwrap();
    assert_eq!((read.email.as_str(), read.display_name.as_str()), (email, name));
    let found = f.store.get_by_email(&Email::parse(email).unwrap()).await.unwrap();
    assert_eq!(found.map(|u| u.id), Some(user.id));
    let q = "' OR '1'='1";
    let hits = f
        .store
        .list(&ListQuery {
            after: None,
            q: Some(q.into()),
            q_matches_email: true,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(hits.is_empty(), "the filter matched literally, not as SQL");
    assert_eq!(
        f.store
            .list(&ListQuery {
                after: None,
                q: None,
                q_matches_email: false,
                limit: 10
            })
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn each_change_leaves_its_event_in_the_outbox_for_the_relay(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let bus = InProcessBus::default();
    let mut events = bus.subscribe();
    let clock: SharedClock = Arc::new(SystemClock);
    let relay = OutboxRelay::new(&f.db, Arc::new(bus.clone()), clock);
    let user = f.add("ada@example.com", "Ada").await;
    let patch = UserPatch {
        display_name: Some(DisplayName::parse("Ada L.").unwrap()),
        ..UserPatch::default()
    };
    f.store.update(user.id, patch, Utc::now()).await.unwrap();
    f.store.delete(user.id, Utc::now()).await.unwrap();
    assert_eq!(relay.backlog().await.unwrap(), 3);
    assert_eq!(relay.publish_pending().await.unwrap(), 3);
    assert_eq!(relay.backlog().await.unwrap(), 0);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let event = events.recv().await.unwrap();
        assert_eq!(event.subject_user_id, user.id.to_string());
        kinds.push(event.r#type.clone());
        if let Some(Payload::UserUpdated(u)) = &event.payload {
            assert_eq!(u.changed, ["display_name"]);
            assert_eq!(u.version, 2);
        }
    }
    assert_eq!(kinds, ["user.created", "user.updated", "user.deleted"]);
    assert_eq!(relay.publish_pending().await.unwrap(), 0, "nothing is published twice");
}

async fn a_change_and_its_event_commit_together_or_not_at_all(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let user = f.add("ada@example.com", "Ada").await;
    // Break the outbox so the event write fails after the change was made.
    let rename = "ALTER TABLE outbox RENAME TO outbox_broken";
    match &f.db {
        Db::Postgres(pool) => sqlx::query(rename).execute(pool).await.map(|_| ()),
        Db::Sqlite(pool) => sqlx::query(rename).execute(pool).await.map(|_| ()),
    }
    .unwrap();
    assert!(
        f.store
            .create(new_user("bob@example.com", "Bob"), Utc::now())
            .await
            .is_err()
    );
    let patch = UserPatch {
        display_name: Some(DisplayName::parse("Changed").unwrap()),
        ..UserPatch::default()
    };
    assert!(f.store.update(user.id, patch, Utc::now()).await.is_err());
    assert!(f.store.delete(user.id, Utc::now()).await.is_err());

    let bob = f
        .store
        .get_by_email(&Email::parse("bob@example.com").unwrap())
        .await
        .unwrap();
    assert!(bob.is_none(), "the insert was rolled back with its event");
    let ada = f.store.get(user.id).await.unwrap().expect("the delete was rolled back");
    assert_eq!(
        (ada.display_name.as_str(), ada.version),
        ("Ada", 1),
        "the update was rolled back"
    );
}

backend_tests!(
    creates_and_reads_users_by_id_and_any_case_email,
    a_duplicate_email_in_any_case_is_refused,
    updates_bump_the_version_and_a_stale_version_is_refused,
    changing_to_a_taken_email_is_refused,
    deleting_removes_the_user_once,
    listing_pages_by_id_and_filters_literally,
    sql_injection_strings_are_stored_and_returned_literally,
    each_change_leaves_its_event_in_the_outbox_for_the_relay,
    a_change_and_its_event_commit_together_or_not_at_all,
);
