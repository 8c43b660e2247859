//! `fleet run` with no configuration: it starts, creates `./data`, and serves
//! every component on its default port (gRPC health for the services, HTTPS
//! for the gateway).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

struct Fleet(Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serving(port: u16, service: &str) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.into(),
    };
    client
        .check(request)
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

#[tokio::test]
async fn fleet_run_with_no_configuration_serves_every_component_on_its_default_port() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleet"));
    command
        .arg("run")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut fleet = Fleet(command.spawn().unwrap());

    let components = [
        (50051, "fleet.auth.v1.AuthService"),
        (50052, "fleet.users.v1.UsersService"),
        (50053, "fleet.stats.v1.StatsService"),
        (50054, "fleet.transfer.v1.TransferService"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    for (port, service) in components {
        while !serving(port, service).await {
            assert!(fleet.0.try_wait().unwrap().is_none(), "fleet run exited early");
            assert!(Instant::now() < deadline, "{service} is not serving on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The gateway: HTTPS on 8443 with the development certificate, HTTP on 8080.
    let cert = dir.path().join("data/tls/dev-cert.pem");
    let mut healthy = false;
    while !healthy {
        assert!(Instant::now() < deadline, "the gateway is not serving on 8443");
        if let Ok(pem) = std::fs::read(&cert) {
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                .build()
                .unwrap();
            healthy = client
                .get("https://localhost:8443/health")
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = plain.get("http://localhost:8080/health").send().await.unwrap();
    assert_eq!(redirect.status(), 308);
    for store in ["users.db", "auth.db"] {
        assert!(
            dir.path().join("data").join(store).exists(),
            "{store} was not created under ./data"
        );
    }
}
