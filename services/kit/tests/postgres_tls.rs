//! PostgreSQL over TLS: `sslmode` and `sslrootcert` in `database_url`,
//! against this machine's server, which Debian's packages set up to serve
//! TLS with the host's snakeoil certificate (`CN=localhost`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use fleet_kit::{
    Db,
    testing::{TestBackend, backends_required, database},
};

/// The certificate the server presents, as its trust anchor.
fn server_root() -> Option<String> {
    let root =
        std::env::var("FLEET_TEST_POSTGRES_TLS_ROOT").unwrap_or_else(|_| "/etc/ssl/certs/ssl-cert-snakeoil.pem".into());
    if Path::new(&root).exists() {
        return Some(root);
    }
    assert!(
        !backends_required(),
        "{root} is missing: point FLEET_TEST_POSTGRES_TLS_ROOT at the certificate the test server presents"
    );
    eprintln!("skipping: no certificate of the test server at {root}");
    None
}

/// Whether the pool's connection is encrypted, as the server sees it.
async fn encrypted(db: &Db) -> bool {
    let Db::Postgres(pool) = db else {
        panic!("not PostgreSQL")
    };
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sslmode_and_sslrootcert_in_the_database_url_are_honoured() {
    let Some(test_db) = database(TestBackend::Postgres).await else {
        return;
    };
    let Some(root) = server_root() else {
        return;
    };
    let on = |host: &str, query: &str| test_db.url.replacen("127.0.0.1", host, 1) + query;

    // The certificate checked against the given root and the host name.
    let verified = Db::connect(
        &on("localhost", &format!("?sslmode=verify-full&sslrootcert={root}")),
        "tls_check",
    )
    .await
    .expect("verify-full against the server's own certificate");
    assert!(encrypted(&verified).await, "the connection is encrypted");

    // verify-ca checks the chain only. (With this TLS stack it checks the
    // name as well: sqlx's verifier misses the name error rustls 0.23.24
    // and later report, transact-rs/sqlx#3793, so it fails closed on an
    // address the certificate does not name; use the name it carries.)
    let chain_only = Db::connect(
        &on("localhost", &format!("?sslmode=verify-ca&sslrootcert={root}")),
        "tls_check",
    )
    .await
    .expect("verify-ca");
    assert!(encrypted(&chain_only).await);
    let wrong_name = Db::connect(
        &on("127.0.0.1", &format!("?sslmode=verify-full&sslrootcert={root}")),
        "tls_check",
    )
    .await;
    assert!(
        wrong_name.is_err(),
        "verify-full accepted a certificate for another name"
    );
    // `require` encrypts without checking anything.
    let unchecked = Db::connect(&on("127.0.0.1", "?sslmode=require"), "tls_check")
        .await
        .unwrap();
    assert!(encrypted(&unchecked).await);

    // A root that did not sign the server's certificate is refused.
    let public_roots = "/etc/ssl/certs/ca-certificates.crt";
    if Path::new(public_roots).exists() {
        let unsigned = Db::connect(
            &on("localhost", &format!("?sslmode=verify-ca&sslrootcert={public_roots}")),
            "tls_check",
        )
        .await;
        assert!(unsigned.is_err(), "a certificate no given root signed was accepted");
    }

    // And `disable` means in the clear.
    let clear = Db::connect(&on("127.0.0.1", "?sslmode=disable"), "tls_check")
        .await
        .unwrap();
    assert!(!encrypted(&clear).await);
}
