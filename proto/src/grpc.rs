//! The relay link over the network: one bidirectional gRPC stream per gateway↔node pair.
//!
//! Both ends turn the stream back into the same pair of ends an in-process link has
//! ([`GatewaySide`] / [`NodeSide`]), so gateway and node code never know which transport
//! carries their events. Events are batched per write: whatever is queued (up to
//! [`MAX_BATCH_EVENTS`] or about [`MAX_BATCH_BYTES`]) goes in one message. The receiving
//! link's task decodes the batches itself ([`Inbound::batches`]): no task forwards them.

use crate::auth::ClusterAuth;
use crate::link::{GatewaySide, Inbound, NodeSide, LINK_CAPACITY};
use crate::secret::{attach_proof, require_proof, ClusterSecret};
use crate::wire::relay_client::RelayClient;
use crate::wire::relay_server::{Relay, RelayServer};
use crate::wire::{gateway_event, node_event, GatewayBatch, GatewayEvent, NodeBatch, NodeEvent};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::{Request, Response, Status, Streaming};

pub const MAX_BATCH_EVENTS: usize = 512;
/// A batch stops growing past this many payload bytes.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Largest gRPC message accepted: a full batch plus one maximal frame.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid node address {0:?}: {1}")]
    Address(String, String),
    #[error("cannot connect to node {0}: {1}")]
    Connect(String, String),
}

/// Rough payload size of an event, for batch sizing.
trait Weight {
    fn weight(&self) -> usize;
}

impl Weight for GatewayEvent {
    fn weight(&self) -> usize {
        match &self.event {
            Some(gateway_event::Event::Frame(f)) => f.payload.len(),
            Some(gateway_event::Event::HttpRequest(r)) => r.body.len(),
            Some(gateway_event::Event::RoomFetchReply(r)) => r.body.len(),
            _ => 64,
        }
    }
}

impl Weight for NodeEvent {
    fn weight(&self) -> usize {
        match &self.event {
            Some(node_event::Event::Send(s)) => s.payload.len(),
            Some(node_event::Event::Deliver(d)) => d.payload.len(),
            Some(node_event::Event::HttpReply(r)) => r.body.len(),
            Some(node_event::Event::RoomFetch(r)) => r.body.len(),
            _ => 64,
        }
    }
}

/// Turns a queue of events into a stream of batches: waits for one event, then takes
/// whatever else is already queued.
fn batches<T: Weight + Send + 'static>(rx: mpsc::Receiver<T>) -> impl Stream<Item = Vec<T>> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut bytes = first.weight();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_EVENTS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(ev) => {
                    bytes += ev.weight();
                    batch.push(ev);
                }
                Err(_) => break,
            }
        }
        Some((batch, rx))
    })
}

type NodeBatchStream = Pin<Box<dyn Stream<Item = Result<NodeBatch, Status>> + Send>>;

struct RelayService {
    on_attach: Arc<dyn Fn(NodeSide) + Send + Sync>,
}

#[tonic::async_trait]
impl Relay for RelayService {
    type AttachStream = NodeBatchStream;

    async fn attach(
        &self,
        request: Request<Streaming<GatewayBatch>>,
    ) -> Result<Response<NodeBatchStream>, Status> {
        let inbound = request.into_inner();
        let (to_gateway, from_node) = mpsc::channel(LINK_CAPACITY);
        // The stream's end (or an error) ends the node's side of the link: it closes the
        // gateway's connections in their rooms.
        (self.on_attach)(NodeSide {
            from_gateway: Inbound::batches(events_of(inbound, |b: GatewayBatch| b.events)),
            to_gateway,
        });
        let out = batches(from_node).map(|events| Ok(NodeBatch { events }));
        Ok(Response::new(Box::pin(out)))
    }
}

/// The relay gRPC service of node `node_id`: every gateway that attaches becomes a
/// [`NodeSide`] handed to `on_attach`. With a cluster secret, only callers that prove they
/// hold it may attach.
pub fn relay_service(
    on_attach: impl Fn(NodeSide) + Send + Sync + 'static,
    secret: Option<ClusterSecret>,
    node_id: &str,
) -> InterceptedService<RelayServer<impl Relay>, impl Interceptor + Clone> {
    let server = RelayServer::new(RelayService {
        on_attach: Arc::new(on_attach),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    InterceptedService::new(server, require_proof(secret, node_id.to_string()))
}

/// Opens a relay stream to node `node_id` at `url` (`http://` or, with TLS,
/// `https://host:port`), proving this gateway belongs to the cluster with `auth` (and, with
/// TLS, that the node is `node_id`).
pub async fn connect_relay(
    url: &str,
    node_id: &str,
    auth: &ClusterAuth,
) -> Result<GatewaySide, RelayError> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| RelayError::Address(url.to_string(), e.to_string()))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    let endpoint = auth
        .endpoint(endpoint, node_id)
        .map_err(|e| RelayError::Address(url.to_string(), e.to_string()))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| RelayError::Connect(url.to_string(), e.to_string()))?;
    let proof = attach_proof(auth.secret.clone(), node_id.into());
    let mut client = RelayClient::with_interceptor(channel, proof)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (to_node, to_node_rx) = mpsc::channel(LINK_CAPACITY);
    let outbound = batches(to_node_rx).map(|events| GatewayBatch { events });
    let inbound = client
        .attach(outbound)
        .await
        .map_err(|s| RelayError::Connect(url.to_string(), s.message().to_string()))?
        .into_inner();
    // The stream's end (or an error) tells the gateway the node is gone.
    let from_node = Inbound::batches(events_of(inbound, |b: NodeBatch| b.events));
    Ok(GatewaySide { to_node, from_node })
}

/// The events of each batch a relay stream decodes, until it ends or fails.
fn events_of<B: Send + 'static, T: Send>(
    stream: Streaming<B>,
    events: fn(B) -> Vec<T>,
) -> impl Stream<Item = Vec<T>> + Send {
    stream
        .take_while(|batch| std::future::ready(batch.is_ok()))
        .filter_map(move |batch| std::future::ready(batch.ok().map(events)))
}
