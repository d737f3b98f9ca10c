//! Seeded fault injection, off unless `FDBSIM_FAULT_SEED` is set (read when the network is
//! set up). Each commit then fails with probability `FDBSIM_FAULT_RATE` (default 0.05) in one
//! of three ways: `commit_unknown_result` (1021) after the commit landed, 1021 without it
//! landing, or a spurious conflict (1020); the first read of each attempt fails with
//! `process_behind` (1037) at half that rate. All are errors a real cluster returns, and the
//! bindings retry them.

use std::sync::{Mutex, OnceLock};

pub enum CommitFault {
    /// The commit is applied, but the client is told 1021.
    LandedButUnknown,
    /// The commit is not sent; the client is told 1021.
    LostButUnknown,
    /// The commit is not sent; the client is told 1020.
    SpuriousConflict,
}

struct Faults {
    rng: fastrand::Rng,
    rate: f64,
}

static FAULTS: OnceLock<Option<Mutex<Faults>>> = OnceLock::new();

pub fn init() {
    FAULTS.get_or_init(|| {
        let seed: u64 = std::env::var("FDBSIM_FAULT_SEED").ok()?.parse().ok()?;
        let rate = std::env::var("FDBSIM_FAULT_RATE")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0.05);
        Some(Mutex::new(Faults {
            rng: fastrand::Rng::with_seed(seed),
            rate,
        }))
    });
}

fn roll<T>(pick: impl FnOnce(&mut Faults) -> Option<T>) -> Option<T> {
    let faults = FAULTS.get()?.as_ref()?;
    pick(&mut faults.lock().unwrap_or_else(|e| e.into_inner()))
}

pub fn on_commit() -> Option<CommitFault> {
    roll(|f| {
        if f.rng.f64() >= f.rate {
            return None;
        }
        Some(match f.rng.u8(0..3) {
            0 => CommitFault::LandedButUnknown,
            1 => CommitFault::LostButUnknown,
            _ => CommitFault::SpuriousConflict,
        })
    })
}

/// Whether this attempt's first read fails with `process_behind`.
pub fn on_read() -> bool {
    roll(|f| (f.rng.f64() < f.rate / 2.0).then_some(())).is_some()
}
