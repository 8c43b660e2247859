//! The services behind the gateway: one gRPC channel each, created on first
//! use inside the gateway's own runtime, and unary calls with dynamic
//! (descriptor-driven) messages.
//!
//! A tonic channel's tasks (its buffer worker and its HTTP/2 connection) run
//! on the runtime that first uses it. Requests' channels are therefore first
//! used by requests, on the proxy's runtime; health probes, which run on a
//! background service's runtime, have channels of their own. When a probe
//! created the shared channel, every request's call crossed to the probe
//! thread and back.
//!
//! Each is a [`FreshChannel`]: renewed before the service ends the
//! connection at its maximum age, a race that could fail a call sent at
//! that moment.

use std::{collections::HashMap, str::FromStr, sync::Arc, time::Duration};

use fleet_kit::grpc::FreshChannel;
use http::uri::PathAndQuery;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::{AsciiMetadataValue, MetadataMap},
    transport::{Channel, Endpoint},
};

/// gRPC channels to the services, by fully-qualified service name.
#[derive(Debug, Default)]
pub struct Upstreams {
    services: HashMap<String, Upstream>,
}

#[derive(Debug)]
struct Upstream {
    authority: String,
    channel: FreshChannel,
    probe: FreshChannel,
}

impl Upstreams {
    /// Services and their URLs (`http://host:port`).
    pub fn new(services: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for (name, url) in services {
            let uri: http::Uri = url.parse().map_err(|e| anyhow::anyhow!("upstream URL {url}: {e}"))?;
            let authority = uri
                .authority()
                .map(|a| a.to_string())
                .ok_or_else(|| anyhow::anyhow!("upstream URL {url} has no host"))?;
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| anyhow::anyhow!("upstream URL {url}: {e}"))?
                .connect_timeout(Duration::from_secs(2));
            map.insert(
                name,
                Upstream {
                    authority,
                    channel: FreshChannel::lazy(endpoint.clone()),
                    probe: FreshChannel::lazy(endpoint),
                },
            );
        }
        Ok(Self { services: map })
    }

    /// The channel requests to a service go through now; created lazily,
    /// connecting on demand, on the runtime of the call that needs it.
    pub async fn channel(&self, service: &str) -> Result<Channel, Status> {
        let upstream = self.upstream(service)?;
        Ok(upstream.channel.channel())
    }

    /// A channel of its own for health probes of a service (see the module
    /// documentation).
    pub async fn probe_channel(&self, service: &str) -> Result<Channel, Status> {
        let upstream = self.upstream(service)?;
        Ok(upstream.probe.channel())
    }

    /// How many channels requests to `service` have had (0: none yet).
    pub fn channel_generation(&self, service: &str) -> u64 {
        self.services.get(service).map_or(0, |u| u.channel.generation())
    }

    fn upstream(&self, service: &str) -> Result<&Upstream, Status> {
        self.services
            .get(service)
            .ok_or_else(|| Status::unimplemented(format!("no upstream for {service}")))
    }

    /// `host:port` of a service, for proxying gRPC as is.
    pub fn authority(&self, service: &str) -> Option<&str> {
        self.services.get(service).map(|u| u.authority.as_str())
    }

    /// A client ready to call `service`, and the RPC's path.
    async fn prepare(
        &self,
        service: &str,
        grpc_path: &str,
    ) -> Result<(tonic::client::Grpc<Channel>, PathAndQuery), Status> {
        let channel = self.channel(service).await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| {
            // The client hears which service; the cause is for the log.
            let mut status = Status::unavailable(format!("{service} unavailable"));
            status.set_source(std::sync::Arc::new(e));
            status
        })?;
        let path = PathAndQuery::from_str(grpc_path).map_err(|e| Status::internal(e.to_string()))?;
        Ok((grpc, path))
    }

    /// Calls a unary RPC with a dynamic request.
    pub async fn unary(
        &self,
        service: &str,
        grpc_path: &str,
        request: DynamicMessage,
        response: MessageDescriptor,
        metadata: MetadataMap,
        timeout: Duration,
    ) -> Result<DynamicMessage, Status> {
        let started = std::time::Instant::now();
        let call = until_sent(|| {
            let (request, metadata, response) = (request.clone(), metadata.clone(), response.clone());
            async move {
                let (mut grpc, path) = self.prepare(service, grpc_path).await?;
                let mut request = outgoing(request, metadata);
                // The service learns the deadline; the gateway enforces it
                // itself, so that running out is DEADLINE_EXCEEDED rather
                // than CANCELLED.
                let left = timeout.saturating_sub(started.elapsed());
                let millis = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
                if let Ok(value) = AsciiMetadataValue::try_from(format!("{millis}m")) {
                    request.metadata_mut().insert("grpc-timeout", value);
                }
                grpc.unary(request, path, DynamicCodec { response }).await
            }
        });
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            // tonic servers answer an expired grpc-timeout with CANCELLED.
            Ok(Err(status)) if status.code() == tonic::Code::Cancelled && started.elapsed() >= timeout => {
                Err(late(service))
            }
            Ok(Err(status)) => Err(local(service, status)),
            Err(_) => Err(late(service)),
        }
    }

    /// Starts a server-streaming RPC with a dynamic request: the answer's
    /// metadata and its messages, each read when asked for (HTTP/2 flow
    /// control holds the service back meanwhile). `timeout` bounds the
    /// start only: a stream lasts as long as its reader keeps reading, and
    /// dropping it cancels the call.
    pub async fn server_streaming(
        &self,
        service: &str,
        grpc_path: &str,
        request: DynamicMessage,
        response: MessageDescriptor,
        metadata: MetadataMap,
        timeout: Duration,
    ) -> Result<tonic::Response<tonic::Streaming<DynamicMessage>>, Status> {
        let call = until_sent(|| {
            let (request, metadata, response) = (request.clone(), metadata.clone(), response.clone());
            async move {
                let (mut grpc, path) = self.prepare(service, grpc_path).await?;
                grpc.server_streaming(outgoing(request, metadata), path, DynamicCodec { response })
                    .await
            }
        });
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map_err(|status| local(service, status)),
            Err(_) => Err(late(service)),
        }
    }
}

