//! connect-storm: N connections opened at concurrency C: connects/s, handshake latency,
//! failures. The connections are closed once all are open.

use crate::client::Targets;
use crate::stats::add_latency;
use crate::{shard, Report};
use clap::Args;

#[derive(Args, Debug)]
pub struct ConnectStormOpts {
    /// Room URL template (`{room}` is replaced); repeat for several gateways
    #[arg(
        long = "url",
        default_value = "ws://127.0.0.1:1999/parties/main/{room}"
    )]
    pub urls: Vec<String>,
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Handshakes in flight at once
    #[arg(long, default_value_t = 500)]
    pub concurrency: usize,
    /// Connections are spread over this many rooms
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Source addresses 127.0.0.1..=N to spread connections over
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
}

pub async fn run(o: ConnectStormOpts) -> anyhow::Result<Report> {
    let targets = Targets::resolve(&o.urls).await?;
    let (opened, count) = shard::open_share(
        &targets,
        o.connections,
        o.concurrency,
        o.sources,
        "storm",
        o.rooms,
    )
    .await?;
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
