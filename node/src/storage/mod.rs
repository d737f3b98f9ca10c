//! Room storage: one transactional key-value interface, several backends.
//!
//! - [`Store`] is the backend contract: ordered keys per room, atomic room commits,
//!   alarms with a global due-time index.
//! - [`Storage`] is what party code uses: the Durable Object storage API, buffered per
//!   handler so each handler's writes commit atomically (see `crate::actor`).
//! - Backends: [`RedbStore`] (embedded, the default), [`PostgresStore`], and with the
//!   `fdb` cargo feature `FdbStore` (FoundationDB).

#[cfg(feature = "fdb")]
mod fdb;
mod health;
pub(crate) mod keys;
mod limits;
mod pg_tls;
mod postgres;
mod reads;
mod redb;
mod room_storage;
mod store;
mod usage;

#[cfg(feature = "fdb")]
pub use self::fdb::{stop_network as stop_fdb_network, FdbStore};
pub use self::postgres::{
    session_config as postgres_session_config, PostgresStore,
    DEFAULT_POOL_SIZE as POSTGRES_POOL_SIZE,
};
pub use self::redb::RedbStore;
pub use health::{Monitored, StoreHealth};
pub use limits::{MAX_BATCH_KEYS, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use room_storage::Storage;
pub(crate) use room_storage::{encode_json, Savepoint};
pub use store::{
    AlarmScan, Claim, Claimed, ListOptions, Owner, RoomCommit, StorageError, Store, Usage,
    DEFAULT_REGION,
};
pub use usage::{PartyTotal, PartyTotals, StorageQuota, PARTY_REFRESH};
