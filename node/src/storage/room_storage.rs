//! The storage API party code uses, buffered per handler.
//!
//! Writes land in an in-memory buffer; reads see the buffer first (a room always reads its
//! own writes). When the handler returns, the runtime commits the buffer as one atomic
//! [`RoomCommit`] and only then releases the messages the handler sent. Reads that outlive
//! the borrow of the storage are in `reads.rs`.

use super::limits::{check_batch, check_key, check_value};
use super::reads::{ListPlan, ReadFailure, ReadPlan};
use super::store::{ListOptions, Owner, RoomCommit, StorageError, Store};
use super::usage::{PartyTotal, StorageQuota, Usage};
use bytes::Bytes;
use conclave_proto::RoomKey;
use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A room's storage: ordered string keys, byte values, one alarm.
pub struct Storage {
    room: RoomKey,
    store: Arc<dyn Store>,
    /// The claim this room's commits are fenced by (set once the node owns the room).
    fence: Option<Owner>,
    pending: BTreeMap<String, Option<Bytes>>,
    cleared: bool,
    alarm: Option<Option<i64>>,
    /// What the entries `pending` puts take, counted as new keys: a write over a stored
    /// key, or a delete, is credited only once committed (the store knows what it replaced).
    pending_usage: Usage,
    /// What the room's stored keys take: the store's count after the last commit.
    usage: Usage,
    /// What a commit taken from the buffer may add until the store counts it.
    in_flight: Usage,
    quota: StorageQuota,
    /// The last known usage of the room's whole party, when its quota bounds the party.
    party: Option<Arc<PartyTotal>>,
    /// A read from the store that failed since [`Storage::take_read_failure`] last looked.
    read_failure: ReadFailure,
}

/// The buffered writes at one moment of a handler ([`Storage::savepoint`]).
#[derive(Clone)]
pub(crate) struct Savepoint {
    pending: BTreeMap<String, Option<Bytes>>,
    cleared: bool,
    alarm: Option<Option<i64>>,
    pending_usage: Usage,
}

impl Storage {
    /// A room's storage over `store`. The runtime makes one per room; tools and tests may
    /// too, then commit with [`Storage::commit`].
    pub fn new(room: RoomKey, store: Arc<dyn Store>) -> Self {
        Self {
            room,
            store,
            fence: None,
            pending: BTreeMap::new(),
            cleared: false,
            alarm: None,
            pending_usage: Usage::default(),
            usage: Usage::default(),
            in_flight: Usage::default(),
            quota: StorageQuota::UNLIMITED,
            party: None,
            read_failure: ReadFailure::default(),
        }
    }

    /// The error of a read the store failed since the last call, if any.
    pub(crate) fn take_read_failure(&self) -> Option<StorageError> {
        self.read_failure.take().map(StorageError::Backend)
    }

    /// Bounds what the room stores: every later write that would take the room (or its
    /// party, whose total `party` tracks) past `quota` fails with
    /// [`StorageError::QuotaExceeded`]. `usage` is what the room holds now.
    pub fn set_quota(&mut self, quota: StorageQuota, usage: Usage, party: Option<Arc<PartyTotal>>) {
        self.quota = quota;
        self.usage = usage;
        self.in_flight = Usage::default();
        self.party = party;
    }

    /// What the room's keys take, as far as this storage knows: the store's count after
    /// the last commit (and what a commit in flight may add), plus the buffered writes.
    pub fn usage(&self) -> Usage {
        self.stored_usage() + self.pending_usage
    }

    fn stored_usage(&self) -> Usage {
        if self.cleared {
            Usage::default()
        } else {
            self.usage + self.in_flight
        }
    }

    /// Checks that buffering `entries` keeps the room and its party within the quota; what
    /// the buffered writes would take then.
    fn admit<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> Result<Usage, StorageError> {
        let mut pending = self.pending_usage;
        for (key, len) in entries {
            let replaced = self
                .pending
                .get(key)
                .and_then(|v| v.as_ref())
                .map(Bytes::len);
            pending.replace(key, replaced, Some(len));
        }
        if pending.bytes > self.pending_usage.bytes || pending.keys > self.pending_usage.keys {
            let party = self.party.as_ref().map_or(Usage::default(), |p| p.get());
            let checked = self
                .quota
                .check(self.stored_usage() + pending, party + pending);
            if let Err(StorageError::QuotaExceeded { scope, .. }) = &checked {
                metrics::counter!("conclave_storage_quota_refusals_total", "scope" => *scope)
                    .increment(1);
            }
            checked?;
        }
        Ok(pending)
    }

    /// Buffers a delete of `key`: what it put before in this handler no longer counts.
    fn forget_pending(&mut self, key: &str) {
        if let Some(Some(v)) = self.pending.get(key) {
            self.pending_usage.replace(key, Some(v.len()), None);
        }
    }

