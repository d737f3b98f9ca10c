//! The backend contract: what a [`Store`] keeps per room (ordered keys, the alarm, the
//! owner record) and the operations every backend provides, with the ownership rules
//! ([`Claim::decide`], [`check_fence`]) all backends apply alike.

use async_trait::async_trait;
use bytes::Bytes;
use conclave_proto::RoomKey;
pub use conclave_proto::DEFAULT_REGION;

pub use super::usage::Usage;

#[derive(Clone, Debug, thiserror::Error)]
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
    /// A write would take the room (or its party) past its storage quota.
    #[error("storage quota exceeded: the {scope} would hold {used} {what}; its limit is {limit}")]
    QuotaExceeded {
        scope: &'static str,
        what: &'static str,
        used: u64,
        limit: u64,
    },
    #[error("storage is shutting down")]
    Closed,
    /// The room's owner record changed since this node claimed it: its writes are refused.
    #[error("fenced: room is now held by {}", holder.as_ref().map_or("nobody".to_string(), Owner::to_string))]
    Fenced { holder: Option<Owner> },
    /// Another live node holds the room.
    #[error("room is held by {holder}")]
    Held { holder: Owner },
    /// The room's home region is another one: only that region's nodes may run it.
    #[error("room belongs to region {home}")]
    OtherRegion { home: String },
}

impl StorageError {
    /// Whether the store itself failed (it may do better on a later try), rather than the
    /// caller asking for something it refuses.
    pub fn is_store_failure(&self) -> bool {
        matches!(self, StorageError::Backend(_) | StorageError::Closed)
    }
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
    /// At most this many entries; `Some(0)` selects none.
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

/// Who holds a room: a node, its process incarnation, and the epoch of the claim. Stored
/// with the room; every fenced commit re-reads it in the same transaction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub node: String,
    pub incarnation: u64,
    pub epoch: u64,
    /// Set when the holder let go of the room; anyone may claim it then.
    #[serde(default)]
    pub released: bool,
    /// The room's home region, fixed when the room is first placed. (Records written
    /// before regions existed have none: they belong to [`DEFAULT_REGION`].)
    #[serde(default)]
    pub region: String,
}

impl Owner {
    /// The room's home region.
    pub fn home(&self) -> &str {
        if self.region.is_empty() {
            DEFAULT_REGION
        } else {
            &self.region
        }
    }

    /// The record that fixes a new room's home region before any node holds it.
    fn placeholder(region: &str) -> Self {
        Self {
            node: String::new(),
            incarnation: 0,
            epoch: 0,
            released: true,
            region: region.to_string(),
        }
    }
}

/// The home region of a room whose owner record is `current`, and the record to write when
/// this call fixes it (a room never placed before gets `proposed`).
pub(crate) fn home_region(current: Option<&Owner>, proposed: &str) -> (String, Option<Owner>) {
    match current {
        Some(c) => (c.home().to_string(), None),
        None => (proposed.to_string(), Some(Owner::placeholder(proposed))),
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {} (incarnation {}, epoch {})",
            self.node, self.incarnation, self.epoch
        )?;
        if self.released {
            f.write_str(", released")?;
        }
        Ok(())
    }
}

/// A node asking to own a room.
#[derive(Clone, Debug)]
pub struct Claim {
    pub node: String,
    pub incarnation: u64,
    /// The claiming node's region: it may only run rooms whose home this is.
    pub region: String,
    /// Nodes currently in the ring: a room held by a node outside it may be taken over.
    pub live_nodes: Vec<String>,
    /// Take the room from a live holder too. For a claimant the ring places the room on,
    /// once the holder has had its time to let go: a holder that lost track of its claim
    /// (it left the room without releasing it, its store failing) would otherwise keep
    /// the room from every other node for as long as it lives. The epoch fences whatever
    /// the holder still commits.
    pub take_over: bool,
}

