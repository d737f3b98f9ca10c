//! The `conclave` command line as a library: every role (`dev`, `node`, `gateway`,
//! `placement`, `loadtest`), serving the built-in party kinds and any of your own. The
//! `conclave` binary is `Conclave::new().main()`; a binary of yours adds its parties:
//!
//! ```no_run
//! use conclave_node::{async_trait, Connection, Message, Party, PartyError, Room};
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! #[async_trait]
//! impl Party for Echo {
//!     async fn on_message(&mut self, _room: &mut Room, conn: &Connection, msg: Message) -> Result<(), PartyError> {
//!         conn.send(msg);
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     // `my-server dev`, `my-server node …`, `my-server gateway …`: the party `echo`
//!     // (kind `echo`) is served in every role, and TOML entries may name the kind.
//!     conclave::Conclave::new().party::<Echo>("echo").main().await
//! }
//! ```

use crate::config::{DevOpts, GatewayOpts, NodeOpts, PartyKinds, PlacementOpts};
use crate::dev::DevServer;
use crate::project::{BuildFor, JsParties, PartySourceSpec};
use clap::{Parser, Subcommand};
use conclave_node::{Party, PartyFactory};

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
    /// Resolve the role's settings (flags over env over the TOML file over defaults), print
    /// them with secrets redacted, and exit: 0 if they are valid, non-zero with the error
    /// otherwise. Nothing is started
    #[arg(long, global = true)]
    check_config: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway, node and embedded storage in one process (like `partykit dev`)
    Dev(DevOpts),
    /// Host rooms and their storage; gateways reach this node over gRPC
    Node(Box<NodeOpts>),
    /// Client-facing WebSocket/HTTP edge in front of nodes
    Gateway(GatewayOpts),
    /// Publish rings of live nodes (from their Redis heartbeats) to gateways and nodes
    Placement(PlacementOpts),
    /// Drive a PartySocket-compatible server with a load scenario
    Loadtest(conclave_loadtest::LoadtestOpts),
    /// Bundle a PartyKit project into one versioned file that every node loads (--bundle)
    Build(BuildOpts),
    /// Exit 0 if `GET <url>` answers 200 (a container healthcheck without curl)
    Probe(ProbeOpts),
}

#[derive(clap::Args)]
struct ProbeOpts {
    /// What to ask: a role's /readyz or /healthz
    #[arg(default_value = "http://127.0.0.1:1999/readyz")]
    url: String,
}

#[derive(clap::Args)]
struct BuildOpts {
    /// The PartyKit project directory (with partykit.json)
    #[arg(long, default_value = ".")]
    project: std::path::PathBuf,
    /// Where to write the bundle
    #[arg(long, short)]
    out: std::path::PathBuf,
}

/// A Conclave server: the party kinds it serves, and the command line that runs it.
#[derive(Default)]
pub struct Conclave {
    kinds: PartyKinds,
}

impl Conclave {
    /// The built-in party kinds (relay, chat, presence, counter).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the party kind `kind`, served by `P::default()` instances; a party of the same
    /// name serves it unless the TOML file maps that name elsewhere.
    pub fn party<P: Party + Default>(mut self, kind: &str) -> Self {
        self.kinds = self.kinds.with::<P>(kind);
        self
    }

    /// Adds the party kind `kind`, served by `factory` (for `before_connect`, or
    /// configured instances).
    pub fn party_factory(mut self, kind: &str, factory: impl PartyFactory) -> Self {
        self.kinds = self.kinds.with_factory(kind, factory);
        self
    }

    /// Parses the command line and runs the role it names until that stops.
    pub async fn main(self) -> anyhow::Result<()> {
        let cli = Cli::parse();
        let service = match &cli.command {
            Command::Dev(_) => "conclave-dev",
            Command::Node(_) => "conclave-node",
            Command::Gateway(_) => "conclave-gateway",
            Command::Placement(_) => "conclave-placement",
            Command::Loadtest(_) | Command::Build(_) | Command::Probe(_) => "conclave",
        };
        let _tracing = crate::telemetry::init(cli.log_json, service);
        if cli.check_config {
            return self.check_config(cli.command);
        }
        let result = self.run(cli.command).await;
        // FoundationDB's network thread must stop before the process exits.
        #[cfg(feature = "fdb")]
        conclave_node::storage::stop_fdb_network();
        result
    }

