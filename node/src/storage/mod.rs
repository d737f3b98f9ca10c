//! Room storage: one transactional key-value interface, several backends.
//!
//! - [`Store`] is the backend contract: ordered keys per room, atomic room commits,
//!   alarms with a global due-time index.
//! - [`Storage`] is what party code uses: the Durable Object storage API, buffered per
//!   handler so each handler's writes commit atomically (see `room::actor`).
//! - Backends: [`RedbStore`] (embedded, the default) and [`PostgresStore`].

mod keys;
mod limits;
mod postgres;
mod redb;
mod room_storage;

pub use self::postgres::{PostgresStore, DEFAULT_POOL_SIZE as POSTGRES_POOL_SIZE};
pub use self::redb::RedbStore;
pub use limits::{MAX_BATCH_KEYS, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use room_storage::Storage;

use async_trait::async_trait;
use bytes::Bytes;
use conclave_proto::RoomKey;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("key is {len} bytes; the limit is {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value for key {key:?} is {len} bytes; the limit is {max}")]
    ValueTooLarge { key: String, len: usize, max: usize },
    #[error("{len} keys in one call; the limit is {max}")]
    TooManyKeys { len: usize, max: usize },
    #[error("value for key {key:?} is not valid JSON for the requested type: {error}")]
    Decode { key: String, error: String },
    #[error("value could not be encoded as JSON: {0}")]
    Encode(String),
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("storage is shutting down")]
    Closed,
}

/// Options of [`Storage::list`], as in Durable Objects.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only keys that start with this.
    pub prefix: Option<String>,
    /// Keys >= start.
    pub start: Option<String>,
    /// Keys > start_after (ignored when `start` is set).
    pub start_after: Option<String>,
    /// Keys < end.
    pub end: Option<String>,
    /// Descending order.
    pub reverse: bool,
    pub limit: Option<usize>,
}

impl ListOptions {
    pub fn prefix(p: impl Into<String>) -> Self {
        Self {
            prefix: Some(p.into()),
            ..Self::default()
        }
    }

    /// Whether `key` is inside the range (ignoring `limit`).
    pub(crate) fn contains(&self, key: &str) -> bool {
        if let Some(p) = &self.prefix {
            if !key.starts_with(p.as_str()) {
                return false;
            }
        }
        if let Some(s) = &self.start {
            if key < s.as_str() {
                return false;
            }
        } else if let Some(s) = &self.start_after {
            if key <= s.as_str() {
                return false;
            }
        }
        if let Some(e) = &self.end {
            if key >= e.as_str() {
                return false;
            }
        }
        true
    }
}

/// Everything one room commits at once: applied atomically, in this order.
#[derive(Clone, Debug, Default)]
pub struct RoomCommit {
    /// Remove every key of the room before applying `writes`.
    pub delete_all: bool,
    /// `Some` puts, `None` deletes.
    pub writes: Vec<(String, Option<Bytes>)>,
    /// `Some(Some(t))` sets the alarm to `t` (ms since the epoch), `Some(None)` clears it.
    pub alarm: Option<Option<i64>>,
}

impl RoomCommit {
    pub fn is_empty(&self) -> bool {
        !self.delete_all && self.writes.is_empty() && self.alarm.is_none()
    }
}

/// A storage backend. Commits of many rooms may share one durable write (group commit);
/// a commit returns only once it is durable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(
        &self,
        room: &RoomKey,
        keys: &[String],
    ) -> Result<Vec<Option<Bytes>>, StorageError>;
    async fn list(
        &self,
        room: &RoomKey,
        opts: &ListOptions,
    ) -> Result<Vec<(String, Bytes)>, StorageError>;
    async fn get_alarm(&self, room: &RoomKey) -> Result<Option<i64>, StorageError>;
    async fn commit(&self, room: &RoomKey, commit: RoomCommit) -> Result<(), StorageError>;
    /// Rooms whose alarm is due at or before `now_ms`, earliest first.
    async fn due_alarms(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(RoomKey, i64)>, StorageError>;
    /// The earliest alarm of any room.
    async fn next_alarm(&self) -> Result<Option<i64>, StorageError>;
}
