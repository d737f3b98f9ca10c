//! Giving the heap that a burst freed back to the operating system.
//!
//! glibc's malloc keeps freed memory in its arenas. What a connect storm frees (the
//! handshakes' buffers, the upgrade's state) lies between the allocations of the sockets
//! that stay open, so it is never at the top of a heap where `free` would give it back: a
//! gateway holding 10,000 idle sockets kept about 700 bytes per socket of such holes
//! resident (docs/benchmarks.md). `malloc_trim` returns the whole free pages among them.
//!
//! A sweep reads the process's resident memory every [`SWEEP`] (a counter the kernel
//! keeps: no walk of the heap) and trims once it has grown by [`TRIM_AFTER_BYTES`] since
//! the last trim and stopped growing: the burst is over, and what it freed is free. Else
//! it trims every [`TRIM_AT_LEAST_EVERY`], which gives back what sockets that left freed
//! (resident memory does not grow when they go). Asking the allocator how much it holds
//! free (`mallinfo2`) would walk every free chunk holding the arena's lock, which stopped
//! every allocation in the process for up to 7 ms at each look.

use std::time::Duration;

/// How often resident memory is looked at.
const SWEEP: Duration = Duration::from_secs(2);
/// Growth of resident memory since the last trim (or the lowest level seen since) that
/// asks for a trim once it stops.
const TRIM_AFTER_BYTES: usize = 4 << 20;
/// Growth between two sweeps under which resident memory counts as settled.
const SETTLED_BYTES: usize = 256 << 10;
/// The longest a server goes without a trim (memory freed without any growth before it,
/// as when sockets leave, is given back then).
const TRIM_AT_LEAST_EVERY: Duration = Duration::from_secs(600);

/// When to trim, from the resident memory read at each sweep.
#[derive(Debug, Default)]
struct TrimPolicy {
    /// Resident bytes after the last trim, or the lowest seen since.
    settled: usize,
    /// Resident bytes at the previous sweep.
    last: usize,
    /// Time since the last trim.
    since_trim: Duration,
}

impl TrimPolicy {
    /// Whether to trim now, `resident` bytes being resident and `elapsed` having passed
    /// since the previous sweep.
    fn should_trim(&mut self, resident: usize, elapsed: Duration) -> bool {
        self.since_trim += elapsed;
        let growing = resident > self.last + SETTLED_BYTES;
        self.last = resident;
        if resident < self.settled {
            self.settled = resident;
        }
        if self.since_trim >= TRIM_AT_LEAST_EVERY {
            return true;
        }
        !growing && resident - self.settled >= TRIM_AFTER_BYTES
    }

    fn trimmed(&mut self, resident_after: usize) {
        self.settled = resident_after;
        self.last = resident_after;
        self.since_trim = Duration::ZERO;
    }
}

/// Caps glibc's malloc arenas at one per four cores (it makes up to eight per core), unless
/// the operator chose (`MALLOC_ARENA_MAX`, or `GLIBC_TUNABLES`). Memory freed in one arena
/// only serves that arena's later allocations, so after a connect storm each of a dozen
/// arenas kept its own holes among the sockets that stayed: on 2 cores, a gateway holding
/// 10,000 idle sockets is about 150 bytes a socket smaller with one arena, with no
/// connect-storm CPU lost (docs/benchmarks.md). Threads keep the arena they first
/// allocated in, so this runs before any thread starts: the `conclave` binary calls it
/// first thing; a program embedding [`Conclave`](crate::Conclave) may too.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if chosen {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = cores.div_ceil(4) as libc::c_int;
        // SAFETY: mallopt only sets the allocator's own parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Starts the sweep on the current runtime (a server role's; not for short-lived
/// commands). Does nothing where the allocator is not glibc's.
pub(crate) fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut policy = TrimPolicy::default();
        let mut every = tokio::time::interval(SWEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = every.tick().await;
        // What the server holds once started is not a burst.
        policy.trimmed(resident_bytes().unwrap_or(0));
        loop {
            let tick = every.tick().await;
            let elapsed = tick - last_tick;
            last_tick = tick;
            let Some(resident) = resident_bytes() else {
                return;
            };
            if !policy.should_trim(resident, elapsed) {
                continue;
            }
            // It walks the arenas, holding each one's lock: off the runtime's workers.
            let Ok((released, took)) = tokio::task::spawn_blocking(|| {
                let started = std::time::Instant::now();
                let released = glibc::trim();
                (released, started.elapsed())
            })
            .await
            else {
                continue;
            };
            let after = resident_bytes().unwrap_or(resident);
            policy.trimmed(after);
            metrics::counter!("conclave_memory_trims_total").increment(1);
            tracing::debug!(
                released,
                took_us = took.as_micros() as u64,
                resident_before = resident,
                resident_after = after,
                "heap trimmed"
            );
        }
    });
}