/// Sends a call again, up to [`SEND_ATTEMPTS`] in all, while it fails
/// without having reached its service (see [`never_sent`]): what a service
/// that is stopping (GOAWAY) or a connection at its maximum age leaves
/// behind, and safe to repeat whatever the method.
async fn until_sent<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status) if attempt < SEND_ATTEMPTS && never_sent(&status) => {
                tracing::debug!(attempt, error = %describe(&status), "an upstream call was not sent; sending it again");
                attempt += 1;
            }
            answer => return answer,
        }
    }
}

/// Attempts at a call that keeps failing before it reaches its service.
const SEND_ATTEMPTS: u32 = 3;

/// Whether a failed call provably never reached its service: it was still
/// queued on a connection that closed (hyper cancels it unsent), or the
/// service refused its stream (`REFUSED_STREAM`, or a stream above the last
/// one a GOAWAY lets finish). Anything else may have been handled.
pub fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            let beyond_goaway = h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
            if refused || beyond_goaway {
                return true;
            }
        }
        source = err.source();
    }
    false
}

fn outgoing(message: DynamicMessage, metadata: MetadataMap) -> tonic::Request<DynamicMessage> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = metadata;
    fleet_kit::trace::inject_metadata(request.metadata_mut());
    request
}

/// The status of a call that ran out of time.
pub fn late(service: &str) -> Status {
    Status::deadline_exceeded(format!("{service} did not answer in time"))
}

/// A status tonic made of a transport failure carries its cause as the
/// source: the client hears only which service failed. A connection lost
/// during the call (tonic says `UNKNOWN`) is `UNAVAILABLE`: the service went
/// away, and the call may succeed once it is back.
pub fn local(service: &str, status: Status) -> Status {
    if std::error::Error::source(&status).is_none() {
        return status;
    }
    let code = match status.code() {
        tonic::Code::Unknown => tonic::Code::Unavailable,
        code => code,
    };
    let mut local = Status::new(code, format!("{service} unavailable"));
    local.set_source(std::sync::Arc::new(status));
    local
}

/// A failed call for the log: its code, its message and what caused it.
pub fn describe(status: &Status) -> String {
    let mut text = format!("{}: {}", fleet_kit::metrics::code_name(status.code()), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&fleet_kit::telemetry::cause_chain(source));
    }
    text
}

/// Metadata for an upstream call; empty values and values that are not
/// valid ASCII are left out.
pub fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
    let mut map = MetadataMap::new();
    for (name, value) in pairs {
        if value.is_empty() {
            continue;
        }
        if let Ok(value) = AsciiMetadataValue::try_from(*value) {
            map.insert(*name, value);
        }
    }
    map
}

/// Encodes dynamic requests and decodes answers by their descriptor.
#[derive(Debug, Clone)]
struct DynamicCodec {
    response: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.response.clone())
    }
}

#[derive(Debug)]
struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding a request: {e}")))
    }
}

#[derive(Debug)]
struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding an answer: {e}")))
    }
}

/// Shared handle.
pub type SharedUpstreams = Arc<Upstreams>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tonic::Code;

    use super::*;

    #[test]
    fn a_connection_lost_during_a_call_is_unavailable_and_a_services_own_answer_is_kept() {
        let mut lost = Status::unknown("transport error");
        lost.set_source(Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        let local = local("users", lost);
        assert_eq!(local.code(), Code::Unavailable);
        assert_eq!(local.message(), "users unavailable");
        // What the service itself answered (no local cause) is passed on.
        assert_eq!(local_unchanged(Status::unknown("its own")), Code::Unknown);
        assert_eq!(local_unchanged(Status::internal("its own")), Code::Internal);
    }

    fn local_unchanged(status: Status) -> Code {
        local("users", status).code()
    }

    #[tokio::test(start_paused = true)]
    async fn calls_move_to_a_new_channel_before_the_service_ends_the_connection() {
        let upstreams = Upstreams::new([("users".to_string(), "http://127.0.0.1:9".to_string())]).unwrap();
        assert_eq!(upstreams.channel_generation("users"), 0, "none before the first call");
        upstreams.channel("users").await.unwrap();
        assert_eq!(upstreams.channel_generation("users"), 1);
        tokio::time::advance(fleet_kit::grpc::CHANNEL_AGE - Duration::from_secs(1)).await;
        upstreams.channel("users").await.unwrap();
        assert_eq!(upstreams.channel_generation("users"), 1, "kept while young");
        tokio::time::advance(Duration::from_secs(1)).await;
        upstreams.channel("users").await.unwrap();
        assert_eq!(upstreams.channel_generation("users"), 2, "replaced at its age");
        // Probes have channels of their own.
        upstreams.probe_channel("users").await.unwrap();
        assert_eq!(upstreams.channel_generation("users"), 2);
    }
}
