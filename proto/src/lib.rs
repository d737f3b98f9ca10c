//! What gateways and nodes share: the relay wire types, the typed ids, the ring, and the
//! link that carries relay events (in-process channels in `conclave dev`, a gRPC stream in
//! a cluster).
#![warn(clippy::unwrap_used)]

pub mod auth;
pub mod close;
pub mod grpc;
mod headers;
mod link;
mod names;
mod query;
mod refusal;
mod request;
mod ring;
pub mod secret;
mod tls;
pub mod trace;

/// Generated relay and placement protocol types (`proto/relay.proto`).
pub mod wire {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("conclave.relay.v1");
}

pub use auth::{ClusterAuth, RoleTls};
pub use headers::wire_headers;
pub use link::{in_process_link, GatewaySide, Inbound, NodeSide, LINK_CAPACITY};
pub use names::{NameError, PartyName, RoomKey, RoomName, SocketId, MAX_PARTY_LEN, MAX_ROOM_LEN};
pub use query::query_param;
pub use refusal::{Refusal, MISPLACED};
pub use request::{reply_id, RelayRequest};
pub use ring::{Ring, RingVersion, RingView, Rings, DEFAULT_REGION, VNODES_PER_NODE};
pub use secret::ClusterSecret;
pub use tls::DEFAULT_TLS_RELOAD;

/// The hasher of maps keyed by ids a gateway or node assigns itself (socket ids, peers),
/// looked up for every relayed message: foldhash, randomly seeded, rather than the
/// standard SipHash. Keys a client chooses (room names, connection ids) keep SipHash,
/// which resists collisions crafted to slow a map down.
pub type IdHasher = foldhash::fast::RandomState;

/// A map from a socket id (assigned by the gateway) to `V`.
pub type SocketMap<V> = std::collections::HashMap<u64, V, IdHasher>;
