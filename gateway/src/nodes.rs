//! The nodes behind a gateway: which node owns a room (the ring) and the relay link to it.
//! Links are opened on first use and reopened after a node drops its stream.

use crate::link::{LinkError, NodeLink};
use conclave_proto::{GatewaySide, Ring, RingVersion, RoomKey};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::{debug, warn};

/// Opens relay links to nodes by node id.
pub trait NodeConnector: Send + Sync + 'static {
    fn connect(&self, node: &str) -> BoxFuture<'static, Result<GatewaySide, String>>;

    /// New node addresses (node id → relay URL) from placement.
    fn set_addresses(&self, _urls: HashMap<String, String>) {}
}

/// Nodes reached over gRPC at fixed addresses (node id → `http://host:port`).
pub struct GrpcNodes {
    urls: Mutex<HashMap<String, String>>,
}

impl GrpcNodes {
    pub fn new(urls: HashMap<String, String>) -> Self {
        Self {
            urls: Mutex::new(urls),
        }
    }
}

impl NodeConnector for GrpcNodes {
    fn connect(&self, node: &str) -> BoxFuture<'static, Result<GatewaySide, String>> {
        let url = self
            .urls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned();
        let node = node.to_string();
        Box::pin(async move {
            let url = url.ok_or_else(|| format!("no address for node {node}"))?;
            conclave_proto::grpc::connect_relay(&url)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn set_addresses(&self, urls: HashMap<String, String>) {
        *self.urls.lock().unwrap_or_else(|e| e.into_inner()) = urls;
    }
}

/// One node in the same process (`conclave dev`): its link can be taken once.
pub(crate) struct InProcessNode(Mutex<Option<GatewaySide>>);

impl InProcessNode {
    pub const ID: &'static str = "local";

    pub fn new(side: GatewaySide) -> Self {
        Self(Mutex::new(Some(side)))
    }
}

impl NodeConnector for InProcessNode {
    fn connect(&self, _node: &str) -> BoxFuture<'static, Result<GatewaySide, String>> {
        let side = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        Box::pin(async move { side.ok_or_else(|| "the in-process node has stopped".to_string()) })
    }
}

/// A node of the ring and this gateway's link to it, if one was opened.
pub(crate) type NodeView = (String, Option<Arc<NodeLink>>);

pub(crate) struct NodeSet {
    ring: std::sync::RwLock<Ring>,
    links: Mutex<HashMap<String, Arc<NodeLink>>>,
    /// One connection attempt at a time, so concurrent sockets share the new link.
    connecting: tokio::sync::Mutex<()>,
    connector: Box<dyn NodeConnector>,
    /// When each unreachable node was last logged at warn level.
    last_warned: Mutex<HashMap<String, std::time::Instant>>,
}

const UNREACHABLE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl NodeSet {
    pub fn new(ring: Ring, connector: Box<dyn NodeConnector>) -> Self {
        Self {
            ring: std::sync::RwLock::new(ring),
            links: Mutex::default(),
            connecting: tokio::sync::Mutex::new(()),
            connector,
            last_warned: Mutex::default(),
        }
    }

    pub fn single(side: GatewaySide) -> Self {
        Self::new(
            Ring::new(RingVersion(1), [InProcessNode::ID.to_string()]),
            Box::new(InProcessNode::new(side)),
        )
    }

    fn live(&self, node: &str) -> Option<Arc<NodeLink>> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.get(node).filter(|l| l.is_alive()).cloned()
    }

    /// The link to the node that owns `room`, connecting if needed.
    /// Routes rooms by a new ring version (and its node addresses) from now on.
    pub fn set_ring(&self, ring: Ring, urls: HashMap<String, String>) {
        self.connector.set_addresses(urls);
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
    }

    pub async fn link_for(&self, room: &RoomKey) -> Result<Arc<NodeLink>, LinkError> {
        let node = {
            let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
            ring.owner(room).ok_or(LinkError::Unavailable)?.to_string()
        };
        let node = node.as_str();
        if let Some(l) = self.live(node) {
            return Ok(l);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(l) = self.live(node) {
            return Ok(l);
        }
        let side = match self.connector.connect(node).await {
            Ok(side) => {
                self.last_warned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(node);
                side
            }
            Err(e) => {
                // Every client of a dead node retries: say so once in a while, not each time.
                let mut warned = self.last_warned.lock().unwrap_or_else(|e| e.into_inner());
                if warned
                    .get(node)
                    .is_none_or(|t| t.elapsed() >= UNREACHABLE_LOG_EVERY)
                {
                    warn!(node, error = %e, "cannot reach node");
                    warned.insert(node.to_string(), std::time::Instant::now());
                } else {
                    debug!(node, error = %e, "cannot reach node");
                }
                return Err(LinkError::Unavailable);
            }
        };
        let link = NodeLink::start(side);
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string(), link.clone());
        Ok(link)
    }

    /// The ring version and, per node of the ring, its link (if one was opened).
    pub fn describe(&self) -> (u64, Vec<NodeView>) {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let nodes = ring
            .nodes()
            .iter()
            .map(|n| (n.clone(), links.get(n).cloned()))
            .collect();
        (ring.version().0, nodes)
    }

    /// The node the ring places `room` on.
    pub fn owner_of(&self, room: &RoomKey) -> Option<String> {
        self.ring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .owner(room)
            .map(str::to_string)
    }

    pub fn all(&self) -> Vec<Arc<NodeLink>> {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
