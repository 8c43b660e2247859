//! A channel to another service that moves its calls to a new connection
//! before the service ends the old one.
//!
//! Services end every client connection at [`MAX_CONNECTION_AGE`] (so that
//! clients follow a blue-green switch or a scale-out). A connection the
//! service ends races the calls the client is sending on it: the service's
//! last GOAWAY can be lost to the reset of a socket it has already closed,
//! and a call sent then fails with a broken pipe, with nothing to tell
//! that it never arrived, so it cannot be sent again safely. A
//! [`FreshChannel`] replaces its tonic channel once it is [`CHANNEL_AGE`]
//! old: calls begun on the old one finish there, and the client closes
//! that connection itself once the last of them is done.
//!
//! A tonic channel runs its tasks on the runtime that creates it: a new one
//! is created by the call that finds the old one too old, on that call's
//! runtime, as the first one is.

use std::{
    fmt,
    sync::{Arc, PoisonError, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tonic::{
    body::Body,
    transport::{Channel, Endpoint, channel::ResponseFuture},
};

use super::MAX_CONNECTION_AGE;

/// How old a channel grows before calls go to a new one: well before the
/// service's maximum connection age.
pub const CHANNEL_AGE: Duration = Duration::from_secs(MAX_CONNECTION_AGE.as_secs() * 3 / 4);

/// A lazily connecting channel, renewed every [`CHANNEL_AGE`]; a drop-in
/// for a tonic [`Channel`] in generated clients.
pub struct FreshChannel {
    endpoint: Endpoint,
    current: Arc<RwLock<Option<Current>>>,
    /// The channel `poll_ready` readied, which the next `call` uses.
    ready: Option<Channel>,
}

struct Current {
    channel: Channel,
    born: Instant,
    generation: u64,
}

impl FreshChannel {
    /// A channel to `endpoint`; nothing connects until the first call.
    pub fn lazy(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            current: Arc::new(RwLock::new(None)),
            ready: None,
        }
    }

    /// The channel calls go to now, a new one once the last is too old.
    pub fn channel(&self) -> Channel {
        let now = Instant::now();
        let young = |current: &Current| now.duration_since(current.born) < CHANNEL_AGE;
        if let Ok(slot) = self.current.read()
            && let Some(current) = slot.as_ref().filter(|c| young(c))
        {
            return current.channel.clone();
        }
        let mut slot = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let generation = match slot.as_ref() {
            // Another call renewed it meanwhile.
            Some(current) if young(current) => return current.channel.clone(),
            Some(current) => current.generation + 1,
            None => 1,
        };
        let channel = self.endpoint.connect_lazy();
        *slot = Some(Current {
            channel: channel.clone(),
            born: now,
            generation,
        });
        channel
    }

    /// How many channels calls have had (0: no call yet).
    pub fn generation(&self) -> u64 {
        self.current
            .read()
            .ok()
            .and_then(|slot| slot.as_ref().map(|c| c.generation))
            .unwrap_or(0)
    }
}

impl Clone for FreshChannel {
    /// Shares the channel; a clone is not ready until polled itself.
    fn clone(&self) -> Self {
        Self {
            endpoint: self.endpoint.clone(),
            current: self.current.clone(),
            ready: None,
        }
    }
}

impl fmt::Debug for FreshChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreshChannel")
            .field("uri", self.endpoint.uri())
            .field("generation", &self.generation())
            .finish()
    }
}

impl tower::Service<http::Request<Body>> for FreshChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let channel = match &mut self.ready {
            Some(channel) => channel,
            None => self.ready.insert(self.channel()),
        };
        channel.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // `poll_ready` comes first, by the Service contract.
        let mut channel = self.ready.take().unwrap_or_else(|| self.channel());
        channel.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_move_to_a_new_channel_before_the_service_ends_the_connection() {
        assert!(CHANNEL_AGE < MAX_CONNECTION_AGE);
        let fresh = FreshChannel::lazy(Endpoint::from_static("http://127.0.0.1:9"));
        let clone = fresh.clone();
        assert_eq!(fresh.generation(), 0, "nothing before the first call");
        fresh.channel();
        assert_eq!(clone.generation(), 1, "clones share it");
        tokio::time::advance(CHANNEL_AGE - Duration::from_secs(1)).await;
        clone.channel();
        assert_eq!(fresh.generation(), 1, "kept while young");
        tokio::time::advance(Duration::from_secs(1)).await;
        fresh.channel();
        assert_eq!(clone.generation(), 2, "renewed at its age");
        clone.channel();
        assert_eq!(fresh.generation(), 2);
    }
}
