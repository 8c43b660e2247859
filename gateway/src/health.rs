//! What the gateway depends on, probed in the background: the services it
//! routes to (grpc.health.v1), Redis, and the PostgreSQL and RabbitMQ the
//! fleet is configured with. The latest round answers `/health/external`,
//! `/health/ready` and `/health/cache`, and sets `backend_up` and
//! `backend_probe_duration_seconds`, so a request never waits on a probe.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use fleet_kit::{
    SharedClock,
    probe::{Probe, ProbeKind, check_grpc_health},
};
use pingora::{server::ShutdownWatch, services::background::BackgroundService};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{metrics::GatewayMetrics, redis_link::RedisLink, upstream::Upstreams};

/// How often and how patiently dependencies are probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthSettings {
    /// Seconds between two rounds of probes.
    pub probe_interval_secs: u64,
    /// How long one probe may take before it counts as failed.
    pub probe_timeout_ms: u64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            probe_interval_secs: 10,
            probe_timeout_ms: 2000,
        }
    }
}

/// The latest check of one dependency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// "up" or "down".
    pub status: &'static str,
    /// "service" or "backend".
    pub kind: &'static str,
    /// The round trip, milliseconds.
    pub latency_ms: f64,
    /// When it was checked (RFC 3339).
    pub checked_at: String,
    /// Why it is down (never a URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// Did the last check pass?
    pub fn is_up(&self) -> bool {
        self.status == "up"
    }
}

/// The probes and their latest results.
pub struct Dependencies {
    probes: Vec<Arc<dyn Probe>>,
    reports: RwLock<Option<BTreeMap<String, Report>>>,
    metrics: GatewayMetrics,
    clock: SharedClock,
    settings: HealthSettings,
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.probes.iter().map(|p| p.name()).collect();
        f.debug_struct("Dependencies")
            .field("probes", &names)
            .finish_non_exhaustive()
    }
}

impl Dependencies {
    /// Dependencies checked by `probes`.
    pub fn new(
        probes: Vec<Arc<dyn Probe>>,
        settings: HealthSettings,
        metrics: GatewayMetrics,
        clock: SharedClock,
    ) -> Self {
        Self {
            probes,
            reports: RwLock::new(None),
            metrics,
            clock,
            settings,
        }
    }

    /// Runs every probe once, at the same time, and keeps the results.
    pub async fn probe_all(&self) {
        let timeout = Duration::from_millis(self.settings.probe_timeout_ms.max(1));
        let mut checks = tokio::task::JoinSet::new();
        for probe in &self.probes {
            let probe = probe.clone();
            checks.spawn(async move {
                let checked = fleet_kit::probe::run(probe.as_ref(), timeout).await;
                (probe, checked)
            });
        }
        let mut round = BTreeMap::new();
        while let Some(joined) = checks.join_next().await {
            let Ok((probe, checked)) = joined else { continue };
            let name = probe.name().to_string();
            self.metrics
                .backend_checked(&name, checked.up, checked.latency.as_secs_f64());
            round.insert(
                name,
                Report {
                    status: if checked.up { "up" } else { "down" },
                    kind: match probe.kind() {
                        ProbeKind::Service => "service",
                        ProbeKind::Backend => "backend",
                    },
                    latency_ms: checked.latency.as_secs_f64() * 1000.0,
                    checked_at: self.clock.now().to_rfc3339(),
                    error: checked.error,
                },
            );
        }
        let mut reports = self.reports.write().unwrap_or_else(|p| p.into_inner());
        for (name, report) in &round {
            let was_up = reports.as_ref().and_then(|r| r.get(name)).map(Report::is_up);
            match (was_up, report.is_up()) {
                (Some(true) | None, false) => {
                    tracing::warn!(dependency = name, error = report.error, "dependency unreachable");
                }
                (Some(false), true) => tracing::info!(dependency = name, "dependency reachable again"),
                _ => {}
            }
        }
        *reports = Some(round);
    }

