//! idle-hold: N idle connections held for T seconds; server RSS per connection.

use crate::client::Target;
use crate::proc_stats::rss_bytes;
use crate::Report;
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Args, Debug)]
pub struct IdleHoldOpts {
    /// Room URL template; `{room}` is replaced
    #[arg(long, default_value = "ws://127.0.0.1:1999/parties/main/{room}")]
    pub url: String,
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connections are spread over this many rooms
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Handshakes in flight at once
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds to hold the connections once all are open
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// Source addresses 127.0.0.1..=N to spread connections over
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// PID of the server, to read its RSS from /proc
    #[arg(long)]
    pub server_pid: Option<u32>,
}

pub async fn run(o: IdleHoldOpts) -> anyhow::Result<Report> {
    let target = Arc::new(Target::resolve(&o.url).await?);
    let rss_before = o.server_pid.and_then(rss_bytes);
    let gate = Arc::new(Semaphore::new(o.concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(o.connections);
    for n in 0..o.connections {
        let permit = gate.clone().acquire_owned().await?;
        let target = target.clone();
        let room = format!("idle-{}", n % o.rooms.max(1));
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = target
                .connect(&room, &format!("idle-{n}"), n, o.sources)
                .await;
            drop(permit);
            r.map(|ws| (ws, t0.elapsed()))
        }));
    }
    let mut sockets = Vec::with_capacity(o.connections);
    let mut handshake = Histogram::<u64>::new(3)?;
    let mut failures = 0usize;
    let mut first_error = None;
    for t in tasks {
        match t.await? {
            Ok((ws, took)) => {
                handshake.record(took.as_micros() as u64)?;
                sockets.push(ws);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Keep answering pings while idle.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(async move { ws.for_each(|_| async {}).await }))
        .collect();
    tokio::time::sleep(Duration::from_secs(o.hold_secs)).await;
    let rss_after = o.server_pid.and_then(rss_bytes);
    let open = readers.iter().filter(|r| !r.is_finished()).count();

    let mut report = Report::new("idle-hold");
    report.add("connections_requested", o.connections);
    report.add("connections_open_after_hold", open);
    report.add("connect_failures", failures);
    if let Some(e) = first_error {
        report.add("first_error", e);
    }
    report.add(
        "connects_per_sec",
        (o.connections - failures) as f64 / connect_secs,
    );
    report.add(
        "handshake_p50_ms",
        handshake.value_at_quantile(0.5) as f64 / 1000.0,
    );
    report.add(
        "handshake_p99_ms",
        handshake.value_at_quantile(0.99) as f64 / 1000.0,
    );
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        report.add("server_rss_before_mib", b as f64 / 1048576.0);
        report.add("server_rss_after_mib", a as f64 / 1048576.0);
        report.add(
            "server_rss_per_connection_bytes",
            (a.saturating_sub(b)) as f64 / open.max(1) as f64,
        );
    }
    for r in readers {
        r.abort();
    }
    Ok(report)
}