    /// The value of `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        check_key(key)?;
        Ok(self.get_many(&[key]).await?.pop().flatten())
    }

    /// The values of up to 128 keys, in the order asked.
    pub async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>, StorageError> {
        self.read_plan(keys)?.run().await
    }

    /// A read of `keys` that no longer borrows the storage: buffered values are taken now,
    /// the rest is read from the store when the plan runs.
    pub(crate) fn read_plan(&self, keys: &[&str]) -> Result<ReadPlan, StorageError> {
        check_batch(keys.len())?;
        let mut found: Vec<Option<Option<Bytes>>> = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for k in keys {
            check_key(k)?;
            match self.pending.get(*k) {
                Some(v) => found.push(Some(v.clone())),
                None if self.cleared => found.push(Some(None)),
                None => {
                    found.push(None);
                    missing.push(k.to_string());
                }
            }
        }
        Ok(ReadPlan {
            store: self.store.clone(),
            room: self.room.clone(),
            found,
            missing,
            failure: self.read_failure.clone(),
        })
    }

    /// Stores `value` under `key` (committed when the handler returns).
    pub fn put(&mut self, key: &str, value: impl Into<Bytes>) -> Result<(), StorageError> {
        let value = value.into();
        check_key(key)?;
        check_value(key, value.len())?;
        self.pending_usage = self.admit([(key, value.len())])?;
        self.pending.insert(key.to_string(), Some(value));
        Ok(())
    }

    /// Stores up to 128 entries; all or none are accepted.
    pub fn put_many<K: AsRef<str>, V: Into<Bytes>>(
        &mut self,
        entries: Vec<(K, V)>,
    ) -> Result<(), StorageError> {
        check_batch(entries.len())?;
        let entries: Vec<(K, Bytes)> = entries.into_iter().map(|(k, v)| (k, v.into())).collect();
        for (k, v) in &entries {
            check_key(k.as_ref())?;
            check_value(k.as_ref(), v.len())?;
        }
        self.pending_usage = self.admit(entries.iter().map(|(k, v)| (k.as_ref(), v.len())))?;
        for (k, v) in entries {
            self.pending.insert(k.as_ref().to_string(), Some(v));
        }
        Ok(())
    }

    pub fn delete(&mut self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        self.forget_pending(key);
        self.pending.insert(key.to_string(), None);
        Ok(())
    }

    pub fn delete_many(&mut self, keys: &[&str]) -> Result<(), StorageError> {
        check_batch(keys.len())?;
        for k in keys {
            check_key(k)?;
        }
        for k in keys {
            self.forget_pending(k);
            self.pending.insert(k.to_string(), None);
        }
        Ok(())
    }

    /// Removes every key of the room (the alarm stays).
    pub fn delete_all(&mut self) {
        self.pending.clear();
        self.pending_usage = Usage::default();
        self.cleared = true;
    }

    /// Entries in key order (or reverse), as selected by `opts`.
    pub async fn list(&self, opts: &ListOptions) -> Result<Vec<(String, Bytes)>, StorageError> {
        self.list_plan(opts).run().await
    }

    /// A list that no longer borrows the storage: the buffered writes in range are taken
    /// now, the store is read when the plan runs.
    pub(crate) fn list_plan(&self, opts: &ListOptions) -> ListPlan {
        let buffered = self
            .pending
            .iter()
            .filter(|(k, _)| opts.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ListPlan {
            store: (!self.cleared).then(|| self.store.clone()),
            room: self.room.clone(),
            opts: opts.clone(),
            buffered,
            failure: self.read_failure.clone(),
        }
    }

    /// What has been buffered so far, to go back to if a transaction fails.
    pub(crate) fn savepoint(&self) -> Savepoint {
        Savepoint {
            pending: self.pending.clone(),
            cleared: self.cleared,
            alarm: self.alarm,
            pending_usage: self.pending_usage,
        }
    }

    /// Undoes the writes buffered since `save` was taken.
    pub(crate) fn rollback(&mut self, save: Savepoint) {
        self.pending = save.pending;
        self.cleared = save.cleared;
        self.alarm = save.alarm;
        self.pending_usage = save.pending_usage;
    }

    /// Runs `f` as a unit: if it returns an error, its writes are undone.
    ///
    /// ```
    /// # use conclave_node::{Storage, StorageError};
    /// async fn transfer(storage: &mut Storage) -> Result<(), StorageError> {
    ///     storage
    ///         .transaction(|txn| {
    ///             Box::pin(async move {
    ///                 let a: i64 = txn.get_json("a").await?.unwrap_or(0);
    ///                 txn.put_json("a", &(a - 1))?;
    ///                 txn.put_json("b", &1)?;
    ///                 Ok::<_, StorageError>(())
    ///             })
    ///         })
    ///         .await
    /// }
    /// ```
    pub async fn transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: for<'a> FnOnce(&'a mut Storage) -> BoxFuture<'a, Result<T, E>>,
    {
        let save = self.savepoint();
        let result = f(self).await;
        if result.is_err() {
            self.rollback(save);
        }
        result
    }

    /// When the alarm will fire (ms since the Unix epoch), if one is set.
    pub async fn get_alarm(&self) -> Result<Option<i64>, StorageError> {
        self.alarm_plan().await
    }

    /// `get_alarm` that no longer borrows the storage.
    pub(crate) fn alarm_plan(&self) -> BoxFuture<'static, Result<Option<i64>, StorageError>> {
        match self.alarm {
            Some(a) => Box::pin(std::future::ready(Ok(a))),
            None => {
                let (store, room) = (self.store.clone(), self.room.clone());
                let failure = self.read_failure.clone();
                Box::pin(async move { failure.note(store.get_alarm(&room).await) })
            }
        }
    }

    /// Sets the room's one alarm, replacing any other. It fires at least once, even if
    /// the room is hibernated or the process restarts.
    pub fn set_alarm(&mut self, at_ms: i64) {
        self.alarm = Some(Some(at_ms));
    }

    pub fn delete_alarm(&mut self) {
        self.alarm = Some(None);
    }

    /// `get` decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StorageError::Decode {
                    key: key.chars().take(64).collect(),
                    error: e.to_string(),
                }),
        }
    }

    /// `put` encoded as JSON.
    pub fn put_json<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<(), StorageError> {
        self.put(key, encode_json(value)?)
    }

    /// Whether the handler has written anything not yet committed.
    pub fn has_pending_writes(&self) -> bool {
        self.cleared || !self.pending.is_empty() || self.alarm.is_some()
    }

    /// Takes the buffered writes as one commit, leaving the buffer empty. Until the store
    /// says what the room holds after it ([`Storage::committed`]), the room counts as
    /// holding everything the commit puts besides what it held.
    pub(crate) fn take_commit(&mut self) -> RoomCommit {
        self.in_flight = self.in_flight + self.pending_usage;
        self.pending_usage = Usage::default();
        let writes = std::mem::take(&mut self.pending).into_iter().collect();
        RoomCommit {
            delete_all: std::mem::take(&mut self.cleared),
            writes,
            alarm: self.alarm.take(),
            fence: self.fence.clone(),
            ledger: Vec::new(),
        }
    }

    /// Commits the buffered writes now, atomically (the runtime does this when a handler
    /// returns).
    pub async fn commit(&mut self) -> Result<(), StorageError> {
        if !self.has_pending_writes() {
            return Ok(());
        }
        let commit = self.take_commit();
        match self.store.commit(&self.room, commit).await {
            Ok(usage) => {
                self.committed(usage);
                Ok(())
            }
            Err(e) => {
                self.not_committed();
                Err(e)
            }
        }
    }

    /// A commit of the buffered writes is durable; `usage` is what the store counted for
    /// the room's keys after it, if it wrote any.
    pub(crate) fn committed(&mut self, usage: Option<Usage>) {
        if let Some(usage) = usage {
            if let Some(party) = &self.party {
                party.changed(self.usage, usage);
            }
            self.usage = usage;
        }
        self.in_flight = Usage::default();
    }

    /// A commit taken from the buffer failed: what it would have added no longer counts
    /// against the quota (the writes go again, counted again, when the step runs again;
    /// had it landed after all, the next commit's count from the store says so).
    pub(crate) fn not_committed(&mut self) {
        self.in_flight = Usage::default();
    }

    /// Fences every later commit by `owner`: they apply only while it still holds the room.
    pub fn set_fence(&mut self, owner: Option<Owner>) {
        self.fence = owner;
    }

    pub fn fence(&self) -> Option<&Owner> {
        self.fence.as_ref()
    }

    /// Drops the buffered writes.
    pub(crate) fn discard(&mut self) {
        self.pending.clear();
        self.cleared = false;
        self.alarm = None;
        self.pending_usage = Usage::default();
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Moves this storage out (with its buffered writes), leaving an empty one with the
    /// same room, store and fence in its place; [`Storage::give_back`] undoes it. Party
    /// code that runs on another thread works on the storage it was lent.
    pub(crate) fn lend(&mut self) -> Storage {
        let stand_in = Storage {
            fence: self.fence.clone(),
            usage: self.usage,
            quota: self.quota,
            party: self.party.clone(),
            read_failure: self.read_failure.clone(),
            ..Storage::new(self.room.clone(), self.store.clone())
        };
        std::mem::replace(self, stand_in)
    }

    pub(crate) fn give_back(&mut self, lent: Storage) {
        *self = lent;
    }
}

/// `value` as JSON, as [`Storage::put_json`] stores it.
pub(crate) fn encode_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Encode(e.to_string()))
}
