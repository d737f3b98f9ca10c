//! `conclave dev`: gateway and node in one process, joined by an in-process relay link
//! (the same events a cluster sends over gRPC), with the embedded redb store.

use crate::config::DevConfig;
use crate::edge::EdgeServer;
use conclave_gateway::Gateway;
use conclave_node::storage::Store;
use conclave_node::{Node, PartyRegistry};
use std::net::SocketAddr;
use std::sync::Arc;

/// A running single-process server.
pub struct DevServer {
    pub addr: SocketAddr,
    pub node: Node,
    edge: EdgeServer,
}

impl DevServer {
    /// Opens the configured store and starts serving `parties`.
    pub async fn start(config: DevConfig, parties: PartyRegistry) -> anyhow::Result<Self> {
        let store = crate::store::open_store(&config.storage).await?;
        Self::start_with_store(config, parties, store).await
    }

    /// Like [`DevServer::start`] over any store.
    pub async fn start_with_store(
        config: DevConfig,
        parties: PartyRegistry,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Self> {
        // Installed first: components take their metric handles when they start.
        crate::telemetry::metrics();
        let node = Node::start(config.node.clone(), parties, store);
        let (gateway_side, node_side) =
            conclave_proto::in_process_link(conclave_proto::LINK_CAPACITY);
        node.attach_gateway(node_side);
        let gateway = Gateway::new(config.gateway.clone(), gateway_side);
        let listener = conclave_gateway::bind(config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let ready = node.clone();
        let ready: crate::telemetry::Readiness = Arc::new(move || ready.readiness());
        let edge = EdgeServer::start(listener, gateway, None, Some(ready))?;
        Ok(Self {
            addr: edge.addr,
            node,
            edge,
        })
    }

    /// Serves until the server fails or the process gets SIGINT/SIGTERM; then closes client
    /// sockets with 1001. Every acknowledged write is already durable.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.edge.wait().await
    }

    /// Stops as SIGTERM does: the frames clients sent get their answers, then client
    /// sockets close with 1001. The node goes on until the server is dropped.
    pub async fn stop(&self) {
        self.edge.stop().await;
    }

    pub fn abort(&self) {
        self.edge.abort();
    }
}
