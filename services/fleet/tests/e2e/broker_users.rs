//! The compose stack's RabbitMQ users (compose/rabbitmq/definitions.json):
//! each service connects as a user of its own, allowed only the exchanges
//! and queues it uses. The shipped users (their password hashes and
//! permissions) are loaded into a vhost of the local broker under names of
//! the test's, and the whole fleet runs on them as six processes, each
//! with the password compose.yaml gives it: every event still flows, and
//! the broker refuses nobody.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use fleet_kit::testing::{TestBackend, backend_available, backends_required, database};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    harness::{Api, Fleet, PASSWORD, Proto, service_ports},
    notify::{feed_of, kinds},
};

const SHIPPED: &str = include_str!("../../../../compose/rabbitmq/definitions.json");
const COMPOSE: &str = include_str!("../../../../compose.yaml");
const COMPONENTS: [&str; 6] = ["users", "auth", "stats", "transfer", "notify", "gateway"];

/// `rabbitmqctl` as `FLEET_RABBITMQCTL` says to run it (`rabbitmqctl`, or
/// `docker exec -i <container> rabbitmqctl` beside a broker in a container).
fn rabbitmqctl() -> Option<Vec<String>> {
    let command = std::env::var("FLEET_RABBITMQCTL").unwrap_or_default();
    let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    (!words.is_empty()).then_some(words)
}

/// How long one `rabbitmqctl` call may take: a broker that does not answer
/// fails the test instead of holding the suite.
const CTL_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `rabbitmqctl args`, feeding it `input`, within `CTL_DEADLINE`.
fn run_ctl(command: &[String], args: &[&str], input: Option<&str>) -> Result<Output, String> {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("rabbitmqctl does not run: {err}"))?;
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .map_err(|err| err.to_string())?;
    }
    drop(child.stdin.take());
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(CTL_DEADLINE) {
        Ok(output) => output.map_err(|err| err.to_string()),
        Err(_) => {
            let _ = Command::new("kill").arg(&pid).status();
            Err(format!("rabbitmqctl {args:?} did not answer within {CTL_DEADLINE:?}"))
        }
    }
}

fn ctl(command: &[String], args: &[&str], input: Option<&str>) {
    let output = run_ctl(command, args, input).unwrap_or_else(|err| panic!("{err}"));
    assert!(output.status.success(), "rabbitmqctl {args:?}: {output:?}");
}

/// The test's vhost and users, removed however the test ends.
struct BrokerUsers {
    command: Vec<String>,
    vhost: String,
    users: Vec<String>,
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        let _ = run_ctl(&self.command, &["delete_vhost", &self.vhost], None);
        for user in &self.users {
            let _ = run_ctl(&self.command, &["delete_user", user], None);
        }
    }
}

/// The password compose.yaml gives `user` in its `FLEET_AMQP_URL`.
fn compose_password(user: &str) -> String {
    let credentials = COMPOSE
        .lines()
        .filter_map(|line| line.trim().strip_prefix("FLEET_AMQP_URL: amqp://"))
        .filter_map(|url| url.split_once('@').map(|(credentials, _)| credentials))
        .find_map(|credentials| credentials.split_once(':').filter(|(name, _)| *name == user));
    let (_, password) = credentials.unwrap_or_else(|| panic!("compose.yaml gives {user} no FLEET_AMQP_URL"));
    password.to_string()
}

/// The shipped users and permissions, renamed `<vhost>-<component>` on
/// `vhost`; and each component's password.
fn definitions(vhost: &str) -> (Value, Vec<(String, String)>) {
    let shipped: Value = serde_json::from_str(SHIPPED).unwrap();
    let (mut users, mut permissions, mut logins) = (Vec::new(), Vec::new(), Vec::new());
    for component in COMPONENTS {
        let shipped_user = format!("fleet-{component}");
        let find = |list: &str| {
            shipped[list]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p[if list == "users" { "name" } else { "user" }] == shipped_user.as_str())
                .unwrap_or_else(|| panic!("definitions.json has no {list} entry for {shipped_user}"))
                .clone()
        };
        let (account, granted) = (find("users"), find("permissions"));
        let user = format!("{vhost}-{component}");
        users.push(json!({
            "name": user, "tags": [],
            "password_hash": account["password_hash"], "hashing_algorithm": account["hashing_algorithm"],
        }));
        permissions.push(json!({
            "user": user, "vhost": vhost,
            "configure": granted["configure"], "write": granted["write"], "read": granted["read"],
        }));
        logins.push((user, compose_password(&shipped_user)));
    }
    (
        json!({"vhosts": [{"name": vhost}], "users": users, "permissions": permissions}),
        logins,
    )
}