impl Claim {
    /// The owner record after this claim, given the current one; `OtherRegion` if the
    /// room's home is another region, `Held` if another live node holds the room.
    /// Re-claiming a room this process already holds keeps its epoch.
    pub fn decide(&self, current: Option<&Owner>) -> Result<Owner, StorageError> {
        if let Some(c) = current {
            if c.home() != self.region {
                return Err(StorageError::OtherRegion {
                    home: c.home().to_string(),
                });
            }
        }
        let next = |epoch| Owner {
            node: self.node.clone(),
            incarnation: self.incarnation,
            epoch,
            released: false,
            region: self.region.clone(),
        };
        match current {
            None => Ok(next(1)),
            Some(c) if c.node == self.node && c.incarnation == self.incarnation && !c.released => {
                Ok(c.clone())
            }
            // Released, held by another process of this node (a restart: incarnations do
            // not tell which process is newer, so any other one loses the room), or held by
            // a node that left the ring.
            Some(c)
                if c.released
                    || c.node == self.node
                    || !self.live_nodes.contains(&c.node)
                    || self.take_over =>
            {
                Ok(next(c.epoch + 1))
            }
            Some(c) => Err(StorageError::Held { holder: c.clone() }),
        }
    }
}

/// A room just claimed: its owner record and what the owner loads first.
#[derive(Debug)]
pub struct Claimed {
    pub owner: Owner,
    /// Every ledger record of the room (as [`Store::ledger`]).
    pub ledger: Vec<(String, Bytes)>,
    /// What the room's keys take (as [`Store::usage`]).
    pub usage: Usage,
}

