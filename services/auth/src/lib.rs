//! Fleet's auth service: registration, login with argon2id and a per-account
//! failed-login limit, Ed25519 access tokens with rotating keys and a JWKS,
//! refresh-token families with reuse detection, sessions, password change,
//! and two-factor authentication (TOTP, backup codes, optional SMS codes).
//! It owns credentials, sessions and keys; profiles belong to users.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod admin;
pub mod api;
pub mod directory;
pub mod error;
pub mod grpc;
pub mod hashing;
pub mod keys;
pub mod lockout;
pub mod metrics;
pub mod mfa;
pub mod password;
pub mod store;

use std::{sync::Arc, time::Duration as StdDuration};

use anyhow::Context;
use chrono::Duration;
use fleet_kit::grpc::FreshChannel;
use fleet_kit::{
    Db, SharedClock,
    events::EventPublisher,
    outbox::OutboxRelay,
    revocation::RevokedSessions,
    token::{KeySource, TokenSettings, TokenVerifier},
};
use fleet_proto::{
    auth::v1::auth_service_server::AuthServiceServer,
    events::v1::{Event, event::Payload},
};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::broadcast};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tracing::Instrument;
use uuid::Uuid;

pub use api::AuthApi;
pub use grpc::AuthGrpc;
pub use hashing::{HashingPool, HashingSettings};
pub use keys::TokenIssuer;
pub use lockout::LockoutPolicy;
pub use metrics::AuthMetrics;
pub use mfa::{MfaSettings, SealingKey};

use crate::mfa::totp::TotpParams;

use crate::{
    directory::GrpcDirectory,
    store::{Revoke, RevokeReason},
};

/// The gRPC service name, as health and reflection report it.
pub const SERVICE_NAME: &str = "fleet.auth.v1.AuthService";
/// The schema (PostgreSQL) and file name (SQLite) of the auth store.
pub const STORE_NAME: &str = "auth";
/// How often the signing key is re-read, to follow rotations elsewhere.
const KEY_RELOAD_INTERVAL: StdDuration = StdDuration::from_secs(60);

/// Tunables of the auth service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// Failed-login limits.
    pub lockout: LockoutPolicy,
    /// A session (and its refresh tokens) ends this many days after login.
    pub session_ttl_days: u32,
    /// Second factors.
    pub mfa: MfaSettings,
    /// The password-hashing pool.
    pub hashing: HashingSettings,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            lockout: LockoutPolicy::default(),
            session_ttl_days: 30,
            mfa: MfaSettings::default(),
            hashing: HashingSettings::default(),
        }
    }
}

/// What the auth service runs on.
pub struct Deps {
    /// Its migrated store.
    pub db: Db,
    /// A development setting: conveniences unsafe in production (the SMS
    /// `log` sender) are allowed.
    pub development: bool,
    /// Where its events go.
    pub bus: Arc<dyn EventPublisher>,
    /// Events to follow (user deletions), when the bus is in this process.
    pub events: Option<broadcast::Receiver<Arc<Event>>>,
    /// The time source.
    pub clock: SharedClock,
    /// Issuer, audience, lifetimes.
    pub tokens: TokenSettings,
    /// Tunables.
    pub settings: AuthSettings,
    /// The users service.
    pub users: FreshChannel,
    /// Revoked sessions, shared with this process's verifiers.
    pub revoked: RevokedSessions,
    /// Seals second-factor secrets (see [`MfaSettings::sealing_key`]).
    pub sealing: Arc<SealingKey>,
    /// Where logins are counted.
    pub metrics: AuthMetrics,
    /// Where passwords are hashed (see [`HashingPool::start`]).
    pub hashing: Arc<HashingPool>,
}

/// Makes the store ready.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    db.migrate(&store::migrations())
        .await
        .context("migrating the auth store")
}

/// A running auth service's parts: the API and the verifier of its tokens.
pub struct Auth {
    /// The RPC implementation.
    pub api: Arc<AuthApi>,
    /// Verifies tokens against this service's own keys.
    pub verifier: Arc<TokenVerifier>,
}

