//! The whole fleet's configuration: defaults, then `--config FILE` (TOML),
//! then `FLEET_*` environment variables (and `DATABASE_URL`, `REDIS_URL`,
//! `AMQP_URL`).

use std::{net::SocketAddr, path::PathBuf};

use fleet_auth::AuthSettings;
use fleet_gateway::GatewaySettings;
use fleet_kit::{Secret, telemetry::LogConfig, token::TokenSettings};
use serde::{Deserialize, Serialize};

/// Everything the binary can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetConfig {
    /// A development setting: allows conveniences unsafe in production
    /// (the SMS `log` sender, which logs live codes and phone numbers; a
    /// self-signed certificate for a gateway running alone).
    pub development: bool,
    /// Where embedded SQLite files live.
    pub data_dir: PathBuf,
    /// Shared database (`postgres://` or `sqlite://`); each service has its
    /// own schema or file. Unset: SQLite files under `data_dir`.
    pub database_url: Option<Secret>,
    /// The PostgreSQL pool of each service: size, how long a call waits for
    /// a connection, and the statement timeout.
    pub database: fleet_kit::PoolSettings,
    /// Redis (rate limits, cache); not used by the services.
    pub redis_url: Option<Secret>,
    /// RabbitMQ (events).
    pub amqp_url: Option<Secret>,
    /// Logging.
    pub log: LogConfig,
    /// The admin listener: `/metrics` and `/health` of the whole process.
    /// Unset: 127.0.0.1 on 9090, or for a process of one service its own
    /// port (auth 9091, users 9092, stats 9093, transfer 9094, notify 9095),
    /// so that services side by side on one host do not collide.
    pub admin_listen: Option<SocketAddr>,
    /// How long a stopping process (SIGTERM, Ctrl-C) may drain: its
    /// readiness turns 503 at once, listeners stop accepting, connections
    /// are sent GOAWAY and calls in flight finish; whatever still runs when
    /// this has passed is cut and the process exits with an error. Keep it
    /// below the orchestrator's kill deadline (Kubernetes'
    /// `terminationGracePeriodSeconds`, 30 by default).
    pub shutdown_grace_secs: u64,
    /// How long a stopping process keeps serving, readiness already 503,
    /// before it stops accepting: the time an orchestrator takes to take it
    /// out of its Services' endpoints (a few seconds on Kubernetes), during
    /// which new connections still arrive. 0 on a laptop.
    pub shutdown_delay_secs: u64,
    /// Access-token issuer, audience and lifetime.
    pub tokens: TokenSettings,
    /// The auth service.
    pub auth: AuthConfig,
    /// The users service.
    pub users: ServiceConfig,
    /// The stats service.
    pub stats: StatsConfig,
    /// The transfer service (export and import).
    pub transfer: TransferConfig,
    /// The notify service (feed, webhooks, email).
    pub notify: NotifyConfig,
    /// The API gateway.
    pub gateway: GatewaySettings,
    /// Exchanges of the RabbitMQ backbone (used when `amqp_url` is set).
    pub events: EventSettings,
}

/// Where events go on RabbitMQ.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EventSettings {
    /// The topic exchange.
    pub exchange: String,
    /// The dead-letter exchange.
    pub dead_letter_exchange: String,
}

impl Default for EventSettings {
    fn default() -> Self {
        let amqp = fleet_kit::amqp::AmqpSettings::default();
        Self {
            exchange: amqp.exchange,
            dead_letter_exchange: amqp.dead_letter_exchange,
        }
    }
}

/// Where one service listens and what it stores in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// How other components reach it.
    pub url: String,
    /// Its own database, overriding the shared one.
    pub database_url: Option<Secret>,
}

impl ServiceConfig {
    fn on_port(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            url: format!("http://127.0.0.1:{port}"),
            database_url: None,
        }
    }
}

/// The stats service: where it runs and how it behaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsConfig {
    /// Listener, URL and store.
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Its queue and retention.
    #[serde(flatten)]
    pub settings: fleet_stats::StatsSettings,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            service: ServiceConfig::on_port(50053),
            settings: fleet_stats::StatsSettings::default(),
        }
    }
}

