//! What every part of a gateway shares: its settings, the routing of rooms to nodes, the
//! links to those nodes, and its open sockets.

use crate::config::GatewayConfig;
use crate::link::{LinkError, MoveRequest, Mover, NodeLink};
use crate::outbound::SocketLimits;
use crate::pool::LinkPool;
use crate::routing::Routing;
use crate::session::Session;
use crate::sessions::Sessions;
use conclave_proto::{RingVersion, Rings, RoomKey};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// How long sockets stay on a node that left the ring: a live node hands its rooms off
/// itself (a drain: no frame to replay); after this, the gateway moves what is left (a
/// stopped or partitioned node). Moving early is safe: the next owner's claim fences the
/// old one, and the room's ledger keeps replayed frames from being handled twice.
const EVACUATE_AFTER: Duration = Duration::from_millis(150);

pub(crate) struct GatewayState {
    pub config: Arc<GatewayConfig>,
    pub routing: Routing,
    pub links: LinkPool,
    pub sessions: Sessions,
    /// Set when the process is told to stop: `/readyz` fails so load balancers stop
    /// sending new clients here while the open sockets carry on for the drain delay.
    pub draining: std::sync::atomic::AtomicBool,
    /// The runtime the gateway was built in, where a parked socket's task is spawned when
    /// it wakes (the wake may come from any thread).
    pub runtime: tokio::runtime::Handle,
    /// The bounds each socket is held to, shared by all of them.
    pub socket_limits: Arc<SocketLimits>,
    /// Client messages read (`conclave_gateway_messages_in_total`): the handle is looked up
    /// once, not in the recorder's registry per message.
    pub messages_in: metrics::Counter,
    /// Open client sockets (`conclave_gateway_connections`), looked up once.
    pub connections: metrics::Gauge,
    /// Client sockets closed, by close code (`conclave_gateway_closes_total`).
    pub closes: CloseCounters,
    mover: Mover,
}

impl GatewayState {
    pub fn new(config: GatewayConfig, routing: Routing, links: LinkPool, mover: Mover) -> Self {
        let socket_limits = Arc::new(SocketLimits::of(&config));
        Self {
            config: Arc::new(config),
            routing,
            links,
            sessions: Sessions::new(),
            draining: Default::default(),
            runtime: tokio::runtime::Handle::current(),
            socket_limits,
            messages_in: metrics::counter!("conclave_gateway_messages_in_total"),
            connections: metrics::gauge!("conclave_gateway_connections"),
            closes: CloseCounters::default(),
            mover,
        }
    }

    /// The link to the node that owns `room`, connecting if needed.
    pub async fn link_for(&self, room: &RoomKey) -> Result<Arc<NodeLink>, LinkError> {
        let node = self.routing.owner_of(room).ok_or(LinkError::Unavailable)?;
        self.links.link_to(&node).await
    }

    /// Moves a socket to its room's owner under a ring of at least `min_ring`.
    pub fn move_socket(&self, session: Arc<Session>, min_ring: RingVersion) {
        let _ = self.mover.send(crate::link::LinkWork::Move(MoveRequest {
            session,
            min_ring,
        }));
    }

    /// Routes rooms by new rings (and node addresses) from now on. Sockets on nodes that
    /// left the rings move after [`EVACUATE_AFTER`].
    pub fn set_rings(&self, rings: Rings, urls: HashMap<String, String>) {
        self.links.set_addresses(urls);
        let version = rings.version();
        let gone = self.links.links_outside(&rings);
        self.routing.set_rings(rings);
        for link in gone {
            let rings = self.routing.subscribe();
            tokio::spawn(async move {
                tokio::time::sleep(EVACUATE_AFTER).await;
                let still_gone = !rings.borrow().contains(&link.node);
                if still_gone {
                    let moved = link.evacuate(version, true);
                    if moved > 0 {
                        info!(node = %link.node, sockets = moved, "node left the ring; moving its remaining sockets");
                    }
                }
            });
        }
    }
}

/// `conclave_gateway_closes_total{code}`, each code's handle looked up in the recorder
/// once (the lookup builds the labelled key: a few allocations per close otherwise).
#[derive(Default)]
pub(crate) struct CloseCounters(std::sync::Mutex<HashMap<u16, metrics::Counter>>);

impl CloseCounters {
    /// Counts a socket closed with `code`: codes the protocol defines as themselves, the
    /// applications' range (3000–4999) as one value.
    pub fn count(&self, code: u16) {
        let code = code.min(3000);
        let mut counters = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counters
            .entry(code)
            .or_insert_with(|| {
                let label = if code < 3000 {
                    code.to_string()
                } else {
                    "3000-4999".to_string()
                };
                metrics::counter!("conclave_gateway_closes_total", "code" => label)
            })
            .increment(1);
    }
}
