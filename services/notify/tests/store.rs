//! Contract tests of the notify store, run against SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fleet_kit::{
    Db, backend_tests,
    events::new_event,
    testing::{TestBackend, TestDatabase, database},
};
use fleet_notify::{
    kinds::{Plan, plan},
    store::{Attempted, FIRST, NewPreferences, NotifyStore, micros, notify_store, status},
};
use fleet_proto::events::v1::{
    LoginSucceeded, MfaEnabled, PasswordChanged, TransferExportCompleted, UserCreated, UserDeleted, event::Payload,
};
use uuid::Uuid;

struct Fixture {
    store: Arc<dyn NotifyStore>,
    _database: TestDatabase,
}

async fn fixture(backend: TestBackend) -> Option<Fixture> {
    let database = database(backend).await?;
    let db = Db::connect(&database.url, "notify").await.unwrap();
    fleet_notify::migrate(&db).await.unwrap();
    Some(Fixture {
        store: notify_store(&db),
        _database: database,
    })
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn event(user: Uuid, at: DateTime<Utc>, payload: Payload) -> Plan {
    plan(&new_event("test", Some(user), at, payload)).unwrap()
}

fn login(user: Uuid, at: DateTime<Utc>, ua: &str, ip: &str) -> Plan {
    event(
        user,
        at,
        Payload::LoginSucceeded(LoginSucceeded {
            session_id: Uuid::now_v7().to_string(),
            ip: ip.into(),
            user_agent: ua.into(),
            amr: vec!["pwd".into()],
        }),
    )
}

fn password_changed(user: Uuid, at: DateTime<Utc>) -> Plan {
    event(
        user,
        at,
        Payload::PasswordChanged(PasswordChanged { sessions_revoked: 1 }),
    )
}

fn exported(user: Uuid, at: DateTime<Utc>) -> Plan {
    event(
        user,
        at,
        Payload::TransferExportCompleted(TransferExportCompleted {
            format: "json".into(),
            ..TransferExportCompleted::default()
        }),
    )
}

async fn kinds_of(store: &dyn NotifyStore, user: Uuid) -> Vec<String> {
    let (rows, _) = store.feed(user, false, FIRST, 100).await.unwrap();
    rows.into_iter().map(|r| r.kind).collect()
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

async fn a_redelivered_event_writes_one_notification(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    let changed = password_changed(ada, t0());
    // Twice in one batch, then again in another.
    let first = f
        .store
        .ingest(&[changed.clone(), changed.clone()], false, t0())
        .await
        .unwrap();
    let again = f.store.ingest(&[changed], false, t0()).await.unwrap();
    assert_eq!((first.notifications, again.notifications), (1, 0));
    let (rows, unread) = f.store.feed(ada, false, FIRST, 10).await.unwrap();
    assert_eq!((rows.len(), unread), (1, 1));
}

async fn only_logins_from_new_devices_or_networks_are_news(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    let at = |m| t0() + Duration::minutes(m);
    let plans = [
        // The first login of an account is no news.
        login(ada, at(1), "curl/8.5.0", "203.0.113.7"),
        // The same device on the same /24.
        login(ada, at(2), "curl/8.6.0", "203.0.113.99"),
        // A new device on a known network, then a new network.
        login(ada, at(3), FIREFOX, "203.0.113.7"),
        login(ada, at(4), FIREFOX, "198.51.100.9"),
        // IPv6 neighbours in one /64.
        login(ada, at(5), FIREFOX, "2001:db8:1:2::1"),
        login(ada, at(6), FIREFOX, "2001:db8:1:2::ffff"),
    ];
    f.store.ingest(&plans[..2], false, at(2)).await.unwrap();
    assert!(kinds_of(f.store.as_ref(), ada).await.is_empty());
    f.store.ingest(&plans[2..], false, at(6)).await.unwrap();
    let (rows, unread) = f.store.feed(ada, false, FIRST, 10).await.unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(unread, 3);
    assert!(rows.iter().all(|r| r.kind == "new_device_login"));
    let data: serde_json::Value = serde_json::from_str(&rows[2].data).unwrap();
    assert_eq!(data["ip"], "203.0.113.7");
    assert_eq!(data["device"], "Firefox");
    // Replayed, the same logins say nothing new.
    f.store.ingest(&plans, false, at(7)).await.unwrap();
    assert_eq!(kinds_of(f.store.as_ref(), ada).await.len(), 3);
}

async fn preferences_mute_optional_kinds_but_never_security_ones(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    let prefs = NewPreferences {
        email_enabled: false,
        muted: vec!["export_completed".into(), "password_changed".into()],
        webhook_url: String::new(),
        new_secret: "whsec_unused".into(),
    };
    let (account, secret_set) = f.store.set_preferences(ada, &prefs).await.unwrap();
    assert!(!secret_set);
    assert_eq!(account.muted(), vec!["export_completed", "password_changed"]);
    f.store
        .ingest(&[exported(ada, t0()), password_changed(ada, t0())], false, t0())
        .await
        .unwrap();
    assert_eq!(kinds_of(f.store.as_ref(), ada).await, vec!["password_changed"]);
}

async fn read_marks_keep_the_unread_count_exact_and_stay_with_their_owner(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let plans: Vec<Plan> = (0..25)
        .map(|i| password_changed(ada, t0() + Duration::seconds(i)))
        .collect();
    f.store.ingest(&plans, false, t0()).await.unwrap();
    f.store
        .ingest(&[password_changed(bob, t0())], false, t0())
        .await
        .unwrap();
    // Pages of 10 walk all 25, newest first, each once.
    let mut seen = Vec::new();
    let mut before = FIRST;
    loop {
        let (rows, unread) = f.store.feed(ada, false, before, 10).await.unwrap();
        assert_eq!(unread, 25);
        let Some(last) = rows.last() else { break };
        before = (last.created_us, last.id);
        seen.extend(rows.iter().map(|r| r.created_us));
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] > w[1]));
    let (rows, _) = f.store.feed(ada, false, FIRST, 3).await.unwrap();
    let newest = rows[0].id;
    // Bob cannot mark Ada's, and marking twice counts once.
    assert!(!f.store.mark_read(bob, newest, t0()).await.unwrap());
    assert!(f.store.mark_read(ada, newest, t0()).await.unwrap());
    assert!(f.store.mark_read(ada, newest, t0()).await.unwrap());
    assert!(!f.store.mark_read(ada, Uuid::now_v7(), t0()).await.unwrap());
    let (unread_rows, unread) = f.store.feed(ada, true, FIRST, 100).await.unwrap();
    assert_eq!((unread_rows.len(), unread), (24, 24));
    assert!(unread_rows.iter().all(|r| r.id != newest && r.read_us.is_none()));
    assert_eq!(f.store.mark_all_read(ada, t0()).await.unwrap(), 24);
    let (unread_rows, unread) = f.store.feed(ada, true, FIRST, 100).await.unwrap();
    assert_eq!((unread_rows.len(), unread), (0, 0));
    // Bob's is untouched.
    let (_, bobs) = f.store.feed(bob, true, FIRST, 100).await.unwrap();
    assert_eq!(bobs, 1);
}

