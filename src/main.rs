//! `conclave`: one binary, one subcommand per role.

use clap::{Parser, Subcommand};
use conclave::{DevOpts, DevServer};

#[derive(Parser)]
#[command(
    name = "conclave",
    version,
    about = "Self-hosted, clustered room server for PartyKit-style apps"
)]
struct Cli {
    /// Log as JSON lines instead of text (filter with RUST_LOG)
    #[arg(long, global = true, env = "CONCLAVE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway, node and embedded storage in one process (like `partykit dev`)
    Dev(DevOpts),
    /// Host rooms and their storage; gateways reach this node over gRPC
    Node(conclave::NodeOpts),
    /// Client-facing WebSocket/HTTP edge in front of nodes
    Gateway(conclave::GatewayOpts),
    /// Publish rings of live nodes (from their Redis heartbeats) to gateways and nodes
    Placement(conclave::PlacementOpts),
    /// Drive a PartySocket-compatible server with a load scenario
    Loadtest(conclave_loadtest::LoadtestOpts),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    conclave::telemetry::init_logs(cli.log_json);
    let result = run(cli.command).await;
    // FoundationDB's network thread must stop before the process exits.
    #[cfg(feature = "fdb")]
    conclave_node::storage::stop_fdb_network();
    result
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev(opts) => {
            let config = opts.resolve()?;
            let registry = config.registry();
            let server = DevServer::start(config.clone(), registry).await?;
            println!("conclave dev listening on http://{}", server.addr);
            println!("data: {}", config.storage);
            for (name, p) in &config.parties {
                let auth = if config.gateway.auth.contains_key(name) {
                    " (JWT)"
                } else {
                    ""
                };
                println!(
                    "  ws://{}/parties/{name}/:room  [{}]{auth}",
                    server.addr, p.kind
                );
            }
            server.wait().await
        }
        Command::Node(opts) => conclave::run_node(opts.resolve()?).await,
        Command::Gateway(opts) => conclave::run_gateway(opts.resolve()?).await,
        Command::Placement(opts) => conclave::run_placement(opts.resolve()?).await,
        Command::Loadtest(opts) => conclave_loadtest::run(opts).await,
    }
}