/// The transfer service: where it runs and how it behaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TransferConfig {
    /// Listener, URL and store.
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// The largest import.
    #[serde(flatten)]
    pub settings: fleet_transfer::TransferSettings,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            service: ServiceConfig::on_port(50054),
            settings: fleet_transfer::TransferSettings::default(),
        }
    }
}

/// The notify service: where it runs and how it behaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyConfig {
    /// Listener, URL and store.
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Its queue, webhooks and email.
    #[serde(flatten)]
    pub settings: fleet_notify::NotifySettings,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            service: ServiceConfig::on_port(50055),
            settings: fleet_notify::NotifySettings::default(),
        }
    }
}

/// The auth service: where it runs and how it behaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Listener, URL and store.
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Lockout and session lifetime.
    #[serde(flatten)]
    pub settings: AuthSettings,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            service: ServiceConfig::on_port(50051),
            settings: AuthSettings::default(),
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self::on_port(0)
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            development: false,
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database: fleet_kit::PoolSettings::default(),
            redis_url: None,
            amqp_url: None,
            log: LogConfig::default(),
            admin_listen: None,
            shutdown_grace_secs: 25,
            shutdown_delay_secs: 0,
            tokens: TokenSettings::default(),
            auth: AuthConfig::default(),
            users: ServiceConfig::on_port(50052),
            stats: StatsConfig::default(),
            transfer: TransferConfig::default(),
            notify: NotifyConfig::default(),
            gateway: GatewaySettings::default(),
            events: EventSettings::default(),
        }
    }
}

impl FleetConfig {
    /// The database URL of `service`, from its own setting, the shared one,
    /// or the embedded default.
    pub fn database_url(&self, own: Option<&Secret>, service: &str) -> String {
        fleet_kit::store::service_database_url(
            own.map(Secret::expose),
            self.database_url.as_ref().map(Secret::expose),
            &self.data_dir,
            service,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> FleetConfig {
        let env = pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string()));
        fleet_kit::config::load(None, env).unwrap()
    }

    #[test]
    fn defaults_run_embedded_on_the_documented_ports() {
        let cfg = load(&[]);
        assert_eq!(cfg.auth.service.listen.port(), 50051);
        assert_eq!(cfg.users.listen.port(), 50052);
        assert_eq!(cfg.database_url(None, "users"), "sqlite://./data/users.db");
        assert_eq!(cfg.auth.settings.lockout.free_attempts, 5);
    }

    #[test]
    fn deeply_nested_gateway_settings_come_from_the_environment() {
        let cfg = load(&[
            ("FLEET_GATEWAY__RATE_LIMIT__USER__PERIOD_SECS", "3600"),
            ("FLEET_GATEWAY__RATE_LIMIT__ENABLED", "false"),
        ]);
        assert_eq!(cfg.gateway.rate_limit.user.period_secs, 3600);
        assert_eq!(cfg.gateway.rate_limit.user.limit, 100);
        assert!(!cfg.gateway.rate_limit.enabled);
    }

    #[test]
    fn nested_settings_come_from_the_environment() {
        let cfg = load(&[
            ("FLEET_AUTH__LISTEN", "0.0.0.0:6000"),
            ("FLEET_AUTH__LOCKOUT__FREE_ATTEMPTS", "3"),
            ("FLEET_TOKENS__ACCESS_TTL_SECS", "60"),
            ("DATABASE_URL", "postgres://db/fleet"),
        ]);
        assert_eq!(cfg.auth.service.listen.port(), 6000);
        assert_eq!(cfg.auth.settings.lockout.free_attempts, 3);
        assert_eq!(cfg.tokens.access_ttl_secs, 60);
        assert_eq!(cfg.database_url(None, "auth"), "postgres://db/fleet");
        assert!(!format!("{cfg:?}").contains("postgres://db"));
    }
}
