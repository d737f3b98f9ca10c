//! The engine behind every messaging scenario: K rooms of M members, open-loop publishers
//! at a rate (in steps), end-to-end latency from send times carried in the payloads, and
//! optionally churn, slow consumers or a failover command mid-run.
//!
//! Publishers keep their schedule whatever the server does (no coordinated omission): a
//! publisher that fell behind sends its late messages at once. Deliveries and latencies
//! are attributed to the step that is running when they arrive.

use crate::client::{open_many, Targets, Ws};
use crate::proc_stats::{cpu_seconds, rss_bytes};
use crate::stats::{add_latency, latency_histogram, record, stamp_of, stamped_payload};
use crate::{progress_bar, Report};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

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

/// Counters shared by every task of a run.
struct Shared {
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
    disconnects: AtomicU64,
    reconnects: AtomicU64,
    reconnect_failures: AtomicU64,
    /// µs since `base` of the latest delivery anywhere.
    last_delivery_us: AtomicU64,
    duplicates: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One member: reads its socket (unless it is a slow consumer), publishes if asked.
struct Member {
    n: usize,
    room: String,
    reconnect: Arc<Notify>,
}

pub async fn run(plan: FanoutPlan) -> anyhow::Result<Report> {
    // Shared by every member and publisher task, not copied into each.
    let plan = Arc::new(plan);
    anyhow::ensure!(!plan.rates.is_empty(), "give at least one rate");
    anyhow::ensure!(
        plan.rooms > 0 && plan.members > 0,
        "rooms and members must be > 0"
    );
    let targets = Targets::resolve(&plan.urls).await?;
    let steps = plan.rates.len() + 1;
    let shared = Arc::new(Shared {
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
    });
    let rss_before = rss_bytes(&plan.server_pid);

    // Members, then one publisher per room unless members publish themselves.
    let total = plan.rooms * plan.members;
    let members = plan.members;
    let prefix = plan.room_prefix.clone();
    let room_of = move |n: usize| format!("{prefix}-{}", n / members);
    let bar = progress_bar(total as u64, "connecting members");
    let opened = open_many(
        &targets,
        total,
        plan.concurrency,
        plan.sources,
        "m",
        &room_of,
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    anyhow::ensure!(
        !opened.sockets.is_empty(),
        "no member could connect: {}",
        opened.first_error.clone().unwrap_or_default()
    );
    let slow: HashSet<usize> = (0..plan.slow_consumers.min(plan.members)).collect();
    // Members that connected and read, per room: what a message in the room should reach
    // (the relay party excludes the sender). Members that failed to connect are reported,
    // not expected to receive.
    let mut reading = vec![0u64; plan.rooms];
    for (n, _) in &opened.sockets {
        if !slow.contains(n) {
            reading[n / plan.members] += 1;
        }
    }
    let receivers_in =
        |room_index: usize| -> u64 { reading[room_index].saturating_sub(plan.all_publish as u64) };

    let mut tasks = Vec::new();
    let mut publisher_failures = 0usize;
    let mut first_connect_error = opened.first_error.clone();
    let mut slow_sockets = Vec::new();
    let mut reconnects: Vec<Arc<Notify>> = Vec::new();
    for (n, ws) in opened.sockets {
        if slow.contains(&n) {
            slow_sockets.push(ws);
            continue;
        }
        let member = Member {
            n,
            room: room_of(n),
            reconnect: Arc::new(Notify::new()),
        };
        reconnects.push(member.reconnect.clone());
        let (sink, stream) = ws.split();
        let publish = plan
            .all_publish
            .then(|| (sink, receivers_in(n / plan.members)));
        tasks.push(tokio::spawn(member_loop(
            member,
            stream,
            publish,
            targets.clone(),
            plan.clone(),
            shared.clone(),
        )));
    }
    if !plan.all_publish {
        for r in 0..plan.rooms {
            let ws = match targets
                .connect(
                    &room_of(r * plan.members),
                    &format!("pub-{r}"),
                    total + r,
                    plan.sources,
                )
                .await
            {
                Ok(ws) => ws,
                Err(e) => {
                    // Counted and reported: that room gets no messages.
                    publisher_failures += 1;
                    first_connect_error.get_or_insert_with(|| e.to_string());
                    continue;
                }
            };
            let (sink, _stream) = ws.split();
            let receivers = receivers_in(r);
            let (shared, plan) = (shared.clone(), plan.clone());
            tasks.push(tokio::spawn(async move {
                publish_loop(sink, r, receivers, &plan, &shared).await;
            }));
        }
    }
    if plan.churn_per_sec > 0.0 {
        tokio::spawn(churn_loop(reconnects, plan.churn_per_sec, shared.clone()));
    }

    // Warm-up, then the steps.
    tokio::time::sleep(Duration::from_secs(plan.warmup_secs)).await;
    let mut windows = Vec::new();
    let mut failover_report = None;
    for (i, rate) in plan.rates.iter().enumerate() {
        shared.step.store(i + 1, Ordering::Relaxed);
        let cpu0 = cpu_seconds(&plan.server_pid);
        let t0 = Instant::now();
        let bar = progress_bar(plan.secs, &format!("{} at {rate}/s", plan.scenario));
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    bar.inc(1);
                }
            })
        };
        match (&plan.failover, i) {
            (Some((command, at)), 0) => {
                let at = Duration::from_secs(*at).min(Duration::from_secs(plan.secs));
                tokio::time::sleep(at).await;
                failover_report =
                    Some(failover(command, &shared, t0 + Duration::from_secs(plan.secs)).await?);
                tokio::time::sleep_until((t0 + Duration::from_secs(plan.secs)).into()).await;
            }
            _ => tokio::time::sleep(Duration::from_secs(plan.secs)).await,
        }
        ticker.abort();
        bar.finish_and_clear();
        let cpu1 = cpu_seconds(&plan.server_pid);
        windows.push((
            t0.elapsed().as_secs_f64(),
            cpu0.zip(cpu1).map(|(a, b)| b - a),
        ));
    }
    let rss_after = rss_bytes(&plan.server_pid);
    // Publishers stop; in-flight messages land; then the readers stop.
    shared.stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for t in &tasks {
        t.abort();
    }
    let slow_closed = match slow_sockets.first_mut() {
        Some(ws) => Some(drain_until_close(ws).await),
        None => None,
    };

    let mut report = Report::new(plan.scenario);
    report.add("rooms", plan.rooms);
    report.add("members_per_room", plan.members);
    report.add(
        "publishers",
        if plan.all_publish {
            total - slow.len()
        } else {
            plan.rooms
        },
    );
    report.add("payload_bytes", plan.payload_bytes);
    report.add("connect_failures", opened.failures + publisher_failures);
    if let Some(e) = &first_connect_error {
        report.add("first_connect_error", e.clone());
    }
    report.add(
        "connect_p50_ms",
        opened.handshake_us.value_at_quantile(0.5) as f64 / 1000.0,
    );
    let (sent_all, expected_all, delivered_all) = (0..steps).fold((0, 0, 0), |acc, i| {
        (
            acc.0 + shared.sent[i].load(Ordering::Relaxed),
            acc.1 + shared.expected[i].load(Ordering::Relaxed),
            acc.2 + shared.delivered[i].load(Ordering::Relaxed),
        )
    });
    report.add("messages_sent", sent_all);
    report.add("deliveries", delivered_all);
    report.add(
        "delivered_ratio",
        delivered_all as f64 / expected_all.max(1) as f64,
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
    for (i, rate) in plan.rates.iter().enumerate() {
        let step = i + 1;
        let suffix = if plan.rates.len() > 1 {
            format!("@{rate}")
        } else {
            String::new()
        };
        let (secs, cpu) = windows[i];
        let delivered = shared.delivered[step].load(Ordering::Relaxed);
        report.add(&format!("rate_per_publisher{suffix}"), *rate);
        report.add(
            &format!("deliveries_per_sec{suffix}"),
            delivered as f64 / secs,
        );
        report.add(
            &format!("expected_deliveries_per_sec{suffix}"),
            shared.expected[step].load(Ordering::Relaxed) as f64 / secs,
        );
        let h = shared.latency[step]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        add_latency(&mut report, &format!("latency{suffix}"), &h);
        if let Some(cpu) = cpu {
            report.add(&format!("server_cpu_percent{suffix}"), cpu / secs * 100.0);
            report.add(
                &format!("server_cpu_us_per_delivery{suffix}"),
                cpu * 1e6 / delivered.max(1) as f64,
            );
        }
    }
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        report.add("server_rss_before_mib", b as f64 / 1048576.0);
        report.add("server_rss_after_mib", a as f64 / 1048576.0);
    }
    if let Some(closed) = slow_closed {
        report.add("slow_consumer_close_code", closed.map_or(0, u64::from));
    }
    if let Some(f) = failover_report {
        report.add("failover_recovery_ms", f.recovery_ms);
        report.add("failover_command_ok", f.command_ok);
        report.add("duplicates", shared.duplicates.load(Ordering::Relaxed));
        report.add("lost", expected_all.saturating_sub(delivered_all));
    }
    Ok(report)
}