/// Whether a commit fenced by `fence` may apply, given the stored owner.
pub(crate) fn check_fence(current: Option<&Owner>, fence: &Owner) -> Result<(), StorageError> {
    match current {
        Some(c) if c == fence && !c.released => Ok(()),
        other => Err(StorageError::Fenced {
            holder: other.cloned(),
        }),
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
    /// When set, the commit applies only if the room's owner record is still exactly this.
    pub fence: Option<Owner>,
    /// Writes to the room's ledger (`Some` puts, `None` deletes): the runtime's own records,
    /// apart from the party's keys ([`Store::ledger`]).
    pub ledger: Vec<(String, Option<Bytes>)>,
}

impl RoomCommit {
    pub fn is_empty(&self) -> bool {
        !self.delete_all && self.writes.is_empty() && self.alarm.is_none() && self.ledger.is_empty()
    }
}

/// A storage backend. Commits of many rooms may share one durable write (group commit);
/// a commit returns only once it is durable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name, for metrics (`redb`, `postgres`, `fdb`).
    fn backend(&self) -> &'static str {
        "other"
    }
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
    /// Every ledger record of the room, in key order: what the runtime committed with the
    /// room's steps for itself (`RoomCommit::ledger`).
    async fn ledger(&self, room: &RoomKey) -> Result<Vec<(String, Bytes)>, StorageError>;
    /// Applies a room's commit atomically, with the room's usage record; what the room's
    /// keys take after it, if it wrote any (`delete_all` or `writes`).
    async fn commit(
        &self,
        room: &RoomKey,
        commit: RoomCommit,
    ) -> Result<Option<Usage>, StorageError>;
    /// What the room's keys take (its usage record).
    async fn usage(&self, room: &RoomKey) -> Result<Usage, StorageError>;
    /// The rooms of `party` that hold keys, with what their keys take, in name order:
    /// those after the room `after` (a page's last), at most `limit`.
    async fn party_rooms(
        &self,
        party: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Usage)>, StorageError>;
    /// What the keys of every room of `party` take together.
    async fn party_usage(&self, party: &str) -> Result<Usage, StorageError> {
        const PAGE: usize = 1000;
        let mut total = Usage::default();
        let mut after: Option<String> = None;
        loop {
            let page = self.party_rooms(party, after.as_deref(), PAGE).await?;
            total = page.iter().fold(total, |total, (_, usage)| total + *usage);
            match page.last() {
                Some((room, _)) if page.len() == PAGE => after = Some(room.clone()),
                _ => return Ok(total),
            }
        }
    }
    /// Takes ownership of a room (see [`Claim::decide`]), atomically with reading the
    /// current owner.
    async fn claim(&self, room: &RoomKey, claim: &Claim) -> Result<Owner, StorageError>;
    /// Claims the room, then reads what its owner starts from: the ledger and what the
    /// room's keys take, as they are once the claim has committed (earlier owners' later
    /// commits are fenced). A backend that can send the reads with the claim's write, in
    /// one round trip, does.
    async fn claim_and_load(&self, room: &RoomKey, claim: &Claim) -> Result<Claimed, StorageError> {
        let owner = self.claim(room, claim).await?;
        let (ledger, usage) = futures::try_join!(self.ledger(room), self.usage(room))?;
        Ok(Claimed {
            owner,
            ledger,
            usage,
        })
    }
    /// Lets go of a room this owner still holds (no-op otherwise). A room that holds
    /// nothing but its owner record (no keys, ledger or alarm: it only served reads, or
    /// deleted all it wrote) is forgotten instead: the record is deleted, in the same
    /// transaction, so rooms that were only read leave nothing behind (the next claim
    /// starts again at epoch 1, and the room's home region is fixed anew).
    async fn release(&self, room: &RoomKey, owner: &Owner) -> Result<(), StorageError>;
    /// The room's owner record.
    async fn owner(&self, room: &RoomKey) -> Result<Option<Owner>, StorageError>;
    /// The room's home region; a room never placed before gets `proposed`, atomically (the
    /// first caller fixes it).
    async fn home_region(&self, room: &RoomKey, proposed: &str) -> Result<String, StorageError>;
    /// Waits until the room's owner record may have changed, or `within` passed. Backends
    /// that can watch a key wake at the change; the default polls.
    async fn wait_owner_change(&self, _room: &RoomKey, within: std::time::Duration) {
        tokio::time::sleep(within.min(std::time::Duration::from_millis(50))).await;
    }
    /// Whether the store answers now: a node that cannot reach its store must not renew
    /// its liveness (it could not commit anything), so that its rooms move to a node that
    /// can. Embedded stores always answer.
    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Whether a write goes through now, while the store is failing: a backend that must
    /// reopen or reconnect after a failure does so here. The default pings.
    async fn probe(&self) -> Result<(), StorageError> {
        self.ping().await
    }
    /// Entries of the global alarm index, `(room, due_ms)`, earliest first, as `scan`
    /// selects them.
    async fn scan_alarms(&self, scan: &AlarmScan) -> Result<Vec<(RoomKey, i64)>, StorageError>;
    /// Rooms whose alarm is due at or before `now_ms`, earliest first, starting after the
    /// entry `after` (a page's last) when given.
    async fn due_alarms(
        &self,
        now_ms: i64,
        after: Option<(RoomKey, i64)>,
        limit: usize,
    ) -> Result<Vec<(RoomKey, i64)>, StorageError> {
        let scan = AlarmScan {
            after,
            due_by: Some(now_ms),
            limit,
        };
        self.scan_alarms(&scan).await
    }
    /// The earliest alarm of any room.
    async fn next_alarm(&self) -> Result<Option<i64>, StorageError> {
        let scan = AlarmScan {
            after: None,
            due_by: None,
            limit: 1,
        };
        Ok(self.scan_alarms(&scan).await?.first().map(|(_, due)| *due))
    }
}

/// A stretch of the global alarm index.
#[derive(Clone, Debug)]
pub struct AlarmScan {
    /// Start just after this entry (a page's last); from the earliest alarm if `None`.
    pub after: Option<(RoomKey, i64)>,
    /// Only alarms due at or before this (ms since the epoch); any if `None`.
    pub due_by: Option<i64>,
    /// At most this many entries (0: none).
    pub limit: usize,
}
