//! The gateway's own metrics, registered into the process registry.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

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
    pub outcome: String,
}

/// An upstream failure.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The service.
    pub service: String,
    /// The gRPC code, snake_case.
    pub code: String,
}

/// Counters of the gateway.
#[derive(Debug, Clone, Default)]
pub struct GatewayMetrics {
    /// Cache hits by route.
    pub cache_hits: Family<CacheLabels, Counter>,
    /// Cache misses by route.
    pub cache_misses: Family<CacheLabels, Counter>,
    /// Rate-limit decisions by outcome.
    pub rate_limit_decisions: Family<DecisionLabels, Counter>,
    /// Failed upstream calls by service and code.
    pub upstream_errors: Family<UpstreamLabels, Counter>,
}

impl GatewayMetrics {
    /// Registers the gateway's metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
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
        metrics
    }

    /// Counts a cache lookup.
    pub fn cache_lookup(&self, route: &str, hit: bool) {
        let labels = CacheLabels {
            cache_key: route.to_string(),
        };
        let family = if hit { &self.cache_hits } else { &self.cache_misses };
        family.get_or_create(&labels).inc();
    }

    /// Counts a rate-limit decision.
    pub fn decision(&self, allowed: bool) {
        let outcome = if allowed { "allowed" } else { "refused" };
        self.rate_limit_decisions
            .get_or_create(&DecisionLabels {
                outcome: outcome.into(),
            })
            .inc();
    }
}
