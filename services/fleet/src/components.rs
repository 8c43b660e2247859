//! Wiring: stores, the event bus, verifiers and the services themselves, for
//! `fleet run` in either mode and for the admin commands.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use fleet_kit::grpc::FreshChannel;
use fleet_kit::{
    Db, SharedClock, SystemClock,
    amqp::{self, AmqpPublisher, AmqpSettings, ForwardToBus, RecentIds, Subscription},
    events::{EventPublisher, InProcessBus},
    metrics::DbConnections,
    probe::{AmqpProbe, PostgresProbe, Probe},
    process::ProcessMonitor,
    revocation::{GrpcRevocationSource, RevokedSessions},
    token::{GrpcKeySource, TokenVerifier},
};
use fleet_proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::{
    admin_http::{Phase, Readiness},
    config::FleetConfig,
};

/// A component `--target` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    /// The API gateway: TLS, REST, edge authentication.
    Gateway,
    /// Registration, login, tokens, sessions.
    Auth,
    /// Profiles, roles, listing.
    Users,
    /// The activity log and its figures.
    Stats,
    /// Personal-data export.
    Transfer,
    /// Notifications: the feed, webhooks and email.
    Notify,
}

impl Component {
    /// Every component built so far, in start order.
    pub const ALL: [Component; 6] = [
        Component::Users,
        Component::Auth,
        Component::Stats,
        Component::Transfer,
        Component::Notify,
        Component::Gateway,
    ];

    /// The components that own a store.
    pub const STORED: [Component; 5] = [
        Component::Users,
        Component::Auth,
        Component::Stats,
        Component::Transfer,
        Component::Notify,
    ];

    /// The name of the component, as `--target` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::Auth => "auth",
            Component::Users => "users",
            Component::Stats => "stats",
            Component::Transfer => "transfer",
            Component::Notify => "notify",
        }
    }

    /// The name of the component, and of its store (schema or SQLite file).
    pub fn store(self) -> &'static str {
        match self {
            Component::Auth => fleet_auth::STORE_NAME,
            Component::Users => fleet_users::STORE_NAME,
            Component::Stats => fleet_stats::STORE_NAME,
            Component::Transfer => fleet_transfer::STORE_NAME,
            Component::Notify => fleet_notify::STORE_NAME,
            Component::Gateway => "gateway",
        }
    }

    /// Its own database URL setting, if it has one.
    fn own_database_url(self, config: &FleetConfig) -> Option<&fleet_kit::Secret> {
        match self {
            Component::Auth => config.auth.service.database_url.as_ref(),
            Component::Users => config.users.database_url.as_ref(),
            Component::Stats => config.stats.service.database_url.as_ref(),
            Component::Transfer => config.transfer.service.database_url.as_ref(),
            Component::Notify => config.notify.service.database_url.as_ref(),
            Component::Gateway => None,
        }
    }
}

/// Connects to a component's store and migrates it.
pub async fn open_store(config: &FleetConfig, component: Component) -> anyhow::Result<Db> {
    if component == Component::Gateway {
        anyhow::bail!("the gateway has no store");
    }
    let url = config.database_url(component.own_database_url(config), component.store());
    let db = Db::connect_with(&url, component.store(), &config.database)
        .await
        .with_context(|| format!("opening the {} store", component.store()))?;
    match component {
        Component::Auth => fleet_auth::migrate(&db).await?,
        Component::Users => fleet_users::migrate(&db).await?,
        Component::Stats => fleet_stats::migrate(&db).await?,
        Component::Transfer => fleet_transfer::migrate(&db).await?,
        Component::Notify => fleet_notify::migrate(&db).await?,
        Component::Gateway => {}
    }
    tracing::info!(
        component = component.store(),
        backend = db.backend_name(),
        "store ready"
    );
    Ok(db)
}

/// A channel to another service, renewed before the service ends its
/// connection (see [`FreshChannel`]).
fn channel(url: &str) -> anyhow::Result<FreshChannel> {
    Ok(FreshChannel::lazy(
        Endpoint::from_shared(url.to_string()).with_context(|| format!("invalid service URL {url}"))?,
    ))
}

