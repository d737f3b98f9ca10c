//! Load scenarios for any PartySocket-compatible server.

use clap::Args;

#[derive(Args, Debug)]
pub struct LoadtestOpts {}

pub async fn run(_opts: LoadtestOpts) -> anyhow::Result<()> {
    anyhow::bail!("no scenario yet")
}