/// Assembles the service: loads (or creates) the signing key.
pub async fn build(deps: &Deps) -> anyhow::Result<Auth> {
    let store = store::auth_store(&deps.db);
    let issuer = Arc::new(
        TokenIssuer::load(
            store.clone(),
            deps.tokens.clone(),
            deps.clock.clone(),
            deps.sealing.clone(),
        )
        .await?,
    );
    let relay = OutboxRelay::new(&deps.db, deps.bus.clone(), deps.clock.clone());
    let directory = Arc::new(GrpcDirectory::new(deps.users.clone(), issuer.clone()));
    let verifier = Arc::new(
        TokenVerifier::new(
            deps.tokens.clone(),
            issuer.clone() as Arc<dyn KeySource>,
            deps.clock.clone(),
            deps.revoked.clone(),
        )
        .with_refetch_interval(StdDuration::from_secs(1)),
    );
    let api = Arc::new(AuthApi {
        store,
        issuer,
        directory,
        clock: deps.clock.clone(),
        lockout: deps.settings.lockout.clone(),
        session_ttl: Duration::days(i64::from(deps.settings.session_ttl_days)),
        relay,
        revoked: deps.revoked.clone(),
        mfa: deps.settings.mfa.clone(),
        totp: TotpParams::default(),
        sealing: deps.sealing.clone(),
        sms: mfa::sms::sender(&deps.settings.mfa.sms, deps.development)?,
        hashing: deps.hashing.clone(),
        metrics: deps.metrics.clone(),
    });
    Ok(Auth { api, verifier })
}

/// Serves the auth service on `listener` until `shutdown` is cancelled, with
/// its outbox relay, key reloads and the user-deletion follower alongside.
pub async fn serve(deps: Deps, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let auth = build(&deps).await?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(auth.api.relay.clone().run(shutdown.clone().cancelled_owned()));
    let issuer = auth.api.issuer.clone();
    let stop = shutdown.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(KEY_RELOAD_INTERVAL) => {}
            }
            if let Err(err) = issuer.reload().await {
                tracing::warn!(error = format!("{err:#}"), "could not reload the signing key");
            }
        }
    });
    if let Some(events) = deps.events {
        tasks.spawn(follow_accounts(auth.api.clone(), events, shutdown.clone()));
    }
    let routes = Routes::new(AuthServiceServer::new(AuthGrpc(auth.api.clone())));
    let served = fleet_kit::grpc::serve(
        listener,
        routes,
        &[SERVICE_NAME],
        auth.verifier,
        shutdown.clone().cancelled_owned(),
    )
    .await;
    shutdown.cancel();
    tasks.join_all().await;
    served
}

/// Follows account changes: a deleted account's sessions end and its
/// credentials go; an account whose role or status changed has its sessions
/// ended, since their tokens claim the old role and status.
async fn follow_accounts(api: Arc<AuthApi>, mut events: broadcast::Receiver<Arc<Event>>, stop: CancellationToken) {
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => {
                let Ok(user_id) = Uuid::parse_str(&event.subject_user_id) else {
                    continue;
                };
                let span = fleet_kit::trace::event_span("auth.accounts", &event);
                let done = match &event.payload {
                    Some(Payload::UserDeleted(_)) => api.forget_user(user_id).instrument(span).await,
                    Some(Payload::UserUpdated(updated))
                        if updated.changed.iter().any(|field| field == "role" || field == "status") =>
                    {
                        // Sessions started since carry the new role and status.
                        let changed_at = event
                            .occurred_at
                            .as_ref()
                            .and_then(fleet_kit::time::from_timestamp)
                            .unwrap_or_else(|| api.clock.now());
                        api.end_sessions(user_id, Revoke::StartedBefore(changed_at), RevokeReason::AccountChanged)
                            .instrument(span)
                            .await
                            .map(drop)
                    }
                    _ => continue,
                };
                if let Err(err) = done {
                    tracing::error!(%user_id, error = format!("{err:#}"), "could not apply an account change");
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::error!(missed = n, "auth fell behind the event bus");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
