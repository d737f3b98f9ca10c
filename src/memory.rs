//! Giving the heap that a burst freed back to the operating system.
//!
//! glibc's malloc keeps freed memory in its arenas. What a connect storm frees (the
//! handshakes' buffers, the upgrade's state) lies between the allocations of the sockets
//! that stay open, so it is never at the top of a heap where `free` would give it back: a
//! gateway holding 10,000 idle sockets kept about 700 bytes per socket of such holes
//! resident (docs/benchmarks.md). `malloc_trim` returns the whole free pages among them.
//! A sweep looks every [`SWEEP`] at how much the arenas hold free and trims once that has
//! grown by [`TRIM_AFTER_BYTES`] since the last trim; a steady server never trims.

use std::time::Duration;

/// How often the arenas' free space is looked at.
const SWEEP: Duration = Duration::from_secs(10);
/// Free space that must have been added since the last trim before trimming again.
const TRIM_AFTER_BYTES: usize = 4 << 20;

/// When to trim, from the arenas' free bytes at each sweep.
#[derive(Debug, Default)]
struct TrimPolicy {
    /// Free bytes after the last trim, or the lowest seen since (memory taken again from
    /// what was trimmed is resident again, and may be freed again).
    settled: usize,
}

impl TrimPolicy {
    fn should_trim(&mut self, free: usize) -> bool {
        if free < self.settled {
            self.settled = free;
            return false;
        }
        free - self.settled >= TRIM_AFTER_BYTES
    }

    fn trimmed(&mut self, free_after: usize) {
        self.settled = free_after;
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
        loop {
            every.tick().await;
            if !policy.should_trim(glibc::free_bytes()) {
                continue;
            }
            // It walks every arena, holding each one's lock: off the runtime's workers.
            let Ok((released, took)) = tokio::task::spawn_blocking(|| {
                let started = std::time::Instant::now();
                let released = glibc::trim();
                (released, started.elapsed())
            })
            .await
            else {
                continue;
            };
            policy.trimmed(glibc::free_bytes());
            metrics::counter!("conclave_memory_trims_total").increment(1);
            tracing::debug!(released, took_us = took.as_micros() as u64, "heap trimmed");
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// Bytes the arenas hold free (resident or not).
    pub fn free_bytes() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's own bookkeeping.
        unsafe { libc::mallinfo2() }.fordblks
    }

    /// Returns the arenas' free pages to the system; whether any were.
    pub fn trim() -> bool {
        // SAFETY: malloc_trim may be called at any time from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_when_free_space_grew_since_the_last_trim() {
        let mut p = TrimPolicy::default();
        assert!(!p.should_trim(TRIM_AFTER_BYTES - 1));
        assert!(p.should_trim(TRIM_AFTER_BYTES));
        p.trimmed(TRIM_AFTER_BYTES);
        // Trimmed pages stay counted as free: the same level does not trim again.
        assert!(!p.should_trim(TRIM_AFTER_BYTES + 1));
        // Taken again (resident again), then freed again: trimmed again.
        assert!(!p.should_trim(1 << 20));
        assert!(p.should_trim((1 << 20) + TRIM_AFTER_BYTES));
    }

    /// Resident anonymous memory of this process, in bytes.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_anon() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
        let kb: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon");
        kb * 1024
    }

    /// What the sweep relies on: holes between live allocations become resident memory
    /// given back. (nextest runs each test in a process of its own.)
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trimming_gives_back_the_holes_between_live_allocations() {
        // 64 MiB in 1 KiB blocks; every 16th stays, as sockets that stay open would.
        let mut blocks: Vec<Vec<u8>> = (0..65_536).map(|i| vec![i as u8; 1024]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(16).map(std::mem::take).collect();
        drop(blocks);
        let before = rss_anon();
        assert!(glibc::free_bytes() >= 32 << 20, "the freed blocks are free");
        glibc::trim();
        let after = rss_anon();
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
