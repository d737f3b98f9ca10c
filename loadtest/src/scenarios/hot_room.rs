//! hot-room: one room of M members and one open-loop publisher at R messages/s.
//!
//! Each payload starts with its send time (µs since the run began), so every receiver
//! measures end-to-end latency; the publisher keeps its schedule whatever the server does
//! (no coordinated omission). With `--server-pid`, the server's CPU time over the measured
//! window is divided by the deliveries in that window.

use crate::client::Target;
use crate::proc_stats::cpu_seconds;
use crate::Report;
use clap::Args;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

#[derive(Args, Debug)]
pub struct HotRoomOpts {
    /// Room URL template; `{room}` is replaced
    #[arg(long, default_value = "ws://127.0.0.1:1999/parties/main/{room}")]
    pub url: String,
    #[arg(long, default_value = "hot")]
    pub room: String,
    /// Receiving members (the publisher is one more connection)
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Messages per second the publisher sends
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds measured, after the warm-up
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// PID of the server, to read its CPU time from /proc
    #[arg(long)]
    pub server_pid: Option<u32>,
}

struct MemberResult {
    latency_us: Histogram<u64>,
}

pub async fn run(o: HotRoomOpts) -> anyhow::Result<Report> {
    let target = Arc::new(Target::resolve(&o.url).await?);
    let base = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);

    let gate = Arc::new(Semaphore::new(200));
    let mut connecting = Vec::new();
    for n in 0..o.members {
        let (target, room, gate) = (target.clone(), o.room.clone(), gate.clone());
        let sources = o.sources;
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            target
                .connect(&room, &format!("member-{n}"), n, sources)
                .await
        }));
    }
    let mut members = Vec::new();
    for c in connecting {
        members.push(c.await??);
    }
    let receivers: Vec<_> = members
        .into_iter()
        .map(|mut ws| {
            let delivered = delivered.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut latency_us =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                loop {
                    let msg = tokio::select! {
                        _ = stop.changed() => break,
                        m = ws.next() => m,
                    };
                    match msg {
                        Some(Ok(Message::Text(t))) => {
                            let now = base.elapsed().as_micros() as u64;
                            if let Some(sent) = t
                                .get(..20)
                                .and_then(|s| s.trim_start_matches('0').parse::<u64>().ok())
                            {
                                let _ = latency_us.record(now.saturating_sub(sent).max(1));
                            }
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
                MemberResult { latency_us }
            })
        })
        .collect();

    let mut publisher = target
        .connect(&o.room, "publisher", o.members, o.sources)
        .await?;
    let interval = Duration::from_secs_f64(1.0 / o.rate);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let warmup_end = Instant::now() + Duration::from_secs(o.warmup_secs);
    let end = warmup_end + Duration::from_secs(o.secs);
    let (mut sent_total, mut sent_window) = (0u64, 0u64);
    let (mut cpu_start, mut delivered_start, mut window_start) = (None, 0u64, Instant::now());
    let mut measuring = false;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !measuring && now >= warmup_end {
            measuring = true;
            cpu_start = o.server_pid.and_then(cpu_seconds);
            delivered_start = delivered.load(Ordering::Relaxed);
            window_start = now;
        }
        let stamp = format!("{:020}", base.elapsed().as_micros());
        let mut payload = stamp;
        payload.extend(std::iter::repeat_n('x', o.payload_bytes.saturating_sub(20)));
        publisher.send(Message::text(payload)).await?;
        sent_total += 1;
        if measuring {
            sent_window += 1;
        }
    }
    let window = window_start.elapsed().as_secs_f64();
    let cpu_end = o.server_pid.and_then(cpu_seconds);
    let delivered_window = delivered.load(Ordering::Relaxed) - delivered_start;
    // Let in-flight messages land before counting the whole run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for r in receivers {
        latency.add(r.await?.latency_us)?;
    }
    let delivered_total = delivered.load(Ordering::Relaxed);
    let expected_total = sent_total * o.members as u64;

    let mut report = Report::new("hot-room");
    report.add("members", o.members);
    report.add("rate_per_sec", o.rate);
    report.add("payload_bytes", o.payload_bytes);
    report.add("messages_sent", sent_total);
    report.add("deliveries", delivered_total);
    report.add(
        "delivered_ratio",
        delivered_total as f64 / expected_total.max(1) as f64,
    );
    report.add("deliveries_per_sec", delivered_window as f64 / window);
    report.add(
        "expected_deliveries_per_sec",
        sent_window as f64 * o.members as f64 / window,
    );
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        report.add(
            &format!("latency_{name}_ms"),
            latency.value_at_quantile(q) as f64 / 1000.0,
        );
    }
    report.add("latency_max_ms", latency.max() as f64 / 1000.0);
    if let (Some(a), Some(b)) = (cpu_start, cpu_end) {
        report.add("server_cpu_seconds", b - a);
        report.add("server_cpu_percent", (b - a) / window * 100.0);
        report.add(
            "server_cpu_us_per_delivery",
            (b - a) * 1e6 / delivered_window.max(1) as f64,
        );
    }
    Ok(report)
}