fn with_webhook(url: &str) -> NewPreferences {
    NewPreferences {
        email_enabled: false,
        muted: vec![],
        webhook_url: url.into(),
        new_secret: fleet_notify::webhook::new_secret(),
    }
}

fn outcome(claimed: &fleet_notify::store::Claimed, status: &'static str, code: i32) -> Attempted {
    Attempted {
        id: claimed.id,
        user_id: claimed.user_id,
        channel: claimed.channel.clone(),
        attempted: true,
        status,
        response_code: code,
        latency_ms: 3,
        error: String::new(),
        next_attempt_us: None,
        disable_webhook: None,
    }
}

async fn deliveries_are_leased_retried_and_a_gone_endpoint_is_disabled(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    let (account, secret_set) = f
        .store
        .set_preferences(ada, &with_webhook("https://hooks.example.com/a"))
        .await
        .unwrap();
    assert!(secret_set && account.webhook_secret.starts_with("whsec_"));
    // The same URL again keeps the secret.
    let (again, secret_set) = f
        .store
        .set_preferences(ada, &with_webhook("https://hooks.example.com/a"))
        .await
        .unwrap();
    assert!(!secret_set);
    assert_eq!(again.webhook_secret, account.webhook_secret);
    let ingested = f
        .store
        .ingest(&[password_changed(ada, t0())], false, t0())
        .await
        .unwrap();
    assert_eq!(ingested.deliveries, 1);

    let lease = t0() + Duration::seconds(60);
    let taken = f.store.claim_due(t0(), lease, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].account.webhook_url, "https://hooks.example.com/a");
    // Leased: nobody else takes it before the lease ends, anyone after.
    assert!(f.store.claim_due(t0(), lease, 10).await.unwrap().is_empty());
    let retaken = f
        .store
        .claim_due(lease, lease + Duration::seconds(60), 10)
        .await
        .unwrap();
    assert_eq!(retaken[0].id, taken[0].id);

    // A failure is due again when its outcome says.
    let mut failed = outcome(&retaken[0], status::PENDING, 500);
    let due = t0() + Duration::seconds(120);
    failed.next_attempt_us = Some(micros(due));
    assert!(f.store.finish(&[failed], lease).await.unwrap().is_empty());
    assert_eq!(f.store.next_due().await.unwrap(), Some(due));
    let listed = f.store.deliveries(ada, FIRST, 10).await.unwrap();
    assert_eq!((listed[0].attempts, listed[0].response_code), (1, 500));
    assert!(
        f.store
            .claim_due(due - Duration::seconds(1), due, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let third = f.store.claim_due(due, due + Duration::seconds(60), 10).await.unwrap();

    // 410: the endpoint is disabled, the user told in-app, nothing else queued.
    f.store
        .ingest(&[password_changed(ada, t0() + Duration::seconds(1))], false, due)
        .await
        .unwrap();
    let mut gone = outcome(&third[0], status::FAILED, 410);
    gone.disable_webhook = Some("the endpoint answered 410 Gone".into());
    assert_eq!(f.store.finish(&[gone], due).await.unwrap(), vec![ada]);
    let account = f.store.account(ada).await.unwrap();
    assert!(account.webhook_disabled_us.is_some() && !account.webhook_active());
    assert_eq!(kinds_of(f.store.as_ref(), ada).await[0], "webhook_disabled");
    assert_eq!(f.store.next_due().await.unwrap(), None);
    let statuses: Vec<String> = f
        .store
        .deliveries(ada, FIRST, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.status)
        .collect();
    assert_eq!(statuses, vec!["disabled", "failed"]);
    f.store
        .ingest(&[password_changed(ada, t0() + Duration::seconds(2))], false, due)
        .await
        .unwrap();
    assert_eq!(f.store.deliveries(ada, FIRST, 10).await.unwrap().len(), 2);
    // Setting the URL again resumes deliveries.
    let (resumed, _) = f
        .store
        .set_preferences(ada, &with_webhook("https://hooks.example.com/a"))
        .await
        .unwrap();
    assert!(resumed.webhook_active());
}

async fn an_endpoint_failing_for_five_days_is_disabled(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    f.store
        .set_preferences(ada, &with_webhook("https://hooks.example.com/b"))
        .await
        .unwrap();
    let mut now = t0();
    for day in 0..=5 {
        f.store.ingest(&[password_changed(ada, now)], false, now).await.unwrap();
        let taken = f.store.claim_due(now, now + Duration::seconds(60), 10).await.unwrap();
        assert_eq!(taken.len(), 1, "day {day}");
        let mut failed = outcome(&taken[0], status::FAILED, 500);
        failed.next_attempt_us = None;
        let stopped = f.store.finish(&[failed], now).await.unwrap();
        assert_eq!(stopped.is_empty(), day < 5, "day {day}");
        now += Duration::days(1);
    }
    assert!(!f.store.account(ada).await.unwrap().webhook_active());
}

async fn a_delivered_attempt_ends_the_streak_of_failures(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    f.store
        .set_preferences(ada, &with_webhook("https://hooks.example.com/d"))
        .await
        .unwrap();
    // Answers on days 0 (failed), 4 (delivered), 6 and 10 (failed), 11 (failed).
    let mut stopped_on = Vec::new();
    for (day, delivered) in [(0, false), (4, true), (6, false), (10, false), (11, false)] {
        let now = t0() + Duration::days(day);
        f.store.ingest(&[password_changed(ada, now)], false, now).await.unwrap();
        let taken = f.store.claim_due(now, now + Duration::seconds(60), 10).await.unwrap();
        let (status, code) = if delivered {
            (status::DELIVERED, 204)
        } else {
            (status::FAILED, 500)
        };
        if !f
            .store
            .finish(&[outcome(&taken[0], status, code)], now)
            .await
            .unwrap()
            .is_empty()
        {
            stopped_on.push(day);
        }
    }
    // Five days of failures count from day 6, not day 0.
    assert_eq!(stopped_on, vec![11]);
}

async fn an_erased_account_leaves_nothing_and_late_events_stay_out(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    let created = event(
        ada,
        t0(),
        Payload::UserCreated(UserCreated {
            email: "ada@example.com".into(),
            ..UserCreated::default()
        }),
    );
    f.store.ingest(&[created], false, t0()).await.unwrap();
    assert_eq!(f.store.account(ada).await.unwrap().email, "ada@example.com");
    let mfa = event(
        ada,
        t0(),
        Payload::MfaEnabled(MfaEnabled {
            methods: vec!["totp".into()],
        }),
    );
    f.store
        .set_preferences(ada, &with_webhook("https://hooks.example.com/c"))
        .await
        .unwrap();
    f.store.ingest(&[mfa], false, t0()).await.unwrap();
    let deleted = event(ada, t0(), Payload::UserDeleted(UserDeleted {}));
    f.store
        .ingest(&[password_changed(ada, t0()), deleted], false, t0())
        .await
        .unwrap();
    f.store
        .ingest(&[password_changed(ada, t0())], false, t0())
        .await
        .unwrap();
    assert!(kinds_of(f.store.as_ref(), ada).await.is_empty());
    assert!(f.store.deliveries(ada, FIRST, 10).await.unwrap().is_empty());
    let account = f.store.account(ada).await.unwrap();
    assert!(account.email.is_empty() && account.webhook_url.is_empty() && account.erased_us.is_some());
}

backend_tests!(
    a_redelivered_event_writes_one_notification,
    only_logins_from_new_devices_or_networks_are_news,
    preferences_mute_optional_kinds_but_never_security_ones,
    read_marks_keep_the_unread_count_exact_and_stay_with_their_owner,
    deliveries_are_leased_retried_and_a_gone_endpoint_is_disabled,
    an_endpoint_failing_for_five_days_is_disabled,
    a_delivered_attempt_ends_the_streak_of_failures,
    an_erased_account_leaves_nothing_and_late_events_stay_out,
);
