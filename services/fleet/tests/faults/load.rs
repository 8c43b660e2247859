//! The fault suite's load: clients that register, log in, rename themselves
//! and read their profile through the gateway, bounded in time and count,
//! and remember what the fleet acknowledged to each of them.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::harness::{Api, Fleet, PASSWORD, Proto};

/// Requests one client sends at most: the load ends by itself.
const MAX_REQUESTS: u64 = 20_000;
/// A client gives up on a request after this long (the suite then reports
/// it as held past the deadline).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const PAUSE: Duration = Duration::from_millis(20);

/// What one client was told about one account.
#[derive(Debug, Default, Clone)]
struct Account {
    email: String,
    token: Option<String>,
    /// The last display name the fleet acknowledged.
    acked_name: Option<String>,
    /// Names sent since, without an acknowledgement (one may still have
    /// been written).
    unacked_names: Vec<String>,
    acked_logins: u64,
    attempted_logins: u64,
    /// When the login was acknowledged.
    logged_in_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    sent: AtomicU64,
    failed: AtomicU64,
    accounts: Mutex<Vec<Account>>,
    slowest: Mutex<Duration>,
    unexpected: Mutex<Vec<String>>,
    gateway_down: AtomicBool,
}

/// Counts shared by the clients and the suite.
#[derive(Debug, Default, Clone)]
pub struct Tally(Arc<Inner>);

/// Requests sent and failed up to a moment.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub sent: u64,
    pub failed: u64,
}

impl Counts {
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            sent: self.sent - earlier.sent,
            failed: self.failed - earlier.failed,
        }
    }
}

/// One answer, or the error that stood for it.
struct Outcome {
    status: Option<StatusCode>,
    body: Value,
}

impl Tally {
    pub fn snapshot(&self) -> Counts {
        Counts {
            sent: self.0.sent.load(Ordering::SeqCst),
            failed: self.0.failed.load(Ordering::SeqCst),
        }
    }

    pub fn slowest(&self) -> Duration {
        *self.0.slowest.lock().unwrap()
    }

    pub fn unexpected_statuses(&self) -> Vec<String> {
        self.0.unexpected.lock().unwrap().clone()
    }

    /// While set, a refused connection is what the suite caused.
    pub fn set_gateway_down(&self, down: bool) {
        self.0.gateway_down.store(down, Ordering::SeqCst);
    }