/// Resident memory of this process that is not file-backed (its heap, stacks and
/// anonymous mappings), from the counters the kernel keeps (`/proc/self/statm`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut pages = statm.split_ascii_whitespace().skip(1);
    let resident: usize = pages.next()?.parse().ok()?;
    let shared: usize = pages.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(resident.saturating_sub(shared) * usize::try_from(page).ok()?)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// Returns the arenas' free pages to the system; whether any were.
    pub fn trim() -> bool {
        // SAFETY: malloc_trim may be called at any time from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that read resident memory run one at a time: the others' blocks would
    /// count in it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    static HEAP_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    const TICK: Duration = SWEEP;
    const MIB: usize = 1 << 20;

    #[test]
    fn trims_once_a_burst_of_growth_has_settled() {
        let mut p = TrimPolicy::default();
        p.trimmed(100 * MIB);
        // Growing: the burst is not over.
        assert!(!p.should_trim(103 * MIB, TICK));
        assert!(!p.should_trim(110 * MIB, TICK));
        // Settled, 10 MiB above the last trim.
        assert!(p.should_trim(110 * MIB, TICK));
        p.trimmed(104 * MIB);
        // The same level does not trim again, nor small growth.
        assert!(!p.should_trim(104 * MIB, TICK));
        assert!(!p.should_trim(107 * MIB, TICK));
        assert!(!p.should_trim(107 * MIB, TICK));
    }

    #[test]
    fn growth_is_counted_from_the_lowest_level_since_the_last_trim() {
        let mut p = TrimPolicy::default();
        p.trimmed(100 * MIB);
        // Memory given back some other way (a large block unmapped), then taken again.
        assert!(!p.should_trim(90 * MIB, TICK));
        assert!(!p.should_trim(93 * MIB, TICK));
        assert!(!p.should_trim(93 * MIB, TICK));
        assert!(!p.should_trim(95 * MIB, TICK));
        assert!(
            p.should_trim(95 * MIB, TICK),
            "5 MiB over the lowest, settled"
        );
    }

    #[test]
    fn a_server_that_does_not_grow_is_trimmed_now_and_then() {
        let mut p = TrimPolicy::default();
        p.trimmed(100 * MIB);
        let sweeps = (TRIM_AT_LEAST_EVERY.as_secs() / TICK.as_secs()) as usize;
        let trims = (0..sweeps * 3)
            .filter(|_| {
                let trim = p.should_trim(100 * MIB, TICK);
                if trim {
                    p.trimmed(100 * MIB);
                }
                trim
            })
            .count();
        assert_eq!(trims, 3);
    }

    /// What the sweep reads follows the heap: a block written is resident, and given
    /// back when freed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn resident_bytes_follow_the_heap() {
        let _alone = HEAP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let before = resident_bytes().expect("statm");
        let block = std::hint::black_box(vec![1u8; 64 * MIB]);
        let with = resident_bytes().expect("statm");
        assert!(with >= before + 48 * MIB, "{before} -> {with}");
        drop(block);
        let after = resident_bytes().expect("statm");
        assert!(after + 48 * MIB <= with, "{with} -> {after}");
    }

    /// What the sweep relies on: holes between live allocations become resident memory
    /// given back. (nextest runs each test in a process of its own.)
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trimming_gives_back_the_holes_between_live_allocations() {
        let _alone = HEAP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        // 64 MiB in 1 KiB blocks; every 16th stays, as sockets that stay open would.
        let mut blocks: Vec<Vec<u8>> = (0..65_536).map(|i| vec![i as u8; 1024]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(16).map(std::mem::take).collect();
        drop(blocks);
        let before = resident_bytes().expect("statm");
        glibc::trim();
        let after = resident_bytes().expect("statm");
        assert!(
            before - after >= 32 << 20,
            "trimming gave back {} of {} bytes",
            before.saturating_sub(after),
            before
        );
        assert_eq!(kept.len(), 4096);
        assert!(kept.iter().enumerate().all(|(i, b)| b[0] == (i * 16) as u8));
    }
}
