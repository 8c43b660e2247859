//! `fleet run` refuses settings that cannot work, or would be unsafe, before
//! it starts anything, and says which setting to change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Runs `fleet run` with `env` and expects it to stop at once with an error
/// that mentions every one of `words`.
fn refused(env: &[(&str, &str)], words: &[&str]) {
    refused_with(&["run"], env, words);
}

fn refused_with(args: &[&str], env: &[(&str, &str)], words: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleet"));
    command
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Nothing may be bound for these tests: if it starts, it starts off to the side.
        .env("FLEET_ADMIN_LISTEN", "127.0.0.1:0")
        .env("FLEET_AUTH__LISTEN", "127.0.0.1:0")
        .env("FLEET_USERS__LISTEN", "127.0.0.1:0")
        .env("FLEET_STATS__LISTEN", "127.0.0.1:0")
        .env("FLEET_TRANSFER__LISTEN", "127.0.0.1:0")
        .env("FLEET_GATEWAY__HTTPS_LISTEN", "127.0.0.1:0")
        .env("FLEET_GATEWAY__HTTP_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("fleet run accepted {env:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success(), "{stderr}");
    for word in words {
        assert!(stderr.contains(word), "no {word:?} in: {stderr}");
    }
}

#[test]
fn sms_without_a_named_sender_is_refused() {
    refused(&[("FLEET_AUTH__MFA__SMS__ENABLED", "true")], &["auth.mfa.sms.sender"]);
}

#[test]
fn the_log_sms_sender_is_refused_outside_development() {
    refused(
        &[
            ("FLEET_AUTH__MFA__SMS__ENABLED", "true"),
            ("FLEET_AUTH__MFA__SMS__SENDER", "log"),
        ],
        &["log", "development"],
    );
}

#[test]
fn a_component_alone_without_rabbitmq_is_refused() {
    for target in ["gateway", "auth", "users"] {
        refused_with(&["run", "--target", target], &[], &["--target", target, "amqp_url"]);
    }
}
