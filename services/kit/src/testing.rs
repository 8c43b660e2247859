//! Test support: a fresh database per test on either backend, and a macro
//! that runs one store or service test against both. PostgreSQL is used when
//! reachable at its default local address; with `FLEET_REQUIRE_BACKENDS=1`
//! an unreachable one fails the test instead of skipping it. RabbitMQ names a
//! test makes up are deleted when it ends ([`broker::BrokerNames`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod broker;
pub mod own_servers;
pub mod pgbouncer;
pub mod redis_cluster;
pub mod sockets;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// A temporary SQLite file.
    Sqlite,
    /// A new PostgreSQL database.
    Postgres,
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// True when `FLEET_REQUIRE_BACKENDS=1`: a missing backend is a failure.
pub fn backends_required() -> bool {
    std::env::var("FLEET_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// The PostgreSQL server tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("FLEET_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

const PREFIX: &str = "fleet_test_";
/// Test databases older than this are dropped by later test runs.
const STALE_SECS: u64 = 3600;

/// A fresh, empty database on `backend`; `None` (the test skips) when
/// PostgreSQL is unreachable and backends are not required.
pub async fn database(backend: TestBackend) -> Option<TestDatabase> {
    match backend {
        TestBackend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("test.db").display());
            Some(TestDatabase { url, _dir: Some(dir) })
        }
        TestBackend::Postgres => {
            let admin = postgres_admin_url();
            let mut conn = match PgConnection::connect(&admin).await {
                Ok(conn) => conn,
                Err(err) if !backends_required() => {
                    eprintln!("skipping: PostgreSQL unreachable at {admin}: {err}");
                    return None;
                }
                Err(err) => panic!("PostgreSQL required but unreachable at {admin}: {err}"),
            };
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
            drop_stale(&mut conn, now).await;
            let name = format!("{PREFIX}{now}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("create test database");
            let base = admin.split('?').next().unwrap_or(&admin);
            let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
            Some(TestDatabase {
                url: format!("{server}/{name}"),
                _dir: None,
            })
        }
    }
}

async fn drop_stale(conn: &mut PgConnection, now: u64) {
    let names: Vec<(String,)> = sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'fleet\\_test\\_%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    for (name,) in names {
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|ts| ts.parse::<u64>().ok());
        if created.is_some_and(|t| t + STALE_SECS < now) {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
}

/// Runs each named `async fn(TestBackend)` once per backend, as
/// `sqlite::<name>` and `postgres::<name>`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::testing::TestBackend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::testing::TestBackend::Postgres).await
                }
            )*
        }
    };
}

/// A TCP relay to a real server that a test can cut and restore, to simulate
/// an outage without stopping the shared server, or point at another server,
/// as a Service's address follows its selector: connections made before a
/// switch stay where they were, new ones go to the new target.
#[derive(Debug)]
pub struct TcpRelay {
    /// The port to connect to instead of the server's.
    pub port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    target: std::sync::Arc<std::sync::Mutex<String>>,
}

impl TcpRelay {
    /// Relays 127.0.0.1:`port` to `target`.
    pub async fn start(target: &str) -> TcpRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        let target = std::sync::Arc::new(std::sync::Mutex::new(target.to_string()));
        let current = target.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let mut watch = watch.clone();
                if *watch.borrow() {
                    continue; // dropped at once: the client sees the connection close
                }
                let target = current.lock().map(|t| t.clone()).unwrap_or_default();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        TcpRelay { port, cut, target }
    }

    /// Cuts every connection and refuses new ones (`true`), or restores (`false`).
    pub fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }

    /// Sends new connections to `target`; open ones stay where they are.
    pub fn set_target(&self, target: &str) {
        if let Ok(mut current) = self.target.lock() {
            *current = target.to_string();
        }
    }
}

/// A TLS front for a real server that speaks plain TCP, as a managed
/// broker or cache serves TLS: it terminates TLS with a certificate for
/// `localhost` made for the occasion, and relays to the server.
#[derive(Debug)]
pub struct TlsRelay {
    /// The port to connect to with TLS.
    pub port: u16,
    /// The certificate's PEM, to trust as the CA.
    pub ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsRelay {
    /// Serves TLS on 127.0.0.1, relayed to `target`.
    pub async fn start(target: &str) -> TlsRelay {
        use tokio_rustls::rustls::{
            ServerConfig,
            crypto::ring::default_provider,
            pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
        };
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, certified.cert.pem()).expect("write the certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let config = ServerConfig::builder_with_provider(std::sync::Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("the server's certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let target = target.to_string();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (acceptor, target) = (acceptor.clone(), target.clone());
                tokio::spawn(async move {
                    let Ok(mut inbound) = acceptor.accept(inbound).await else {
                        return;
                    };
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        TlsRelay {
            port,
            ca_file,
            _dir: dir,
        }
    }
}

/// Whether a server answers at `addr`; when it does not, `false` (skip) or,
/// with `FLEET_REQUIRE_BACKENDS=1`, a panic.
pub async fn backend_available(name: &str, addr: &str) -> bool {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => true,
        Err(err) if backends_required() => panic!("{name} required but unreachable at {addr}: {err}"),
        Err(err) => {
            eprintln!("skipping: {name} unreachable at {addr}: {err}");
            false
        }
    }
}
