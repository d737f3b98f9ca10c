//! `conclave loadtest`: load scenarios for any PartySocket-compatible server, so one run
//! measures Conclave and a peer alike. It speaks only the public wire protocol.
//!
//! Every messaging scenario runs on one fan-out engine (`scenarios/fanout/`): rooms of
//! members, open-loop publishers, end-to-end latency from send times in the payloads
//! (HDR histograms), server CPU per delivery and RSS from /proc when given the server's
//! PID. Connections spread over several URLs (gateways) and 127.0.0.x source addresses.

#![warn(clippy::unwrap_used)]

mod client;
mod proc_stats;
mod report;
mod scenarios;
mod shard;
mod stats;

use clap::{Args, Subcommand};
use std::path::PathBuf;

pub use report::Report;

#[derive(Args, Debug)]
pub struct LoadtestOpts {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Also write the report as JSON to this file
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Split the connections over this many loadtest processes, each under the
    /// per-process open-files limit (connect-storm and idle-hold)
    #[arg(long, global = true, default_value_t = 1)]
    pub processes: usize,
    /// Internal: run as shard I of N of a multi-process run
    #[arg(long, global = true, hide = true)]
    pub shard: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// Open N connections at concurrency C: connects/s, handshake latency, failures
    ConnectStorm(scenarios::connect_storm::ConnectStormOpts),
    /// Open N idle connections, hold them, report server RSS per connection
    IdleHold(scenarios::idle_hold::IdleHoldOpts),
    /// One room of M members and an open-loop publisher at R messages/s (steps: R1,R2,…)
    HotRoom(scenarios::messaging::HotRoomOpts),
    /// K rooms of M members, one publisher per room at R messages/s each
    ManyRooms(scenarios::messaging::ManyRoomsOpts),
    /// Every member of a room publishes at R messages/s
    AllToAll(scenarios::messaging::AllToAllOpts),
    /// Steady fan-out while a share of the connections reconnects every second
    Churn(scenarios::messaging::ChurnOpts),
    /// One member stops reading: the others' latency and the server's memory
    SlowConsumer(scenarios::messaging::SlowConsumerOpts),
    /// Runs a command (kill or drain the room's owner) mid-run: recovery time, lost and
    /// duplicated messages
    Failover(scenarios::messaging::FailoverOpts),
}

pub async fn run(opts: LoadtestOpts) -> anyhow::Result<()> {
    use scenarios::{connect_storm, idle_hold, messaging};
    if let Some(spec) = &opts.shard {
        shard::set_shard(spec)?;
    }
    let multi = opts.processes > 1 && opts.shard.is_none();
    let report = match opts.scenario {
        Scenario::ConnectStorm(_) if multi => {
            shard::run_parent("connect-storm", opts.processes, &[]).await?
        }
        Scenario::IdleHold(ref o) if multi => {
            shard::run_parent("idle-hold", opts.processes, &o.server_pid).await?
        }
        _ if multi => anyhow::bail!(
            "--processes applies to connect-storm and idle-hold; messaging scenarios run in one process (up to ~19,000 connections)"
        ),
        Scenario::ConnectStorm(o) => connect_storm::run(o).await?,
        Scenario::IdleHold(o) => idle_hold::run(o).await?,
        Scenario::HotRoom(o) => messaging::hot_room(o).await?,
        Scenario::ManyRooms(o) => messaging::many_rooms(o).await?,
        Scenario::AllToAll(o) => messaging::all_to_all(o).await?,
        Scenario::Churn(o) => messaging::churn(o).await?,
        Scenario::SlowConsumer(o) => messaging::slow_consumer(o).await?,
        Scenario::Failover(o) => messaging::failover(o).await?,
    };
    print!("{}", report.table());
    if let Some(path) = opts.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report.to_json())?)?;
    }
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub(crate) fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}
