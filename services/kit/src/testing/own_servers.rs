//! Backend servers a test owns, on loopback ports of their own, so that it
//! can restart them: a PostgreSQL cluster made with `initdb` (Debian's
//! server binaries), a Redis and a RabbitMQ node. Each stops when dropped.

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::backends_required;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_listening(what: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} is not listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A PostgreSQL cluster of the test's own, trusting local connections.
#[derive(Debug)]
pub struct OwnPostgres {
    /// Its port.
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl OwnPostgres {
    /// A new cluster, started; `None` (the test skips) without the server
    /// binaries when backends are not required.
    pub fn start() -> Option<OwnPostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| versions.filter_map(Result::ok).map(|v| v.path().join("bin")).max())
            .filter(|bin| bin.join("initdb").is_file());
        let Some(bin) = bin else {
            assert!(!backends_required(), "PostgreSQL's server binaries are not installed");
            eprintln!("skipping: PostgreSQL's server binaries are not installed");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        // The server will not run as root: as root, it runs as postgres.
        if rustix::process::geteuid().is_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres", &dir.path().display().to_string()])
                .status()
                .expect("chown runs");
            assert!(chown.success(), "chown to postgres");
        }
        let port = free_port();
        let postgres = OwnPostgres {
            port,
            bin,
            data,
            _dir: dir,
        };
        postgres.run(
            "initdb",
            &[
                "-D",
                &postgres.data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        postgres.pg_ctl("start");
        Some(postgres)
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast: sessions are ended) and starts it again.
    pub fn restart(&self) {
        self.pg_ctl("stop");
        self.pg_ctl("start");
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log").display().to_string();
        let data = self.data.display().to_string();
        let mut args = vec![action, "-D", &data, "-w"];
        if action == "start" {
            args.extend(["-l", &log, "-o", &options]);
        } else {
            args.extend(["-m", "fast"]);
        }
        self.run("pg_ctl", &args);
        if action == "start" {
            wait_listening("PostgreSQL", self.port);
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let output = self
            .tool(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the PostgreSQL tool runs");
        assert!(output.status.success(), "{tool} {args:?}: {output:?}");
    }

    /// One of the server's tools, run as postgres when this is root.
    fn tool(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if rustix::process::geteuid().is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self
            .tool("pg_ctl")
            .args(["stop", "-D", &data, "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A Redis of the test's own, keeping nothing on disk.
#[derive(Debug)]
pub struct OwnRedis {
    /// Its port.
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    /// A new Redis, started; `None` (the test skips) without `redis-server`
    /// when backends are not required.
    pub fn start() -> Option<OwnRedis> {
        if Command::new("redis-server").arg("--version").output().is_err() {
            assert!(!backends_required(), "redis-server is not installed");
            eprintln!("skipping: redis-server is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = spawn_redis(dir.path(), port);
        Some(OwnRedis { port, child, dir })
    }

    /// Kills it and starts it again, empty.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis(self.dir.path(), self.port);
    }
}

fn spawn_redis(dir: &Path, port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir", &dir.display().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    wait_listening("Redis", port);
    child
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RabbitMQ node of the test's own (a second node beside the machine's,
/// with its own name, ports and data), which it can restart.
#[derive(Debug)]
pub struct OwnRabbitMq {
    /// Its AMQP port.
    pub port: u16,
    node: String,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl OwnRabbitMq {
    /// A new node, started; `None` (the test skips) without RabbitMQ's
    /// server, or without root to run it as its user, when backends are not
    /// required.
    pub fn start() -> Option<OwnRabbitMq> {
        let installed = Path::new("/usr/sbin/rabbitmq-server").is_file();
        if !installed || !rustix::process::geteuid().is_root() {
            assert!(
                !backends_required(),
                "a RabbitMQ node of the test's own needs rabbitmq-server and root"
            );
            eprintln!("skipping: a RabbitMQ node of the test's own needs rabbitmq-server and root");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, dist) = (free_port(), free_port());
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(
            path("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .expect("config");
        std::fs::write(path("enabled_plugins"), "").expect("plugins file");
        let chown = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq", &dir.path().display().to_string()])
            .status()
            .expect("chown runs");
        assert!(chown.success(), "chown to rabbitmq");
        let node = format!("fleettest{port}@localhost");
        let env = vec![
            ("RABBITMQ_NODENAME".to_string(), node.clone()),
            ("RABBITMQ_NODE_PORT".to_string(), port.to_string()),
            ("RABBITMQ_DIST_PORT".to_string(), dist.to_string()),
            ("RABBITMQ_MNESIA_BASE".to_string(), path("mnesia")),
            ("RABBITMQ_LOG_BASE".to_string(), path("log")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE".to_string(), path("enabled_plugins")),
            ("RABBITMQ_CONFIG_FILE".to_string(), path("rabbitmq.conf")),
            ("RABBITMQ_PID_FILE".to_string(), path("pid")),
        ];
        let rabbit = OwnRabbitMq {
            port,
            node,
            env,
            _dir: dir,
        };
        rabbit.boot();
        Some(rabbit)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the node and starts it again, with its durable queues.
    pub fn restart(&self) {
        self.stop();
        self.boot();
    }

    fn boot(&self) {
        let status = Command::new("/usr/sbin/rabbitmq-server")
            .arg("-detached")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmq-server runs");
        assert!(status.success(), "rabbitmq-server -detached");
        wait_listening("RabbitMQ", self.port);
    }

    fn stop(&self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "-t", "60", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "RabbitMQ still listening on {}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OwnRabbitMq {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "-t", "30", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
