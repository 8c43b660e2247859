//! Assembling and running the gateway: Pingora owns its runtimes, so the
//! gateway runs on a thread of its own until its shutdown token is cancelled.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use fleet_kit::{
    SharedClock,
    probe::Probe,
    process::ProcessMonitor,
    revocation::RevokedSessions,
    token::{KeySource, TokenSettings, TokenVerifier},
};
use fleet_proto::auth::v1::{GetJwksRequest, Jwks, auth_service_client::AuthServiceClient};
use fleet_proto::events::v1::Event;
use pingora::{
    apps::HttpServerOptions,
    listeners::tls::TlsSettings,
    proxy::http_proxy_service,
    server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch, configuration::ServerConf},
    services::background::{BackgroundService, background_service},
};
use prost_reflect::DescriptorPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    cache::ResponseCache,
    health::{Dependencies, Prober, RedisProbe, ServiceProbe},
    metrics::GatewayMetrics,
    openapi,
    proxy::Gateway,
    ratelimit::RateLimiter,
    redis_link::RedisLink,
    routes::RouteTable,
    settings::GatewaySettings,
    tls::CertificateFiles,
    upstream::Upstreams,
};

/// The auth service, whose JWKS the gateway verifies tokens with.
pub const AUTH_SERVICE: &str = "fleet.auth.v1.AuthService";

/// What the gateway runs on.
pub struct Deps {
    /// Configuration.
    pub settings: GatewaySettings,
    /// The certificate to serve.
    pub certificate: CertificateFiles,
    /// Service name → URL of every service with REST routes or gRPC clients.
    pub upstreams: Vec<(String, String)>,
    /// Issuer and audience of access tokens.
    pub tokens: TokenSettings,
    /// Revoked sessions (fed by `session.revoked` events).
    pub revoked: RevokedSessions,
    /// The time source.
    pub clock: SharedClock,
    /// Redis, for shared rate limits and the shared cache tier; unset: per replica.
    pub redis_url: Option<String>,
    /// Counters, registered in the process registry.
    pub metrics: GatewayMetrics,
    /// Domain events (the process's bus), which invalidate the cache.
    pub events: Option<broadcast::Receiver<Arc<Event>>>,
    /// Changes when events may have been missed (the process's consumer
    /// reconnected): the cache then trusts nothing it looked up before.
    pub missed_events: Option<tokio::sync::watch::Receiver<u64>>,
    /// Probes of the stores and brokers the fleet uses (the gateway adds
    /// its services and Redis itself).
    pub probes: Vec<Arc<dyn Probe>>,
    /// This process's figures, for `/health/memory` and `/health/cpu`.
    pub process: Arc<ProcessMonitor>,
    /// How long requests in flight may finish once the gateway is told to
    /// stop (the process's `shutdown_grace_secs`).
    pub drain: std::time::Duration,
}

/// The JWKS of the auth service, fetched through the gateway's own channel.
struct UpstreamKeys(Arc<Upstreams>);

#[async_trait]
impl KeySource for UpstreamKeys {
    async fn fetch(&self) -> anyhow::Result<Jwks> {
        let channel = self.0.channel(AUTH_SERVICE).await?;
        Ok(AuthServiceClient::new(channel)
            .get_jwks(GetJwksRequest {})
            .await?
            .into_inner())
    }
}

struct Cancelled(CancellationToken);

#[async_trait]
impl ShutdownSignalWatch for Cancelled {
    async fn recv(&self) -> ShutdownSignal {
        self.0.cancelled().await;
        ShutdownSignal::FastShutdown
    }
}

