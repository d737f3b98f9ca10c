//! How a gateway opens relay links: over gRPC to nodes by address, or to the one node in
//! the same process (`conclave dev`).

use conclave_proto::{ClusterAuth, GatewaySide};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;

/// Opens relay links to nodes by node id.
pub trait NodeConnector: Send + Sync + 'static {
    fn connect(&self, node: &str) -> BoxFuture<'static, Result<GatewaySide, String>>;

    /// New node addresses (node id → relay URL) from placement.
    fn set_addresses(&self, _urls: HashMap<String, String>) {}
}

/// Nodes reached over gRPC at fixed addresses (node id → `http://host:port`).
pub struct GrpcNodes {
    urls: Mutex<HashMap<String, String>>,
    /// Proves this gateway is of the cluster to every node it attaches to.
    auth: ClusterAuth,
}

impl GrpcNodes {
    pub fn new(urls: HashMap<String, String>, auth: ClusterAuth) -> Self {
        Self {
            urls: Mutex::new(urls),
            auth,
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
        let auth = self.auth.clone();
        Box::pin(async move {
            let url = url.ok_or_else(|| format!("no address for node {node}"))?;
            conclave_proto::grpc::connect_relay(&url, &node, &auth)
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
