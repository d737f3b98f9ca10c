//! An in-process cluster: nodes sharing one redb store, and one gateway serving real
//! WebSocket clients on a free port, joined by relay links the test can break (`faults`).
//! The test plays placement: `place_on` publishes a new ring to the gateway and to the
//! nodes that can still hear it.

use super::cluster::room_on;
use super::faults::{faulty_link, LinkFaults};
use super::{get, ws_connect, Ws};
use conclave_gateway::{Gateway, NodeConnector};
use conclave_node::storage::{RedbStore, Store};
use conclave_node::{Node, PartyRegistry};
use conclave_proto::{GatewaySide, Ring, RingVersion, RingView};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct LocalCluster {
    /// The gateway's client address.
    pub addr: SocketAddr,
    gateway: Gateway,
    net: Arc<Net>,
    ring_version: AtomicU64,
    server: tokio::task::JoinHandle<()>,
    /// The store every node shares.
    pub store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

/// The nodes as the gateway reaches them.
struct Net {
    nodes: BTreeMap<String, Node>,
    /// The last link opened to each node.
    links: Mutex<HashMap<String, LinkFaults>>,
    /// Nodes that were killed: their links are cut and new ones refused.
    dead: Mutex<HashSet<String>>,
}

/// Opens faulty links to the nodes in this process.
struct Connector(Arc<Net>);

impl NodeConnector for Connector {
    fn connect(&self, node: &str) -> BoxFuture<'static, Result<GatewaySide, String>> {
        let net = &self.0;
        let result = if net.dead.lock().unwrap().contains(node) {
            Err(format!("node {node} is dead"))
        } else if let Some(n) = net.nodes.get(node) {
            let (gateway, node_side, faults) = faulty_link();
            n.attach_gateway(node_side);
            net.links.lock().unwrap().insert(node.to_string(), faults);
            Ok(gateway)
        } else {
            Err(format!("no node {node}"))
        };
        Box::pin(async move { result })
    }
}

impl LocalCluster {
    /// Nodes `ids` (the built-in parties) on one store, on a first ring of all of them.
    pub async fn start(ids: &[&str]) -> Self {
        Self::start_with(ids, |registry| registry).await
    }

    /// Nodes `ids` serving the built-in parties and those `parties` adds.
    pub async fn start_with(
        ids: &[&str],
        parties: impl Fn(PartyRegistry) -> PartyRegistry,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = super::config(dir.path(), |_| {});
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&dir.path().join("shared.redb")).unwrap());
        let all: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let nodes = all
            .iter()
            .map(|id| {
                let mut node = config.node.clone();
                node.node_id = id.clone();
                node.nodes = all.clone();
                let node = Node::start(node, parties(config.registry()), store.clone());
                (id.clone(), node)
            })
            .collect();
        let net = Arc::new(Net {
            nodes,
            links: Mutex::default(),
            dead: Mutex::default(),
        });
        let ring = Ring::new(RingVersion(1), all);
        let gateway = Gateway::with_nodes(config.gateway.clone(), ring, Connector(net.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = gateway.router();
        let serving = conclave_gateway::serve_http1(listener, router, &gateway);
        let server = tokio::spawn(async move {
            serving.await.unwrap();
        });
        Self {
            addr,
            gateway,
            net,
            ring_version: AtomicU64::new(1),
            server,
            store,
            _dir: dir,
        }
    }

    /// A room of `party` the first ring places on `node`.
    pub fn room_on(&self, party: &str, node: &str) -> String {
        let ids: Vec<&str> = self.net.nodes.keys().map(String::as_str).collect();
        room_on(party, &ids, node)
    }

    pub fn node(&self, id: &str) -> &Node {
        &self.net.nodes[id]
    }

    /// The gateway's current link to `node`.
    pub fn link(&self, node: &str) -> LinkFaults {
        self.net.links.lock().unwrap()[node].clone()
    }

    /// Kills `node` as far as the gateway can tell: its link is cut and it can no longer be
    /// reached. (Its process, this one, goes on: its writes are fenced by storage.)
    pub fn kill(&self, node: &str) {
        self.net.dead.lock().unwrap().insert(node.to_string());
        if let Some(link) = self.net.links.lock().unwrap().get(node) {
            link.cut();
        }
    }

    /// Publishes a new ring of `nodes` to the gateway and to those nodes (a node outside
    /// it does not hear: it is dead or stalled).
    pub fn place_on(&self, nodes: &[&str]) {
        self.publish_ring(nodes, nodes);
    }

    /// Publishes a new ring of `nodes` to the gateway and to every node: those left out
    /// hear it too, and hand their rooms off (a drain).
    pub fn hand_off_to(&self, nodes: &[&str]) {
        let all: Vec<&str> = self.net.nodes.keys().map(String::as_str).collect();
        self.publish_ring(nodes, &all);
    }

    fn publish_ring(&self, nodes: &[&str], told: &[&str]) {
        let version = RingVersion(self.ring_version.fetch_add(1, Ordering::SeqCst) + 1);
        let ring = Ring::new(version, nodes.iter().map(|n| n.to_string()));
        for n in told {
            self.net.nodes[*n].set_ring(ring.clone());
        }
        self.gateway.set_ring(&RingView {
            version,
            members: nodes
                .iter()
                .map(|n| (n.to_string(), format!("in-process://{n}")))
                .collect(),
            regions: BTreeMap::new(),
        });
    }

    pub async fn connect(&self, path: &str) -> Ws {
        ws_connect(self.addr, path).await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        get(self.addr, path).await
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.server.abort();
    }
}
