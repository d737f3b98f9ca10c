//! Whether the store takes writes now. Every call a room makes goes through [`Monitored`],
//! which notes backend failures; readiness fails while the store is failing, and a watcher
//! keeps probing it (reopening an embedded file, reconnecting a server) until a write goes
//! through again, so the node recovers without a restart once space or the server returns.

use super::store::{
    AlarmScan, Claim, Claimed, ListOptions, Owner, RoomCommit, StorageError, Store, Usage,
};
use async_trait::async_trait;
use bytes::Bytes;
use conclave_proto::RoomKey;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often a healthy store is pinged (a store nobody writes to fails unnoticed
/// otherwise), and a failing one probed.
const PING_EVERY: Duration = Duration::from_secs(2);
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A ping or probe that takes longer than this counts as a failure.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The store's state as its callers saw it last.
#[derive(Default)]
pub struct StoreHealth {
    failing: AtomicBool,
    /// The failure that made it failing.
    error: Mutex<String>,
}

impl StoreHealth {
    /// `Err` with the store's last failure while it fails.
    pub fn check(&self) -> Result<(), String> {
        if self.failing.load(Ordering::Acquire) {
            Err(format!(
                "storage failing: {}",
                self.error.lock().unwrap_or_else(|e| e.into_inner())
            ))
        } else {
            Ok(())
        }
    }

    fn failed(&self, error: &StorageError) {
        if !matches!(error, StorageError::Backend(_)) {
            return;
        }
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = error.to_string();
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::error!(%error, "storage failing: /readyz fails until a write goes through");
            metrics::gauge!("conclave_storage_failing").set(1.0);
        }
        metrics::counter!("conclave_storage_failures_total").increment(1);
    }

    fn recovered(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("storage recovered: writes go through again");
            metrics::gauge!("conclave_storage_failing").set(0.0);
        }
    }

    /// Notes a read's outcome: a failure counts, a success proves nothing about writes.
    fn read<T>(&self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    /// Notes a write's outcome. A refusal (fenced, held) is an answer of a working store.
    fn write<T>(&self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        match &r {
            Err(e @ StorageError::Backend(_)) => self.failed(e),
            Err(_) | Ok(_) => self.recovered(),
        }
        r
    }
}

/// A store whose failures are noted in a [`StoreHealth`].
pub struct Monitored {
    inner: Arc<dyn Store>,
    health: Arc<StoreHealth>,
}

impl Monitored {
    /// Wraps `inner` and starts its watcher (which ends when the store is dropped).
    pub fn start(inner: Arc<dyn Store>) -> (Arc<dyn Store>, Arc<StoreHealth>) {
        let health = Arc::new(StoreHealth::default());
        metrics::gauge!("conclave_storage_failing").set(0.0);
        let store = Arc::new(Self {
            inner,
            health: health.clone(),
        });
        tokio::spawn(watch(Arc::downgrade(&store)));
        (store, health)
    }
}

/// Pings the store while it is healthy and probes it while it fails, until it is dropped.
async fn watch(store: Weak<Monitored>) {
    let mut wait = PING_EVERY;
    loop {
        tokio::time::sleep(wait).await;
        let Some(store) = store.upgrade() else { return };
        let failing = store.health.check().is_err();
        let check = if failing {
            store.inner.probe()
        } else {
            store.inner.ping()
        };
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(r) => r,
            Err(_) => Err(StorageError::Backend(format!(
                "no answer within {CHECK_TIMEOUT:?}"
            ))),
        };
        match outcome {
            Ok(()) if failing => store.health.recovered(),
            Ok(()) => {}
            Err(e) => store.health.failed(&e),
        }
        wait = if store.health.check().is_err() {
            PROBE_EVERY
        } else {
            PING_EVERY
        };
    }
}

#[async_trait]
impl Store for Monitored {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(
        &self,
        room: &RoomKey,
        keys: &[String],
    ) -> Result<Vec<Option<Bytes>>, StorageError> {
        self.health.read(self.inner.get(room, keys).await)
    }
    async fn list(
        &self,
        room: &RoomKey,
        opts: &ListOptions,
    ) -> Result<Vec<(String, Bytes)>, StorageError> {
        self.health.read(self.inner.list(room, opts).await)
    }
    async fn get_alarm(&self, room: &RoomKey) -> Result<Option<i64>, StorageError> {
        self.health.read(self.inner.get_alarm(room).await)
    }
    async fn ledger(&self, room: &RoomKey) -> Result<Vec<(String, Bytes)>, StorageError> {
        self.health.read(self.inner.ledger(room).await)
    }
    async fn commit(
        &self,
        room: &RoomKey,
        commit: RoomCommit,
    ) -> Result<Option<Usage>, StorageError> {
        self.health.write(self.inner.commit(room, commit).await)
    }
    async fn usage(&self, room: &RoomKey) -> Result<Usage, StorageError> {
        self.health.read(self.inner.usage(room).await)
    }
    async fn party_rooms(
        &self,
        party: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Usage)>, StorageError> {
        self.health
            .read(self.inner.party_rooms(party, after, limit).await)
    }
    async fn claim(&self, room: &RoomKey, claim: &Claim) -> Result<Owner, StorageError> {
        self.health.write(self.inner.claim(room, claim).await)
    }
    async fn claim_and_load(&self, room: &RoomKey, claim: &Claim) -> Result<Claimed, StorageError> {
        self.health
            .write(self.inner.claim_and_load(room, claim).await)
    }
    async fn release(&self, room: &RoomKey, owner: &Owner) -> Result<(), StorageError> {
        self.health.write(self.inner.release(room, owner).await)
    }
    async fn owner(&self, room: &RoomKey) -> Result<Option<Owner>, StorageError> {
        self.health.read(self.inner.owner(room).await)
    }
    async fn home_region(&self, room: &RoomKey, proposed: &str) -> Result<String, StorageError> {
        self.health
            .write(self.inner.home_region(room, proposed).await)
    }
    async fn wait_owner_change(&self, room: &RoomKey, within: Duration) {
        self.inner.wait_owner_change(room, within).await
    }
    async fn ping(&self) -> Result<(), StorageError> {
        self.inner.ping().await
    }
    async fn probe(&self) -> Result<(), StorageError> {
        self.inner.probe().await
    }
    async fn scan_alarms(&self, scan: &AlarmScan) -> Result<Vec<(RoomKey, i64)>, StorageError> {
        self.health.read(self.inner.scan_alarms(scan).await)
    }
}
