//! The real store, wrapped for tests: commits fail while `failing` is set (a disk that
//! errors) and while `failing_next` counts down, batches fail while `failing_batches` is set, reads while `failing_reads` is, commits wait while `holding` is
//! set (a slow disk) and are counted, and every call runs as a blocking task. Under paused tokio time the clock does
//! not auto-advance while a blocking task runs, so it waits for storage as it would for
//! any other work; without this, time would jump ahead while redb's committer thread
//! writes.

use bytes::Bytes;
use conclave_node::async_trait;
use conclave_node::storage::{AlarmScan, Claim, Owner, RedbStore, RoomCommit, Store, Usage};
use conclave_node::{ListOptions, StorageError};
use conclave_proto::RoomKey;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Clones share the store and its switches.
#[derive(Clone)]
pub struct TestStore {
    inner: Arc<dyn Store>,
    failing: Arc<AtomicBool>,
    failing_next: Arc<AtomicUsize>,
    failing_batches: Arc<AtomicBool>,
    failing_reads: Arc<AtomicBool>,
    holding: Arc<tokio::sync::watch::Sender<bool>>,
    commits: Arc<AtomicUsize>,
}

impl TestStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            failing: Arc::default(),
            failing_next: Arc::default(),
            failing_batches: Arc::default(),
            failing_reads: Arc::default(),
            holding: Arc::new(tokio::sync::watch::Sender::new(false)),
            commits: Arc::default(),
        }
    }

    /// A redb file at `path`.
    pub fn redb(path: &Path) -> Self {
        Self::new(Arc::new(RedbStore::open(path).unwrap()))
    }

    /// While set, every commit fails with a backend error.
    pub fn failing(&self) -> Arc<AtomicBool> {
        self.failing.clone()
    }

    /// While above zero, a commit fails with a backend error and counts it down: the next
    /// N commits fail.
    pub fn failing_next(&self) -> Arc<AtomicUsize> {
        self.failing_next.clone()
    }

    /// While set, a commit fails if it records frames of more than one socket (a batch).
    pub fn failing_batches(&self) -> Arc<AtomicBool> {
        self.failing_batches.clone()
    }

    /// While set, every read of a room's keys fails with a backend error (a store cut off
    /// between two commits).
    pub fn failing_reads(&self) -> Arc<AtomicBool> {
        self.failing_reads.clone()
    }

    /// While it holds `true`, commits wait (before they reach the store).
    pub fn holding(&self) -> Arc<tokio::sync::watch::Sender<bool>> {
        self.holding.clone()
    }

    /// How many commits the store took.
    pub fn commits(&self) -> Arc<AtomicUsize> {
        self.commits.clone()
    }

    /// Runs `op` on the inner store as a blocking task.
    async fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(Arc<dyn Store>) -> BoxFuture<'static, T> + Send + 'static,
    ) -> T {
        let (store, runtime) = (self.inner.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || runtime.block_on(op(store)))
            .await
            .expect("a store call panicked")
    }
}

#[async_trait]
impl Store for TestStore {
    async fn get(
        &self,
        room: &RoomKey,
        keys: &[String],
    ) -> Result<Vec<Option<Bytes>>, StorageError> {
        if self.failing_reads.load(Ordering::SeqCst) {
            return Err(StorageError::Backend("reads fail on purpose".into()));
        }
        let (room, keys) = (room.clone(), keys.to_vec());
        self.call(move |s| Box::pin(async move { s.get(&room, &keys).await }))
            .await
    }
    async fn list(
        &self,
        room: &RoomKey,
        opts: &ListOptions,
    ) -> Result<Vec<(String, Bytes)>, StorageError> {
        if self.failing_reads.load(Ordering::SeqCst) {
            return Err(StorageError::Backend("reads fail on purpose".into()));
        }
        let (room, opts) = (room.clone(), opts.clone());
        self.call(move |s| Box::pin(async move { s.list(&room, &opts).await }))
            .await
    }
    async fn ledger(&self, room: &RoomKey) -> Result<Vec<(String, Bytes)>, StorageError> {
        let room = room.clone();
        self.call(move |s| Box::pin(async move { s.ledger(&room).await }))
            .await
    }
    async fn get_alarm(&self, room: &RoomKey) -> Result<Option<i64>, StorageError> {
        let room = room.clone();
        self.call(move |s| Box::pin(async move { s.get_alarm(&room).await }))
            .await
    }
    async fn commit(
        &self,
        room: &RoomKey,
        commit: RoomCommit,
    ) -> Result<Option<Usage>, StorageError> {
        let mut held = self.holding.subscribe();
        let _ = held.wait_for(|holding| !*holding).await;
        let counted_down = self
            .failing_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if counted_down || self.failing.load(Ordering::SeqCst) {
            return Err(StorageError::Backend("injected: disk error".into()));
        }
        let frames = commit
            .ledger
            .iter()
            .filter(|(k, v)| k.starts_with("a/") && v.is_some());
        if self.failing_batches.load(Ordering::SeqCst) && frames.count() > 1 {
            return Err(StorageError::Backend(
                "injected: disk error on a batch".into(),
            ));
        }
        let room = room.clone();
        let result = self
            .call(move |s| Box::pin(async move { s.commit(&room, commit).await }))
            .await;
        if result.is_ok() {
            self.commits.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
    async fn usage(&self, room: &RoomKey) -> Result<Usage, StorageError> {
        let room = room.clone();
        self.call(move |s| Box::pin(async move { s.usage(&room).await }))
            .await
    }
    async fn party_rooms(
        &self,
        party: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Usage)>, StorageError> {
        let (party, after) = (party.to_string(), after.map(str::to_string));
        self.call(move |s| {
            Box::pin(async move { s.party_rooms(&party, after.as_deref(), limit).await })
        })
        .await
    }
    async fn claim(&self, room: &RoomKey, claim: &Claim) -> Result<Owner, StorageError> {
        let (room, claim) = (room.clone(), claim.clone());
        self.call(move |s| Box::pin(async move { s.claim(&room, &claim).await }))
            .await
    }
    async fn release(&self, room: &RoomKey, owner: &Owner) -> Result<(), StorageError> {
        let (room, owner) = (room.clone(), owner.clone());
        self.call(move |s| Box::pin(async move { s.release(&room, &owner).await }))
            .await
    }
    async fn owner(&self, room: &RoomKey) -> Result<Option<Owner>, StorageError> {
        let room = room.clone();
        self.call(move |s| Box::pin(async move { s.owner(&room).await }))
            .await
    }
    async fn home_region(&self, room: &RoomKey, proposed: &str) -> Result<String, StorageError> {
        let (room, proposed) = (room.clone(), proposed.to_string());
        self.call(move |s| Box::pin(async move { s.home_region(&room, &proposed).await }))
            .await
    }
    /// Waits on the clock, not on storage: not a blocking task.
    async fn wait_owner_change(&self, room: &RoomKey, within: Duration) {
        self.inner.wait_owner_change(room, within).await
    }
    async fn scan_alarms(&self, scan: &AlarmScan) -> Result<Vec<(RoomKey, i64)>, StorageError> {
        let scan = scan.clone();
        self.call(move |s| Box::pin(async move { s.scan_alarms(&scan).await }))
            .await
    }
}
