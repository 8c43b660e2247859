//! Early answers reach clients that are still sending their body: a 413 or
//! a 431 over HTTP/2 and HTTP/1.1, read the way curl reads them (curl gives
//! up on an answer whose stream is reset while it uploads).

use std::process::Command;

use crate::harness::Fleet;

/// The status curl reads for a POST of `body_bytes` with an extra header
/// of `header_bytes`, over `protocol` (`--http2` or `--http1.1`).
fn curl_status(fleet: &Fleet, protocol: &str, body_bytes: usize, header_bytes: usize) -> Option<String> {
    let padding = (header_bytes > 0).then(|| format!("x-padding: {}", "p".repeat(header_bytes)));
    curl_post(fleet, protocol, "/api/v1/auth/register", body_bytes, padding.as_slice())
}

/// The status curl reads for a POST to `path` of `body_bytes` with
/// `headers`, over `protocol`; `None` (skipped) without curl outside CI.
pub(crate) fn curl_post(
    fleet: &Fleet,
    protocol: &str,
    path: &str,
    body_bytes: usize,
    headers: &[String],
) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, vec![b'a'; body_bytes]).unwrap();
    let mut command = Command::new("curl");
    command
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", protocol])
        .arg("--cacert")
        .arg(fleet.cert_path())
        .args(["-H", "content-type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()));
    for header in headers {
        command.args(["-H", header]);
    }
    command.arg(format!("https://localhost:{}{path}", fleet.https));
    match command.output() {
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(err) if std::env::var("FLEET_REQUIRE_BACKENDS").is_ok_and(|v| v == "1") => {
            panic!("curl is required: {err}")
        }
        Err(err) => {
            eprintln!("skipping: no curl: {err}");
            None
        }
    }
}

#[tokio::test]
async fn oversized_bodies_and_headers_get_their_answer_over_both_protocols() {
    let fleet = Fleet::start().await;
    // curl runs to completion here: the fleet is another process.
    for protocol in ["--http2", "--http1.1"] {
        let Some(status) = curl_status(&fleet, protocol, 2 * 1024 * 1024, 0) else {
            return;
        };
        assert_eq!(status, "413", "a 2 MiB body over {protocol}");
        let status = curl_status(&fleet, protocol, 64 * 1024, 20_000).unwrap();
        assert_eq!(status, "431", "20 kB of headers over {protocol}");
    }
}
