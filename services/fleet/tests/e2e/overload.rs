//! A login storm: auth hashes passwords at its capacity and refuses what
//! exceeds its queue at once, as 503 problem+json with `Retry-After`, rather
//! than holding requests until the gateway's deadline.

use futures::future::join_all;
use reqwest::Method;
use serde_json::json;

use crate::harness::{Api, Fleet, PASSWORD, Proto, assert_problem};

#[tokio::test]
async fn logins_past_the_hashing_queue_are_refused_at_once_with_retry_after() {
    // One hashing thread and no queue: a storm of 40 exceeds it at once.
    let fleet = Fleet::start_with(&[
        ("FLEET_AUTH__HASHING__WORKERS", "1"),
        ("FLEET_AUTH__HASHING__MAX_QUEUED", "0"),
        // A deadline nothing waits for: a held request would end as 504.
        ("FLEET_GATEWAY__REQUEST_TIMEOUT_MS", "60000"),
    ])
    .await;
    let api = Api::new(&fleet, Proto::Http2);
    api.register("ada@example.com", "Ada").await;

    let body = json!({"email": "ada@example.com", "password": PASSWORD});
    let storm = (0..40).map(|_| api.call(Method::POST, "/api/v1/auth/login", None, Some(body.clone())));
    let answers = join_all(storm).await;

    let served = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == 503).collect();
    assert!(served >= 1, "no login was served");
    assert!(!refused.is_empty(), "nothing was refused");
    assert_eq!(served + refused.len(), answers.len(), "other answers: {answers:?}");
    for answer in refused {
        assert_problem(answer, 503);
        assert_eq!(answer.header("retry-after"), Some("1"), "{answer:?}");
    }
    // The refusals counted no failure: the account logs in as ever.
    api.login("ada@example.com").await;
    let metrics = fleet.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("auth_password_hashes_refused_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}
