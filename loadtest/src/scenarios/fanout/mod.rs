//! The engine behind every messaging scenario: K rooms of M members, open-loop publishers
//! at a rate (in steps), end-to-end latency from send times carried in the payloads, and
//! optionally churn, slow consumers or a failover command mid-run.
//!
//! Publishers keep their schedule whatever the server does (no coordinated omission): a
//! publisher that fell behind sends its late messages at once. Deliveries and latencies
//! are attributed to the step that is running when they arrive.
//!
//! A run: set-up (`setup.rs`: members connect, then the publishers, and their tasks
//! start), the warm-up and the measured steps (`steps.rs`), stop, the report
//! (`report.rs`). Members (`members.rs`) read, reconnect and, in all-to-all, publish;
//! publishers (`publishers.rs`) keep the schedule; every task counts into the run's
//! shared counters (`shared.rs`).

mod members;
mod publishers;
mod report;
mod setup;
mod shared;
mod steps;

use crate::client::Targets;
use crate::proc_stats::rss_bytes;
use crate::Report;
use shared::Shared;
use std::sync::Arc;

/// What to run.
#[derive(Clone, Debug)]
pub struct FanoutPlan {
    pub scenario: &'static str,
    pub urls: Vec<String>,
    pub room_prefix: String,
    pub rooms: usize,
    /// Members per room.
    pub members: usize,
    /// Every member publishes (all-to-all) instead of one extra publisher per room.
    pub all_publish: bool,
    /// Messages per second per publisher, one step after the other.
    pub rates: Vec<f64>,
    /// Seconds measured per step.
    pub secs: u64,
    pub warmup_secs: u64,
    pub payload_bytes: usize,
    pub sources: usize,
    pub concurrency: usize,
    pub server_pid: Vec<u32>,
    /// Share of members that reconnect each second (churn).
    pub churn_per_sec: f64,
    /// Members of the first room that never read (slow consumers).
    pub slow_consumers: usize,
    /// Run this shell command this many seconds into the first step (failover).
    pub failover: Option<(String, u64)>,
}

impl FanoutPlan {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.rates.is_empty(), "give at least one rate");
        anyhow::ensure!(
            self.rooms > 0 && self.members > 0,
            "rooms and members must be > 0"
        );
        Ok(())
    }

    /// Members in all rooms; member `n` is in room `n / members`.
    fn total_members(&self) -> usize {
        self.rooms * self.members
    }

    fn room_of(&self, n: usize) -> String {
        format!("{}-{}", self.room_prefix, n / self.members)
    }

    /// How many members never read: the first ones of the first room.
    fn slow_members(&self) -> usize {
        self.slow_consumers.min(self.members)
    }

    fn is_slow(&self, n: usize) -> bool {
        n < self.slow_members()
    }

    /// Messages per second per publisher in `step` (the warm-up, step 0, runs at the
    /// first rate).
    fn rate_at(&self, step: usize) -> f64 {
        self.rates[step.saturating_sub(1).min(self.rates.len() - 1)].max(0.001)
    }
}

pub async fn run(plan: FanoutPlan) -> anyhow::Result<Report> {
    // Shared by every member and publisher task, not copied into each.
    let plan = Arc::new(plan);
    plan.check()?;
    let targets = Targets::resolve(&plan.urls, plan.sources).await?;
    let shared = Arc::new(Shared::new(plan.rates.len() + 1));
    let rss_before = rss_bytes(&plan.server_pid);
    let running = setup::start(&plan, &targets, &shared).await?;
    let measured = steps::run(&plan, &shared).await?;
    let rss_after = rss_bytes(&plan.server_pid);
    let (connects, slow_closed) = running.stop(&shared).await;
    Ok(report::build(
        &plan,
        &shared,
        report::Results {
            connects,
            measured,
            rss_before,
            rss_after,
            slow_closed,
        },
    ))
}
