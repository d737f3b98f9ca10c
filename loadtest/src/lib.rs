//! `conclave loadtest`: load scenarios for any PartySocket-compatible server, so one run
//! measures Conclave and a peer alike. It speaks only the public wire protocol.
//!
//! Scenarios so far: `idle-hold` (server memory per idle connection) and `hot-room`
//! (fan-out of one room: delivery ratio, end-to-end latency, server CPU per delivery).

mod client;
mod proc_stats;
mod report;
mod scenarios;

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
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// Open N idle connections, hold them, report server RSS per connection
    IdleHold(scenarios::idle_hold::IdleHoldOpts),
    /// One room of M members and an open-loop publisher at R messages/s
    HotRoom(scenarios::hot_room::HotRoomOpts),
}

pub async fn run(opts: LoadtestOpts) -> anyhow::Result<()> {
    let report = match opts.scenario {
        Scenario::IdleHold(o) => scenarios::idle_hold::run(o).await?,
        Scenario::HotRoom(o) => scenarios::hot_room::run(o).await?,
    };
    print!("{}", report.table());
    if let Some(path) = opts.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report.to_json())?)?;
    }
    Ok(())
}
