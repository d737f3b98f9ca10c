//! The nodes behind a gateway: which node owns a room (the ring) and the relay link to it.
//! Links are opened on first use and reopened after a node drops its stream.

use crate::link::{LinkError, NodeLink};
use crate::moves::Mover;
use crate::session::Session;
use conclave_proto::{GatewaySide, RingVersion, Rings, RoomKey, SocketId, DEFAULT_REGION};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::{debug, info, warn};

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

/// A node of the rings, its region, and this gateway's link to it if one was opened.
pub(crate) type NodeView = (String, String, Option<Arc<NodeLink>>);

pub(crate) struct NodeSet {
    /// The rings rooms are routed by; moves wait on it for newer versions.
    ring: tokio::sync::watch::Sender<Rings>,
    /// This gateway's region: new rooms without a `?_region=` hint are homed here.
    pub region: String,
    /// Rooms' home regions, as storage fixed them (bounded; cleared when full).
    homes: Mutex<HashMap<RoomKey, String>>,
    links: Mutex<HashMap<String, Arc<NodeLink>>>,
    /// This gateway process, as nodes tell its sockets apart from other gateways'.
    pub origin: u64,
    next_socket: std::sync::atomic::AtomicU64,
    /// Every open client socket, attached or moving.
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    pub(crate) mover: Mover,
    /// One connection attempt at a time, so concurrent sockets share the new link.
    connecting: tokio::sync::Mutex<()>,
    connector: Box<dyn NodeConnector>,
    /// When each unreachable node was last logged at warn level.
    last_warned: Mutex<HashMap<String, std::time::Instant>>,
}

