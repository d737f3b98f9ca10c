//! The gateway's relay links, one per node, opened on first use and reopened after a node
//! drops its stream. A node has at most one attempt to open its link under way: every
//! socket that needs the node meanwhile waits for that attempt and shares its outcome. An
//! attempt is bounded as a whole ([`OPEN_TIMEOUT`]), and a dead or partitioned node delays
//! nobody else's.

use crate::connector::NodeConnector;
use crate::link::{LinkError, Mover, NodeLink};
use conclave_proto::Rings;
use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How often an unreachable node is logged at warn level (every client of a dead node
/// retries; say so once in a while, not each time).
const UNREACHABLE_LOG_EVERY: Duration = Duration::from_secs(10);

/// The longest an attempt to open a link may take, connection and relay stream together.
/// A node behind a partition accepts nothing or answers nothing; without this bound the
/// relay stream's opening waits for HTTP/2's keepalive (about 10 s), and every socket
/// that needs the node with it.
pub(crate) const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// An attempt under way to open a node's link: its outcome, shared by all who wait for it.
type Attempt = Shared<BoxFuture<'static, Option<Arc<NodeLink>>>>;

#[derive(Default)]
struct Slot {
    link: Option<Arc<NodeLink>>,
    /// The attempt under way to open a link to this node, if any.
    opening: Option<Attempt>,
    /// When the node was last logged as unreachable at warn level.
    warned_at: Option<Instant>,
}

type Slots = Arc<Mutex<HashMap<String, Slot>>>;

fn lock(slots: &Slots) -> MutexGuard<'_, HashMap<String, Slot>> {
    slots.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct LinkPool {
    connector: Box<dyn NodeConnector>,
    slots: Slots,
    /// New links hand the sockets that must move here.
    mover: Mover,
    /// How long a request over a link waits for its reply.
    request_timeout: Duration,
}

impl LinkPool {
    pub fn new(connector: Box<dyn NodeConnector>, mover: Mover, request_timeout: Duration) -> Self {
        Self {
            connector,
            slots: Slots::default(),
            mover,
            request_timeout,
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        lock(&self.slots)
    }

    /// The link to `node` if one is open and alive.
    pub fn live(&self, node: &str) -> Option<Arc<NodeLink>> {
        live_in(&self.slots(), node)
    }

    /// New node addresses (node id → relay URL) from placement.
    pub fn set_addresses(&self, urls: HashMap<String, String>) {
        self.connector.set_addresses(urls);
    }

    /// The link to `node`, connecting if needed: joins the attempt under way, or starts
    /// one. The attempt runs in its own task, so it finishes (within [`OPEN_TIMEOUT`])
    /// even if every caller stops waiting for it.
    pub async fn link_to(&self, node: &str) -> Result<Arc<NodeLink>, LinkError> {
        let attempt = {
            let mut slots = self.slots();
            if let Some(l) = live_in(&slots, node) {
                return Ok(l);
            }
            let slot = slots.entry(node.to_string()).or_default();
            slot.opening.get_or_insert_with(|| self.open(node)).clone()
        };
        attempt.await.ok_or(LinkError::Unavailable)
    }

    /// Starts an attempt to open a link to `node`, which puts its outcome in the node's
    /// slot when it ends.
    fn open(&self, node: &str) -> Attempt {
        let connecting = self.connector.connect(node);
        let slots = self.slots.clone();
        let mover = self.mover.clone();
        let request_timeout = self.request_timeout;
        let node = node.to_string();
        let attempt = tokio::spawn(async move {
            let outcome = match tokio::time::timeout(OPEN_TIMEOUT, connecting).await {
                Ok(Ok(side)) => Ok(NodeLink::start(node.clone(), side, mover, request_timeout)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no relay stream within {OPEN_TIMEOUT:?}")),
            };
            let mut slots = lock(&slots);
            let slot = slots.entry(node.clone()).or_default();
            slot.opening = None;
            match outcome {
                Ok(link) => {
                    slot.link = Some(link.clone());
                    slot.warned_at = None;
                    Some(link)
                }
                Err(e) => {
                    log_unreachable(slot, &node, &e);
                    None
                }
            }
        });
        attempt.map(|ended| ended.ok().flatten()).boxed().shared()
    }

    /// The link to `node` if one was opened (alive or not).
    pub fn link(&self, node: &str) -> Option<Arc<NodeLink>> {
        self.slots().get(node)?.link.clone()
    }

    /// Sets `conclave_gateway_relay_link_up{node}` for every node whose link the pool
    /// keeps: 1 while the link is alive, 0 once it dropped (until it is reopened).
    pub fn record_link_states(&self) {
        for (node, slot) in self.slots().iter() {
            if let Some(link) = &slot.link {
                let up = if link.is_alive() { 1.0 } else { 0.0 };
                metrics::gauge!("conclave_gateway_relay_link_up", "node" => node.clone()).set(up);
            }
        }
    }

    /// Forgets the dead links of nodes that are not among `nodes` (the nodes on the rings)
    /// and that no one is opening a link to: node ids come and go with the cluster.
    pub fn forget_dead_links_outside(&self, nodes: &[(String, String)]) {
        self.slots().retain(|node, slot| {
            nodes.iter().any(|(n, _)| n == node)
                || slot.opening.is_some()
                || slot.link.as_ref().is_some_and(|l| l.is_alive())
        });
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

/// The link to `node` in `slots` if one is open and alive.
fn live_in(slots: &HashMap<String, Slot>, node: &str) -> Option<Arc<NodeLink>> {
    slots
        .get(node)?
        .link
        .as_ref()
        .filter(|l| l.is_alive())
        .cloned()
}

/// Logs that `node` cannot be reached: at warn level once per [`UNREACHABLE_LOG_EVERY`],
/// else at debug.
fn log_unreachable(slot: &mut Slot, node: &str, error: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::InProcessNode;

    fn pool() -> (LinkPool, conclave_proto::NodeSide) {
        let (gateway, node) = conclave_proto::in_process_link(8);
        let (mover, _moves) = tokio::sync::mpsc::unbounded_channel();
        let connector = Box::new(InProcessNode::new(gateway));
        (
            LinkPool::new(connector, mover, Duration::from_secs(1)),
            node,
        )
    }

    /// Node ids come and go (a node replaced under a new id): the pool keeps no dead link
    /// of a node that left the rings.
    #[tokio::test]
    async fn a_dead_link_of_a_node_off_the_rings_is_forgotten() {
        let (pool, node) = pool();
        let link = pool.link_to(InProcessNode::ID).await.unwrap();
        let on_rings = [(InProcessNode::ID.to_string(), "r".to_string())];

        pool.forget_dead_links_outside(&[]);
        assert!(
            pool.link(InProcessNode::ID).is_some(),
            "a live link is kept"
        );

        drop(node);
        while link.is_alive() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pool.forget_dead_links_outside(&on_rings);
        assert!(
            pool.link(InProcessNode::ID).is_some(),
            "a node on the rings keeps its slot while its link is reopened"
        );
        pool.forget_dead_links_outside(&[]);
        assert!(
            pool.link(InProcessNode::ID).is_none(),
            "the dead link stayed"
        );
    }
}
