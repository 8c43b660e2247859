//! A real Redis Cluster for one test: three masters and a replica of each,
//! `redis-server --cluster-enabled yes` on loopback ports, joined by
//! `redis-cli --cluster create`, stopped when dropped. A test can fail a
//! master over to its replica (`CLUSTER FAILOVER`) while it runs. Started
//! with [`RedisCluster::start_tls`], every node speaks only TLS, to clients
//! and on the cluster bus, with a certificate made for the test.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use super::backends_required;

const MASTERS: usize = 3;
/// How long the cluster may take to form, or a failover to finish.
const SETTLE: Duration = Duration::from_secs(30);

/// A running cluster of six nodes.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<(u16, Child)>,
    /// The certificate (also the clients' CA file) when nodes speak TLS.
    tls: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts and joins the cluster; `None` (the test skips) when
    /// `redis-server` is not installed and backends are not required.
    pub fn start() -> Option<RedisCluster> {
        Self::launch(false)
    }

    /// The same cluster speaking only TLS (`rediss+cluster://`), with a
    /// self-signed certificate for `127.0.0.1` that [`Self::url`] names as
    /// the CA file.
    pub fn start_tls() -> Option<RedisCluster> {
        Self::launch(true)
    }

    fn launch(tls: bool) -> Option<RedisCluster> {
        if Command::new("redis-server").arg("--version").output().is_err() {
            assert!(!backends_required(), "redis-server is not installed");
            eprintln!("skipping: redis-server is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = tls.then(|| certificate(dir.path()));
        let mut nodes = Vec::new();
        for _ in 0..MASTERS * 2 {
            let port = cluster_port();
            nodes.push((port, spawn_node(dir.path(), port, tls.as_deref())));
        }
        let cluster = RedisCluster { nodes, tls, _dir: dir };
        for (port, _) in &cluster.nodes {
            wait_until(&format!("node {port} answers"), || {
                cluster.cli(*port, &["PING"]).is_ok_and(|o| o == "PONG")
            });
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(cluster.tls_args())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(created.status.success(), "redis-cli --cluster create: {created:?}");
        cluster.wait_settled();
        Some(cluster)
    }

    /// `redis+cluster://` naming every node, or `rediss+cluster://` with
    /// the CA file.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect();
        match &self.tls {
            None => format!("redis+cluster://{}", hosts.join(",")),
            Some(ca) => format!("rediss+cluster://{}/?cacertfile={}", hosts.join(","), ca.display()),
        }
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        self.cli(self.nodes[0].0, &["CLUSTER", "KEYSLOT", key])
            .expect("CLUSTER KEYSLOT")
            .parse()
            .expect("a slot")
    }

    /// The ports of the nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(port, _)| *port).collect()
    }

    /// The port of the master that holds `key` now.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot = self.slot(key);
        let nodes = self.cluster_nodes(self.nodes[0].0);
        let master = nodes
            .iter()
            .find(|n| n.master && n.slots.iter().any(|(from, to)| (*from..=*to).contains(&slot)))
            .expect("a master for the slot");
        master.port
    }

    /// Fails the master holding `key` over to its replica, as an operator
    /// does before maintenance, and waits until the replica is the master
    /// and the cluster is whole again. Returns the new master's port.
    pub fn fail_over(&self, key: &str) -> u16 {
        let master = self.master_of(key);
        let nodes = self.cluster_nodes(master);
        let master_id = nodes.iter().find(|n| n.port == master).expect("the master").id.clone();
        let replica = nodes
            .iter()
            .find(|n| !n.master && n.master_id == master_id)
            .expect("the master's replica")
            .port;
        let answer = self.cli(replica, &["CLUSTER", "FAILOVER"]).expect("CLUSTER FAILOVER");
        assert_eq!(answer, "OK", "CLUSTER FAILOVER on {replica}");
        wait_until(&format!("{replica} holds {key}"), || self.master_of(key) == replica);
        self.wait_settled();
        replica
    }

    /// Every node sees a whole cluster, with a replica for every master.
    fn wait_settled(&self) {
        wait_until("the cluster settles", || {
            self.nodes.iter().all(|(port, _)| {
                let ok = self
                    .cli(*port, &["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"));
                let nodes = self.cluster_nodes(*port);
                let whole = nodes.iter().filter(|n| n.master && !n.slots.is_empty()).count() == MASTERS
                    && nodes.iter().filter(|n| !n.master && n.connected).count() == MASTERS;
                // A replica is ready to take over once it has its master's data.
                let synced = nodes.iter().any(|n| n.port == *port && n.master)
                    || self
                        .cli(*port, &["INFO", "replication"])
                        .is_ok_and(|info| info.contains("master_link_status:up"));
                ok && whole && synced
            })
        });
    }

    /// What `redis-cli` needs to reach a node: TLS with the CA file, or nothing.
    fn tls_args(&self) -> Vec<String> {
        self.tls
            .iter()
            .flat_map(|ca| ["--tls".to_string(), "--cacert".to_string(), ca.display().to_string()])
            .collect()
    }

    /// `redis-cli -p port args…`, its answer trimmed.
    fn cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let output = Command::new("redis-cli")
            .args(self.tls_args())
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|err| err.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    fn cluster_nodes(&self, port: u16) -> Vec<Node> {
        self.cli(port, &["CLUSTER", "NODES"])
            .map(|text| parse_nodes(&text))
            .unwrap_or_default()
    }
}

