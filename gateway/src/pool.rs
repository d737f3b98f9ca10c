//! The gateway's relay links, one per node, opened on first use and reopened after a node
//! drops its stream. Each node has its own connect lock: sockets racing to a node share
//! one new link, and a dead node's connect timeout delays nobody else's.

use crate::connector::NodeConnector;
use crate::link::{LinkError, Mover, NodeLink};
use conclave_proto::Rings;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How often an unreachable node is logged at warn level (every client of a dead node
/// retries; say so once in a while, not each time).
const UNREACHABLE_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Slot {
    link: Option<Arc<NodeLink>>,
    /// Held while a link to this node is being opened.
    connecting: Arc<tokio::sync::Mutex<()>>,
    /// When the node was last logged as unreachable at warn level.
    warned_at: Option<Instant>,
}

pub(crate) struct LinkPool {
    connector: Box<dyn NodeConnector>,
    slots: Mutex<HashMap<String, Slot>>,
    /// New links hand the sockets that must move here.
    mover: Mover,
    /// How long a request over a link waits for its reply.
    request_timeout: Duration,
}

impl LinkPool {
    pub fn new(connector: Box<dyn NodeConnector>, mover: Mover, request_timeout: Duration) -> Self {
        Self {
            connector,
            slots: Mutex::default(),
            mover,
            request_timeout,
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The link to `node` if one is open and alive.
    pub fn live(&self, node: &str) -> Option<Arc<NodeLink>> {
        let slots = self.slots();
        slots
            .get(node)?
            .link
            .as_ref()
            .filter(|l| l.is_alive())
            .cloned()
    }

    /// New node addresses (node id → relay URL) from placement.
    pub fn set_addresses(&self, urls: HashMap<String, String>) {
        self.connector.set_addresses(urls);
    }

    /// The link to `node`, connecting if needed.
    pub async fn link_to(&self, node: &str) -> Result<Arc<NodeLink>, LinkError> {
        if let Some(l) = self.live(node) {
            return Ok(l);
        }
        let connecting = self
            .slots()
            .entry(node.to_string())
            .or_default()
            .connecting
            .clone();
        let _one_at_a_time = connecting.lock().await;
        if let Some(l) = self.live(node) {
            return Ok(l);
        }
        match self.connector.connect(node).await {
            Ok(side) => {
                let link = NodeLink::start(
                    node.to_string(),
                    side,
                    self.mover.clone(),
                    self.request_timeout,
                );
                let mut slots = self.slots();
                let slot = slots.entry(node.to_string()).or_default();
                slot.link = Some(link.clone());
                slot.warned_at = None;
                Ok(link)
            }
            Err(e) => {
                self.log_unreachable(node, &e);
                Err(LinkError::Unavailable)
            }
        }
    }

    fn log_unreachable(&self, node: &str, error: &str) {
        let mut slots = self.slots();
        let slot = slots.entry(node.to_string()).or_default();
        if slot
            .warned_at
            .is_none_or(|t| t.elapsed() >= UNREACHABLE_LOG_EVERY)
        {
            warn!(node, error, "cannot reach node");
            slot.warned_at = Some(Instant::now());
        } else {
            debug!(node, error, "cannot reach node");
        }
    }

    /// The link to `node` if one was opened (alive or not).
    pub fn link(&self, node: &str) -> Option<Arc<NodeLink>> {
        self.slots().get(node)?.link.clone()
    }

    /// Sets `conclave_gateway_relay_link_up{node}` for every node a link was ever opened
    /// to: 1 while the link is alive, 0 once it dropped (until it is reopened).
    pub fn record_link_states(&self) {
        for (node, slot) in self.slots().iter() {
            if let Some(link) = &slot.link {
                let up = if link.is_alive() { 1.0 } else { 0.0 };
                metrics::gauge!("conclave_gateway_relay_link_up", "node" => node.clone()).set(up);
            }
        }
    }

    /// Live links to nodes that are on none of `rings`.
    pub fn links_outside(&self, rings: &Rings) -> Vec<Arc<NodeLink>> {
        self.slots()
            .values()
            .filter_map(|s| s.link.as_ref())
            .filter(|l| l.is_alive() && !rings.contains(&l.node))
            .cloned()
            .collect()
    }
}
