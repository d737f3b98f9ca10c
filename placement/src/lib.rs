//! Placement: which node owns which room.
//!
//! The ring itself ([`Ring`]) lives in `conclave-proto`, because gateways and nodes compute
//! owners from it on their hot paths. This crate will hold the placement service that
//! watches node liveness in Redis and publishes versioned rings; until then a cluster runs
//! on a static ring built from the configured node list.

pub use conclave_proto::{Ring, RingVersion, VNODES_PER_NODE};
