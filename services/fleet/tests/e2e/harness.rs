//! Starts the real `fleet run` on free ports with a fresh data directory, and
//! talks to it with reqwest over HTTPS (HTTP/1.1 or HTTP/2).

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use fleet_kit::testing::broker::BrokerNames;
use reqwest::{Client, Method, Response, Version};
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Fleet {
    child: Child,
    pub dir: tempfile::TempDir,
    pub https: u16,
    pub http: u16,
    pub admin: u16,
    auth_port: u16,
    users_port: u16,
    stats_port: u16,
    transfer_port: u16,
    notify_port: u16,
    cert: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The one component this process runs, if not all of them.
    target: Option<String>,
    /// Broker names made up for this process alone, deleted after it is
    /// stopped.
    names: Vec<BrokerNames>,
}

/// The production shape: users, auth and the gateway each in a process of
/// its own (`fleet run --target ...`).
pub struct Split {
    pub users: Fleet,
    pub auth: Fleet,
    pub stats: Fleet,
    pub transfer: Fleet,
    pub notify: Fleet,
    pub gateway: Fleet,
    /// The broker names the six share, deleted after they have stopped
    /// (fields drop in order).
    _names: Option<BrokerNames>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn serving(port: u16) -> bool {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .is_ok_and(|r| r.into_inner().status == 1)
}

/// A port no other fleet of this test run gets: handed out from one counter
/// below the kernel's ephemeral range (so outgoing connections never hold it),
/// and checked to be free now.
fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + u16::try_from(std::process::id() % 500).unwrap() * 20;
    let _ = NEXT.compare_exchange(0, base, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "out of test ports");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Ports for `[auth, users, stats, transfer, notify]`.
pub fn service_ports() -> [u16; 5] {
    [free_port(), free_port(), free_port(), free_port(), free_port()]
}

/// Starts `fleet` in `dir`, its log appended to `dir/fleet.log`.
fn spawn(args: &[&str], dir: &std::path::Path, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fleet.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().cloned())
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// RabbitMQ on an exchange of its own, unless `extra` names a broker: the
/// settings every `--target` process needs, and the names made up for them.
fn events_env(extra: &[(&str, &str)]) -> (Vec<(String, String)>, Option<BrokerNames>) {
    if extra.iter().any(|(k, _)| *k == "FLEET_AMQP_URL") {
        return (Vec::new(), None);
    }
    let exchange = format!("fleet.test.{}", uuid::Uuid::now_v7().simple());
    let env = vec![
        ("FLEET_AMQP_URL".into(), LOCAL_BROKER.into()),
        ("FLEET_EVENTS__DEAD_LETTER_EXCHANGE".into(), format!("{exchange}.dead")),
        ("FLEET_STATS__QUEUE".into(), format!("{exchange}.stats")),
        ("FLEET_NOTIFY__QUEUE".into(), format!("{exchange}.notify")),
        ("FLEET_EVENTS__EXCHANGE".into(), exchange.clone()),
    ];
    (env, Some(broker_names(&exchange)))
}

/// The broker the tests share.
pub const LOCAL_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// What a fleet on the exchange `exchange` declares on the local broker
/// (the exchange, its dead-letter exchange, and the stats and notify queues
/// named after it), deleted when the value drops. A test that makes up an
/// exchange name holds one for as long as its fleets run.
pub fn broker_names(exchange: &str) -> BrokerNames {
    let mut names = BrokerNames::new(LOCAL_BROKER);
    names
        .exchange(exchange)
        .exchange(&format!("{exchange}.dead"))
        .queue(&format!("{exchange}.stats"))
        .queue(&format!("{exchange}.notify"));
    names
}

/// On RabbitMQ, the consumers' durable queues get names of their own unless
/// the test names them: `<exchange>.stats` and `<exchange>.notify` when it
/// names an exchange (so that processes given the same settings share
/// them), else names no other test uses, which the fleet deletes when it
/// drops. A default name would be shared with every other test on the
/// broker, and with queues older versions declared.
fn own_queues(env: &mut Vec<(String, String)>) -> Option<BrokerNames> {
    let value = |env: &[(String, String)], key: &str| env.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let url = value(env, "FLEET_AMQP_URL")?;
    let (prefix, mut names) = match value(env, "FLEET_EVENTS__EXCHANGE") {
        Some(exchange) => (exchange, None),
        None => {
            let prefix = format!("fleet.test.{}", uuid::Uuid::now_v7().simple());
            (prefix, Some(BrokerNames::new(&url)))
        }
    };
    for (key, consumer) in [("FLEET_STATS__QUEUE", "stats"), ("FLEET_NOTIFY__QUEUE", "notify")] {
        if value(env, key).is_none() {
            let queue = format!("{prefix}.{consumer}");
            if let Some(names) = names.as_mut() {
                names.queue(&queue);
            }
            env.push((key.to_string(), queue));
        }
    }
    names
}

/// Gateways that must share Redis state get a Redis deadline that a loaded
/// test machine meets: at the default 250 ms a slow call falls back to the
/// replica's own state, which is right in production and a false failure here.
pub const PATIENT_REDIS: (&str, &str) = ("FLEET_GATEWAY__REDIS_TIMEOUT_MS", "2000");

/// A URL where nothing ever listens (port 1 is never handed out).
pub const DEAD_UPSTREAM: &str = "http://127.0.0.1:1";

/// Which protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

impl Fleet {
    pub async fn start() -> Fleet {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> Fleet {
        Self::launch(&["run"], service_ports(), None, extra).await
    }

    /// A second gateway (`--target gateway`) in front of `front`'s services.
    /// A component alone needs RabbitMQ: without an `FLEET_AMQP_URL` in
    /// `extra`, it gets one, on an exchange of its own.
    pub async fn gateway_for(front: &Fleet, extra: &[(&str, &str)]) -> Fleet {
        let (events, names) = events_env(extra);
        let mut extra: Vec<(&str, &str)> = extra.to_vec();
        extra.extend(events.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let extra = extra.as_slice();
        let cert = front.cert_path().display().to_string();
        let key = front.data_dir().join("tls/dev-key.pem").display().to_string();
        let mut env = vec![
            ("FLEET_GATEWAY__TLS_CERT", cert.as_str()),
            ("FLEET_GATEWAY__TLS_KEY", key.as_str()),
        ];
        env.extend_from_slice(extra);
        let cert_path = front.cert_path();
        let ports = [
            front.auth_port,
            front.users_port,
            front.stats_port,
            front.transfer_port,
            front.notify_port,
        ];
        let mut gateway = Self::launch(&["run", "--target", "gateway"], ports, Some(cert_path), &env).await;
        gateway.names.extend(names);
        gateway
    }

    /// Users, auth and a gateway as three processes sharing `extra`; the
    /// gateway's certificate is made for the occasion.
    pub async fn split(extra: &[(&str, &str)]) -> Split {
        let (events, names) = events_env(extra);
        let mut extra: Vec<(&str, &str)> = extra.to_vec();
        extra.extend(events.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let extra = extra.as_slice();
        let ports = service_ports();
        let users = Self::launch(&["run", "--target", "users"], ports, None, extra).await;
        let auth = Self::launch(&["run", "--target", "auth"], ports, None, extra).await;
        let stats = Self::launch(&["run", "--target", "stats"], ports, None, extra).await;
        let transfer = Self::launch(&["run", "--target", "transfer"], ports, None, extra).await;
        let notify = Self::launch(&["run", "--target", "notify"], ports, None, extra).await;
        let tls = fleet_gateway::tls::development_certificate(&users.data_dir().join("tls")).unwrap();
        let (cert, key) = (tls.cert.display().to_string(), tls.key.display().to_string());
        let mut env = vec![
            ("FLEET_GATEWAY__TLS_CERT", cert.as_str()),
            ("FLEET_GATEWAY__TLS_KEY", key.as_str()),
        ];
        env.extend_from_slice(extra);
        let gateway = Self::launch(&["run", "--target", "gateway"], ports, Some(tls.cert.clone()), &env).await;
        Split {
            users,
            auth,
            stats,
            transfer,
            notify,
            gateway,
            _names: names,
        }
    }

    /// `fleet run --target <target>`, or `fleet run` without one, on
    /// `ports` (`[auth, users, stats, transfer, notify]`), with `extra`
    /// overriding the harness's settings.
    pub async fn launched(target: Option<&str>, ports: [u16; 5], extra: &[(&str, &str)]) -> Fleet {
        let (events, names) = events_env(extra);
        let mut extra: Vec<(&str, &str)> = extra.to_vec();
        extra.extend(events.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let extra = extra.as_slice();
        let mut fleet = match target {
            Some(target) => Self::launch(&["run", "--target", target], ports, None, extra).await,
            None => Self::launch(&["run"], ports, None, extra).await,
        };
        fleet.names.extend(names);
        fleet
    }

    /// Starts `fleet` with `args`; the services listen on `[auth, users,
    /// stats, transfer, notify]`.
    async fn launch(args: &[&str], ports: [u16; 5], cert: Option<PathBuf>, extra: &[(&str, &str)]) -> Fleet {
        let [auth, users, stats, transfer, notify] = ports;
        let dir = tempfile::tempdir().unwrap();
        let (https, http, admin) = (free_port(), free_port(), free_port());
        let mut env: Vec<(String, String)> = vec![
            ("FLEET_DATA_DIR".into(), dir.path().join("data").display().to_string()),
            ("FLEET_LOG__LEVEL".into(), "warn".into()),
            ("FLEET_AUTH__LISTEN".into(), format!("127.0.0.1:{auth}")),
            ("FLEET_AUTH__URL".into(), format!("http://127.0.0.1:{auth}")),
            ("FLEET_USERS__LISTEN".into(), format!("127.0.0.1:{users}")),
            ("FLEET_USERS__URL".into(), format!("http://127.0.0.1:{users}")),
            ("FLEET_STATS__LISTEN".into(), format!("127.0.0.1:{stats}")),
            ("FLEET_STATS__URL".into(), format!("http://127.0.0.1:{stats}")),
            ("FLEET_TRANSFER__LISTEN".into(), format!("127.0.0.1:{transfer}")),
            ("FLEET_TRANSFER__URL".into(), format!("http://127.0.0.1:{transfer}")),
            ("FLEET_NOTIFY__LISTEN".into(), format!("127.0.0.1:{notify}")),
            ("FLEET_NOTIFY__URL".into(), format!("http://127.0.0.1:{notify}")),
            ("FLEET_GATEWAY__HTTPS_LISTEN".into(), format!("127.0.0.1:{https}")),
            ("FLEET_GATEWAY__HTTP_LISTEN".into(), format!("127.0.0.1:{http}")),
            ("FLEET_ADMIN_LISTEN".into(), format!("127.0.0.1:{admin}")),
            // Limits have tests of their own; elsewhere they would only get in the way.
            ("FLEET_GATEWAY__RATE_LIMIT__ENABLED".into(), "false".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())));
        let names = own_queues(&mut env).into_iter().collect();
        let child = spawn(args, dir.path(), &env);
        let mut fleet = Fleet {
            child,
            dir,
            https,
            http,
            admin,
            auth_port: auth,
            users_port: users,
            stats_port: stats,
            transfer_port: transfer,
            notify_port: notify,
            cert,
            args: args.iter().map(|a| (*a).to_string()).collect(),
            env,
            target: args
                .iter()
                .position(|a| *a == "--target")
                .and_then(|i| args.get(i + 1))
                .map(|t| (*t).to_string()),
            names,
        };
        fleet.wait_ready().await;
        fleet
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(self.child.try_wait().unwrap().is_none(), "fleet run exited early");
            // Straight to the services, so readiness spends no rate-limit budget.
            match self.target.as_deref() {
                Some("users") if serving(self.users_port).await => return,
                Some("auth") if serving(self.auth_port).await => return,
                Some("stats") if serving(self.stats_port).await => return,
                Some("transfer") if serving(self.transfer_port).await => return,
                Some("notify") if serving(self.notify_port).await => return,
                Some("users" | "auth" | "stats" | "transfer" | "notify") => {}
                _ => {
                    let services_up = serving(self.auth_port).await
                        && serving(self.users_port).await
                        && serving(self.stats_port).await
                        && serving(self.transfer_port).await
                        && serving(self.notify_port).await;
                    if services_up && self.cert_path().exists() {
                        let health = self.client(Proto::Http1).get(self.url("/health")).send().await;
                        if health.is_ok_and(|r| r.status() == 200) {
                            return;
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "fleet did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the process (SIGKILL: nothing is flushed or handed over) and
    /// starts it again with the same settings and data directory.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.child = spawn(&args, self.dir.path(), &self.env);
        self.wait_ready().await;
    }

    /// Asks the process to stop, as an orchestrator does (SIGTERM).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// How the process ended, once it has, within `within`; `None` if it
    /// still runs.
    pub async fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin listener's `/health/ready`: its status code and body.
    pub async fn readiness(&self) -> Option<(u16, Value)> {
        let url = format!("http://127.0.0.1:{}/health/ready", self.admin);
        let answer = reqwest::get(url).await.ok()?;
        let status = answer.status().as_u16();
        Some((status, answer.json().await.ok()?))
    }

    /// The process id of `fleet`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The gRPC ports of auth and users.
    pub fn service_ports(&self) -> [u16; 2] {
        [self.auth_port, self.users_port]
    }

    /// The process's Prometheus exposition.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }

    /// Everything the process has logged so far (JSON lines on stdout).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fleet.log")).unwrap()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cert_path(&self) -> PathBuf {
        self.cert
            .clone()
            .unwrap_or_else(|| self.data_dir().join("tls").join("dev-cert.pem"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https)
    }

    pub fn client(&self, proto: Proto) -> Client {
        let cert = reqwest::Certificate::from_pem(&std::fs::read(self.cert_path()).unwrap()).unwrap();
        let builder = Client::builder()
            .add_root_certificate(cert)
            .redirect(reqwest::redirect::Policy::none());
        let builder = match proto {
            Proto::Http1 => builder.http1_only(),
            Proto::Http2 => builder,
        };
        builder.build().unwrap()
    }

    /// Runs another `fleet` command against the same configuration.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_fleet"))
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .output()
            .unwrap()
    }
}

/// A client bound to one fleet and protocol, with JSON helpers.
pub struct Api<'a> {
    pub fleet: &'a Fleet,
    pub client: Client,
    pub proto: Proto,
}

/// An answer: status, headers, JSON body (or Null).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub version: Version,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn answer(response: Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let version = response.version();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    Answer {
        status,
        headers,
        body,
        version,
    }
}

impl<'a> Api<'a> {
    pub fn new(fleet: &'a Fleet, proto: Proto) -> Self {
        Self {
            fleet,
            client: fleet.client(proto),
            proto,
        }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut request = self.client.request(method, self.fleet.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = answer(request.send().await.unwrap()).await;
        let expected = match self.proto {
            Proto::Http1 => Version::HTTP_11,
            Proto::Http2 => Version::HTTP_2,
        };
        assert_eq!(answer.version, expected);
        answer
    }

    pub async fn register(&self, email: &str, name: &str) -> Value {
        let body = json!({"email": email, "password": PASSWORD, "display_name": name});
        let answer = self.call(Method::POST, "/api/v1/auth/register", None, Some(body)).await;
        assert_eq!(answer.status, 201, "{:?}", answer.body);
        answer.body["user"].clone()
    }

    pub async fn login(&self, email: &str) -> Value {
        let body = json!({"email": email, "password": PASSWORD});
        let answer = self.call(Method::POST, "/api/v1/auth/login", None, Some(body)).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.body
    }

    pub async fn signed_in(&self, email: &str, name: &str) -> (Value, String) {
        let user = self.register(email, name).await;
        let tokens = self.login(email).await;
        (user, tokens["access_token"].as_str().unwrap().to_string())
    }
}

/// Asserts an RFC 9457 answer with the given status.
pub fn assert_problem(answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/problem+json"));
    for field in ["type", "title", "detail", "code", "request_id"] {
        assert!(answer.body[field].is_string(), "{field} missing in {:?}", answer.body);
    }
    assert_eq!(answer.body["status"], status);
    assert_eq!(answer.body["request_id"].as_str(), answer.header("x-request-id"));
}
