//! Contract tests of the stats store, run against SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashSet, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use fleet_kit::{
    Db, SystemClock, backend_tests,
    events::InProcessBus,
    outbox::OutboxRelay,
    testing::{TestBackend, TestDatabase, database},
};
use fleet_stats::{
    projection::{Entry, SessionChange},
    store::{ActivityQuery, Recorded, StatsStore, micros, stats_store},
};
use serde_json::json;
use uuid::Uuid;

struct Fixture {
    store: Arc<dyn StatsStore>,
    relay: OutboxRelay,
    _database: TestDatabase,
}

async fn fixture(backend: TestBackend) -> Option<Fixture> {
    let database = database(backend).await?;
    let db = Db::connect(&database.url, "stats").await.unwrap();
    fleet_stats::migrate(&db).await.unwrap();
    let relay = OutboxRelay::new(&db, Arc::new(InProcessBus::default()), Arc::new(SystemClock));
    Some(Fixture {
        store: stats_store(&db),
        relay,
        _database: database,
    })
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn entry(user_id: Uuid, kind: &str, at: DateTime<Utc>) -> Entry {
    Entry {
        id: Uuid::now_v7(),
        user_id,
        kind: kind.to_string(),
        occurred_at: at,
        ip: "192.0.2.1".into(),
        user_agent: "test-agent".into(),
        details: json!({}),
        session: None,
    }
}

fn with_session(mut e: Entry, change: SessionChange) -> Entry {
    e.session = Some(change);
    e
}

async fn each_event_counts_once_and_the_figures_add_up(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    let (s1, s2) = (Uuid::now_v7(), Uuid::now_v7());
    let started = |id, ua: &str| SessionChange::Started {
        id,
        user_agent: ua.to_string(),
    };
    let created = entry(ada, "user.created", t0());
    let failed = entry(ada, "auth.login_failed", t0() + Duration::minutes(1));
    let login1 = with_session(
        entry(ada, "auth.login_succeeded", t0() + Duration::minutes(2)),
        started(s1, "firefox"),
    );
    let login2 = with_session(
        entry(ada, "auth.login_succeeded", t0() + Duration::minutes(3)),
        started(s2, "curl"),
    );
    let logout = with_session(
        entry(ada, "session.revoked", t0() + Duration::minutes(12)),
        SessionChange::Ended {
            id: s1,
            reason: "logout".into(),
        },
    );
    for e in [&created, &failed, &login1, &login2, &logout] {
        assert_eq!(f.store.record(e, t0()).await.unwrap(), Recorded::Added);
    }
    // Redelivered: nothing changes, the session's end included.
    for e in [&login1, &logout] {
        assert_eq!(f.store.record(e, t0()).await.unwrap(), Recorded::Duplicate);
    }
    // Another user's activity is not counted.
    f.store
        .record(&entry(Uuid::now_v7(), "auth.login_succeeded", t0()), t0())
        .await
        .unwrap();
    // Each entry added (ada's five, the other user's one), and none of the
    // duplicates, left a notice in the outbox.
    assert_eq!(f.relay.backlog().await.unwrap(), 6);

    let figures = f.store.user_figures(ada).await.unwrap();
    assert_eq!(
        (
            figures.logins,
            figures.failed_logins,
            figures.events,
            figures.active_sessions
        ),
        (2, 1, 5, 1)
    );
    assert_eq!(figures.last_login_us, Some(micros(t0() + Duration::minutes(3))));
    assert_eq!(figures.created_us, Some(micros(t0())));

    let sessions = f.store.session_figures(ada).await.unwrap();
    assert_eq!((sessions.total, sessions.active, sessions.ended), (2, 1, 1));
    assert_eq!(
        sessions.ended_duration_us,
        Duration::minutes(10).num_microseconds().unwrap()
    );
    assert_eq!(
        sessions.by_user_agent,
        [("curl".to_string(), 1), ("firefox".to_string(), 1)]
    );
}

async fn a_session_ended_before_its_start_arrives_keeps_both(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    let s = Uuid::now_v7();
    let end = with_session(
        entry(ada, "session.revoked", t0() + Duration::seconds(30)),
        SessionChange::Ended {
            id: s,
            reason: "revoked".into(),
        },
    );
    let start = with_session(
        entry(ada, "session.created", t0()),
        SessionChange::Started {
            id: s,
            user_agent: "ua".into(),
        },
    );
    f.store.record(&end, t0()).await.unwrap();
    f.store.record(&start, t0()).await.unwrap();
    let sessions = f.store.session_figures(ada).await.unwrap();
    assert_eq!((sessions.total, sessions.active, sessions.ended), (1, 0, 1));
    assert_eq!(
        sessions.ended_duration_us,
        Duration::seconds(30).num_microseconds().unwrap()
    );
    assert_eq!(sessions.by_user_agent, [("ua".to_string(), 1)]);
}

async fn pages_walk_every_entry_once_newest_first_while_entries_arrive(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    let mut ids = HashSet::new();
    // 250 entries, in pairs at the same instant, so the cursor's id breaks ties.
    for i in 0..250 {
        let e = entry(ada, "auth.login_succeeded", t0() + Duration::seconds(i / 2));
        ids.insert(e.id);
        f.store.record(&e, t0()).await.unwrap();
    }
    let end = t0() + Duration::days(1);
    let mut before = (micros(end), Uuid::nil());
    let mut seen = Vec::new();
    loop {
        let page = f
            .store
            .activity(&ActivityQuery {
                user_id: ada,
                kind: None,
                from_us: micros(t0()),
                before,
                limit: 100,
            })
            .await
            .unwrap();
        // New entries arrive while the pages are walked: newer ones are
        // above the cursor and never appear in later pages.
        f.store
            .record(&entry(ada, "auth.login_failed", t0() + Duration::hours(1)), t0())
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = (last.occurred_us, last.id);
        seen.extend(page.iter().map(|r| (r.occurred_us, r.id)));
        if page.len() < 100 {
            break;
        }
    }
    let walked: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(seen.len(), 250, "each entry exactly once");
    assert_eq!(walked, ids);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, ties by id");
}

async fn kinds_filter_and_days_count_in_utc(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    let day0 = micros(t0()) / fleet_stats::store::MICROS_PER_DAY;
    for (kind, hours) in [
        ("auth.login_succeeded", 0),
        ("auth.login_failed", 1),
        ("auth.login_succeeded", 25),
        ("auth.login_succeeded", 49),
    ] {
        f.store
            .record(&entry(ada, kind, t0() + Duration::hours(hours)), t0())
            .await
            .unwrap();
    }
    let (from, to) = (micros(t0()), micros(t0() + Duration::days(3)));
    let all = f.store.daily(ada, None, from, to).await.unwrap();
    let logins = f
        .store
        .daily(ada, Some("auth.login_succeeded"), from, to)
        .await
        .unwrap();
    // t0 is 08:00 UTC: +25 h is the next day, +49 h the one after.
    assert_eq!(all, [(day0, 2), (day0 + 1, 1), (day0 + 2, 1)]);
    assert_eq!(logins, [(day0, 1), (day0 + 1, 1), (day0 + 2, 1)]);
    let failed = f
        .store
        .activity(&ActivityQuery {
            user_id: ada,
            kind: Some("auth.login_failed".into()),
            from_us: from,
            before: (to, Uuid::nil()),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].kind, "auth.login_failed");
    assert_eq!(
        (
            failed[0].ip.as_str(),
            failed[0].user_agent.as_str(),
            failed[0].details.as_str()
        ),
        ("192.0.2.1", "test-agent", "{}")
    );
}

async fn an_erased_user_leaves_nothing_and_late_events_stay_out(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let late = with_session(
        entry(ada, "auth.login_succeeded", t0()),
        SessionChange::Started {
            id: Uuid::now_v7(),
            user_agent: "ua".into(),
        },
    );
    f.store.record(&entry(ada, "user.created", t0()), t0()).await.unwrap();
    f.store.record(&entry(bob, "user.created", t0()), t0()).await.unwrap();
    f.store.erase_user(ada, t0() + Duration::hours(1)).await.unwrap();
    f.store.erase_user(ada, t0() + Duration::hours(1)).await.unwrap();
    assert_eq!(f.store.record(&late, t0()).await.unwrap(), Recorded::Erased);
    let figures = f.store.user_figures(ada).await.unwrap();
    assert_eq!(
        (figures.events, figures.active_sessions, figures.created_us),
        (0, 0, None)
    );
    assert_eq!(f.store.user_figures(bob).await.unwrap().events, 1, "others keep theirs");
}

async fn pruning_deletes_old_entries_in_bounded_batches(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    for days in 0..25 {
        f.store
            .record(&entry(ada, "auth.login_succeeded", t0() + Duration::days(days)), t0())
            .await
            .unwrap();
    }
    let cutoff = t0() + Duration::days(20);
    let mut rounds = Vec::new();
    loop {
        let deleted = f.store.prune(cutoff, 8).await.unwrap();
        rounds.push(deleted);
        if deleted < 8 {
            break;
        }
    }
    assert_eq!(rounds, [8, 8, 4], "20 old entries, 8 at a time");
    assert_eq!(f.store.user_figures(ada).await.unwrap().events, 5);
}

async fn the_fleet_figures_count_accounts_active_users_and_logins_per_day(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let (ada, bob, cy) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let now = t0() + Duration::days(10);
    for (user, kind, at) in [
        (ada, "user.created", t0()),
        (bob, "user.created", t0()),
        (cy, "user.created", t0()),
        (ada, "auth.login_succeeded", now - Duration::hours(2)),
        (ada, "auth.login_succeeded", now - Duration::hours(1)),
        (bob, "auth.login_succeeded", now - Duration::days(3)),
        (cy, "auth.login_failed", now - Duration::hours(1)),
        (cy, "auth.login_succeeded", now - Duration::days(20)),
    ] {
        f.store.record(&entry(user, kind, at), now).await.unwrap();
    }
    f.store.erase_user(cy, now).await.unwrap();
    let figures = f.store.fleet_figures(now - Duration::days(5), now, now).await.unwrap();
    assert_eq!(figures.users, 2, "the erased account is gone");
    assert_eq!(figures.active, [1, 2, 2]);
    let today = fleet_stats::store::micros(now - Duration::hours(1)) / fleet_stats::store::MICROS_PER_DAY;
    let three_days_ago = fleet_stats::store::micros(now - Duration::days(3)) / fleet_stats::store::MICROS_PER_DAY;
    assert_eq!(figures.days, [(three_days_ago, 1, 0), (today, 2, 0)]);
}

async fn retention_prunes_what_the_clock_says_is_too_old(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let ada = Uuid::now_v7();
    for days in [0, 100, 364, 366, 500] {
        f.store
            .record(&entry(ada, "auth.login_succeeded", t0() - Duration::days(days)), t0())
            .await
            .unwrap();
    }
    let clock = fleet_kit::clock::ManualClock::new(t0());
    let retention = Duration::days(365);
    let deleted = fleet_stats::enforce_retention(f.store.as_ref(), &clock, retention)
        .await
        .unwrap();
    assert_eq!(deleted, 2, "366 and 500 days old");
    assert_eq!(f.store.user_figures(ada).await.unwrap().events, 3);
    // A year on, the rest has aged out too.
    clock.advance(Duration::days(366));
    fleet_stats::enforce_retention(f.store.as_ref(), &clock, retention)
        .await
        .unwrap();
    assert_eq!(f.store.user_figures(ada).await.unwrap().events, 0);
}

async fn a_batch_records_each_entry_once_in_one_transaction(backend: TestBackend) {
    let Some(f) = fixture(backend).await else { return };
    let (ada, bob, gone) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    f.store.erase_user(gone, t0()).await.unwrap();
    let before = f.relay.backlog().await.unwrap();
    let first = entry(ada, "auth.login_succeeded", t0());
    let batch = [
        first.clone(),
        entry(ada, "auth.login_failed", t0()),
        first.clone(), // delivered twice within the batch
        entry(bob, "auth.login_succeeded", t0()),
        entry(gone, "auth.login_succeeded", t0()),
    ];
    let outcomes = f.store.record_many(&batch, t0()).await.unwrap();
    assert_eq!(
        outcomes,
        [
            Recorded::Added,
            Recorded::Added,
            Recorded::Duplicate,
            Recorded::Added,
            Recorded::Erased
        ]
    );
    assert_eq!(
        f.relay.backlog().await.unwrap() - before,
        2,
        "one notice per user whose figures changed"
    );
    // Again, across batches: nothing is added.
    let again = f.store.record_many(&batch[..2], t0()).await.unwrap();
    assert_eq!(again, [Recorded::Duplicate, Recorded::Duplicate]);
    assert_eq!(f.store.user_figures(ada).await.unwrap().events, 2);
    assert_eq!(f.store.user_figures(bob).await.unwrap().events, 1);
    assert_eq!(f.store.user_figures(gone).await.unwrap().events, 0);
}

async fn one_entry_id_may_be_in_two_users_logs_and_a_dry_run_keeps_nothing(backend: TestBackend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let entries: Vec<Entry> = (0..3)
        .map(|i| entry(ada, "auth.login_succeeded", t0() + Duration::minutes(i)))
        .collect();
    f.store.record_many(&entries, t0()).await.unwrap();
    let copies: Vec<Entry> = entries
        .iter()
        .map(|e| Entry {
            user_id: bob,
            ..e.clone()
        })
        .collect();

    let dry = f.store.write_entries(&copies, t0(), false).await.unwrap();
    assert_eq!(dry, vec![Recorded::Added; 3], "what it would do");
    assert_eq!(
        f.store.export_page(bob, (i64::MIN, Uuid::nil()), 10).await.unwrap(),
        vec![]
    );
    assert_eq!(
        f.store.user_figures(bob).await.unwrap().events,
        0,
        "counts rolled back too"
    );

    let done = f.store.write_entries(&copies, t0(), true).await.unwrap();
    assert_eq!(done, vec![Recorded::Added; 3]);
    let again = f.store.write_entries(&copies, t0(), true).await.unwrap();
    assert_eq!(again, vec![Recorded::Duplicate; 3], "importing twice adds nothing");
    let page = f.store.export_page(bob, (i64::MIN, Uuid::nil()), 2).await.unwrap();
    let ids: Vec<Uuid> = page.iter().map(|r| r.id).collect();
    assert_eq!(ids, [entries[0].id, entries[1].id], "oldest first, their own ids");
    let last = page.last().map(|r| (r.occurred_us, r.id)).unwrap();
    let rest = f.store.export_page(bob, last, 2).await.unwrap();
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), [entries[2].id]);
    assert_eq!(f.store.user_figures(bob).await.unwrap().events, 3);
    assert_eq!(
        f.store.user_figures(ada).await.unwrap().events,
        3,
        "Ada's log is untouched"
    );
}