async fn bind(addr: SocketAddr, component: Component) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {} listener on {addr}", component.store()))
}

/// Runs `components` in this process until `stop` is cancelled, then for
/// `shutdown_delay_secs` more with readiness at 503, then drains them.
pub async fn run(mut config: FleetConfig, components: &[Component], stop: CancellationToken) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let readiness = Readiness::default();
    tokio::spawn(stop_after_delay(
        stop,
        shutdown.clone(),
        readiness.clone(),
        Duration::from_secs(config.shutdown_delay_secs),
    ));
    config.tokens.service_secret = fleet_kit::secret::configured_or_file(
        &config.tokens.service_secret,
        &config.data_dir.join("service.key"),
        "tokens.service_secret",
    )?;
    // Settings that cannot work are refused before anything starts.
    if let [alone] = components
        && config.amqp_url.is_none()
    {
        anyhow::bail!(
            "fleet run --target {} needs amqp_url: without RabbitMQ no event (a logout, a revocation, a \
             cache invalidation) reaches the other processes",
            alone.name()
        );
    }
    if components.contains(&Component::Auth) {
        fleet_auth::mfa::sms::sender(&config.auth.settings.mfa.sms, config.development).context("configuration")?;
    }
    let clock: SharedClock = Arc::new(SystemClock);
    let bus = InProcessBus::default();
    let revoked = RevokedSessions::new();
    let publisher: Arc<dyn EventPublisher> = match amqp_settings(&config) {
        Some(settings) => {
            // This process's followers (revocations, deletions, and every
            // replica's own view) hear events through a queue of its own.
            let subscription = Subscription {
                queue: format!("fleet.process.{}", uuid::Uuid::now_v7()),
                bindings: vec!["#".into()],
                private: true,
                prefetch: 64,
                delivery_limit: 0,
                retry_for: fleet_kit::amqp::RETRY_FOR,
            };
            tokio::spawn(amqp::consume(
                settings.clone(),
                subscription,
                Arc::new(Followers {
                    bus: ForwardToBus(bus.clone()),
                    revoked: revoked.clone(),
                }),
                Arc::new(RecentIds::new(10_000)),
                shutdown.clone(),
            ));
            Arc::new(AmqpPublisher::new(settings))
        }
        None => Arc::new(bus.clone()),
    };
    let _revocations = revoked.follow(bus.subscribe(), clock.clone());
    // Auth's durable list keeps the set whole across restarts and missed events.
    let auth_client = AuthServiceClient::new(channel(&config.auth.service.url)?);
    let _resync = revoked.keep_in_sync(
        Arc::new(GrpcRevocationSource(auth_client)),
        clock.clone(),
        shutdown.clone(),
    );

    let mut registry = prometheus_client::registry::Registry::default();
    fleet_kit::metrics::register_events(&mut registry);
    fleet_kit::metrics::register_grpc(&mut registry);
    let db_connections = DbConnections::register(&mut registry);
    let process = Arc::new(ProcessMonitor::new());
    registry.register_collector(Box::new(process.clone()));
    let gateway_metrics = fleet_gateway::metrics::GatewayMetrics::register(&mut registry);
    let auth_metrics = fleet_auth::AuthMetrics::register(&mut registry);
    let stats_metrics = fleet_stats::metrics::StatsMetrics::register(&mut registry);
    let notify_metrics = fleet_notify::metrics::NotifyMetrics::register(&mut registry);

    let mut tasks = tokio::task::JoinSet::new();
    // The admin listener outlives the components: it answers `draining`
    // while they finish, and metrics stay scrapable until the end.
    let admin_listen = config.admin_listen.unwrap_or_else(|| admin_default(components));
    let admin_listener = crate::admin_http::bind(admin_listen).await?;
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(crate::admin_http::serve(
        admin_listener,
        Arc::new(registry),
        readiness.clone(),
        admin_stop.clone(),
    ));
    for component in components.iter().filter(|c| **c != Component::Gateway) {
        // Bind before anything else, so a taken port fails at once.
        let listen = match component {
            Component::Users => config.users.listen,
            Component::Auth => config.auth.service.listen,
            Component::Stats => config.stats.service.listen,
            Component::Transfer => config.transfer.service.listen,
            Component::Notify => config.notify.service.listen,
            Component::Gateway => continue,
        };
        let listener = bind(listen, *component).await?;
        let db = open_store(&config, *component).await?;
        db_connections.track(component.store(), &db);
        let stop = shutdown.clone();
        match component {
            Component::Users => {
                let deps = fleet_users::Deps {
                    db,
                    bus: publisher.clone(),
                    clock: clock.clone(),
                    verifier: service_verifier(&config, &clock, &revoked)?,
                };
                tasks.spawn(async move { ("users", fleet_users::serve(deps, listener, stop).await) });
            }
            Component::Auth => {
                let deps = fleet_auth::Deps {
                    development: config.development,
                    db,
                    bus: publisher.clone(),
                    events: Some(bus.subscribe()),
                    clock: clock.clone(),
                    tokens: config.tokens.clone(),
                    settings: config.auth.settings.clone(),
                    users: channel(&config.users.url)?,
                    revoked: revoked.clone(),
                    sealing: Arc::new(config.auth.settings.mfa.sealing_key(&config.data_dir.join("mfa.key"))?),
                    hashing: fleet_auth::HashingPool::start(&config.auth.settings.hashing, auth_metrics.clone())?,
                    metrics: auth_metrics.clone(),
                };
                tasks.spawn(async move { ("auth", fleet_auth::serve(deps, listener, stop).await) });
            }
            Component::Stats => {
                let feed = match amqp_settings(&config) {
                    Some(settings) => fleet_stats::Feed::Amqp {
                        settings,
                        queue: config.stats.settings.queue.clone(),
                    },
                    None => fleet_stats::Feed::Bus(bus.subscribe()),
                };
                let deps = fleet_stats::Deps {
                    db,
                    bus: publisher.clone(),
                    feed,
                    clock: clock.clone(),
                    verifier: service_verifier(&config, &clock, &revoked)?,
                    users: channel(&config.users.url)?,
                    settings: config.stats.settings.clone(),
                    metrics: stats_metrics.clone(),
                };
                tasks.spawn(async move { ("stats", fleet_stats::serve(deps, listener, stop).await) });
            }
            Component::Transfer => {
                let deps = fleet_transfer::Deps {
                    db,
                    bus: publisher.clone(),
                    clock: clock.clone(),
                    verifier: service_verifier(&config, &clock, &revoked)?,
                    sources: fleet_transfer::Sources {
                        users: channel(&config.users.url)?,
                        auth: channel(&config.auth.service.url)?,
                        stats: channel(&config.stats.service.url)?,
                    },
                    settings: config.transfer.settings.clone(),
                };
                tasks.spawn(async move { ("transfer", fleet_transfer::serve(deps, listener, stop).await) });
            }
            Component::Notify => {
                let feed = match amqp_settings(&config) {
                    Some(settings) => fleet_notify::Feed::Amqp {
                        settings,
                        queue: config.notify.settings.queue.clone(),
                    },
                    None => fleet_notify::Feed::Bus(bus.subscribe()),
                };
                let deps = fleet_notify::Deps {
                    db,
                    feed,
                    clock: clock.clone(),
                    verifier: service_verifier(&config, &clock, &revoked)?,
                    settings: config.notify.settings.clone(),
                    metrics: notify_metrics.clone(),
                };
                tasks.spawn(async move { ("notify", fleet_notify::serve(deps, listener, stop).await) });
            }
            Component::Gateway => {}
        }
    }
    if components.contains(&Component::Gateway) {
        let deps = gateway_deps(
            &config,
            components.len() > 1,
            revoked.clone(),
            clock.clone(),
            &bus,
            gateway_metrics,
            process,
        )?;
        let stop = shutdown.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // Pingora builds and blocks on runtimes of its own: a thread of its own.
        std::thread::Builder::new()
            .name("gateway".into())
            .spawn(move || {
                let result = fleet_gateway::run(deps, stop);
                let _ = done_tx.send(result);
            })
            .context("starting the gateway thread")?;
        tasks.spawn(async move {
            let result = done_rx
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the gateway thread died")));
            ("gateway", result)
        });
    }

    readiness.set(Phase::Ready);
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let failure = drain(tasks, &readiness, &shutdown, grace).await;
    admin_stop.cancel();
    match admin.await {
        Ok(Err(err)) => tracing::error!(error = format!("{err:#}"), "admin listener stopped"),
        Err(err) => tracing::error!(error = %err, "admin listener panicked"),
        Ok(Ok(())) => {}
    }
    failure.map_or(Ok(()), Err)
}