const UNREACHABLE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How long sockets stay on a node that left the ring: a live node hands its rooms off
/// itself (exactly once, no replay); after this, the gateway moves what is left (a stopped
/// or partitioned node).
const EVACUATE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl NodeSet {
    pub fn new(
        ring: Rings,
        region: String,
        connector: Box<dyn NodeConnector>,
        mover: Mover,
    ) -> Self {
        Self {
            ring: tokio::sync::watch::Sender::new(ring),
            region,
            homes: Mutex::default(),
            origin: rand_origin(),
            next_socket: std::sync::atomic::AtomicU64::new(1),
            sessions: Mutex::default(),
            mover,
            links: Mutex::default(),
            connecting: tokio::sync::Mutex::new(()),
            connector,
            last_warned: Mutex::default(),
        }
    }

    pub fn single(side: GatewaySide, mover: Mover) -> Self {
        Self::new(
            Rings::new(
                RingVersion(1),
                [(InProcessNode::ID.to_string(), DEFAULT_REGION.to_string())],
            ),
            DEFAULT_REGION.to_string(),
            Box::new(InProcessNode::new(side)),
            mover,
        )
    }

    /// A gateway-wide id for a new socket (nodes see it on every link it moves over).
    pub fn next_socket_id(&self) -> SocketId {
        SocketId(
            self.next_socket
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_session(&self, session: Arc<Session>) {
        self.sessions().insert(session.id.0, session);
    }

    pub fn remove_session(&self, socket: SocketId) {
        self.sessions().remove(&socket.0);
    }

    /// Every open client socket.
    pub fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions().values().cloned().collect()
    }

    pub fn ring_version(&self) -> u64 {
        self.ring.borrow().version().0
    }

    /// Waits until the ring is at least `version`, or `deadline`.
    pub async fn wait_for_ring(&self, version: u64, deadline: tokio::time::Instant) {
        let mut rx = self.ring.subscribe();
        let newer = rx.wait_for(|r| r.version().0 >= version);
        let _ = tokio::time::timeout_at(deadline, newer).await;
    }

    fn live(&self, node: &str) -> Option<Arc<NodeLink>> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.get(node).filter(|l| l.is_alive()).cloned()
    }

    /// Routes rooms by a new ring version (and its node addresses) from now on.
    /// Sockets on nodes that left the ring move after [`EVACUATE_AFTER`].
    pub fn set_ring(&self, ring: Rings, urls: HashMap<String, String>) {
        self.connector.set_addresses(urls);
        let version = ring.version().0;
        let gone: Vec<Arc<NodeLink>> = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|l| l.is_alive() && !ring.contains(&l.node))
            .cloned()
            .collect();
        self.ring.send_replace(ring);
        for link in gone {
            let ring = self.ring.subscribe();
            tokio::spawn(async move {
                tokio::time::sleep(EVACUATE_AFTER).await;
                let still_gone = !ring.borrow().contains(&link.node);
                if still_gone {
                    let moved = link.evacuate(version, true);
                    if moved > 0 {
                        info!(node = %link.node, sockets = moved, "node left the ring; moving its remaining sockets");
                    }
                }
            });
        }
    }

    /// The link to the node that owns `room`, connecting if needed.
    pub async fn link_for(&self, room: &RoomKey) -> Result<Arc<NodeLink>, LinkError> {
        let node = self.owner_of(room).ok_or(LinkError::Unavailable)?;
        self.link_to(&node).await
    }

    /// The link to `node`, connecting if needed.
    pub async fn link_to(&self, node: &str) -> Result<Arc<NodeLink>, LinkError> {
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
        let link = NodeLink::start(node.to_string(), side, self.mover.clone());
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string(), link.clone());
        Ok(link)
    }

    /// The ring version and, per node of the rings, its region and link (if one was opened).
    pub fn describe(&self) -> (u64, Vec<NodeView>) {
        let ring = self.ring.borrow();
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let nodes = ring
            .nodes()
            .map(|(n, region)| (n.to_string(), region.to_string(), links.get(n).cloned()))
            .collect();
        (ring.version().0, nodes)
    }

    fn homes(&self) -> std::sync::MutexGuard<'_, HashMap<RoomKey, String>> {
        self.homes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room's home region if this gateway knows it without asking storage: learned
    /// before, or the only region there is (its nodes record it when they claim the room).
    pub fn known_home(&self, room: &RoomKey) -> Option<String> {
        if let Some(home) = self.homes().get(room) {
            return Some(home.clone());
        }
        let ring = self.ring.borrow();
        let mut regions = ring.regions();
        match (regions.next(), regions.next()) {
            (Some(only), None) => Some(only.to_string()),
            _ => None,
        }
    }

    pub fn learn_home(&self, room: &RoomKey, region: String) {
        let mut homes = self.homes();
        if homes.len() >= MAX_CACHED_HOMES {
            homes.clear();
        }
        homes.insert(room.clone(), region);
    }

    pub fn has_region(&self, region: &str) -> bool {
        self.ring.borrow().has_region(region)
    }

    /// Where new rooms without a hint live: this gateway's region, or (a gateway in a
    /// region without nodes) the first region that has some.
    pub fn default_home(&self) -> String {
        let ring = self.ring.borrow();
        if ring.has_region(&self.region) {
            return self.region.clone();
        }
        let first = ring.regions().next().map(str::to_string);
        first.unwrap_or_else(|| self.region.clone())
    }

    /// The node that may fix a new room's home: the room's owner in this gateway's region,
    /// else in `fallback`'s, else in the first region with nodes.
    pub fn home_oracle(&self, room: &RoomKey, fallback: &str) -> Option<String> {
        let ring = self.ring.borrow();
        let first = ring.regions().next().map(str::to_string);
        [Some(self.region.clone()), Some(fallback.to_string()), first]
            .into_iter()
            .flatten()
            .find_map(|region| ring.owner(&region, room).map(str::to_string))
    }

    /// The node that owns `room`: its owner on the ring of the room's home region.
    pub fn owner_of(&self, room: &RoomKey) -> Option<String> {
        let home = self.known_home(room).unwrap_or_else(|| self.region.clone());
        self.ring.borrow().owner(&home, room).map(str::to_string)
    }
}

/// Home regions a gateway remembers.
const MAX_CACHED_HOMES: usize = 100_000;

/// A random id for this gateway process.
fn rand_origin() -> u64 {
    let u = uuid::Uuid::new_v4().as_u128();
    (u as u64) ^ ((u >> 64) as u64)
}