/// A self-signed certificate for `127.0.0.1` and `localhost` (`cert.pem`,
/// its key `key.pem`): every node's, and the CA file of every client.
fn certificate(dir: &Path) -> PathBuf {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).expect("a certificate");
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).expect("write the key");
    cert
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port that is free, and whose cluster bus port (+10 000) is
/// too. Node ports come from 30 000–32 699, below the kernel's ephemeral
/// range, so no node's port is another's bus port (40 000–42 699), and
/// each is handed out once per process.
fn cluster_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = u16::try_from(std::process::id() % 90).unwrap_or(0) * 30;
    loop {
        let port = 30_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 2_700;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn spawn_node(dir: &Path, port: u16, tls: Option<&Path>) -> Child {
    let file = |name: &str| dir.join(format!("{name}-{port}")).display().to_string();
    let mut command = Command::new("redis-server");
    match tls {
        None => command.args(["--port", &port.to_string()]),
        Some(cert) => {
            let (cert, key) = (cert.display().to_string(), dir.join("key.pem").display().to_string());
            command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .args([
                    "--tls-cert-file",
                    &cert,
                    "--tls-key-file",
                    &key,
                    "--tls-ca-cert-file",
                    &cert,
                ])
                .args(["--tls-auth-clients", "no"])
        }
    };
    command
        .args(["--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-config-file", &file("nodes")])
        .args(["--cluster-node-timeout", "2000"])
        .args(["--dir", &dir.display().to_string(), "--save", "", "--appendonly", "no"])
        .args(["--logfile", &file("log")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct Node {
    id: String,
    port: u16,
    master: bool,
    master_id: String,
    connected: bool,
    slots: Vec<(u16, u16)>,
}

fn parse_nodes(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address = fields.get(1)?.split('@').next()?;
            let port = address.rsplit(':').next()?.parse().ok()?;
            let flags = fields.get(2)?;
            let slots = fields
                .iter()
                .skip(8)
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((from, to)) => Some((from.parse().ok()?, to.parse().ok()?)),
                    None => range.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            Some(Node {
                id: (*fields.first()?).to_string(),
                port,
                master: flags.contains("master") && !flags.contains("fail"),
                master_id: (*fields.get(3)?).to_string(),
                connected: fields.get(7) == Some(&"connected"),
                slots,
            })
        })
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done() {
        assert!(Instant::now() < deadline, "waited {SETTLE:?} for: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