async fn batches_of_one_user_written_side_by_side_all_land(backend: TestBackend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let ada = Uuid::now_v7();
    // Every batch touches the same days' counts: in any order of their own,
    // concurrent writers would lock those rows crosswise.
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let store = f.store.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    let entries: Vec<Entry> = (0..500)
                        .map(|i| entry(ada, "auth.login_succeeded", t0() + Duration::hours(i % 2400)))
                        .collect();
                    let outcomes = store.record_many(&entries, t0()).await?;
                    assert!(outcomes.iter().all(|o| *o == Recorded::Added));
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    assert_eq!(f.store.user_figures(ada).await.unwrap().events, 8 * 5 * 500);
}

backend_tests!(
    batches_of_one_user_written_side_by_side_all_land,
    one_entry_id_may_be_in_two_users_logs_and_a_dry_run_keeps_nothing,
    a_batch_records_each_entry_once_in_one_transaction,
    retention_prunes_what_the_clock_says_is_too_old,
    the_fleet_figures_count_accounts_active_users_and_logins_per_day,
    each_event_counts_once_and_the_figures_add_up,
    a_session_ended_before_its_start_arrives_keeps_both,
    pages_walk_every_entry_once_newest_first_while_entries_arrive,
    kinds_filter_and_days_count_in_utc,
    an_erased_user_leaves_nothing_and_late_events_stay_out,
    pruning_deletes_old_entries_in_bounded_batches,
);
