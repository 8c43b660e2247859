//! Webhooks and email end to end: Standard Webhooks checked by the reference
//! verifier, retried with the same id across a restart, disabled by a 410,
//! signed with both secrets after a rotation; email through a real SMTP
//! server.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    harness::{Api, Fleet, PASSWORD, Proto},
    mfa::python_with,
    notify::{ALLOW_HTTP, ALLOW_PRIVATE, NEW_PASSWORD, feed, feed_of, kinds},
};

/// The Python with the reference Standard Webhooks library and aiosmtpd.
fn hooks_python() -> Option<String> {
    python_with(&["standardwebhooks", "aiosmtpd"])
}

/// A loopback port free now.
fn free_local_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`.
async fn listening(port: u16, what: &str) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/hooks.py")
}

/// A Python server a test starts on a free loopback port, in a scratch
/// directory of its own, and kills when it ends.
struct Local {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Local {
    /// Runs `python` with `args(port, dir)` and waits until it listens.
    async fn start(what: &str, python: &str, args: impl FnOnce(u16, &Path) -> Vec<String>) -> Local {
        let dir = tempfile::tempdir().unwrap();
        let port = free_local_port();
        let child = Command::new(python).args(args(port, dir.path())).spawn().unwrap();
        listening(port, what).await;
        Local { child, port, dir }
    }
}

/// A webhook receiver answering `plan`'s statuses in turn.
struct Receiver {
    server: Local,
    log: PathBuf,
}

impl Receiver {
    async fn start(python: &str, plan: &str) -> Receiver {
        let server = Local::start("the receiver", python, |port, dir| {
            let log = dir.join("requests.jsonl").display().to_string();
            vec![script().into(), "serve".into(), port.to_string(), log, plan.into()]
        })
        .await;
        let log = server.dir.path().join("requests.jsonl");
        Receiver { server, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.server.port)
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The requests once there are `n`, within `within`.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            assert!(
                started.elapsed() < within,
                "{} of {n} requests: {requests:?}",
                requests.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the reference verifier says of each request under `secret`.
    fn verify(&self, python: &str, secret: &str) -> Vec<String> {
        let out = Command::new(python)
            .args([script(), "verify", secret, self.log.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Sets the webhook; its secret.
async fn set_webhook(api: &Api<'_>, token: &str, url: &str) -> String {
    let body = json!({"email": false, "webhook_url": url, "events": ["export_completed"]});
    let set = api
        .call(
            Method::PUT,
            "/api/v1/notifications/preferences",
            Some(token),
            Some(body),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["webhook_url"], url);
    let secret = set.body["webhook_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    // Shown once.
    let again = api
        .call(Method::GET, "/api/v1/notifications/preferences", Some(token), None)
        .await;
    assert!(again.body["webhook_secret"].is_null(), "{:?}", again.body);
    secret
}

/// Changes the password back and forth: one notification each time.
async fn change_password(api: &Api<'_>, token: &str, from: &str, to: &str) {
    let change = json!({"current_password": from, "new_password": to});
    let changed = api
        .call(Method::POST, "/api/v1/auth/password", Some(token), Some(change))
        .await;
    assert_eq!(changed.status, 204, "{:?}", changed.body);
}

fn header<'a>(request: &'a Value, name: &str) -> &'a str {
    request["headers"][name].as_str().unwrap_or_default()
}

#[tokio::test]
async fn webhooks_pass_the_reference_verifier_and_retry_with_the_same_id() {
    let Some(python) = hooks_python() else { return };
    let fleet = Fleet::start_with(&[ALLOW_HTTP, ALLOW_PRIVATE]).await;
    let api = Api::new(&fleet, Proto::Http1);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    let receiver = Receiver::start(&python, "500,204").await;
    let secret = set_webhook(&api, &token, &receiver.url()).await;

    change_password(&api, &token, PASSWORD, NEW_PASSWORD).await;
    // The first attempt at once, the retry after 5 s (and jitter).
    let requests = receiver.wait_for(2, Duration::from_secs(20)).await;
    let (first, retry) = (&requests[0], &requests[1]);
    assert_eq!(
        (first["status"].as_u64(), retry["status"].as_u64()),
        (Some(500), Some(204))
    );
    assert_eq!(header(first, "webhook-id"), header(retry, "webhook-id"));
    assert!(header(first, "webhook-id").starts_with("msg_"));
    let body: Value = serde_json::from_str(retry["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "notification.password_changed");
    assert_eq!(body["data"]["kind"], "password_changed");
    assert!(body["timestamp"].is_string());
    let id = header(first, "webhook-id").to_string();
    assert_eq!(
        receiver.verify(&python, &secret),
        vec![format!("{id} ok"), format!("{id} ok")]
    );
    // A wrong secret fails the same check.
    let wrong = receiver.verify(&python, &fleet_notify::webhook::new_secret());
    assert!(wrong.iter().all(|l| l.contains("bad")), "{wrong:?}");

    let deliveries = api
        .call(Method::GET, "/api/v1/notifications/deliveries", Some(&token), None)
        .await;
    assert_eq!(deliveries.status, 200);
    let delivery = &deliveries.body["items"][0];
    assert_eq!(delivery["id"], id.as_str());
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["response_code"], 204);
    assert!(delivery["next_attempt_at"].is_null());

    // For a day after a rotation, both secrets sign.
    let rotated = api
        .call(
            Method::POST,
            "/api/v1/notifications/webhook/rotate-secret",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let new_secret = rotated.body["webhook_secret"].as_str().unwrap().to_string();
    change_password(&api, &token, NEW_PASSWORD, PASSWORD).await;
    let requests = receiver.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(header(&requests[2], "webhook-signature").split(' ').count(), 2);
    for key in [&secret, &new_secret] {
        let verdicts = receiver.verify(&python, key);
        assert!(verdicts[2].ends_with(" ok"), "{verdicts:?}");
    }
}

#[tokio::test]
async fn a_retry_survives_a_restart_and_a_410_disables_the_endpoint() {
    let Some(python) = hooks_python() else { return };
    let mut fleet = Fleet::start_with(&[ALLOW_HTTP, ALLOW_PRIVATE]).await;
    let (secret, token) = {
        let api = Api::new(&fleet, Proto::Http1);
        let (_, token) = api.signed_in("ada@example.com", "Ada").await;
        let receiver = Receiver::start(&python, "503,204").await;
        let secret = set_webhook(&api, &token, &receiver.url()).await;
        change_password(&api, &token, PASSWORD, NEW_PASSWORD).await;
        receiver.wait_for(1, Duration::from_secs(10)).await;
        // Killed between the attempts, once the first one's outcome is
        // written: the retry is in the store, not in memory. (Killed before
        // that, the attempt is retried when its lease runs out, a minute on.)
        first_outcome_recorded(&api, &token).await;
        fleet.restart().await;
        let requests = receiver.wait_for(2, Duration::from_secs(30)).await;
        assert_eq!(header(&requests[0], "webhook-id"), header(&requests[1], "webhook-id"));
        assert_eq!(requests[1]["status"], 204);
        assert!(receiver.verify(&python, &secret).iter().all(|v| v.ends_with(" ok")));
        (secret, token)
    };
    let api = Api::new(&fleet, Proto::Http1);
    // A 410 stops deliveries, and the user is told in-app.
    let gone = Receiver::start(&python, "410").await;
    let body = json!({"email": false, "webhook_url": gone.url(), "events": []});
    let set = api
        .call(
            Method::PUT,
            "/api/v1/notifications/preferences",
            Some(&token),
            Some(body),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_ne!(set.body["webhook_secret"], secret.as_str(), "a new URL, a new secret");
    change_password(&api, &token, NEW_PASSWORD, PASSWORD).await;
    gone.wait_for(1, Duration::from_secs(10)).await;
    let started = Instant::now();
    loop {
        let prefs = api
            .call(Method::GET, "/api/v1/notifications/preferences", Some(&token), None)
            .await;
        if prefs.body["webhook_disabled_at"].is_string() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not disabled: {:?}",
            prefs.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = feed(&api, &token, "").await;
    assert_eq!(kinds(&page)[0], "webhook_disabled", "{page}");
    change_password(&api, &token, PASSWORD, NEW_PASSWORD).await;
    // Three password changes and the notice.
    feed_of(&api, &token, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gone.requests().len(), 1, "nothing goes to a disabled endpoint");
}

/// Waits until the newest delivery's last attempt is written back with a
/// retry due.
async fn first_outcome_recorded(api: &Api<'_>, token: &str) {
    let started = Instant::now();
    loop {
        let deliveries = api
            .call(Method::GET, "/api/v1/notifications/deliveries", Some(token), None)
            .await;
        let delivery = &deliveries.body["items"][0];
        if delivery["attempts"] == 1 && delivery["next_attempt_at"].is_string() {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{delivery}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An SMTP server (aiosmtpd) writing what it receives to a maildir.
struct SmtpServer(Local);

impl SmtpServer {
    async fn start(python: &str) -> SmtpServer {
        let server = Local::start("the SMTP server", python, |port, dir| {
            let maildir = dir.join("mail").display().to_string();
            let listen = format!("127.0.0.1:{port}");
            [
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &listen,
                "-c",
                "aiosmtpd.handlers.Mailbox",
                &maildir,
            ]
            .map(String::from)
            .to_vec()
        })
        .await;
        SmtpServer(server)
    }

    fn messages(&self) -> Vec<String> {
        let new = self.0.dir.path().join("mail").join("new");
        let Ok(entries) = std::fs::read_dir(&new) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn email_goes_through_a_real_smtp_server() {
    let Some(python) = hooks_python() else { return };
    let smtp = SmtpServer::start(&python).await;
    let url = format!("smtp://127.0.0.1:{}", smtp.0.port);
    let fleet = Fleet::start_with(&[
        ("FLEET_NOTIFY__EMAIL__SENDER", "smtp"),
        ("FLEET_NOTIFY__EMAIL__SMTP_URL", url.as_str()),
        ("FLEET_NOTIFY__EMAIL__FROM", "Fleet <no-reply@fleet.test>"),
    ])
    .await;
    let api = Api::new(&fleet, Proto::Http1);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    let body = json!({"email": true, "webhook_url": "", "events": []});
    let set = api
        .call(
            Method::PUT,
            "/api/v1/notifications/preferences",
            Some(&token),
            Some(body),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["email"], true);
    change_password(&api, &token, PASSWORD, NEW_PASSWORD).await;
    let started = Instant::now();
    let mail = loop {
        if let Some(mail) = smtp.messages().pop() {
            break mail;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no email arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(mail.contains("To: ada@example.com"), "{mail}");
    assert!(mail.contains("From: Fleet <no-reply@fleet.test>"), "{mail}");
    assert!(mail.contains("Subject: [Fleet] Your password was changed"), "{mail}");
    assert!(mail.contains("text/plain") && mail.contains("text/html"), "{mail}");
    assert!(!mail.contains(NEW_PASSWORD) && !mail.contains(PASSWORD));
    let deliveries = api
        .call(Method::GET, "/api/v1/notifications/deliveries", Some(&token), None)
        .await;
    let started = Instant::now();
    let mut delivery = deliveries.body["items"][0].clone();
    while delivery["status"] != "delivered" {
        assert!(started.elapsed() < Duration::from_secs(5), "{delivery}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = api
            .call(Method::GET, "/api/v1/notifications/deliveries", Some(&token), None)
            .await;
        delivery = again.body["items"][0].clone();
    }
    assert_eq!(delivery["channel"], "email");
}