async fn member_loop(
    member: Member,
    mut stream: SplitStream<Ws>,
    mut publish: Option<(SplitSink<Ws, Message>, u64)>,
    targets: Arc<Targets>,
    plan: Arc<FanoutPlan>,
    shared: Arc<Shared>,
) {
    let track_duplicates = plan.failover.is_some();
    let mut seen: HashSet<String> = HashSet::new();
    let mut next_send = Instant::now();
    let mut seq = 0u64;
    loop {
        let rate = current_rate(&plan, &shared);
        let send_at = tokio::time::Instant::from_std(next_send);
        let event = tokio::select! {
            m = stream.next() => Some(m),
            _ = member.reconnect.notified() => None,
            _ = tokio::time::sleep_until(send_at), if publish.is_some() && !shared.stopping() => {
                if let Some((sink, receivers)) = publish.as_mut() {
                    let step = shared.step.load(Ordering::Relaxed);
                    seq += 1;
                    let payload = tag(stamped_payload(shared.now_us(), plan.payload_bytes), member.n, seq);
                    if sink.send(Message::text(payload)).await.is_ok() {
                        shared.sent[step].fetch_add(1, Ordering::Relaxed);
                        shared.expected[step].fetch_add(*receivers, Ordering::Relaxed);
                    }
                }
                next_send += Duration::from_secs_f64(1.0 / rate);
                continue;
            }
        };
        match event {
            Some(Some(Ok(Message::Text(t)))) => {
                let now = shared.now_us();
                let step = shared.step.load(Ordering::Relaxed);
                if let Some(sent) = stamp_of(&t) {
                    if track_duplicates && !seen.insert(t.get(..40).unwrap_or(&t).to_string()) {
                        shared.duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let mut h = shared.latency[step]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    record(&mut h, now.saturating_sub(sent));
                }
                shared.delivered[step].fetch_add(1, Ordering::Relaxed);
                shared.last_delivery_us.store(now, Ordering::Relaxed);
            }
            Some(Some(Ok(_))) => {}
            // Closed under us, or asked to reconnect (churn): reconnect with the same id.
            other => {
                if shared.stopping() {
                    return;
                }
                if other.is_some() {
                    shared.disconnects.fetch_add(1, Ordering::Relaxed);
                    // Closed by the server: do not hammer it with reconnects.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                match targets
                    .connect(
                        &member.room,
                        &format!("m-{}", member.n),
                        member.n,
                        plan.sources,
                    )
                    .await
                {
                    Ok(ws) => {
                        shared.reconnects.fetch_add(1, Ordering::Relaxed);
                        let (sink, s) = ws.split();
                        stream = s;
                        if let Some((old, _)) = publish.as_mut() {
                            *old = sink;
                        }
                    }
                    Err(_) => {
                        shared.reconnect_failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

/// A payload that also names its publisher and sequence number (unique per run).
fn tag(mut payload: String, publisher: usize, seq: u64) -> String {
    let id = format!("-{publisher:08}-{seq:010}");
    let end = (20 + id.len()).min(payload.len());
    if payload.len() >= 20 + id.len() {
        payload.replace_range(20..end, &id);
    } else {
        payload.insert_str(20, &id);
    }
    payload
}

fn current_rate(plan: &FanoutPlan, shared: &Shared) -> f64 {
    let step = shared.step.load(Ordering::Relaxed);
    plan.rates[step.saturating_sub(1).min(plan.rates.len() - 1)].max(0.001)
}

async fn publish_loop(
    mut sink: SplitSink<Ws, Message>,
    publisher: usize,
    receivers: u64,
    plan: &FanoutPlan,
    shared: &Shared,
) {
    let mut next = Instant::now();
    let mut seq = 0u64;
    while !shared.stopping() {
        tokio::time::sleep_until(next.into()).await;
        let step = shared.step.load(Ordering::Relaxed);
        seq += 1;
        let payload = tag(
            stamped_payload(shared.now_us(), plan.payload_bytes),
            100_000_000 + publisher,
            seq,
        );
        if sink.send(Message::text(payload)).await.is_err() {
            return;
        }
        shared.sent[step].fetch_add(1, Ordering::Relaxed);
        shared.expected[step].fetch_add(receivers, Ordering::Relaxed);
        next += Duration::from_secs_f64(1.0 / current_rate(plan, shared));
    }
}

/// Asks a share of the members to reconnect every second.
async fn churn_loop(members: Vec<Arc<Notify>>, per_sec: f64, shared: Arc<Shared>) {
    if members.is_empty() {
        return;
    }
    let per_tick = ((members.len() as f64 * per_sec) / 10.0).max(0.0);
    let mut owed = 0.0;
    let mut next = 0usize;
    while !shared.stopping() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        owed += per_tick;
        while owed >= 1.0 {
            members[next % members.len()].notify_one();
            next += 1;
            owed -= 1.0;
        }
    }
}

struct FailoverOutcome {
    recovery_ms: f64,
    command_ok: bool,
}

/// Runs the failover command, then measures the longest time without any delivery from
/// then until `until`.
async fn failover(
    command: &str,
    shared: &Arc<Shared>,
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
        let last = shared.last_delivery_us.load(Ordering::Relaxed);
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

/// Reads a socket that never read until the server closes it; the close code, if any
/// came within a few seconds.
async fn drain_until_close(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => return Some(f.map_or(1005, |f| f.code.into())),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return Some(1006),
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_the_stamp_and_make_payloads_unique() {
        let a = tag(stamped_payload(42, 64), 3, 1);
        let b = tag(stamped_payload(42, 64), 3, 2);
        assert_eq!(a.len(), 64);
        assert_eq!(stamp_of(&a), Some(42));
        assert_ne!(a[..40], b[..40]);
        let short = tag(stamped_payload(7, 20), 1, 1);
        assert_eq!(stamp_of(&short), Some(7));
    }
}
