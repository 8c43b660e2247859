//! A blue-green switch rehearsed on one machine: the users service moves from
//! a blue process to a green one and back while requests run through the
//! gateway, and none fails. The "Service" is a relay whose target the test
//! flips, as a selector flip moves a Kubernetes Service: connections opened
//! before the flip stay on the old slot until it sends them GOAWAY.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use fleet_kit::testing::{TcpRelay, TestBackend, backend_available, database};
use reqwest::Method;

use crate::harness::{Api, Fleet, Proto, broker_names, service_ports};

/// Client tasks running requests back to back.
const CLIENTS: usize = 4;

/// Calls the users service handled in `fleet`, from its metrics.
async fn users_calls(fleet: &Fleet) -> f64 {
    fleet
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains("fleet.users.v1.UsersService"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Moves users from `live` to a new slot: start it, flip the relay, stop
/// the old one and require a clean exit within its grace period.
async fn switch(relay: &TcpRelay, live: &mut Fleet, extra: &[(&str, &str)], ports: [u16; 5]) -> Fleet {
    let next = Fleet::launched(Some("users"), ports, extra).await;
    assert_eq!(next.readiness().await.map(|r| r.0), Some(200), "the idle slot is ready");
    relay.set_target(&format!("127.0.0.1:{}", next.service_ports()[1]));
    live.terminate();
    let status = live
        .exited_within(Duration::from_secs(25))
        .await
        .expect("the old slot drains and exits within its grace period");
    assert!(status.success(), "the old slot's exit: {status:?}\n{}", live.log());
    next
}

#[tokio::test]
async fn users_moves_blue_to_green_and_back_under_load_with_no_failed_request() {
    if !backend_available("RabbitMQ", "127.0.0.1:5672").await {
        return;
    }
    let Some(db) = database(TestBackend::Postgres).await else {
        return;
    };
    let secret = format!("bluegreen-{}", uuid::Uuid::now_v7().simple());
    let exchange = format!("fleet.test.{}", uuid::Uuid::now_v7().simple());
    let _names = broker_names(&exchange);
    let (dead, stats, notify) = (
        format!("{exchange}.dead"),
        format!("{exchange}.stats"),
        format!("{exchange}.notify"),
    );
    let shared = [
        ("FLEET_DATABASE_URL", db.url.as_str()),
        ("FLEET_TOKENS__SERVICE_SECRET", secret.as_str()),
        ("FLEET_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        ("FLEET_EVENTS__EXCHANGE", exchange.as_str()),
        ("FLEET_EVENTS__DEAD_LETTER_EXCHANGE", dead.as_str()),
        ("FLEET_STATS__QUEUE", stats.as_str()),
        ("FLEET_NOTIFY__QUEUE", notify.as_str()),
    ];
    let ports = service_ports();
    let slot_ports = |users: u16| {
        let mut p = ports;
        p[1] = users;
        p
    };
    let mut blue = Fleet::launched(Some("users"), slot_ports(service_ports()[1]), &shared).await;
    let relay = TcpRelay::start(&format!("127.0.0.1:{}", blue.service_ports()[1])).await;
    let service = format!("http://127.0.0.1:{}", relay.port);
    // Everything else in one process that reaches users through the relay
    // only (its own users component is never called).
    let mut rest_env = shared.to_vec();
    rest_env.push(("FLEET_USERS__URL", service.as_str()));
    let rest = Fleet::launched(None, ports, &rest_env).await;
    let api = Api::new(&rest, Proto::Http2);
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;

    let (ok, failed, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, token) = (rest.client(Proto::Http2), rest.url("/api/v1/users/me"), token.clone());
        let (ok, failed, stop, failures) = (ok.clone(), failed.clone(), stop.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).bearer_auth(&token).send().await {
                    Ok(answer) if answer.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    answer => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        let seen = match answer {
                            Ok(a) => format!("{} {}", a.status(), a.text().await.unwrap_or_default()),
                            Err(err) => err.to_string(),
                        };
                        failures.lock().unwrap().push(seen);
                    }
                }
            }
        }));
    }
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    settle().await;
    let before = ok.load(Ordering::SeqCst);
    assert!(before > 0, "the load runs before the switch");

    let green = switch(&relay, &mut blue, &shared, slot_ports(service_ports()[1])).await;
    settle().await;
    let on_green = users_calls(&green).await;
    assert!(on_green > 0.0, "green serves after the switch");
    let mut green = green;
    let blue_again = switch(&relay, &mut green, &shared, slot_ports(service_ports()[1])).await;
    settle().await;
    assert!(users_calls(&blue_again).await > 0.0, "blue serves after the rollback");

    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(failed, 0, "{ok} served; failures: {:?}", failures.lock().unwrap());
    assert!(ok > before, "the load ran through both switches ({ok} served)");
    // A profile change on the new slot is seen through the gateway.
    let renamed = api
        .call(
            Method::PATCH,
            "/api/v1/users/me",
            Some(&token),
            Some(serde_json::json!({"display_name": "Ada L."})),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
}
