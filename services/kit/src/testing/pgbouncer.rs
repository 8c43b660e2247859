//! A real PgBouncer (Debian's package) in front of the PostgreSQL the tests
//! use, on a loopback port of its own, stopped when dropped.

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::backends_required;

/// A running PgBouncer.
#[derive(Debug)]
pub struct PgBouncer {
    /// Its port.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    /// PgBouncer pooling in `pool_mode` (`session` or `transaction`) to
    /// PostgreSQL on 127.0.0.1:5432, trusting every user as the server does;
    /// `None` (the test skips) when it is not installed and backends are
    /// not required.
    pub fn start(pool_mode: &str) -> Option<PgBouncer> {
        Self::start_with(pool_mode, 20)
    }

    /// The same with `pool_size` server connections per database and user:
    /// fewer than the clients' connections makes every client share them.
    pub fn start_with(pool_mode: &str, pool_size: u32) -> Option<PgBouncer> {
        let Ok(binary) = which("pgbouncer") else {
            assert!(!backends_required(), "pgbouncer is not installed");
            eprintln!("skipping: pgbouncer is not installed");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        // PgBouncer will not run as root: started as root, it becomes
        // postgres, which must read its files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let users = dir.path().join("users.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").expect("users file");
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host=127.0.0.1 port=5432\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\npool_mode = {pool_mode}\n\
                 max_client_conn = 200\ndefault_pool_size = {pool_size}\n\
                 ignore_startup_parameters = extra_float_digits\n",
                users = users.display()
            ),
        )
        .expect("config file");
        for file in [&users, &config] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        let mut command = Command::new(binary);
        if rustix::process::geteuid().is_root() {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer starts");
        let mut bouncer = PgBouncer { port, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                bouncer.child.try_wait().expect("its status").is_none(),
                "pgbouncer exited"
            );
            assert!(Instant::now() < deadline, "pgbouncer is not listening on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(bouncer)
    }

    /// `url` (a database on the tests' PostgreSQL) through this PgBouncer.
    pub fn url_for(&self, url: &str) -> String {
        url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port), 1)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> std::io::Result<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| format!("{dir}/{name}"))
        .find(|candidate| std::path::Path::new(candidate).is_file())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, name.to_string()))
}
