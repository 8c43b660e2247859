//! The monitoring assets in k8s/monitoring, checked with Prometheus' and
//! Alertmanager's own tools (promtool, amtool; .ci/run provides them), and
//! held against what the fleet really exposes.

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, Fleet, Proto};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s/monitoring")
}

/// The tool named by `variable` (or found on the PATH), or `None` to skip
/// when it is missing outside CI.
fn tool(variable: &str, name: &str) -> Option<String> {
    let tool = std::env::var(variable).unwrap_or_else(|_| name.into());
    match Command::new(&tool).arg("--version").output() {
        Ok(out) if out.status.success() => Some(tool),
        _ => {
            assert!(
                !fleet_kit::testing::backends_required(),
                "{tool} is required in CI ({variable}); .ci/run provides it"
            );
            eprintln!("skipping: {tool} is missing; .ci/run provides it");
            None
        }
    }
}

/// Runs `tool args…` in the assets folder and returns its output; a failure
/// fails the test with everything the tool said.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).current_dir(assets()).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{said}");
    said
}

/// Every PromQL expression of the dashboard, with Grafana's variables
/// replaced by values Prometheus understands.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(assets().join("grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    let mut ids = BTreeSet::new();
    let mut pending: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = pending.pop() {
        let id = panel["id"].as_u64().unwrap();
        assert!(ids.insert(id), "panel id {id} is used twice");
        if let Some(nested) = panel["panels"].as_array() {
            pending.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let concrete = expr.replace("$__rate_interval", "5m").replace("$component", ".*");
            assert!(!concrete.contains('$'), "panel {id}: an unknown variable in {expr}");
            queries.push((format!("panel {id} {}", panel["title"]), concrete));
        }
    }
    assert!(queries.len() >= 20, "the dashboard lost its queries");
    queries
}

/// Metric names an expression selects: an identifier right before `{` (the
/// assets always write a selector with braces), without recorded series
/// (which carry a colon).
fn selected_metrics(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    for (at, _) in expr.match_indices('{') {
        let start = expr[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let name = &expr[start..at];
        if !name.is_empty() && !name.contains(':') && bytes[start].is_ascii_alphabetic() {
            names.insert(name.to_string());
        }
    }
    names
}

/// Every metric the dashboard and the alert rules select, except the ones
/// Prometheus makes itself (`up`).
fn metrics_the_assets_use() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(assets().join("alerts.yml")).unwrap();
    let mut names: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|(_, expr)| selected_metrics(expr))
        .chain(selected_metrics(&rules))
        .collect();
    names.remove("up");
    names
}

