//! connect-storm: N connections opened at concurrency C: connects/s, handshake latency,
//! failures. The connections are closed once all are open.

use super::connections::ConnectionOpts;
use crate::stats::add_latency;
use crate::{shard, Report};
use clap::Args;

#[derive(Args, Debug)]
pub struct ConnectStormOpts {
    #[command(flatten)]
    pub connections: ConnectionOpts,
    /// Handshakes in flight at once
    #[arg(long, default_value_t = 500)]
    pub concurrency: usize,
}

pub async fn run(o: ConnectStormOpts) -> anyhow::Result<Report> {
    let (opened, count) = o.connections.open_share("storm", o.concurrency).await?;
    let ok = opened.sockets.len();
    let mut report = Report::new("connect-storm");
    report.add("connections", count);
    report.add("concurrency", o.concurrency);
    report.add("connected", ok);
    report.add("failures", opened.failures);
    if let Some(e) = &opened.first_error {
        report.add("first_error", e.clone());
    }
    report.add("seconds", opened.elapsed.as_secs_f64());
    report.add("connects_per_sec", ok as f64 / opened.elapsed.as_secs_f64());
    add_latency(&mut report, "handshake", &opened.handshake_us);
    if shard::is_child() {
        report.add(
            "handshake_hist",
            shard::histogram_json(&opened.handshake_us),
        );
    }
    for (_, mut ws) in opened.sockets {
        tokio::spawn(async move { ws.close(None).await });
    }
    Ok(report)
}
