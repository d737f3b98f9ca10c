//! The warm-up, then each rate step for its measured window: the server's CPU time over
//! the window, and in a failover run the command and the recovery it causes.

use super::shared::Shared;
use super::FanoutPlan;
use crate::proc_stats::cpu_seconds;
use crate::progress_bar;
use indicatif::ProgressBar;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// One measured step.
pub(super) struct Window {
    pub(super) secs: f64,
    /// Server CPU time used in the window, when its PIDs were given.
    pub(super) server_cpu_secs: Option<f64>,
}

/// What the steps measured besides the shared counters.
pub(super) struct Measured {
    /// One per rate, in order.
    pub(super) windows: Vec<Window>,
    pub(super) failover: Option<FailoverOutcome>,
}

pub(super) struct FailoverOutcome {
    pub(super) recovery_ms: f64,
    pub(super) command_ok: bool,
}

/// Sleeps through the warm-up, then runs every step; the failover command runs in the
/// first one.
pub(super) async fn run(plan: &FanoutPlan, shared: &Shared) -> anyhow::Result<Measured> {
    tokio::time::sleep(Duration::from_secs(plan.warmup_secs)).await;
    let mut measured = Measured {
        windows: Vec::new(),
        failover: None,
    };
    for (i, rate) in plan.rates.iter().enumerate() {
        shared.enter_step(i + 1);
        let cpu0 = cpu_seconds(&plan.server_pid);
        let t0 = Instant::now();
        let bar = progress_bar(plan.secs, &format!("{} at {rate}/s", plan.scenario));
        let ticker = tick_every_second(bar.clone());
        let window = Duration::from_secs(plan.secs);
        match (&plan.failover, i) {
            (Some((command, at)), 0) => {
                tokio::time::sleep(Duration::from_secs(*at).min(window)).await;
                measured.failover = Some(failover(command, shared, t0 + window).await?);
                tokio::time::sleep_until((t0 + window).into()).await;
            }
            _ => tokio::time::sleep(window).await,
        }
        ticker.abort();
        bar.finish_and_clear();
        let cpu1 = cpu_seconds(&plan.server_pid);
        measured.windows.push(Window {
            secs: t0.elapsed().as_secs_f64(),
            server_cpu_secs: cpu0.zip(cpu1).map(|(a, b)| b - a),
        });
    }
    Ok(measured)
}

fn tick_every_second(bar: ProgressBar) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            bar.inc(1);
        }
    })
}

/// Runs the failover command, then measures the longest time without any delivery from
/// then until `until`.
async fn failover(
    command: &str,
    shared: &Shared,
    until: Instant,
) -> anyhow::Result<FailoverOutcome> {
    let started_us = shared.now_us();
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await?;
    let mut longest_gap_us = 0u64;
    let mut previous = started_us;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let last = shared.last_delivery_us();
        if last > previous {
            longest_gap_us = longest_gap_us.max(last - previous);
            previous = last;
        }
    }
    // Still nothing delivered at the end: the gap runs to the end of the window.
    longest_gap_us = longest_gap_us.max(shared.now_us().saturating_sub(previous));
    Ok(FailoverOutcome {
        recovery_ms: longest_gap_us as f64 / 1000.0,
        command_ok: status.success(),
    })
}