#[tokio::test]
async fn every_service_runs_as_its_own_least_privileged_rabbitmq_user() {
    if !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let Some(command) = rabbitmqctl() else {
        assert!(
            !backends_required(),
            "set FLEET_RABBITMQCTL to reach the broker's rabbitmqctl"
        );
        eprintln!("skipping: FLEET_RABBITMQCTL is not set");
        return;
    };
    let Some(db) = database(TestBackend::Postgres).await else {
        return;
    };
    let id = uuid::Uuid::now_v7().simple().to_string();
    let vhost = format!("fleet-test-{}", &id[id.len() - 12..]);
    let (definitions, logins) = definitions(&vhost);
    let _cleanup = BrokerUsers {
        command: command.clone(),
        vhost: vhost.clone(),
        users: logins.iter().map(|(user, _)| user.clone()).collect(),
    };
    ctl(
        &command,
        &["import_definitions", "--format", "json"],
        Some(&definitions.to_string()),
    );

    let secret = format!("broker-users-{id}");
    let ports = service_ports();
    let mut fleet = Vec::new();
    for (component, (user, password)) in COMPONENTS.iter().zip(&logins) {
        let url = format!("amqp://{user}:{password}@127.0.0.1:5672/{vhost}");
        let env = [
            ("FLEET_AMQP_URL", url.as_str()),
            ("FLEET_DATABASE_URL", db.url.as_str()),
            ("FLEET_TOKENS__SERVICE_SECRET", secret.as_str()),
            // The gateway alone makes its own certificate.
            ("FLEET_DEVELOPMENT", "true"),
            // The names compose runs with, which the permissions allow (the
            // vhost is the test's own).
            ("FLEET_STATS__QUEUE", "fleet.stats"),
            ("FLEET_NOTIFY__QUEUE", "fleet.notify"),
        ];
        fleet.push(Fleet::launched(Some(*component), ports, &env).await);
    }
    let gateway = fleet.last().unwrap();
    let api = Api::new(gateway, Proto::Http1);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;

    // users and auth published; stats consumed its durable queue.
    let started = Instant::now();
    loop {
        let figures = api.call(Method::GET, "/api/v1/stats/user", Some(&token), None).await;
        if figures.status == 200 && figures.body["logins_total"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "stats never counted the login: {} {}\n{}",
            figures.status,
            figures.body,
            refusals(&fleet)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // notify consumed its own.
    let change = json!({"current_password": PASSWORD, "new_password": "an entirely new passphrase"});
    let changed = api
        .call(Method::POST, "/api/v1/auth/password", Some(&token), Some(change))
        .await;
    assert_eq!(changed.status, 204, "{}", changed.body);
    let page = feed_of(&api, &token, 1).await;
    assert!(kinds(&page).iter().any(|k| k.contains("password")), "{page}");

    let refused = refusals(&fleet);
    assert!(refused.is_empty(), "the broker refused:\n{refused}");
}

/// What the processes logged of the broker refusing them.
fn refusals(fleet: &[Fleet]) -> String {
    let mut refused = String::new();
    for (component, process) in COMPONENTS.iter().zip(fleet) {
        for line in process.log().lines() {
            let broker = line.contains("RabbitMQ") || line.contains("ACCESS_REFUSED") || line.contains("reconnecting");
            if broker && (line.contains("\"WARN\"") || line.contains("\"ERROR\"")) {
                refused.push_str(&format!("{component}: {line}\n"));
            }
        }
    }
    refused
}