/// Builds the gateway from the descriptor set.
pub fn gateway(deps: &Deps) -> anyhow::Result<Gateway> {
    let pool = DescriptorPool::decode(fleet_proto::FILE_DESCRIPTOR_SET).context("decoding the descriptor set")?;
    let names: Vec<&str> = deps.upstreams.iter().map(|(name, _)| name.as_str()).collect();
    let routes = RouteTable::from_pool(&pool, &names)?;
    let upstreams = Arc::new(Upstreams::new(deps.upstreams.clone())?);
    let verifier = Arc::new(TokenVerifier::new(
        deps.tokens.clone(),
        Arc::new(UpstreamKeys(upstreams.clone())),
        deps.clock.clone(),
        deps.revoked.clone(),
    ));
    let redis = deps
        .redis_url
        .as_deref()
        .map(|url| RedisLink::open(url, Duration::from_millis(deps.settings.redis_timeout_ms.max(1))))
        .transpose()?
        .map(Arc::new);
    let limiter = Arc::new(RateLimiter::new(
        deps.settings.rate_limit.clone(),
        redis.clone(),
        deps.clock.clone(),
    ));
    let mut probes: Vec<Arc<dyn Probe>> = names
        .iter()
        .map(|service| Arc::new(ServiceProbe::new(service, upstreams.clone())) as Arc<dyn Probe>)
        .collect();
    if let Some(link) = &redis {
        probes.push(Arc::new(RedisProbe(link.clone())));
    }
    probes.extend(deps.probes.iter().cloned());
    let dependencies = Arc::new(Dependencies::new(
        probes,
        deps.settings.health.clone(),
        deps.metrics.clone(),
        deps.clock.clone(),
    ));
    let cache = Arc::new(ResponseCache::new(
        deps.settings.cache.clone(),
        redis,
        deps.clock.clone(),
    ));
    let openapi = serde_json::to_vec_pretty(&openapi::document(&routes, env!("CARGO_PKG_VERSION")))?;
    let forwarder = Arc::new(crate::forwarder::Forwarder::new(
        upstreams.clone(),
        deps.tokens.service_secret.clone(),
        deps.clock.clone(),
    ));
    Ok(Gateway {
        routes,
        forwarder,
        upstreams,
        verifier,
        settings: deps.settings.clone(),
        openapi: Bytes::from(openapi),
        limiter,
        cache,
        metrics: deps.metrics.clone(),
        dependencies,
        process: deps.process.clone(),
        hsts: format!("max-age={}; includeSubDomains", deps.settings.hsts_max_age_secs).try_into()?,
    })
}

/// Empties cache tags as domain events arrive.
struct CacheInvalidation {
    cache: Arc<ResponseCache>,
    events: std::sync::Mutex<Option<broadcast::Receiver<Arc<Event>>>>,
    missed: std::sync::Mutex<Option<tokio::sync::watch::Receiver<u64>>>,
}

#[async_trait]
impl BackgroundService for CacheInvalidation {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut events) = self.events.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let mut missed = self.missed.lock().unwrap_or_else(|p| p.into_inner()).take();
        loop {
            let missed_changed = async {
                match missed.as_mut() {
                    Some(missed) => missed.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = missed_changed => {
                    if changed {
                        tracing::warn!("events were missed while the broker was away; emptying the cache");
                        self.cache.missed_events().await;
                    } else {
                        missed = None;
                    }
                }
                event = events.recv() => match event {
                    Ok(event) => self.cache.apply(&event).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Missed invalidations: drop everything rather than serve stale answers.
                        tracing::warn!(missed, "cache invalidation fell behind; emptying the cache");
                        self.cache.missed_events().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

/// Runs the gateway on the calling thread until `shutdown` is cancelled.
pub fn run(mut deps: Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    let gateway = gateway(&deps)?;
    let gateway_dependencies = gateway.dependencies.clone();
    let renewal = crate::forwarder::Renewal(gateway.forwarder.clone());
    let invalidation = CacheInvalidation {
        cache: gateway.cache.clone(),
        events: std::sync::Mutex::new(deps.events.take()),
        missed: std::sync::Mutex::new(deps.missed_events.take()),
    };
    let conf = ServerConf {
        threads: deps.settings.threads.max(1),
        // Stop accepting at once (the process's shutdown delay has already
        // kept serving while readiness said `draining`), then give requests
        // in flight the process's grace period.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(deps.drain.as_secs().max(1)),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, gateway);
    if let Some(proxy) = service.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        // Plain HTTP/2 (h2c) for gRPC clients when plain HTTP is served.
        options.h2c = true;
        proxy.server_options = Some(options);
    }
    service.add_tcp(&deps.settings.http_listen.to_string());
    let cert = deps.certificate.cert.to_string_lossy().to_string();
    let key = deps.certificate.key.to_string_lossy().to_string();
    let mut tls = TlsSettings::intermediate(&cert, &key).context("loading the TLS certificate")?;
    tls.enable_h2();
    service.add_tls_with_settings(&deps.settings.https_listen.to_string(), None, tls);
    server.add_service(service);
    server.add_service(background_service("cache invalidation", invalidation));
    server.add_service(background_service("dependency probes", Prober(gateway_dependencies)));
    server.add_service(background_service("service token", renewal));
    tracing::info!(
        https = %deps.settings.https_listen,
        http = %deps.settings.http_listen,
        "gateway listening"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Cancelled(shutdown)),
    });
    Ok(())
}