/// Once `stop` is cancelled: readiness `draining` at once, so that the
/// orchestrator takes the process out of its endpoints, while everything
/// keeps serving for `delay`; then `shutdown`.
async fn stop_after_delay(stop: CancellationToken, shutdown: CancellationToken, readiness: Readiness, delay: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = shutdown.cancelled() => return,
    }
    readiness.set(Phase::Draining);
    if !delay.is_zero() {
        tracing::info!(
            delay_secs = delay.as_secs(),
            "stopping: not ready, still serving until the delay ends"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => {}
        }
    }
    shutdown.cancel();
}

/// Waits for the components until the last has stopped. The first to stop
/// (or `shutdown`) stops the rest: readiness turns `draining` at once, and
/// whatever still runs `grace` later is cut. The first failure, if any.
async fn drain(
    mut tasks: tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>,
    readiness: &Readiness,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Option<anyhow::Error> {
    let mut failure = None;
    let deadline = async {
        shutdown.cancelled().await;
        readiness.set(Phase::Draining);
        tracing::info!(grace_secs = grace.as_secs(), "draining");
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                match joined {
                    Ok((name, Err(err))) => {
                        tracing::error!(component = name, error = format!("{err:#}"), "component stopped");
                        failure.get_or_insert(err.context(format!("{name} failed")));
                    }
                    Ok((_, Ok(()))) => {}
                    Err(err) => {
                        failure.get_or_insert(anyhow::anyhow!("a component task panicked: {err}"));
                    }
                }
                // One component down takes the process down: the orchestrator restarts it.
                shutdown.cancel();
            }
            () = &mut deadline => {
                let left = tasks.len();
                tracing::error!(components = left, grace_secs = grace.as_secs(), "still draining when the grace period ended; cut");
                tasks.abort_all();
                failure.get_or_insert(anyhow::anyhow!(
                    "{left} component(s) still draining after {}s (shutdown_grace_secs)",
                    grace.as_secs()
                ));
                break;
            }
        }
    }
    failure
}

