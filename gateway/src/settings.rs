//! Gateway configuration.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{cache::CacheSettings, health::HealthSettings, ratelimit::RateLimitSettings};

/// What the plain-HTTP listener does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    /// Redirect every request to HTTPS (308).
    #[default]
    Redirect,
    /// Serve the API over plain HTTP too: only behind another TLS terminator.
    Serve,
}

/// Cross-origin requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CorsSettings {
    /// Origins allowed to call the API from a browser (`https://app.example`);
    /// empty: no cross-origin access.
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight answer, seconds.
    pub max_age_secs: u32,
}

/// Everything the gateway can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewaySettings {
    /// HTTPS listener.
    pub https_listen: SocketAddr,
    /// Plain-HTTP listener.
    pub http_listen: SocketAddr,
    /// What plain HTTP does.
    pub http_mode: HttpMode,
    /// The HTTPS port clients see, for redirects (behind a load balancer it
    /// may differ from the listener's); defaults to the listener's port.
    pub public_https_port: Option<u16>,
    /// PEM certificate chain; unset: a self-signed development certificate.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Largest request body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Largest request bodies of particular routes by template
    /// (`/api/v1/import`), bytes.
    pub route_max_body_bytes: BTreeMap<String, usize>,
    /// Largest total size of request headers, bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Upstream deadline of a REST call, milliseconds.
    pub request_timeout_ms: u64,
    /// Deadlines of particular routes by template (`/api/v1/users`), ms.
    pub route_timeouts_ms: BTreeMap<String, u64>,
    /// Deadline of one Redis call (and of connecting), milliseconds: past
    /// it the limiter and the cache work per replica for that request.
    pub redis_timeout_ms: u64,
    /// `Strict-Transport-Security` max-age, seconds.
    pub hsts_max_age_secs: u64,
    /// Cross-origin requests.
    pub cors: CorsSettings,
    /// Worker threads.
    pub threads: usize,
    /// Rate limits.
    pub rate_limit: RateLimitSettings,
    /// The response cache.
    pub cache: CacheSettings,
    /// Probes of the dependencies.
    pub health: HealthSettings,
    /// Serve the account console at `/` (its pages under `/console/`).
    pub console: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            https_listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            http_mode: HttpMode::Redirect,
            public_https_port: None,
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 16 * 1024,
            request_timeout_ms: 10_000,
            route_timeouts_ms: BTreeMap::new(),
            route_max_body_bytes: BTreeMap::new(),
            redis_timeout_ms: 250,
            hsts_max_age_secs: 31_536_000,
            cors: CorsSettings::default(),
            threads: 2,
            rate_limit: RateLimitSettings::default(),
            cache: CacheSettings::default(),
            health: HealthSettings::default(),
            console: true,
        }
    }
}

impl GatewaySettings {
    /// The largest request body of a route.
    pub fn body_limit_for(&self, template: &str) -> usize {
        *self.route_max_body_bytes.get(template).unwrap_or(&self.max_body_bytes)
    }

    /// The upstream deadline of a route.
    pub fn timeout_for(&self, template: &str) -> Duration {
        Duration::from_millis(*self.route_timeouts_ms.get(template).unwrap_or(&self.request_timeout_ms))
    }
}
