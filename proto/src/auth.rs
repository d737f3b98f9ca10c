//! How a role proves it belongs to its cluster on the internal links (relay, placement):
//! the cluster secret ([`crate::secret`]), mutual TLS, or both.
//!
//! With TLS every role has a certificate from the cluster's CA, servers (a node's relay,
//! placement) require client certificates from that CA, and clients verify the server's
//! certificate for the name they expect: a node's id (so a ring entry naming node `a` can
//! only be served by the holder of `a`'s key) or `placement`.

use crate::secret::ClusterSecret;
pub use crate::tls::RoleTls;

/// The name placement's certificates carry (replicas are interchangeable).
pub const PLACEMENT_NAME: &str = "placement";

/// Everything a role proves itself with on internal links.
#[derive(Clone, Debug, Default)]
pub struct ClusterAuth {
    pub secret: Option<ClusterSecret>,
    pub tls: Option<RoleTls>,
}

impl ClusterAuth {
    /// Whether the role proves anything at all.
    pub fn is_some(&self) -> bool {
        self.secret.is_some() || self.tls.is_some()
    }

    /// The scheme of this role's internal URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `endpoint` for calls to `server_name`, over TLS if the role has it.
    pub fn endpoint(
        &self,
        endpoint: tonic::transport::Endpoint,
        server_name: &str,
    ) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.client(server_name)),
            None => Ok(endpoint),
        }
    }

    /// Re-reads the role's certificate files from now on ([`RoleTls::spawn_reload`]).
    pub fn spawn_tls_reload(&self) {
        if let Some(tls) = &self.tls {
            tls.spawn_reload();
        }
    }
}