/// The admin listener of a process running `components` when none is set:
/// 9090, or 9090 plus the service's number for a process of one service.
pub fn admin_default(components: &[Component]) -> SocketAddr {
    let port = match components {
        [Component::Auth] => 9091,
        [Component::Users] => 9092,
        [Component::Stats] => 9093,
        [Component::Transfer] => 9094,
        [Component::Notify] => 9095,
        _ => 9090,
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The broker and exchanges, when the fleet runs on RabbitMQ.
fn amqp_settings(config: &FleetConfig) -> Option<AmqpSettings> {
    config.amqp_url.as_ref().map(|url| AmqpSettings {
        url: url.expose().to_string(),
        exchange: config.events.exchange.clone(),
        dead_letter_exchange: config.events.dead_letter_exchange.clone(),
    })
}

/// The token verifier of a service that is not auth: auth's key set, this
/// process's revoked sessions.
fn service_verifier(
    config: &FleetConfig,
    clock: &SharedClock,
    revoked: &RevokedSessions,
) -> anyhow::Result<Arc<TokenVerifier>> {
    let keys = GrpcKeySource::new(channel(&config.auth.service.url)?);
    Ok(Arc::new(TokenVerifier::new(
        config.tokens.clone(),
        Arc::new(keys),
        clock.clone(),
        revoked.clone(),
    )))
}

/// This process's followers of RabbitMQ events: the in-process bus, and
/// the revoked sessions, which read auth's whole list again after a
/// reconnection (a private queue loses what was published meanwhile); the
/// bus tells its followers (the gateway's cache) that events were missed.
struct Followers {
    bus: ForwardToBus,
    revoked: RevokedSessions,
}

#[async_trait::async_trait]
impl fleet_kit::amqp::EventHandler for Followers {
    async fn handle(&self, event: &fleet_proto::events::v1::Event) -> Result<(), fleet_kit::amqp::HandleError> {
        self.bus.handle(event).await
    }

    fn reconnected(&self) {
        self.revoked.resync_now();
        // The gateway's cache missed invalidations too.
        self.bus.0.missed();
    }
}

/// The gateway's wiring: upstream URLs, certificate, token settings. With no
/// certificate configured, monolithic mode (or `development`) makes a
/// development one.
fn gateway_deps(
    config: &FleetConfig,
    monolithic: bool,
    revoked: RevokedSessions,
    clock: SharedClock,
    bus: &InProcessBus,
    metrics: fleet_gateway::metrics::GatewayMetrics,
    process: Arc<ProcessMonitor>,
) -> anyhow::Result<fleet_gateway::Deps> {
    let mut settings = config.gateway.clone();
    // The import route takes documents up to transfer's limit; every other
    // route keeps the gateway's.
    settings
        .route_max_body_bytes
        .entry(fleet_transfer::IMPORT_ROUTE.to_string())
        .or_insert(config.transfer.settings.max_import_bytes);
    // Writing a large history takes longer than a request: minutes, unless
    // `gateway.route_timeouts_ms` says otherwise.
    settings
        .route_timeouts_ms
        .entry(fleet_transfer::IMPORT_ROUTE.to_string())
        .or_insert(fleet_transfer::IMPORT_TIMEOUT_MS);
    let certificate = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => fleet_gateway::tls::CertificateFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None) if monolithic || config.development => {
            fleet_gateway::tls::development_certificate(&config.data_dir.join("tls"))?
        }
        _ => anyhow::bail!("set both gateway.tls_cert and gateway.tls_key (or `development` for a self-signed one)"),
    };
    Ok(fleet_gateway::Deps {
        settings,
        certificate,
        upstreams: vec![
            (fleet_auth::SERVICE_NAME.to_string(), config.auth.service.url.clone()),
            (fleet_users::SERVICE_NAME.to_string(), config.users.url.clone()),
            (fleet_stats::SERVICE_NAME.to_string(), config.stats.service.url.clone()),
            (
                fleet_transfer::SERVICE_NAME.to_string(),
                config.transfer.service.url.clone(),
            ),
            (
                fleet_notify::SERVICE_NAME.to_string(),
                config.notify.service.url.clone(),
            ),
        ],
        tokens: config.tokens.clone(),
        revoked,
        clock,
        redis_url: config.redis_url.as_ref().map(|url| url.expose().to_string()),
        events: Some(bus.subscribe()),
        missed_events: Some(bus.subscribe_missed()),
        metrics,
        probes: backend_probes(config),
        process,
        drain: Duration::from_secs(config.shutdown_grace_secs),
    })
}

/// Probes of the PostgreSQL servers and the RabbitMQ the fleet is configured
/// with, for the gateway's `/health/external`. Embedded stores and the
/// in-process bus need none.
fn backend_probes(config: &FleetConfig) -> Vec<Arc<dyn Probe>> {
    let mut postgres: Vec<(Component, String)> = Vec::new();
    for component in Component::STORED {
        let url = config.database_url(component.own_database_url(config), component.store());
        let is_postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if is_postgres && !postgres.iter().any(|(_, seen)| *seen == url) {
            postgres.push((component, url));
        }
    }
    let shared = postgres.len() == 1;
    let mut probes: Vec<Arc<dyn Probe>> = postgres
        .into_iter()
        .map(|(component, url)| {
            let probe = PostgresProbe::new(url);
            if shared {
                Arc::new(probe) as Arc<dyn Probe>
            } else {
                Arc::new(probe.named(format!("postgresql-{}", component.store())))
            }
        })
        .collect();
    if let Some(url) = &config.amqp_url {
        probes.push(Arc::new(AmqpProbe::new(url.expose())));
    }
    probes
}
