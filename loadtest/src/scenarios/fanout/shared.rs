//! What every task of a run shares: the clock, the running step, the stop flag, and the
//! counters the report is built from.

use crate::stats::{latency_histogram, record};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Counters shared by every task of a run.
pub(super) struct Shared {
    base: Instant,
    /// 0 during warm-up, then 1 + the index of the running step.
    step: AtomicUsize,
    /// Set when publishing ends (readers keep reading until they are aborted).
    stop: AtomicBool,
    /// Per step (index 0 = warm-up): deliveries received, deliveries expected from sends.
    delivered: Vec<AtomicU64>,
    expected: Vec<AtomicU64>,
    sent: Vec<AtomicU64>,
    latency: Vec<Mutex<Histogram<u64>>>,
    /// Sockets that closed or failed under a member that was not asked to reconnect.
    pub(super) disconnects: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) reconnect_failures: AtomicU64,
    /// µs since `base` of the latest delivery anywhere.
    last_delivery_us: AtomicU64,
    pub(super) duplicates: AtomicU64,
}

/// Messages sent, deliveries they should make, deliveries made.
pub(super) struct Counts {
    pub(super) sent: u64,
    pub(super) expected: u64,
    pub(super) delivered: u64,
}

impl Shared {
    /// Counters for the warm-up and `steps - 1` measured steps.
    pub(super) fn new(steps: usize) -> Self {
        Self {
            base: Instant::now(),
            step: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            delivered: (0..steps).map(|_| AtomicU64::new(0)).collect(),
            expected: (0..steps).map(|_| AtomicU64::new(0)).collect(),
            sent: (0..steps).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..steps)
                .map(|_| Mutex::new(latency_histogram()))
                .collect(),
            disconnects: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            reconnect_failures: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        }
    }

    /// µs since the run began (the clock send times are stamped with).
    pub(super) fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    pub(super) fn step(&self) -> usize {
        self.step.load(Ordering::Relaxed)
    }

    pub(super) fn enter_step(&self, step: usize) {
        self.step.store(step, Ordering::Relaxed);
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Publishing ends.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A message sent in `step` that should reach `receivers` members.
    pub(super) fn count_sent(&self, step: usize, receivers: u64) {
        self.sent[step].fetch_add(1, Ordering::Relaxed);
        self.expected[step].fetch_add(receivers, Ordering::Relaxed);
    }

    /// A delivery at `now_us` in `step`, and its latency when it carried a send time.
    pub(super) fn count_delivery(&self, step: usize, now_us: u64, latency_us: Option<u64>) {
        if let Some(us) = latency_us {
            record(&mut self.latency(step), us);
        }
        self.delivered[step].fetch_add(1, Ordering::Relaxed);
        self.last_delivery_us.store(now_us, Ordering::Relaxed);
    }

    /// µs since the run began of the latest delivery anywhere.
    pub(super) fn last_delivery_us(&self) -> u64 {
        self.last_delivery_us.load(Ordering::Relaxed)
    }

    pub(super) fn latency(&self, step: usize) -> MutexGuard<'_, Histogram<u64>> {
        self.latency[step].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn counts(&self, step: usize) -> Counts {
        Counts {
            sent: self.sent[step].load(Ordering::Relaxed),
            expected: self.expected[step].load(Ordering::Relaxed),
            delivered: self.delivered[step].load(Ordering::Relaxed),
        }
    }

    /// Counts over the whole run, warm-up included.
    pub(super) fn totals(&self) -> Counts {
        (0..self.sent.len()).fold(
            Counts {
                sent: 0,
                expected: 0,
                delivered: 0,
            },
            |acc, step| {
                let c = self.counts(step);
                Counts {
                    sent: acc.sent + c.sent,
                    expected: acc.expected + c.expected,
                    delivered: acc.delivered + c.delivered,
                }
            },
        )
    }
}
