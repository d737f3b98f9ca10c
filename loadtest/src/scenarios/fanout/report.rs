//! The run's report: set-up, totals, one block of rows per rate step (suffixed `@rate`
//! when there are several), then the server's memory, the slow consumer's close code and
//! the failover figures when they apply. Scripts and tests read these keys.

use super::setup::Connects;
use super::shared::{Counts, Shared};
use super::steps::{Measured, Window};
use super::FanoutPlan;
use crate::stats::add_latency;
use crate::Report;
use std::sync::atomic::Ordering;

/// What the run measured besides the shared counters.
pub(super) struct Results {
    pub(super) connects: Connects,
    pub(super) measured: Measured,
    pub(super) rss_before: Option<u64>,
    pub(super) rss_after: Option<u64>,
    /// With slow consumers: the close code the first one got, if it was closed.
    pub(super) slow_closed: Option<Option<u16>>,
}

pub(super) fn build(plan: &FanoutPlan, shared: &Shared, results: Results) -> Report {
    let mut report = Report::new(plan.scenario);
    add_set_up(&mut report, plan, &results.connects);
    let totals = shared.totals();
    add_totals(&mut report, plan, shared, &totals);
    for (i, (rate, window)) in plan.rates.iter().zip(&results.measured.windows).enumerate() {
        let suffix = if plan.rates.len() > 1 {
            format!("@{rate}")
        } else {
            String::new()
        };
        add_step(&mut report, &suffix, *rate, window, shared, i + 1);
    }
    if let (Some(b), Some(a)) = (results.rss_before, results.rss_after) {
        report.add("server_rss_before_mib", b as f64 / 1048576.0);
        report.add("server_rss_after_mib", a as f64 / 1048576.0);
    }
    if let Some(closed) = results.slow_closed {
        report.add("slow_consumer_close_code", closed.map_or(0, u64::from));
    }
    if let Some(f) = results.measured.failover {
        report.add("failover_recovery_ms", f.recovery_ms);
        report.add("failover_command_ok", f.command_ok);
        report.add("duplicates", shared.duplicates.load(Ordering::Relaxed));
        report.add("lost", totals.expected.saturating_sub(totals.delivered));
    }
    report
}

fn add_set_up(report: &mut Report, plan: &FanoutPlan, connects: &Connects) {
    report.add("rooms", plan.rooms);
    report.add("members_per_room", plan.members);
    report.add(
        "publishers",
        if plan.all_publish {
            plan.total_members() - plan.slow_members()
        } else {
            plan.rooms
        },
    );
    report.add("payload_bytes", plan.payload_bytes);
    report.add("connect_failures", connects.failures);
    if let Some(e) = &connects.first_error {
        report.add("first_connect_error", e.clone());
    }
    report.add(
        "connect_p50_ms",
        connects.handshake_us.value_at_quantile(0.5) as f64 / 1000.0,
    );
}

fn add_totals(report: &mut Report, plan: &FanoutPlan, shared: &Shared, totals: &Counts) {
    report.add("messages_sent", totals.sent);
    report.add("deliveries", totals.delivered);
    report.add(
        "delivered_ratio",
        totals.delivered as f64 / totals.expected.max(1) as f64,
    );
    report.add(
        "member_disconnects",
        shared.disconnects.load(Ordering::Relaxed),
    );
    if plan.churn_per_sec > 0.0 {
        report.add("reconnects", shared.reconnects.load(Ordering::Relaxed));
        report.add(
            "reconnect_failures",
            shared.reconnect_failures.load(Ordering::Relaxed),
        );
    }
}

fn add_step(
    report: &mut Report,
    suffix: &str,
    rate: f64,
    window: &Window,
    shared: &Shared,
    step: usize,
) {
    let secs = window.secs;
    let counts = shared.counts(step);
    report.add(&format!("rate_per_publisher{suffix}"), rate);
    report.add(
        &format!("deliveries_per_sec{suffix}"),
        counts.delivered as f64 / secs,
    );
    report.add(
        &format!("expected_deliveries_per_sec{suffix}"),
        counts.expected as f64 / secs,
    );
    add_latency(report, &format!("latency{suffix}"), &shared.latency(step));
    if let Some(cpu) = window.server_cpu_secs {
        report.add(&format!("server_cpu_percent{suffix}"), cpu / secs * 100.0);
        report.add(
            &format!("server_cpu_us_per_delivery{suffix}"),
            cpu * 1e6 / counts.delivered.max(1) as f64,
        );
    }
}
