//! Wiring: stores, the event bus, verifiers and the services themselves, for
//! `fleet run` in either mode and for the admin commands.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use fleet_kit::{
    Db, SharedClock, SystemClock,
    events::{EventPublisher, InProcessBus},
    revocation::RevokedSessions,
    token::{GrpcKeySource, TokenVerifier},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::config::FleetConfig;

/// A component `--target` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    /// Registration, login, tokens, sessions.
    Auth,
    /// Profiles, roles, listing.
    Users,
}

impl Component {
    /// Every component built so far, in start order.
    pub const ALL: [Component; 2] = [Component::Users, Component::Auth];

    /// The store name (schema or SQLite file).
    pub fn store(self) -> &'static str {
        match self {
            Component::Auth => fleet_auth::STORE_NAME,
            Component::Users => fleet_users::STORE_NAME,
        }
    }
}

/// Connects to a component's store and migrates it.
pub async fn open_store(config: &FleetConfig, component: Component) -> anyhow::Result<Db> {
    let own = match component {
        Component::Auth => config.auth.service.database_url.as_ref(),
        Component::Users => config.users.database_url.as_ref(),
    };
    let url = config.database_url(own, component.store());
    let db = Db::connect(&url, component.store())
        .await
        .with_context(|| format!("opening the {} store", component.store()))?;
    match component {
        Component::Auth => fleet_auth::migrate(&db).await?,
        Component::Users => fleet_users::migrate(&db).await?,
    }
    tracing::info!(
        component = component.store(),
        backend = db.backend_name(),
        "store ready"
    );
    Ok(db)
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())
        .with_context(|| format!("invalid service URL {url}"))?
        .connect_lazy())
}

async fn bind(addr: SocketAddr, component: Component) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {} listener on {addr}", component.store()))
}

/// Runs `components` in this process until `shutdown` is cancelled.
pub async fn run(config: FleetConfig, components: &[Component], shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.amqp_url.is_some() {
        tracing::warn!("AMQP_URL is set, but events still travel on the in-process bus only");
    }
    let clock: SharedClock = Arc::new(SystemClock);
    let bus = InProcessBus::default();
    let publisher: Arc<dyn EventPublisher> = Arc::new(bus.clone());
    let revoked = RevokedSessions::new();
    let _revocations = revoked.follow(bus.subscribe(), clock.clone());

    let mut tasks = tokio::task::JoinSet::new();
    for component in components {
        // Bind before anything else, so a taken port fails at once.
        let listen = match component {
            Component::Users => config.users.listen,
            Component::Auth => config.auth.service.listen,
        };
        let listener = bind(listen, *component).await?;
        let db = open_store(&config, *component).await?;
        let stop = shutdown.clone();
        match component {
            Component::Users => {
                let keys = GrpcKeySource::new(channel(&config.auth.service.url)?);
                let verifier = Arc::new(TokenVerifier::new(
                    config.tokens.clone(),
                    Arc::new(keys),
                    clock.clone(),
                    revoked.clone(),
                ));
                let deps = fleet_users::Deps {
                    db,
                    bus: publisher.clone(),
                    clock: clock.clone(),
                    verifier,
                };
                tasks.spawn(async move { ("users", fleet_users::serve(deps, listener, stop).await) });
            }
            Component::Auth => {
                let deps = fleet_auth::Deps {
                    db,
                    bus: publisher.clone(),
                    events: Some(bus.subscribe()),
                    clock: clock.clone(),
                    tokens: config.tokens.clone(),
                    settings: config.auth.settings.clone(),
                    users: channel(&config.users.url)?,
                    revoked: revoked.clone(),
                };
                tasks.spawn(async move { ("auth", fleet_auth::serve(deps, listener, stop).await) });
            }
        }
    }

    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined.context("a component task panicked")?;
        if let Err(err) = result {
            tracing::error!(component = name, error = format!("{err:#}"), "component stopped");
            failure.get_or_insert(err.context(format!("{name} failed")));
        }
        // One component down takes the process down: the orchestrator restarts it.
        shutdown.cancel();
    }
    failure.map_or(Ok(()), Err)
}
