//! Placement: which nodes are alive, and the ring rooms are placed on.
//!
//! - [`heartbeat`]: a node renews its key in Redis with a TTL; when it cannot renew in
//!   time it fences itself (stops serving) before anyone may take its rooms.
//! - [`publisher`]: placement replicas watch those keys and agree, through one
//!   compare-and-set in Redis, on numbered ring versions, which they stream to gateways
//!   and nodes through the [`grpc`] service.
//! - [`membership`]: a node's side of it: the heartbeat, the rings it follows and the gate
//!   that lets it serve only while both allow it, and leaving the cluster (drain).
//! - [`LivenessTiming`]: the durations whose order all of this relies on.
//!
//! The ring itself ([`Ring`]) lives in `conclave-proto`: gateways and nodes compute owners
//! from it on their hot paths.
#![warn(clippy::unwrap_used)]

pub mod grpc;
pub mod heartbeat;
pub mod membership;
pub mod publisher;
mod signed;
mod timing;

pub use conclave_proto::{Ring, RingVersion, RingView, VNODES_PER_NODE};
pub use membership::{Member, Membership};
pub use timing::LivenessTiming;

/// Where Redis is: its URL (`redis://`, or `rediss://` for TLS) and, for TLS, the CA
/// certificates (PEM) its server certificate must chain to (else the system's roots).
#[derive(Clone, Debug)]
pub struct RedisTarget {
    pub url: String,
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisTarget {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_pem: None,
        }
    }

    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.ca_pem {
            Some(ca) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
            None => redis::Client::open(self.url.as_str()),
        }
    }
}

/// The Redis key of a node's heartbeat.
pub fn node_key(id: &str) -> String {
    format!("conclave:node:{id}")
}

/// Set for a while by a node that left on purpose (a drain): placement then drops it at
/// once even while it keeps the nodes of a ring that Redis lost (a restart).
pub fn left_key(id: &str) -> String {
    format!("conclave:left:{id}")
}

/// The Redis key holding the current ring version.
pub const RING_KEY: &str = "conclave:ring";

/// Set for a TTL by the placement replica that finds the ring gone from Redis (a restart
/// that lost its data), before it stores the ring again: while it lives, every replica
/// keeps the ring's nodes that have not re-announced yet, not only the one that noticed.
pub const RESTORED_KEY: &str = "conclave:ring:restored";