    async fn send(
        &self,
        client: &Client,
        base: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Outcome {
        let mut request = client
            .request(method.clone(), format!("{base}{path}"))
            .timeout(CLIENT_TIMEOUT);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.0.sent.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let answer = request.send().await;
        let elapsed = started.elapsed();
        {
            let mut slowest = self.0.slowest.lock().unwrap();
            *slowest = (*slowest).max(elapsed);
        }
        let outcome = match answer {
            Ok(response) => {
                let status = response.status();
                let problem = response
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v == "application/problem+json");
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    let expected = problem && matches!(status.as_u16(), 503 | 504);
                    if !expected {
                        self.0
                            .unexpected
                            .lock()
                            .unwrap()
                            .push(format!("{method} {path}: {status} {body}"));
                    }
                }
                Outcome {
                    status: Some(status),
                    body,
                }
            }
            Err(err) => {
                let ours = self.0.gateway_down.load(Ordering::SeqCst) && !err.is_timeout();
                if !ours {
                    self.0
                        .unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{method} {path}: {err}"));
                }
                Outcome {
                    status: None,
                    body: Value::Null,
                }
            }
        };
        if !outcome.status.is_some_and(|s| s.is_success()) {
            self.0.failed.fetch_add(1, Ordering::SeqCst);
        }
        outcome
    }

    /// Accounts whose acknowledged name the fleet no longer holds.
    pub async fn lost_writes(&self, api: &Api<'_>) -> Vec<String> {
        let accounts = self.0.accounts.lock().unwrap().clone();
        let mut lost = Vec::new();
        for account in accounts {
            let (Some(token), Some(acked)) = (&account.token, &account.acked_name) else {
                continue;
            };
            let me = api.call(Method::GET, "/api/v1/users/me", Some(token), None).await;
            let held = me.body["display_name"].as_str().unwrap_or_default().to_string();
            if me.status != 200 || (held != *acked && !account.unacked_names.contains(&held)) {
                lost.push(format!("{}: told {acked}, holds {} {held}", account.email, me.status));
            }
        }
        lost
    }

    /// Logins stats has not counted, and logins counted more often than
    /// they were tried, once stats has caught up; with each account that
    /// differs and when its login was acknowledged.
    pub async fn events(&self, api: &Api<'_>) -> (u64, u64, Vec<(String, Option<Instant>)>) {
        let accounts = self.0.accounts.lock().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(90);
        let (mut missing, mut doubled, mut accounts_off) = (0, 0, Vec::new());
        for account in accounts {
            let Some(token) = &account.token else { continue };
            let counted = loop {
                let figures = api.call(Method::GET, "/api/v1/stats/user", Some(token), None).await;
                let counted = figures.body["logins_total"].as_u64().unwrap_or(0);
                if counted >= account.acked_logins || Instant::now() > deadline {
                    break counted;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let (short, over) = (
                account.acked_logins.saturating_sub(counted),
                counted.saturating_sub(account.attempted_logins),
            );
            if short + over > 0 {
                accounts_off.push((account.email.clone(), account.logged_in_at));
            }
            missing += short;
            doubled += over;
        }
        (missing, doubled, accounts_off)
    }

    fn record(&self, index: usize, change: impl FnOnce(&mut Account)) {
        let mut accounts = self.0.accounts.lock().unwrap();
        change(&mut accounts[index]);
    }
}

/// Clients running until stopped, or until each has sent its share.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(gateway: &Fleet, tally: Tally, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let base = gateway.url("");
        let tasks = (0..clients)
            .map(|n| {
                let (client, base, tally, stop) =
                    (gateway.client(Proto::Http1), base.clone(), tally.clone(), stop.clone());
                tokio::spawn(async move { run(n, &client, &base, &tally, &stop).await })
            })
            .collect();
        Load { stop, tasks }
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

async fn run(client_no: usize, client: &Client, base: &str, tally: &Tally, stop: &AtomicBool) {
    let mut round = 0;
    while !stop.load(Ordering::SeqCst) && tally.snapshot().sent < MAX_REQUESTS {
        round += 1;
        let email = format!("load{client_no}-{round}@example.com");
        let body = json!({"email": email, "password": PASSWORD, "display_name": "Load"});
        let created = tally
            .send(client, base, Method::POST, "/api/v1/auth/register", None, Some(body))
            .await;
        if created.status != Some(StatusCode::CREATED) {
            tokio::time::sleep(PAUSE).await;
            continue;
        }
        let index = {
            let mut accounts = tally.0.accounts.lock().unwrap();
            accounts.push(Account {
                email: email.clone(),
                ..Account::default()
            });
            accounts.len() - 1
        };
        tally.record(index, |a| a.attempted_logins += 1);
        let login = json!({"email": email, "password": PASSWORD});
        let tokens = tally
            .send(client, base, Method::POST, "/api/v1/auth/login", None, Some(login))
            .await;
        let Some(token) = tokens.body["access_token"]
            .as_str()
            .filter(|_| tokens.status == Some(StatusCode::OK))
        else {
            continue;
        };
        let token = token.to_string();
        tally.record(index, |a| {
            a.acked_logins += 1;
            a.token = Some(token.clone());
            a.logged_in_at = Some(Instant::now());
        });
        for step in 0..5 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let name = format!("Load {client_no}.{round}.{step}");
            tally.record(index, |a| a.unacked_names.push(name.clone()));
            let renamed = tally
                .send(
                    client,
                    base,
                    Method::PATCH,
                    "/api/v1/users/me",
                    Some(&token),
                    Some(json!({"display_name": name})),
                )
                .await;
            if renamed.status == Some(StatusCode::OK) {
                tally.record(index, |a| {
                    a.acked_name = Some(name.clone());
                    a.unacked_names.clear();
                });
            }
            tokio::time::sleep(PAUSE).await;
            tally
                .send(client, base, Method::GET, "/api/v1/users/me", Some(&token), None)
                .await;
            tokio::time::sleep(PAUSE).await;
        }
    }
}