#[test]
fn the_alert_rules_are_valid_and_pass_their_unit_tests() {
    let Some(promtool) = tool("FLEET_PROMTOOL", "promtool") else {
        return;
    };
    run(&promtool, &["check", "rules", "alerts.yml"]);
    let tested = run(&promtool, &["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // The scrape configuration compose.yaml uses, with its rule files.
    run(&promtool, &["check", "config", "prometheus.yml"]);
}

#[test]
fn every_dashboard_query_parses() {
    let Some(promtool) = tool("FLEET_PROMTOOL", "promtool") else {
        return;
    };
    // promtool parses expressions in rule files: one recording rule per query.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (place, expr)) in dashboard_queries().iter().enumerate() {
        rules.push_str(&format!(
            "      # {place}\n      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, rules).unwrap();
    run(&promtool, &["check", "rules", file.to_str().unwrap()]);
}

#[test]
fn the_metric_name_scan_finds_selectors_only() {
    let names = selected_metrics(
        r#"sum by (le) (rate(http_request_duration_seconds_bucket{job="fleet"}[5m])) / fleet:x:rate5m{} and up{job="fleet"}"#,
    );
    let expected: BTreeSet<String> = ["http_request_duration_seconds_bucket", "up"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn alertmanager_routes_critical_alerts_to_the_pager() {
    let Some(amtool) = tool("FLEET_AMTOOL", "amtool") else {
        return;
    };
    run(&amtool, &["check-config", "alertmanager.yml"]);
    let routes = |labels: &[&str], receivers: &str| {
        let verify = format!("--verify.receivers={receivers}");
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file=alertmanager.yml",
            verify.as_str(),
        ];
        args.extend(labels);
        run(&amtool, &args);
    };
    routes(
        &["severity=critical", "alertname=FleetComponentDown"],
        "pager,team-chat",
    );
    routes(&["severity=warning", "alertname=FleetLoginFailureSpike"], "team-chat");
    routes(&["alertname=Unlabelled"], "team-chat");
}

#[tokio::test]
async fn after_a_session_the_metrics_have_the_expected_labels_and_counts() {
    // Limits on, high enough never to refuse: decisions are counted.
    let fleet = Fleet::start_with(&[
        ("FLEET_GATEWAY__RATE_LIMIT__ENABLED", "true"),
        ("FLEET_GATEWAY__RATE_LIMIT__ANONYMOUS__LIMIT", "1000"),
        ("FLEET_GATEWAY__RATE_LIMIT__USER__LIMIT", "1000"),
    ])
    .await;
    let api = Api::new(&fleet, Proto::Http1);
    api.register("ada@example.com", "Ada").await;
    let wrong = json!({"email": "ada@example.com", "password": "not the password!"});
    assert_eq!(
        api.call(Method::POST, "/api/v1/auth/login", None, Some(wrong))
            .await
            .status,
        401
    );
    let token = api.login("ada@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        let listed = api
            .call(Method::GET, "/api/v1/users?limit=10", Some(&token), None)
            .await;
        assert_eq!(listed.status, 200);
    }
    let id = uuid::Uuid::now_v7();
    assert_eq!(
        api.call(Method::GET, &format!("/api/v1/users/{id}"), Some(&token), None)
            .await
            .status,
        404
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/no/such/thing", None, None).await.status,
        404
    );

    // A second step with a made-up challenge.
    let mfa = json!({"mfa_token": "A".repeat(43), "code": "123456"});
    assert_eq!(
        api.call(Method::POST, "/api/v1/auth/login/mfa", None, Some(mfa))
            .await
            .status,
        401
    );

    let metrics = fleet.metrics().await;
    for line in [
        r#"auth_mfa_attempts_total{success="false"} 1"#,
        r#"rate_limit_decisions_total{outcome="allowed"} "#,
        r#"http_requests_total{method="POST",endpoint="/api/v1/auth/login",status="401"} 1"#,
        r#"http_requests_total{method="POST",endpoint="/api/v1/auth/login",status="200"} 1"#,
        r#"http_requests_total{method="POST",endpoint="/api/v1/auth/register",status="201"} 1"#,
        r#"http_requests_total{method="GET",endpoint="/api/v1/users",status="200"} 2"#,
        r#"http_requests_total{method="GET",endpoint="/api/v1/users/{id}",status="404"} 1"#,
        r#"http_requests_total{method="GET",endpoint="unknown",status="404"} 1"#,
        r#"auth_login_attempts_total{success="false"} 1"#,
        r#"auth_login_attempts_total{success="true"} 1"#,
        r#"http_request_duration_seconds_count{method="GET",endpoint="/api/v1/users"} 2"#,
        r#"http_request_duration_seconds_bucket{le="0.001",method="GET",endpoint="/api/v1/users"}"#,
        r#"http_request_duration_seconds_bucket{le="10.0",method="GET",endpoint="/api/v1/users"}"#,
        r#"cache_hits_total{cache_key="/api/v1/users"} 1"#,
        r#"cache_misses_total{cache_key="/api/v1/users"} 1"#,
        r#"database_connections_active{store="auth"} "#,
        r#"database_connections_active{store="users"} "#,
        // Behind the gateway: the list answered once (then cached), the
        // unknown id, the wrong password.
        r#"grpc_server_handled_total{service="fleet.users.v1.UsersService",method="ListUsers",code="ok"} 1"#,
        r#"grpc_server_handled_total{service="fleet.users.v1.UsersService",method="GetUser",code="not_found"} 1"#,
        r#"grpc_server_handled_total{service="fleet.auth.v1.AuthService",method="Login",code="unauthenticated"} 1"#,
        r#"grpc_server_handled_total{service="fleet.auth.v1.AuthService",method="Login",code="ok"} 1"#,
        r#"grpc_server_handling_seconds_count{service="fleet.users.v1.UsersService",method="ListUsers"} 1"#,
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(!metrics.contains(&id.to_string()), "a raw path leaked into a label");
    assert!(!metrics.contains("/no/such/thing"), "a raw path leaked into a label");

    // Every metric the dashboard and the alerts use is one the fleet exposes.
    let families: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    // Event families have samples only once RabbitMQ consumers run (and
    // dead-letter); the AMQP tests of fleet-kit check those two names.
    let amqp_only = ["events_consumed_total", "events_dead_lettered_total"];
    for name in metrics_the_assets_use()
        .into_iter()
        .filter(|n| !amqp_only.contains(&n.as_str()))
    {
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            families.contains(family) || families.contains(name.as_str()),
            "the monitoring assets use {name}, which the fleet does not expose"
        );
    }

    // Prometheus asks for OpenMetrics and gets it.
    let scraped = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/metrics", fleet.admin))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let content_type = scraped.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(scraped.text().await.unwrap().ends_with("# EOF\n"));

    // And Prometheus' own linter accepts the classic exposition.
    if let Some(promtool) = tool("FLEET_PROMTOOL", "promtool") {
        let mut check = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        check.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