    /// `--check-config`: the resolved settings of the role, secrets redacted.
    fn check_config(self, command: Command) -> anyhow::Result<()> {
        let resolved = match command {
            Command::Dev(opts) => format!("{:#?}", opts.resolve_with(&self.kinds)?),
            Command::Node(opts) => format!("{:#?}", opts.resolve_with(&self.kinds)?),
            Command::Gateway(opts) => format!("{:#?}", opts.resolve()?),
            Command::Placement(opts) => format!("{:#?}", opts.resolve()?),
            Command::Loadtest(_) | Command::Build(_) | Command::Probe(_) => {
                anyhow::bail!(
                    "--check-config is for the server roles: dev, node, gateway, placement"
                )
            }
        };
        println!("{}", crate::config::redact(&resolved));
        Ok(())
    }

    async fn run(self, command: Command) -> anyhow::Result<()> {
        if matches!(
            command,
            Command::Dev(_) | Command::Node(_) | Command::Gateway(_) | Command::Placement(_)
        ) {
            crate::memory::spawn_trimmer();
        }
        match command {
            Command::Dev(opts) => self.dev(opts).await,
            Command::Node(opts) => {
                let config = opts.resolve_with(&self.kinds)?;
                let mut parties = crate::config::registry_for(&config.parties, &self.kinds);
                if let Some(spec) = &config.js {
                    let (registry, js) =
                        JsParties::start(spec, BuildFor::Deploy, config.js_engine.clone(), parties)
                            .await?;
                    println!("serving {} version {}", js.bundle.name, js.bundle.version);
                    parties = registry;
                }
                crate::roles::run_node(config, parties).await
            }
            Command::Gateway(opts) => crate::roles::run_gateway(opts.resolve()?).await,
            Command::Placement(opts) => crate::roles::run_placement(opts.resolve()?).await,
            Command::Loadtest(opts) => conclave_loadtest::run(opts).await,
            Command::Probe(opts) => probe(&opts.url).await,
            Command::Build(opts) => {
                let bundle =
                    PartySourceSpec::Project(opts.project.clone()).bundle(BuildFor::Deploy)?;
                bundle.write(&opts.out)?;
                println!(
                    "wrote {} ({} version {}: {})",
                    opts.out.display(),
                    bundle.name,
                    bundle.version,
                    bundle
                        .parties
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Ok(())
            }
        }
    }

    async fn dev(self, opts: DevOpts) -> anyhow::Result<()> {
        let config = opts.resolve_with(&self.kinds)?;
        let mut registry = crate::config::registry_for(&config.parties, &self.kinds);
        let mut js = None;
        if let Some(spec) = &config.js {
            let (with_js, parties) =
                JsParties::start(spec, BuildFor::Dev, config.js_engine.clone(), registry).await?;
            registry = with_js;
            js = Some(parties);
        }
        let server = DevServer::start(config.clone(), registry).await?;
        println!("conclave dev listening on http://{}", server.addr);
        println!("data: {}", config.storage);
        let js_names = js.as_ref().map(JsParties::names).unwrap_or_default();
        if let Some(js) = &js {
            println!("project {} (version {})", js.bundle.name, js.bundle.version);
            for name in &js_names {
                println!("  ws://{}/parties/{name}/:room  [{name}.ts]", server.addr);
            }
        }
        if let (Some(js), Some(PartySourceSpec::Project(dir))) = (js, &config.js) {
            tokio::spawn(js.watch(dir.clone()));
        }
        for (name, p) in config.parties.iter().filter(|(n, _)| !js_names.contains(n)) {
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
}

/// `GET url` over plain HTTP/1.1 within 3 s: Ok on 200, an error saying what came instead.
async fn probe(url: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: axum::http::Uri = url.parse()?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "probe speaks plain http:// only"
    );
    let host = uri.host().unwrap_or("127.0.0.1").to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(3), ask)
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within 3 s"))??;
    let status = answer.lines().next().unwrap_or("");
    anyhow::ensure!(status.split(' ').nth(1) == Some("200"), "{url}: {status}");
    Ok(())
}
