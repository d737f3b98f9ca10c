//! Placement: which node owns which room.
//!
//! A [`Ring`] is a consistent-hash ring with virtual nodes. Any two processes holding the
//! same ring version compute the same owner for every room, across builds and CPUs
//! (hashring's SipHash-2-4 with fixed keys; pinned by the test vector below). The
//! placement service that publishes versioned rings from Redis liveness arrives with
//! cluster mode; `conclave dev` uses a one-node ring.

mod ring;

pub use ring::{Ring, RingVersion, VNODES_PER_NODE};
