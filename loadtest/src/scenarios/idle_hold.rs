//! idle-hold: N idle connections held for T seconds; server RSS per connection.

use super::connections::ConnectionOpts;
use crate::proc_stats::rss_bytes;
use crate::{shard, Report};
use clap::Args;
use futures::StreamExt;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct IdleHoldOpts {
    #[command(flatten)]
    pub connections: ConnectionOpts,
    /// Handshakes in flight at once
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds to hold the connections once all are open
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// PIDs of the server's processes (comma-separated), to read their RSS from /proc
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
}

pub async fn run(o: IdleHoldOpts) -> anyhow::Result<Report> {
    let rss_before = rss_bytes(&o.server_pid);
    let (opened, count) = o.connections.open_share("idle", o.concurrency).await?;
    let (failures, first_error, handshake) =
        (opened.failures, opened.first_error, opened.handshake_us);
    let sockets: Vec<_> = opened.sockets.into_iter().map(|(_, ws)| ws).collect();
    let connect_secs = opened.elapsed.as_secs_f64();
    // Keep answering pings while idle.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(async move { ws.for_each(|_| async {}).await }))
        .collect();
    shard::hold_barrier().await?;
    tokio::time::sleep(Duration::from_secs(o.hold_secs)).await;
    let rss_after = rss_bytes(&o.server_pid);
    let open = readers.iter().filter(|r| !r.is_finished()).count();

    let mut report = Report::new("idle-hold");
    report.add("connections_requested", count);
    report.add("connections_open_after_hold", open);
    report.add("connect_failures", failures);
    if let Some(e) = first_error {
        report.add("first_error", e);
    }
    report.add("connects_per_sec", (count - failures) as f64 / connect_secs);
    crate::stats::add_latency(&mut report, "handshake", &handshake);
    if shard::is_child() {
        report.add("handshake_hist", shard::histogram_json(&handshake));
    }
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        report.add("server_rss_before_mib", b as f64 / 1048576.0);
        report.add("server_rss_after_mib", a as f64 / 1048576.0);
        // Only meaningful while connections are held.
        if open > 0 {
            report.add(
                "server_rss_per_connection_bytes",
                (a.saturating_sub(b)) as f64 / open as f64,
            );
        }
    }
    for r in readers {
        r.abort();
    }
    Ok(report)
}