    /// The latest results; `None` before the first round.
    pub fn reports(&self) -> Option<BTreeMap<String, Report>> {
        self.reports.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The latest result of one dependency.
    pub fn report(&self, name: &str) -> Option<Report> {
        self.reports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|r| r.get(name).cloned())
    }

    /// Can the gateway serve? After a first round, and while at least one
    /// service it routes to answers (one service down leaves the others'
    /// routes working; Redis, PostgreSQL and RabbitMQ never make it unready).
    pub fn ready(&self) -> Result<(), &'static str> {
        let Some(reports) = self.reports() else {
            return Err("dependencies not checked yet");
        };
        let services: Vec<&Report> = reports.values().filter(|r| r.kind == "service").collect();
        if !services.is_empty() && services.iter().all(|r| !r.is_up()) {
            return Err("no service answers");
        }
        Ok(())
    }
}

/// Probes on a timer inside the gateway's runtime.
pub struct Prober(pub Arc<Dependencies>);

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let interval = Duration::from_secs(self.0.settings.probe_interval_secs.max(1));
        loop {
            self.0.probe_all().await;
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// A service the gateway routes to, through a channel to the same address as
/// requests use (its own: see [`Upstreams::probe_channel`]).
pub struct ServiceProbe {
    name: String,
    service: String,
    upstreams: Arc<Upstreams>,
}

impl ServiceProbe {
    /// Probes `service` (fully qualified); reported under its short name
    /// (`fleet.auth.v1.AuthService` → `auth`).
    pub fn new(service: &str, upstreams: Arc<Upstreams>) -> Self {
        let name = service.split('.').nth(1).unwrap_or(service).to_string();
        Self {
            name,
            service: service.to_string(),
            upstreams,
        }
    }
}

#[async_trait]
impl Probe for ServiceProbe {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProbeKind {
        ProbeKind::Service
    }

    async fn check(&self) -> anyhow::Result<()> {
        let channel = self
            .upstreams
            .probe_channel(&self.service)
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        check_grpc_health(channel, &self.service).await
    }
}

/// Redis: a PING over the link the limiter and the cache share.
pub struct RedisProbe(pub Arc<RedisLink>);

#[async_trait]
impl Probe for RedisProbe {
    fn name(&self) -> &str {
        "redis"
    }

    fn kind(&self) -> ProbeKind {
        ProbeKind::Backend
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.0.ping().await
    }
}

/// Available memory below this share of the total: degraded.
const LOW_MEMORY: f64 = 0.10;
/// A one-minute load above this many times the cores: degraded.
const HIGH_LOAD_PER_CORE: f64 = 2.0;

impl crate::proxy::Gateway {
    /// The answer of a `/health/*` endpoint: HTTP status and JSON body.
    pub async fn health(&self, path: &str) -> (u16, serde_json::Value) {
        match path {
            "/health/ready" => match self.dependencies.ready() {
                Ok(()) => (200, json!({"status": "ok"})),
                Err(reason) => (503, json!({"status": "down", "reason": reason})),
            },
            "/health/cache" => {
                let limiter = self.limiter.health();
                let cache = self.cache.health();
                let lookups = cache.hits + cache.misses;
                let hit_ratio = (lookups > 0).then(|| cache.hits as f64 / lookups as f64);
                let degraded = limiter.redis == "down" || cache.redis == "down";
                let redis = self.dependencies.report("redis");
                let body = json!({
                    "status": if degraded { "degraded" } else { "ok" },
                    "rate_limiter": limiter,
                    "cache": cache,
                    "hit_ratio": hit_ratio,
                    "redis": {
                        "status": cache.redis,
                        "latency_ms": redis.as_ref().map(|r| r.latency_ms),
                        "checked_at": redis.map(|r| r.checked_at),
                    },
                });
                (200, body)
            }
            "/health/external" => {
                if self.dependencies.reports().is_none() {
                    self.dependencies.probe_all().await;
                }
                let reports = self.dependencies.reports().unwrap_or_default();
                let down: Vec<&String> = reports.iter().filter(|(_, r)| !r.is_up()).map(|(n, _)| n).collect();
                let (code, status) = match self.dependencies.ready() {
                    Err(_) => (503, "down"),
                    Ok(()) if down.is_empty() => (200, "ok"),
                    Ok(()) => (200, "degraded"),
                };
                (code, json!({"status": status, "down": down, "dependencies": reports}))
            }
            "/health/memory" => {
                let system = self.process.system();
                let available = if system.total_memory_bytes > 0 {
                    system.available_memory_bytes as f64 / system.total_memory_bytes as f64
                } else {
                    1.0
                };
                let body = json!({
                    "status": if available < LOW_MEMORY { "degraded" } else { "ok" },
                    "process": self.process.process(),
                    "cache": {"local_entries": self.cache.health().local_entries},
                    "system": {
                        "total_bytes": system.total_memory_bytes,
                        "available_bytes": system.available_memory_bytes,
                        "available_ratio": available,
                    },
                });
                (200, body)
            }
            "/health/cpu" => {
                let system = self.process.system();
                let cpu_percent = self.process.cpu_percent();
                let [one, five, fifteen] = system.load_average;
                let busy = one > HIGH_LOAD_PER_CORE * system.cores as f64;
                let body = json!({
                    "status": if busy { "degraded" } else { "ok" },
                    "process": {"cpu_percent": cpu_percent},
                    "load_average": {"one": one, "five": five, "fifteen": fifteen},
                    "cores": system.cores,
                });
                (200, body)
            }
            _ => (404, json!({"status": "down", "reason": "no such health check"})),
        }
    }
}

#[cfg(test)]
mod tests {
    use fleet_kit::SystemClock;
    use prometheus_client::registry::Registry;

    use super::*;

    struct Fixed(&'static str, ProbeKind, bool);

    #[async_trait]
    impl Probe for Fixed {
        fn name(&self) -> &str {
            self.0
        }

        fn kind(&self) -> ProbeKind {
            self.1
        }

        async fn check(&self) -> anyhow::Result<()> {
            if self.2 {
                Ok(())
            } else {
                anyhow::bail!("refused by redis://user:pw@host:6379")
            }
        }
    }

    fn dependencies(probes: Vec<Arc<dyn Probe>>) -> (Dependencies, Registry) {
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        let deps = Dependencies::new(probes, HealthSettings::default(), metrics, Arc::new(SystemClock));
        (deps, registry)
    }

    #[tokio::test]
    async fn readiness_needs_a_first_round_and_one_serving_service() {
        let (deps, registry) = dependencies(vec![
            Arc::new(Fixed("auth", ProbeKind::Service, false)),
            Arc::new(Fixed("users", ProbeKind::Service, true)),
            Arc::new(Fixed("redis", ProbeKind::Backend, false)),
        ]);
        assert_eq!(deps.ready(), Err("dependencies not checked yet"));
        deps.probe_all().await;
        assert_eq!(deps.ready(), Ok(()), "one service down and Redis down: still ready");
        let auth = deps.report("auth").unwrap();
        assert_eq!((auth.status, auth.kind), ("down", "service"));
        assert_eq!(auth.error.as_deref(), Some("refused by <url>"));
        assert!(deps.report("users").unwrap().is_up());

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"backend_up{backend="auth"} 0"#), "{text}");
        assert!(text.contains(r#"backend_up{backend="users"} 1"#), "{text}");
        assert!(
            text.contains(r#"backend_probe_duration_seconds{backend="redis"} "#),
            "{text}"
        );

        let (none_serving, _) = dependencies(vec![Arc::new(Fixed("auth", ProbeKind::Service, false))]);
        none_serving.probe_all().await;
        assert_eq!(none_serving.ready(), Err("no service answers"));
    }
}
