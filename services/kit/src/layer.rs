//! The tower layer that authenticates every gRPC request: a bearer token, when
//! present, must verify, and its [`Identity`] joins the request's extensions;
//! calls that need one ask for it with [`crate::token::require_identity`].
//! The client address and user agent a forwarder sends are kept only when a
//! service vouches for them (its own token, or one in [`FORWARDER_HEADER`]).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::Status;
use tower::{Layer, Service};

use crate::{
    grpc::{CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER, FORWARDER_HEADER},
    token::{TokenVerifier, bearer},
};

/// Adds [`Authenticate`] around a service.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
}

impl AuthLayer {
    /// Authenticates with `verifier`.
    pub fn new(verifier: Arc<TokenVerifier>) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// Verifies the bearer token of each request before the inner service sees it.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let vouched = forwarding_vouched(&verifier, request.headers()).await;
            let headers = request.headers_mut();
            if !vouched {
                headers.remove(CLIENT_IP_HEADER);
                headers.remove(CLIENT_USER_AGENT_HEADER);
            }
            headers.remove(FORWARDER_HEADER);
            let header = request.headers().get(http::header::AUTHORIZATION);
            if let Some(value) = header {
                let Some(token) = value.to_str().ok().and_then(bearer) else {
                    return Ok(Status::unauthenticated("malformed authorization header").into_http());
                };
                match verifier.verify(token).await {
                    Ok(identity) => {
                        if let Some(user) = identity.user_id() {
                            // The call's span (opened by the observing layer) names the caller.
                            tracing::Span::current().record("user_id", tracing::field::display(user));
                        }
                        request.extensions_mut().insert(identity);
                    }
                    Err(err) => return Ok(Status::from(err).into_http()),
                }
            }
            inner.call(request).await
        })
    }
}

/// Whether a service vouches for the forwarded client headers: the caller's
/// own token is a service's, or [`FORWARDER_HEADER`] holds one.
async fn forwarding_vouched(verifier: &TokenVerifier, headers: &http::HeaderMap) -> bool {
    if !headers.contains_key(CLIENT_IP_HEADER) && !headers.contains_key(CLIENT_USER_AGENT_HEADER) {
        return false;
    }
    for name in [FORWARDER_HEADER, http::header::AUTHORIZATION.as_str()] {
        let token = headers.get(name).and_then(|v| v.to_str().ok()).and_then(bearer);
        if let Some(token) = token
            && verifier.verify(token).await.is_ok_and(|identity| identity.is_service())
        {
            return true;
        }
    }
    false
}
