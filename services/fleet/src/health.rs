//! `fleet health`: the readiness probe as a command, so that an image with
//! neither a shell nor curl can still be probed (`exec` probes, compose
//! healthchecks).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, bail};

use crate::{
    components::{Component, admin_default},
    config::FleetConfig,
};

/// How long the probe waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Succeeds only when the admin listener answers `/health/ready` with 200.
pub async fn check(config: &FleetConfig, target: Option<Component>, admin: Option<&str>) -> anyhow::Result<()> {
    let addr = match admin {
        Some(addr) => addr
            .parse()
            .with_context(|| format!("--admin {addr} is not host:port"))?,
        None => config.admin_listen.unwrap_or_else(|| {
            let components = target.map_or(Component::ALL.to_vec(), |c| vec![c]);
            admin_default(&components)
        }),
    };
    let url = format!("http://{}/health/ready", reachable(addr));
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let answer = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::OK {
        bail!("{url}: {status} {body}");
    }
    println!("{body}");
    Ok(())
}

/// A listener bound to every interface is asked on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_asked_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9092".parse().unwrap()),
            "127.0.0.1:9092".parse().unwrap()
        );
        assert_eq!(reachable("[::]:9092".parse().unwrap()), "[::1]:9092".parse().unwrap());
        assert_eq!(
            reachable("10.0.0.7:9092".parse().unwrap()),
            "10.0.0.7:9092".parse().unwrap()
        );
    }
}
