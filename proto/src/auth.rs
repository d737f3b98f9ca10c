//! How a role proves it belongs to its cluster on the internal links (relay, placement):
//! the cluster secret ([`crate::secret`]), mutual TLS, or both.
//!
//! With TLS every role has a certificate from the cluster's CA, servers (a node's relay,
//! placement) require client certificates from that CA, and clients verify the server's
//! certificate for the name they expect: a node's id (so a ring entry naming node `a` can
//! only be served by the holder of `a`'s key) or `placement`.

use crate::secret::ClusterSecret;
use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The name placement's certificates carry (replicas are interchangeable).
pub const PLACEMENT_NAME: &str = "placement";

/// A role's certificate and key, and its cluster's CA (all PEM).
#[derive(Clone)]
pub struct RoleTls {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl std::fmt::Debug for RoleTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoleTls(<certificate, key and CA>)")
    }
}

impl RoleTls {
    pub fn from_pem(cert: Vec<u8>, key: Vec<u8>, ca: Vec<u8>) -> Self {
        Self { cert, key, ca }
    }

    /// Reads the three PEM files.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, String> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        Ok(Self::from_pem(read(cert)?, read(key)?, read(ca)?))
    }

    /// A server that requires clients with certificates from the cluster's CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// A client of the server that must present a certificate for `server_name`.
    pub fn client(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .domain_name(server_name)
    }
}

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
}
