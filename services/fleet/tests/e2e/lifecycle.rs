//! A process's end, as an orchestrator drives it: on SIGTERM readiness turns
//! `draining` (and the process keeps serving for its shutdown delay), then
//! the listener stops accepting, open connections are sent GOAWAY, calls in
//! flight go on to their end, and the process exits within its grace
//! period; `fleet health` follows readiness.

use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::harness::{Fleet, service_ports, serving};

/// A grpc.health.v1 `Watch` over a bare HTTP/2 connection: a call that stays
/// in flight until the client ends it. The connection's own task ends `Ok`
/// only when the server closed it with GOAWAY (NO_ERROR); a connection simply
/// dropped ends in an error.
struct Watch {
    answers: h2::RecvStream,
    connection: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

impl Watch {
    async fn open(port: u16) -> Watch {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::post(format!("http://127.0.0.1:{port}/grpc.health.v1.Health/Watch"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (answer, mut body) = client.send_request(request, false).unwrap();
        // One gRPC frame: uncompressed, empty HealthCheckRequest (the server).
        body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true).unwrap();
        let answer = answer.await.unwrap();
        assert_eq!(answer.status(), 200);
        Watch {
            answers: answer.into_body(),
            connection,
        }
    }

    /// The next status the server streams (`1` SERVING, `2` NOT_SERVING).
    async fn next_status(&mut self) -> i32 {
        let frame = tokio::time::timeout(Duration::from_secs(10), self.answers.data())
            .await
            .expect("a status within 10 s")
            .expect("the stream goes on")
            .unwrap();
        let _ = self.answers.flow_control().release_capacity(frame.len());
        // 5-byte gRPC prefix, then HealthCheckResponse { status = 1: varint }.
        assert!(frame.len() >= 7 && frame[5] == 0x08, "unexpected frame {frame:?}");
        i32::from(frame[6])
    }
}

async fn fleet_health(fleet: &Fleet) -> std::process::Output {
    fleet.command(&["health", "--admin", &format!("127.0.0.1:{}", fleet.admin)])
}

#[tokio::test]
async fn on_sigterm_a_service_drains_its_calls_sends_goaway_and_exits() {
    let mut users = Fleet::launched(Some("users"), service_ports(), &[]).await;
    let users_port = users.service_ports()[1];
    assert_eq!(users.readiness().await.unwrap().0, 200);
    let ready = fleet_health(&users).await;
    assert!(ready.status.success(), "{ready:?}");
    assert!(String::from_utf8_lossy(&ready.stdout).contains("ready"));

    let mut watch = Watch::open(users_port).await;
    assert_eq!(watch.next_status().await, 1, "SERVING before the signal");

    users.terminate();
    // The call in flight is still answered: the service reports it stops.
    assert_eq!(watch.next_status().await, 2, "NOT_SERVING, on the open call");
    let (status, body) = users
        .readiness()
        .await
        .expect("the admin listener answers while draining");
    assert_eq!((status, body["status"].as_str()), (503, Some("draining")));
    let draining = fleet_health(&users).await;
    assert!(!draining.status.success(), "fleet health fails while draining");
    assert!(
        TcpStream::connect(("127.0.0.1", users_port)).await.is_err(),
        "no new connection is accepted"
    );
    assert!(
        users.exited_within(Duration::from_millis(500)).await.is_none(),
        "the process waits for the call in flight"
    );

    // The client ends its call: the connection closes with GOAWAY, and the
    // process exits cleanly, well within its grace period.
    drop(watch.answers);
    let closed = tokio::time::timeout(Duration::from_secs(10), watch.connection)
        .await
        .expect("the connection closes")
        .unwrap();
    assert!(closed.is_ok(), "closed without GOAWAY: {closed:?}");
    let status = users.exited_within(Duration::from_secs(10)).await.expect("exits");
    assert!(status.success(), "{status:?}");
    let gone = fleet_health(&users).await;
    assert!(!gone.status.success(), "fleet health fails when nothing answers");
}

#[tokio::test]
async fn a_call_that_outlasts_the_grace_period_is_cut_and_the_exit_says_so() {
    let mut users = Fleet::launched(Some("users"), service_ports(), &[("FLEET_SHUTDOWN_GRACE_SECS", "1")]).await;
    let mut watch = Watch::open(users.service_ports()[1]).await;
    assert_eq!(watch.next_status().await, 1);
    users.terminate();
    let status = users
        .exited_within(Duration::from_secs(10))
        .await
        .expect("exits soon after the grace period");
    assert!(!status.success(), "a cut drain is a failed exit: {status:?}");
    assert!(users.log().contains("grace period ended"), "{}", users.log());
}

#[tokio::test]
async fn during_the_shutdown_delay_a_service_is_not_ready_yet_still_serves() {
    let mut users = Fleet::launched(Some("users"), service_ports(), &[("FLEET_SHUTDOWN_DELAY_SECS", "3")]).await;
    let users_port = users.service_ports()[1];
    users.terminate();
    let started = std::time::Instant::now();
    loop {
        if users.readiness().await.is_some_and(|(status, _)| status == 503) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "readiness never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Endpoints lag behind readiness: a new connection is still served.
    assert!(serving(users_port).await, "a call on a new connection during the delay");
    assert!(
        users.exited_within(Duration::from_millis(500)).await.is_none(),
        "still running during the delay"
    );
    let status = users
        .exited_within(Duration::from_secs(15))
        .await
        .expect("exits after the delay");
    assert!(status.success(), "{status:?}");
}
