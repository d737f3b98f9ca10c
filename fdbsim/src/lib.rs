//! **A test double of FoundationDB**, not a database: an in-memory, single-process server
//! and a client library that stands in for `libfdb_c` (crate `conclave-fdbsim-client`, which
//! builds `libfdb_c.so`), so that Conclave's FoundationDB backend runs in CI on machines where
//! FoundationDB cannot be installed.
//!
//! What it keeps of FoundationDB: serializable transactions with snapshot reads at a read
//! version, optimistic conflict detection (error 1020), read-your-writes, the 5 s transaction
//! window (1007), the 10 MB transaction limit (2101), range reads in batches with
//! FoundationDB's streaming-mode byte targets and `more` flag, key selectors, atomic
//! operations including versionstamps, watches, transaction timeouts and retry limits, and
//! seeded fault injection (`FDBSIM_FAULT_SEED`, see the client crate). What it does not:
//! durability (data lives in the server's memory), replication, recovery, system keys,
//! tenants, blob granules, latency. A real cluster remains the reference: every test that
//! runs on the simulator runs on a real cluster when `FDB_CLUSTER_FILE` names one
//! (docs/foundationdb.md).

#![warn(clippy::unwrap_used)]

pub mod proto {
    tonic::include_proto!("fdbsim");
}
mod server;
pub mod store;

pub use server::SimServer;
