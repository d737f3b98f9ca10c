//! A worker's pending `setTimeout`/`setInterval` timers, each counted in its room's
//! [`UnderWay`] (a room with timers set is kept a while: `JsParty::busy`).

use super::shared::UnderWay;
use super::InstanceId;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A pending `setTimeout`/`setInterval`.
pub(super) struct Timer {
    instance: InstanceId,
    task: tokio::task::AbortHandle,
    /// Its room's count, for a timer of a room's instance.
    under_way: Option<Arc<UnderWay>>,
}

/// The worker's pending timers by id, counted in `conclave_js_timers` (all workers).
pub(super) struct Timers {
    by_id: HashMap<u32, Timer>,
    pending: metrics::Gauge,
    next_id: u32,
}

impl Timer {
    pub(super) fn new(
        instance: InstanceId,
        task: tokio::task::AbortHandle,
        under_way: Option<Arc<UnderWay>>,
    ) -> Self {
        Self {
            instance,
            task,
            under_way,
        }
    }

    /// Stops it from firing.
    pub(super) fn stop(self) {
        self.task.abort();
    }
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            by_id: HashMap::new(),
            pending: metrics::gauge!("conclave_js_timers"),
            next_id: 1,
        }
    }
}

impl Timers {
    /// The next timer id not in use (ids wrap after 2^32 timers; a long interval may
    /// still hold one).
    pub(super) fn next_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = id.wrapping_add(1).max(1);
            if !self.by_id.contains_key(&id) {
                return id;
            }
        }
    }

    /// Adds a timer under an id not in use ([`Timers::next_id`]).
    pub(super) fn insert(&mut self, id: u32, timer: Timer) {
        if let Some(u) = &timer.under_way {
            u.timers.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(replaced) = self.by_id.insert(id, timer) {
            if let Some(u) = &replaced.under_way {
                u.timers.fetch_sub(1, Ordering::Relaxed);
            }
        } else {
            self.pending.increment(1.0);
        }
    }

    pub(super) fn remove(&mut self, id: u32) -> Option<Timer> {
        let timer = self.by_id.remove(&id)?;
        self.pending.decrement(1.0);
        if let Some(u) = &timer.under_way {
            u.timers.fetch_sub(1, Ordering::Relaxed);
        }
        Some(timer)
    }

    /// Stops and removes `instance`'s timers; returns their ids.
    pub(super) fn remove_instance(&mut self, instance: InstanceId) -> Vec<u32> {
        let ids: Vec<u32> = self
            .by_id
            .iter()
            .filter(|(_, t)| t.instance == instance)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(t) = self.remove(*id) {
                t.stop();
            }
        }
        ids
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        self.pending.decrement(self.by_id.len() as f64);
    }
}
