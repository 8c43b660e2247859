//! Every connection on the request path has `TCP_NODELAY`: client to
//! gateway, gateway to each service, service to service. Without it, Nagle's
//! algorithm holds an answer's last small segment back until the peer's
//! delayed ACK, a ~40 ms tail on every uncached request. The options are read
//! off the running `fleet` processes' own sockets.

use fleet_kit::testing::sockets::{TcpSocket, tcp_sockets};
use reqwest::Method;

use crate::harness::{Api, Fleet, Proto};

/// Sockets of `sockets` connected to `port` (outgoing) and accepted on it.
fn on_port(sockets: &[TcpSocket], port: u16) -> (Vec<TcpSocket>, Vec<TcpSocket>) {
    let outgoing = sockets
        .iter()
        .filter(|s| s.peer.is_some_and(|p| p.port() == port))
        .copied()
        .collect();
    let accepted = sockets
        .iter()
        .filter(|s| s.local.port() == port && s.peer.is_some())
        .copied()
        .collect();
    (outgoing, accepted)
}

/// Signs in and reads the profile through the gateway, so that every hop
/// (gateway → auth → users, gateway → users) has a live connection.
async fn exercise(api: &Api<'_>) {
    let (_, token) = api.signed_in("ada@example.com", "Ada").await;
    let me = api.call(Method::GET, "/api/v1/users/me", Some(&token), None).await;
    assert_eq!(me.status, 200, "{:?}", me.body);
}

#[tokio::test]
async fn every_connection_of_the_request_path_has_nodelay_in_one_process() {
    let fleet = Fleet::start().await;
    let api = Api::new(&fleet, Proto::Http2);
    exercise(&api).await;

    let sockets = tcp_sockets(fleet.pid()).unwrap();
    for port in fleet.service_ports() {
        let (outgoing, accepted) = on_port(&sockets, port);
        assert!(!outgoing.is_empty() && !accepted.is_empty(), "port {port}: {sockets:?}");
        for socket in outgoing.iter().chain(&accepted) {
            assert!(socket.nodelay, "port {port}: {socket:?} lacks TCP_NODELAY");
        }
    }
    let (_, clients) = on_port(&sockets, fleet.https);
    assert!(!clients.is_empty(), "{sockets:?}");
    assert!(clients.iter().all(|s| s.nodelay), "{clients:?}");
}

#[tokio::test]
async fn every_connection_between_gateway_and_services_has_nodelay_across_processes() {
    let split = Fleet::split(&[]).await;
    let api = Api::new(&split.gateway, Proto::Http1);
    exercise(&api).await;

    let [auth_port, users_port] = split.gateway.service_ports();
    let gateway = tcp_sockets(split.gateway.pid()).unwrap();
    let auth = tcp_sockets(split.auth.pid()).unwrap();
    let users = tcp_sockets(split.users.pid()).unwrap();
    let checks = [
        ("gateway → auth", on_port(&gateway, auth_port).0),
        ("gateway → users", on_port(&gateway, users_port).0),
        ("auth → users", on_port(&auth, users_port).0),
        ("accepted by auth", on_port(&auth, auth_port).1),
        ("accepted by users", on_port(&users, users_port).1),
    ];
    for (hop, sockets) in checks {
        assert!(!sockets.is_empty(), "{hop}: no connection");
        assert!(
            sockets.iter().all(|s| s.nodelay),
            "{hop}: {sockets:?} lacks TCP_NODELAY"
        );
    }
}
