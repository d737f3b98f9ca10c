//! A node: the room host plus the relay links to gateways.

use crate::alarms;
use crate::config::NodeConfig;
use crate::gateway_link::GatewayLink;
use crate::host::Host;
use crate::party::PartyRegistry;
use crate::storage::{Monitored, Store, StoreHealth};
use conclave_proto::NodeSide;
use futures::future::BoxFuture;
use std::sync::Arc;

/// Hosts rooms. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    host: Arc<Host>,
    store_health: Arc<StoreHealth>,
}

impl Node {
    /// Starts a node over `store` (and its alarm scheduler and the store's health watcher).
    pub fn start(config: NodeConfig, parties: PartyRegistry, store: Arc<dyn Store>) -> Self {
        let (store, store_health) = Monitored::start(store);
        let host = Host::new(config, parties, store);
        tokio::spawn(alarms::run(Arc::downgrade(&host)));
        tokio::spawn(crate::crons::run(Arc::downgrade(&host)));
        Self { host, store_health }
    }

    /// Serves one gateway over a relay link until the link closes.
    pub fn attach_gateway(&self, side: NodeSide) {
        let gateway = self.host.links.add(side.to_gateway.clone());
        tokio::spawn(GatewayLink::serve(self.host.clone(), gateway, side));
    }

    /// Places rooms on `ring` from now on (a new version from placement).
    pub fn set_ring(&self, ring: conclave_proto::Ring) {
        self.host.set_ring(ring);
    }

    /// The cluster's regions now (from placement): a room may be homed only in one of
    /// them or in this node's own.
    pub fn set_regions(&self, regions: Vec<String>) {
        self.host.cluster.set_regions(regions);
    }

    /// Whether the node serves rooms now: `Err` while it is fenced (not yet alive and placed
    /// in a dynamic cluster, its liveness lapsed, or its store unreachable) or while its
    /// store fails writes.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.host.cluster.is_serving() {
            return Err("not serving: not (yet) alive and on the ring, or fenced".into());
        }
        self.store_health.check()
    }

    /// Fences (false) or unfences (true) the node; see the liveness heartbeat.
    pub fn set_serving(&self, serving: bool) {
        self.host.set_serving(serving);
    }

    /// This process's incarnation (fresh on every start).
    pub fn incarnation(&self) -> u64 {
        self.host.cluster.incarnation()
    }

    /// Rooms this node holds (active or hibernated).
    pub fn room_count(&self) -> usize {
        self.host.rooms.len()
    }

    /// Whether the node's store answers within `within`: a node that cannot reach it
    /// should not stay alive in the cluster (see the heartbeat).
    pub fn store_reachable(&self, within: std::time::Duration) -> BoxFuture<'static, bool> {
        let store = self.host.store.clone();
        Box::pin(
            async move { matches!(tokio::time::timeout(within, store.ping()).await, Ok(Ok(()))) },
        )
    }

    /// The party names this node serves.
    pub fn party_names(&self) -> Vec<String> {
        self.host.parties.names()
    }
}
