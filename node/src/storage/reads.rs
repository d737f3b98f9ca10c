//! Reads of a room's storage that no longer borrow it (party code on another thread awaits
//! them), and where they note that the store failed them.

use super::store::{ListOptions, StorageError, Store};
use bytes::Bytes;
use conclave_proto::RoomKey;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where reads record that the store failed them: a handler may catch the error and go
/// on, but what it did then rests on data it could not see, so its step must not count as
/// done (`RoomActor::run_step`).
#[derive(Clone, Default)]
pub(crate) struct ReadFailure(Arc<ReadFailed>);

#[derive(Default)]
struct ReadFailed {
    /// Looked at twice a step: a load, where the error's lock would be two atomic swaps.
    any: std::sync::atomic::AtomicBool,
    error: std::sync::Mutex<Option<String>>,
}

impl ReadFailure {
    pub(super) fn note<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &result {
            if e.is_store_failure() {
                *self.0.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                self.0.any.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        result
    }

    pub(super) fn take(&self) -> Option<String> {
        if !self.0.any.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.0
            .any
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.0
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// A read of some keys ([`Storage::read_plan`](super::Storage::read_plan)).
pub(crate) struct ReadPlan {
    pub(super) store: Arc<dyn Store>,
    pub(super) room: RoomKey,
    /// Per key asked: `Some` when the buffer answered it.
    pub(super) found: Vec<Option<Option<Bytes>>>,
    pub(super) missing: Vec<String>,
    pub(super) failure: ReadFailure,
}

impl ReadPlan {
    pub(crate) async fn run(self) -> Result<Vec<Option<Bytes>>, StorageError> {
        let mut found = self.found;
        if !self.missing.is_empty() {
            let fetched = self.store.get(&self.room, &self.missing).await;
            let mut fetched = self.failure.note(fetched)?.into_iter();
            for slot in found.iter_mut().filter(|s| s.is_none()) {
                *slot = Some(fetched.next().flatten());
            }
        }
        Ok(found.into_iter().map(Option::flatten).collect())
    }
}

/// A list of a range of keys ([`Storage::list_plan`](super::Storage::list_plan)).
pub(crate) struct ListPlan {
    /// `None` after `delete_all`: only the buffer counts.
    pub(super) store: Option<Arc<dyn Store>>,
    pub(super) room: RoomKey,
    pub(super) opts: ListOptions,
    /// The buffered writes inside the range.
    pub(super) buffered: Vec<(String, Option<Bytes>)>,
    pub(super) failure: ReadFailure,
}

impl ListPlan {
    pub(crate) async fn run(self) -> Result<Vec<(String, Bytes)>, StorageError> {
        let limit = self.opts.limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut merged: BTreeMap<String, Bytes> = BTreeMap::new();
        if let Some(store) = &self.store {
            // Each buffered delete hides at most one stored entry: ask for that many more.
            let hidden = self.buffered.iter().filter(|(_, v)| v.is_none()).count();
            let mut backend_opts = self.opts.clone();
            backend_opts.limit = self.opts.limit.map(|l| l.saturating_add(hidden));
            let listed = store.list(&self.room, &backend_opts).await;
            merged.extend(self.failure.note(listed)?);
        }
        for (k, v) in self.buffered {
            match v {
                Some(v) => merged.insert(k, v),
                None => merged.remove(&k),
            };
        }
        let iter: Box<dyn Iterator<Item = (String, Bytes)>> = if self.opts.reverse {
            Box::new(merged.into_iter().rev())
        } else {
            Box::new(merged.into_iter())
        };
        Ok(iter.take(limit).collect())
    }
}
