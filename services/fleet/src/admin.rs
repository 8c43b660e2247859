//! Operator commands that act on the configured stores directly, also while
//! the fleet runs (their events go to the outbox and out with the next relay).

use std::sync::Arc;

use anyhow::{Context, bail};
use fleet_auth::store::Counter;
use fleet_kit::{Clock, SystemClock};
use fleet_users::{
    domain::{Email, Role},
    store::{UserPatch, user_store},
};

use crate::{
    components::{Component, open_store},
    config::FleetConfig,
};

/// Makes the account with `email` an administrator.
pub async fn promote(config: &FleetConfig, email: &str) -> anyhow::Result<()> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("email {e}"))?;
    let db = open_store(config, Component::Users).await?;
    let users = user_store(&db);
    let Some(user) = users.get_by_email(&email).await? else {
        bail!("no account has the email {email}");
    };
    if user.role == Role::Admin.as_str() {
        println!("{email} is already an administrator");
        return Ok(());
    }
    let patch = UserPatch {
        role: Some(Role::Admin),
        ..UserPatch::default()
    };
    users
        .update(user.id, patch, SystemClock.now())
        .await
        .context("promoting the account")?;
    println!("{email} is now an administrator (new access tokens carry the role)");
    db.close().await;
    Ok(())
}

/// Clears the failed-login locks (password and second factor) of the
/// account with `email`.
pub async fn unlock(config: &FleetConfig, email: &str) -> anyhow::Result<()> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("email {e}"))?;
    let users_db = open_store(config, Component::Users).await?;
    let Some(user) = user_store(&users_db).get_by_email(&email).await? else {
        bail!("no account has the email {email}");
    };
    let auth_db = open_store(config, Component::Auth).await?;
    let auth: Arc<dyn fleet_auth::store::AuthStore> = fleet_auth::store::auth_store(&auth_db);
    if !auth
        .clear_failures(user.id, &[Counter::Password, Counter::SecondFactor], SystemClock.now())
        .await?
    {
        bail!("{email} has no credentials");
    }
    println!("{email} is unlocked");
    Ok(())
}
