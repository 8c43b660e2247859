//! The API keeps the contract its OpenAPI document states: schemathesis
//! fuzzes `fleet run` over the whole document with every check (stateful
//! phase included, following the document's links; one operation spared
//! one check, see below), signed in as a throwaway user, and finds nothing.

use std::{path::PathBuf, process::Command, time::Duration};

use crate::harness::{Api, Fleet, Proto};

/// The schemathesis executable: `FLEET_SCHEMATHESIS`, or from PATH.
fn schemathesis() -> PathBuf {
    std::env::var_os("FLEET_SCHEMATHESIS").map_or_else(|| PathBuf::from("schemathesis"), PathBuf::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_violation() {
    let tool = schemathesis();
    if Command::new(&tool).arg("--version").output().is_err() {
        assert!(
            !std::env::var("FLEET_REQUIRE_BACKENDS").is_ok_and(|v| v == "1"),
            "{} is required in CI",
            tool.display()
        );
        eprintln!(
            "skipping the contract fuzz: {} is missing; .ci/run installs it",
            tool.display()
        );
        return;
    }
    let fleet = Fleet::start().await;
    // Whether a webhook URL may be set depends on where its host resolves
    // to, which no schema can say: a schema-valid URL may be refused with
    // 400 (the SSRF tests cover that answer). Every other check still runs
    // on that operation.
    // (An option on the command line would override it for every operation.)
    std::fs::write(
        fleet.dir.path().join("schemathesis.toml"),
        "checks.enabled = true\n\n[[operations]]\ninclude-operation-id = \"UpdatePreferences\"\n\
         checks.positive_data_acceptance.enabled = false\n",
    )
    .unwrap();
    let api = Api::new(&fleet, Proto::Http1);
    // An administrator reaches every operation. Those that can end the
    // caller's own session or account (a role or status change of its own
    // record ends its sessions) run last, on a session of their own, so that
    // they cannot cut the main run short.
    let ending = ["Logout", "RevokeSession", "DeleteUser", "UpdateUser", "EndUserSessions"];
    api.register("fuzz@example.com", "Fuzz").await;
    let promoted = fleet.command(&["user", "promote", "fuzz@example.com"]);
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    // Both sessions start now: the main run's wrong passwords lock the
    // account's logins (sessions stay).
    let session = |answer: serde_json::Value| answer["access_token"].as_str().unwrap().to_string();
    let token = session(api.login("fuzz@example.com").await);
    let ending_token = session(api.login("fuzz@example.com").await);
    let mut main_run = vec![];
    for op in ending {
        main_run.extend(["--exclude-operation-id".to_string(), op.to_string()]);
    }
    fuzz(&tool, &fleet, &token, &main_run, "main").await;
    let mut ending_run = vec![];
    for op in ending {
        ending_run.extend(["--include-operation-id".to_string(), op.to_string()]);
    }
    fuzz(&tool, &fleet, &ending_token, &ending_run, "ending").await;
}

/// One schemathesis run over the document, bounded in examples and time.
async fn fuzz(tool: &std::path::Path, fleet: &Fleet, token: &str, filters: &[String], name: &str) {
    let base = format!("https://127.0.0.1:{}", fleet.https);
    let report = fleet.dir.path().join(format!("schemathesis-{name}"));
    let mut run = Command::new(tool);
    run.args(["run", &format!("{base}/api/v1/openapi.json")])
        .args(["--url", &base])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--tls-verify", "false"])
        .args(["--max-examples", "25"])
        .args(["--seed", "1"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(filters)
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("NO_COLOR", "1")
        .current_dir(fleet.dir.path());
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::task::spawn_blocking(move || run.output()),
    )
    .await
    .expect("schemathesis finished in time")
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis ({name} run) found contract violations:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        name != "main" || !stdout.contains("Authentication failed"),
        "the {name} run lost its session, so it fuzzed nothing behind it:\n{stdout}"
    );
}
