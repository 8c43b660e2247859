//! The gateway's own metrics, registered into the process registry.

use std::borrow::Cow;

use fleet_kit::metrics::latency_histogram;
use http::Method;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// One answered request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: Cow<'static, str>,
    /// The route template (`/api/v1/users/{id}`) or a fixed label, never the raw path.
    pub endpoint: String,
    /// HTTP status.
    pub status: u16,
}

/// Latency labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// HTTP method.
    pub method: Cow<'static, str>,
    /// The route template or a fixed label.
    pub endpoint: String,
}

/// A route template, the only cache label (bounded cardinality).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// The route template.
    pub cache_key: String,
}

/// A rate-limit outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// "allowed" or "refused".
    pub outcome: &'static str,
}

/// An upstream failure.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The service.
    pub service: String,
    /// The gRPC code, snake_case.
    pub code: String,
}

/// A dependency the gateway probes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// Its name (`redis`, `postgresql`, `auth`).
    pub backend: String,
}

/// Counters of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    /// Requests by method, endpoint and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// Request latency by method and endpoint.
    pub http_request_duration: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Cache hits by route.
    pub cache_hits: Family<CacheLabels, Counter>,
    /// Cache misses by route.
    pub cache_misses: Family<CacheLabels, Counter>,
    /// Rate-limit decisions by outcome.
    pub rate_limit_decisions: Family<DecisionLabels, Counter>,
    /// Failed upstream calls by service and code.
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    /// 1 when the last probe of a dependency passed, else 0.
    pub backend_up: Family<BackendLabels, Gauge>,
    /// The last probe's round trip, seconds.
    pub backend_probe_seconds: Family<BackendLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(latency_histogram),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            rate_limit_decisions: Family::default(),
            upstream_errors: Family::default(),
            backend_up: Family::default(),
            backend_probe_seconds: Family::default(),
        }
    }
}

impl GatewayMetrics {
    /// Registers the gateway's metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("http_requests", "HTTP requests answered", metrics.http_requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            metrics.http_request_duration.clone(),
        );
        registry.register(
            "cache_hits",
            "Answers served from the response cache",
            metrics.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Cacheable requests the cache could not answer",
            metrics.cache_misses.clone(),
        );
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by outcome",
            metrics.rate_limit_decisions.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed calls to services",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "backend_up",
            "Whether the last probe of a dependency passed",
            metrics.backend_up.clone(),
        );
        registry.register(
            "backend_probe_duration_seconds",
            "Round trip of the last probe of a dependency",
            metrics.backend_probe_seconds.clone(),
        );
        metrics
    }

    /// Records one probe of a dependency.
    pub fn backend_checked(&self, backend: &str, up: bool, seconds: f64) {
        let labels = BackendLabels {
            backend: backend.to_string(),
        };
        self.backend_up.get_or_create(&labels).set(i64::from(up));
        self.backend_probe_seconds.get_or_create(&labels).set(seconds);
    }

    /// Counts a cache lookup.
    pub fn cache_lookup(&self, route: &str, hit: bool) {
        let labels = CacheLabels {
            cache_key: route.to_string(),
        };
        let family = if hit { &self.cache_hits } else { &self.cache_misses };
        family.get_or_create(&labels).inc();
    }

    /// Records one answered request.
    pub fn request(&self, method: &Method, endpoint: &str, status: u16, seconds: f64) {
        // Every request pays for its labels: the standard methods' names are
        // borrowed, not copied.
        let method = match *method {
            Method::GET => Cow::Borrowed("GET"),
            Method::POST => Cow::Borrowed("POST"),
            Method::PUT => Cow::Borrowed("PUT"),
            Method::PATCH => Cow::Borrowed("PATCH"),
            Method::DELETE => Cow::Borrowed("DELETE"),
            Method::HEAD => Cow::Borrowed("HEAD"),
            Method::OPTIONS => Cow::Borrowed("OPTIONS"),
            // Made-up methods share one label, as unknown paths do.
            _ => Cow::Borrowed("OTHER"),
        };
        let labels = RequestLabels {
            method,
            endpoint: endpoint.to_string(),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        let latency = LatencyLabels {
            method: labels.method,
            endpoint: labels.endpoint,
        };
        self.http_request_duration.get_or_create(&latency).observe(seconds);
    }

    /// Counts a rate-limit decision.
    pub fn decision(&self, allowed: bool) {
        let outcome = if allowed { "allowed" } else { "refused" };
        self.rate_limit_decisions
            .get_or_create(&DecisionLabels { outcome })
            .inc();
    }
}
