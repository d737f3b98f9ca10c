//! `conclave dev`: gateway and node in one process, joined by an in-process relay link
//! (the same events a cluster sends over gRPC), with the embedded redb store.

use crate::config::{FileParty, StorageTarget};
use conclave_gateway::{Gateway, GatewayConfig};
use conclave_node::storage::{PostgresStore, RedbStore, Store, POSTGRES_POOL_SIZE};
use conclave_node::{Node, NodeConfig, PartyRegistry};
use std::collections::BTreeMap;
use std::net::SocketAddr;

use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub struct DevConfig {
    pub listen: SocketAddr,
    pub storage: StorageTarget,
    pub gateway: GatewayConfig,
    pub node: NodeConfig,
    pub parties: BTreeMap<String, FileParty>,
}

impl DevConfig {
    /// The built-in parties named in the config.
    pub fn registry(&self) -> PartyRegistry {
        registry_for(&self.parties)
    }
}

/// Opens the room store.
pub async fn open_store(target: &StorageTarget) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match target {
        StorageTarget::Redb(dir) => Arc::new(RedbStore::open(&dir.join("conclave.redb"))?),
        StorageTarget::Postgres(url) => {
            Arc::new(PostgresStore::connect(url, POSTGRES_POOL_SIZE).await?)
        }
        #[cfg(feature = "fdb")]
        StorageTarget::Fdb {
            cluster_file,
            directory,
        } => Arc::new(conclave_node::storage::FdbStore::open(cluster_file, directory).await?),
        #[cfg(not(feature = "fdb"))]
        StorageTarget::Fdb { .. } => anyhow::bail!(
            "this conclave was built without FoundationDB support: rebuild with `--features fdb`"
        ),
    })
}

/// A registry serving each configured party with its built-in kind.
pub fn registry_for(parties: &BTreeMap<String, FileParty>) -> PartyRegistry {
    parties.iter().fold(
        PartyRegistry::new(),
        |reg, (name, p)| match conclave_node::parties::builtin(&p.kind) {
            Some(factory) => reg.with_boxed_factory(name, factory),
            None => reg,
        },
    )
}

/// A running single-process server.
pub struct DevServer {
    pub addr: SocketAddr,
    pub node: Node,
    gateway: Gateway,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl DevServer {
    /// Opens the configured store and starts serving `parties`.
    pub async fn start(config: DevConfig, parties: PartyRegistry) -> anyhow::Result<Self> {
        let store = open_store(&config.storage).await?;
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
        let app = crate::telemetry::ops_router().merge(gateway.router());
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            addr,
            node,
            gateway,
            server,
        })
    }

    /// Serves until the server fails or the process gets SIGINT/SIGTERM; then closes client
    /// sockets with 1001. Every acknowledged write is already durable.
    pub async fn wait(self) -> anyhow::Result<()> {
        tokio::select! {
            r = self.server => return Ok(r??),
            _ = crate::roles::shutdown_signal() => {}
        }
        tracing::info!("shutting down");
        self.gateway
            .shutdown(std::time::Duration::from_secs(2))
            .await;
        Ok(())
    }

    pub fn abort(&self) {
        self.server.abort();
    }
}
