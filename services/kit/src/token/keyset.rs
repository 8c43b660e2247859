//! The signer's public keys as a verifier holds them: fetched from a
//! [`KeySource`], refreshed when they grow old even while every `kid` is
//! known (so a key withdrawn from the JWKS stops being trusted), and
//! refetched for an unknown `kid` at most once per interval (so made-up
//! `kid`s cannot turn into a flood of fetches).

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::DecodingKey;
use tokio::sync::{Mutex, RwLock};

use super::{KeySource, TokenError, decoding_key};
use crate::clock::SharedClock;

/// How old the key set may grow before it is fetched again.
pub const KEYS_MAX_AGE: Duration = Duration::minutes(5);

#[derive(Default)]
struct State {
    keys: HashMap<String, DecodingKey>,
    /// The last fetch, whatever its outcome.
    attempted_at: Option<DateTime<Utc>>,
    /// The last fetch that brought a key set.
    refreshed_at: Option<DateTime<Utc>>,
}

/// A verifier's key set.
pub struct KeySet {
    source: Arc<dyn KeySource>,
    clock: SharedClock,
    /// The least time between two fetches.
    pub refetch_interval: Duration,
    /// The age at which known keys are fetched again.
    pub max_age: Duration,
    state: RwLock<State>,
    fetching: Mutex<()>,
}

/// What a fetch decision found.
enum Found {
    Key(DecodingKey),
    Fetch,
    Unknown,
}

impl KeySet {
    /// An empty set over `source`.
    pub fn new(source: Arc<dyn KeySource>, clock: SharedClock) -> Self {
        Self {
            source,
            clock,
            refetch_interval: Duration::seconds(30),
            max_age: KEYS_MAX_AGE,
            state: RwLock::new(State::default()),
            fetching: Mutex::new(()),
        }
    }

    fn decide(&self, state: &State, kid: &str) -> Found {
        let now = self.clock.now();
        let tried_lately = state.attempted_at.is_some_and(|at| now - at < self.refetch_interval);
        let fresh = state.refreshed_at.is_some_and(|at| now - at < self.max_age);
        match state.keys.get(kid) {
            // Known and fresh, or old but a fetch just failed: keep serving.
            Some(key) if fresh || tried_lately => Found::Key(key.clone()),
            Some(_) => Found::Fetch,
            None if tried_lately => Found::Unknown,
            None => Found::Fetch,
        }
    }

    /// The key named `kid`, fetching the set when it is old or lacks it.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        match self.decide(&*self.state.read().await, kid) {
            Found::Key(key) => return Ok(key),
            Found::Unknown => return Err(TokenError::UnknownKey),
            Found::Fetch => {}
        }
        // One fetch at a time; whoever waited decides again on what it brought.
        let _guard = self.fetching.lock().await;
        match self.decide(&*self.state.read().await, kid) {
            Found::Key(key) => return Ok(key),
            Found::Unknown => return Err(TokenError::UnknownKey),
            Found::Fetch => {}
        }
        let fetched = self.source.fetch().await;
        let mut state = self.state.write().await;
        let now = self.clock.now();
        state.attempted_at = Some(now);
        match fetched {
            Ok(jwks) => {
                state.keys = jwks
                    .keys
                    .iter()
                    .filter_map(|jwk| Some((jwk.kid.clone(), decoding_key(jwk)?)))
                    .collect();
                state.refreshed_at = Some(now);
                state.keys.get(kid).cloned().ok_or(TokenError::UnknownKey)
            }
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "could not fetch the signing keys");
                // A known key stays trusted until the next attempt may run.
                state.keys.get(kid).cloned().ok_or(TokenError::KeysUnavailable)
            }
        }
    }
}
