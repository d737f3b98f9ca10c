//! What each role runs with: its clap `*Opts` (flags and environment), resolved with the
//! TOML file into a `*Config`. The option groups the cluster roles share are in
//! `cluster.rs`.

use super::cluster::{
    internal_listener, placement_urls, redis_of, valid_region, LivenessOpts, SecretOpts,
};
use super::file::{registry_for, FileConfig, FileParty};
use super::js::JsOpts;
use super::kinds::PartyKinds;
use super::layer::{admin_token, layer, millis, with_default};
use super::limits::{check_answer_timeout, GatewayLimitOpts, NodeLimitOpts};
use super::storage::{StorageOpts, StorageTarget};
use crate::project::PartySourceSpec;
use anyhow::{bail, Context};
use clap::Args;
use conclave_gateway::GatewayConfig;
use conclave_node::js::JsConfig;
use conclave_node::{NodeConfig, PartyRegistry};
use conclave_placement::{LivenessTiming, RedisTarget};
use conclave_proto::ClusterAuth;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

/// Address the client-facing server (`dev`, `gateway`) listens on.
pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Port the client-facing server listens on.
pub const DEFAULT_PORT: u16 = 1999;
/// A node's id.
pub const DEFAULT_NODE_ID: &str = "node";
/// A node's relay gRPC service.
pub const DEFAULT_RELAY_LISTEN: SocketAddr = local(7100);
/// A node's `/metrics`, `/healthz`, `/readyz` and `/admin/drain`.
pub const DEFAULT_HTTP_LISTEN: SocketAddr = local(7101);
/// The placement gRPC service.
pub const DEFAULT_PLACEMENT_LISTEN: SocketAddr = local(7300);
/// A gateway's `/metrics` and `/admin/*` (off the public client port).
pub const DEFAULT_GATEWAY_OPS_LISTEN: SocketAddr = local(7400);
/// How long a stopping gateway fails `/readyz` before closing its sockets.
pub const DEFAULT_GATEWAY_DRAIN_DELAY_MS: u64 = 0;
/// Placement's `/metrics`, `/healthz` and `/readyz`.
pub const DEFAULT_PLACEMENT_HTTP_LISTEN: SocketAddr = local(7301);

const fn local(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Where the client-facing server listens (`dev`, `gateway`).
#[derive(Args, Debug, Default, Clone)]
pub struct ListenOpts {
    #[arg(long, env = "CONCLAVE_HOST", help = with_default("Address to listen on", DEFAULT_HOST))]
    pub host: Option<IpAddr>,
    #[arg(long, env = "CONCLAVE_PORT", help = with_default(
        "Port to listen on (0 picks a free one)",
        DEFAULT_PORT,
    ))]
    pub port: Option<u16>,
}

impl ListenOpts {
    pub fn resolve(&self, file: &FileConfig) -> SocketAddr {
        SocketAddr::new(
            layer(self.host, file.host, DEFAULT_HOST),
            layer(self.port, file.port, DEFAULT_PORT),
        )
    }
}

/// Settings of `conclave dev`.
#[derive(Args, Debug, Default, Clone)]
pub struct DevOpts {
    #[command(flatten)]
    pub listen: ListenOpts,
    #[command(flatten)]
    pub storage: StorageOpts,
    /// TOML config file: parties, auth, limits (see README "Configuration")
    #[arg(long, env = "CONCLAVE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub gateway: GatewayLimitOpts,
    #[command(flatten)]
    pub node: NodeLimitOpts,
    #[command(flatten)]
    pub js: JsOpts,
}

/// What `conclave dev` runs with.
#[derive(Clone, Debug)]
pub struct DevConfig {
    pub listen: SocketAddr,
    pub storage: StorageTarget,
    pub gateway: GatewayConfig,
    pub node: NodeConfig,
    pub parties: BTreeMap<String, FileParty>,
    /// JavaScript parties, and the engine's limits.
    pub js: Option<PartySourceSpec>,
    pub js_engine: JsConfig,
}

impl DevOpts {
    /// Resolves flags/env over the TOML file over defaults, with the built-in party kinds.
    pub fn resolve(&self) -> anyhow::Result<DevConfig> {
        self.resolve_with(&PartyKinds::builtin())
    }

    /// Like [`DevOpts::resolve`], for a binary that serves `kinds`.
    pub fn resolve_with(&self, kinds: &PartyKinds) -> anyhow::Result<DevConfig> {
        let file = FileConfig::load_opt(self.config.as_ref())?;
        let gateway = self.gateway.resolve(&file)?;
        let answer_limit = gateway.answer_timeout;
        let node = NodeConfig {
            max_frame_bytes: gateway.max_frame_bytes,
            max_http_body_bytes: gateway.max_http_body_bytes,
            // The room waits for its own answer as long as the client does.
            fetch_timeout: answer_limit,
            ..self.node.resolve(&file)?
        };
        Ok(DevConfig {
            listen: self.listen.resolve(&file),
            storage: self.storage.target(&file)?,
            gateway,
            node,
            parties: file.parties(kinds)?,
            js: self.js.source(true),
            // As PartyKit's dev server: /__scheduled__?cron=NAME runs a cron at once.
            js_engine: JsConfig {
                scheduled_route: true,
                answer_limit,
                ..self.js.engine_config()
            },
        })
    }
}

impl DevConfig {
    /// The built-in parties named in the config.
    pub fn registry(&self) -> PartyRegistry {
        self.registry_with(&PartyKinds::builtin())
    }

    /// The parties named in the config, served by `kinds`.
    pub fn registry_with(&self, kinds: &PartyKinds) -> PartyRegistry {
        registry_for(&self.parties, kinds)
    }
}

/// Settings of `conclave node`: hosts rooms, serves gateways over gRPC.
#[derive(Args, Debug, Default, Clone)]
pub struct NodeOpts {
    #[arg(long, env = "CONCLAVE_NODE_ID", help = with_default(
        "This node's id, as gateways name it in their node list",
        DEFAULT_NODE_ID,
    ))]
    pub id: Option<String>,
    #[arg(long, env = "CONCLAVE_RELAY_LISTEN", help = with_default(
        "Address of the relay gRPC service gateways connect to (port 0 picks one)",
        DEFAULT_RELAY_LISTEN,
    ))]
    pub relay_listen: Option<SocketAddr>,
    #[arg(long, env = "CONCLAVE_HTTP_LISTEN", help = with_default(
        "Address of /metrics, /healthz and /readyz",
        DEFAULT_HTTP_LISTEN,
    ))]
    pub http_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub storage: StorageOpts,
    /// TOML config file (the same file for every role of a cluster)
    #[arg(long, env = "CONCLAVE_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "CONCLAVE_MAX_FRAME_BYTES", help = with_default(
        "The largest client message a gateway may forward (give nodes the gateways' \
         --max-frame-bytes, as the same [limits] or variable does); a bigger one closes \
         its socket with 1009",
        NodeConfig::default().max_frame_bytes,
    ))]
    pub max_frame_bytes: Option<usize>,
    #[arg(long, env = "CONCLAVE_NODES", value_delimiter = ',', help = with_default(
        "Every node of the cluster as id or id=http://host:port, comma separated (the same \
         list the gateways get; also `[nodes]` in the TOML file)",
        "this node alone",
    ))]
    pub nodes: Vec<String>,
    /// Redis for the liveness heartbeat (with --placement: a dynamic cluster)
    #[arg(long, env = "CONCLAVE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// CA certificates (PEM) a rediss:// server's certificate must chain to (else the
    /// system's roots)
    #[arg(long, env = "CONCLAVE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Placement replicas to follow for the ring, comma separated http:// URLs
    #[arg(long, env = "CONCLAVE_PLACEMENT", value_delimiter = ',')]
    pub placement: Vec<String>,
    #[arg(long, env = "CONCLAVE_ADVERTISE_URL", help = with_default(
        "The relay URL gateways should use for this node",
        "http://<relay address>",
    ))]
    pub advertise_url: Option<String>,
    /// Bearer token for the admin endpoints (POST /admin/drain); without it they are off.
    /// Prefer the environment variable or --admin-token-file: the process list shows flags
    #[arg(long, env = "CONCLAVE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File whose first line is the admin token (instead of --admin-token)
    #[arg(long, env = "CONCLAVE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    #[arg(long, env = "CONCLAVE_REGION", help = with_default(
        "This node's region; it runs only rooms homed there (each region has its own ring)",
        NodeConfig::default().region,
    ))]
    pub region: Option<String>,
    #[command(flatten)]
    pub liveness: LivenessOpts,
    #[command(flatten)]
    pub secret: SecretOpts,
    #[command(flatten)]
    pub node: NodeLimitOpts,
    #[command(flatten)]
    pub js: JsOpts,
}

/// What `conclave node` runs with.
#[derive(Clone, Debug)]
pub struct NodeRoleConfig {
    pub id: String,
    /// Redis for the heartbeat (a dynamic cluster).
    pub redis: Option<RedisTarget>,
    pub placement: Vec<String>,
    pub advertise_url: Option<String>,
    pub admin_token: Option<String>,
    pub liveness: LivenessTiming,
    pub relay_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub storage: StorageTarget,
    pub node: NodeConfig,
    pub parties: BTreeMap<String, FileParty>,
    pub js: Option<PartySourceSpec>,
    pub js_engine: JsConfig,
    pub auth: ClusterAuth,
}

impl NodeOpts {
    /// Resolves flags/env over the TOML file over defaults, with the built-in party kinds.
    pub fn resolve(&self) -> anyhow::Result<NodeRoleConfig> {
        self.resolve_with(&PartyKinds::builtin())
    }

    /// Like [`NodeOpts::resolve`], for a binary that serves `kinds`.
    pub fn resolve_with(&self, kinds: &PartyKinds) -> anyhow::Result<NodeRoleConfig> {
        let file = FileConfig::load_opt(self.config.as_ref())?;
        let given_id = self.id.clone().or(file.node.id.clone());
        let id = given_id.clone().unwrap_or_else(|| DEFAULT_NODE_ID.into());
        let mut node = self.node.resolve(&file)?;
        node.node_id = id.clone();
        node.max_frame_bytes = layer(
            self.max_frame_bytes,
            file.limits.max_frame_bytes,
            node.max_frame_bytes,
        );
        node.max_http_body_bytes = layer(
            None,
            file.limits.max_http_body_bytes,
            node.max_http_body_bytes,
        );
        // As long as the gateways wait (`--room-answer-timeout-ms`, a gateway's flag), from
        // the config file they share.
        node.fetch_timeout = layer(
            None,
            millis(file.limits.room_answer_timeout_ms),
            node.fetch_timeout,
        );
        check_answer_timeout(node.fetch_timeout)?;
        if let Some(region) = self.region.clone().or(file.cluster.region.clone()) {
            node.region = valid_region(&region)?;
        }
        node.nodes = self.node_ids(&file);
        if !node.nodes.contains(&id) {
            node.nodes.push(id.clone());
        }
        let redis_url = self.redis_url.clone().or(file.cluster.redis_url.clone());
        let placement = placement_urls(&self.placement, &file);
        if redis_url.is_some() == placement.is_empty() {
            bail!("a dynamic cluster needs both --redis-url and --placement");
        }
        // A dynamic node serves only once its membership lets it (alive and on the ring).
        node.start_fenced = redis_url.is_some();
        let storage = self.storage.target(&file)?;
        let clustered = redis_url.is_some() || node.nodes.len() > 1;
        if clustered && given_id.is_none() {
            bail!(
                "a node of a cluster needs its own --id (or CONCLAVE_NODE_ID): two nodes left \
                 at the default id {DEFAULT_NODE_ID:?} would be one node to the ring and take \
                 each other's rooms"
            );
        }
        if clustered && matches!(storage, StorageTarget::Redb(_)) {
            bail!(
                "node {id}: the nodes of a cluster must share one store, and the embedded one \
                 (redb) is a file of this node alone: a room that moves to another node \
                 would lose its state there, and ownership could not be fenced across nodes. \
                 Give every node the same --postgres-url (or --storage fdb); redb is for \
                 `conclave dev` and single nodes"
            );
        }
        let auth = self.secret.resolve(&file)?;
        let relay_listen = layer(
            self.relay_listen,
            file.node.relay_listen,
            DEFAULT_RELAY_LISTEN,
        );
        internal_listener(relay_listen, &auth, "--relay-listen")?;
        Ok(NodeRoleConfig {
            id,
            redis: match &redis_url {
                Some(url) => Some(redis_of(url, self.redis_ca_file.as_ref(), &file)?),
                None => None,
            },
            placement,
            advertise_url: self
                .advertise_url
                .clone()
                .or(file.node.advertise_url.clone()),
            admin_token: admin_token(self.admin_token.as_ref(), self.admin_token_file.as_ref())?,
            liveness: self.liveness.resolve(&file)?,
            relay_listen,
            http_listen: layer(self.http_listen, file.node.http_listen, DEFAULT_HTTP_LISTEN),
            storage,
            parties: file.parties(kinds)?,
            js: self.js.source(false),
            js_engine: JsConfig {
                answer_limit: node.fetch_timeout,
                ..self.js.engine_config()
            },
            node,
            auth,
        })
    }

    /// The ids of `--nodes` (`id` or `id=url`), else of the file's `[nodes]`.
    fn node_ids(&self, file: &FileConfig) -> Vec<String> {
        if self.nodes.is_empty() {
            return file.nodes.keys().cloned().collect();
        }
        self.nodes
            .iter()
            .map(|n| {
                n.split_once('=')
                    .map_or(n.as_str(), |(id, _)| id)
                    .trim()
                    .to_string()
            })
            .collect()
    }
}

/// Settings of `conclave gateway`: the client-facing edge in front of nodes.
#[derive(Args, Debug, Default, Clone)]
pub struct GatewayOpts {
    #[command(flatten)]
    pub listen: ListenOpts,
    /// Nodes as id=http://host:port, comma separated; rooms are spread over them by
    /// consistent hashing (also `[nodes]` in the TOML file). Not needed with --placement
    #[arg(long, env = "CONCLAVE_NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Placement replicas to follow for the ring, comma separated http:// URLs
    #[arg(long, env = "CONCLAVE_PLACEMENT", value_delimiter = ',')]
    pub placement: Vec<String>,
    /// TOML config file (the same file for every role of a cluster)
    #[arg(long, env = "CONCLAVE_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "CONCLAVE_REGION", help = with_default(
        "This gateway's region: rooms first reached through it live there unless the client \
         asks for another with ?_region=",
        GatewayConfig::default().region,
    ))]
    pub region: Option<String>,
    #[arg(long, env = "CONCLAVE_OPS_LISTEN", help = with_default(
        "Address of /metrics, /admin/*, /healthz and /readyz, apart from the public client \
         port (which serves rooms, /healthz and /readyz only)",
        DEFAULT_GATEWAY_OPS_LISTEN,
    ))]
    pub ops_listen: Option<SocketAddr>,
    #[arg(long, env = "CONCLAVE_DRAIN_DELAY_MS", help = with_default(
        "On SIGTERM, how long /readyz fails before client sockets are closed (1001), so a \
         load balancer stops sending new clients first; its check interval × failures",
        DEFAULT_GATEWAY_DRAIN_DELAY_MS,
    ))]
    pub drain_delay_ms: Option<u64>,
    #[command(flatten)]
    pub secret: SecretOpts,
    #[command(flatten)]
    pub gateway: GatewayLimitOpts,
}

/// What `conclave gateway` runs with.
#[derive(Clone, Debug)]
pub struct GatewayRoleConfig {
    pub listen: SocketAddr,
    pub ops_listen: SocketAddr,
    pub drain_delay: std::time::Duration,
    pub placement: Vec<String>,
    pub gateway: GatewayConfig,
    /// Node id → relay URL.
    pub nodes: BTreeMap<String, String>,
    pub auth: ClusterAuth,
}

impl GatewayOpts {
    pub fn resolve(&self) -> anyhow::Result<GatewayRoleConfig> {
        let file = FileConfig::load_opt(self.config.as_ref())?;
        let nodes = self.nodes(&file)?;
        let placement = placement_urls(&self.placement, &file);
        if nodes.is_empty() && placement.is_empty() {
            bail!("a gateway needs --placement URL,… or its nodes: --nodes id=http://host:port,… or [nodes] in the config");
        }
        let mut gateway = self.gateway.resolve(&file)?;
        if let Some(region) = self.region.clone().or(file.cluster.region.clone()) {
            gateway.region = valid_region(&region)?;
        }
        Ok(GatewayRoleConfig {
            listen: self.listen.resolve(&file),
            ops_listen: layer(
                self.ops_listen,
                file.gateway.ops_listen,
                DEFAULT_GATEWAY_OPS_LISTEN,
            ),
            drain_delay: std::time::Duration::from_millis(layer(
                self.drain_delay_ms,
                file.gateway.drain_delay_ms,
                DEFAULT_GATEWAY_DRAIN_DELAY_MS,
            )),
            placement,
            gateway,
            nodes,
            auth: self.secret.resolve(&file)?,
        })
    }

    /// Node id → relay URL, from `--nodes` (`id=url`), else from the file's `[nodes]`.
    fn nodes(&self, file: &FileConfig) -> anyhow::Result<BTreeMap<String, String>> {
        let mut nodes = BTreeMap::new();
        for spec in &self.nodes {
            let (id, url) = spec
                .split_once('=')
                .with_context(|| format!("--nodes entry {spec:?} is not id=url"))?;
            nodes.insert(id.trim().to_string(), url.trim().to_string());
        }
        if nodes.is_empty() {
            nodes = file.nodes.clone();
        }
        for (id, url) in &nodes {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                bail!("node {id}: address {url:?} must start with http:// (https:// with TLS)");
            }
        }
        Ok(nodes)
    }
}

/// Settings of `conclave placement`: publishes rings from node liveness in Redis.
#[derive(Args, Debug, Default, Clone)]
pub struct PlacementOpts {
    /// Redis holding node heartbeats: redis://host:port (rediss:// for TLS)
    #[arg(long, env = "CONCLAVE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// TOML config file (the same file for every role of a cluster)
    #[arg(long, env = "CONCLAVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// CA certificates (PEM) a rediss:// server's certificate must chain to (else the
    /// system's roots)
    #[arg(long, env = "CONCLAVE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    #[arg(long, env = "CONCLAVE_PLACEMENT_LISTEN", help = with_default(
        "Address of the placement gRPC service (port 0 picks one)",
        DEFAULT_PLACEMENT_LISTEN,
    ))]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "CONCLAVE_HTTP_LISTEN", help = with_default(
        "Address of /metrics, /healthz and /readyz (ready while Redis answers)",
        DEFAULT_PLACEMENT_HTTP_LISTEN,
    ))]
    pub http_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub liveness: LivenessOpts,
    #[command(flatten)]
    pub secret: SecretOpts,
}

/// What `conclave placement` runs with.
#[derive(Clone, Debug)]
pub struct PlacementRoleConfig {
    pub redis: RedisTarget,
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub liveness: LivenessTiming,
    pub auth: ClusterAuth,
}

impl PlacementOpts {
    pub fn resolve(&self) -> anyhow::Result<PlacementRoleConfig> {
        let file = FileConfig::load_opt(self.config.as_ref())?;
        let auth = self.secret.resolve(&file)?;
        let listen = layer(self.listen, file.placement.listen, DEFAULT_PLACEMENT_LISTEN);
        internal_listener(listen, &auth, "--listen")?;
        let redis_url = self
            .redis_url
            .clone()
            .or(file.cluster.redis_url.clone())
            .context("placement needs --redis-url (or redis_url in [cluster])")?;
        Ok(PlacementRoleConfig {
            redis: redis_of(&redis_url, self.redis_ca_file.as_ref(), &file)?,
            listen,
            http_listen: layer(
                self.http_listen,
                file.placement.http_listen,
                DEFAULT_PLACEMENT_HTTP_LISTEN,
            ),
            liveness: self.liveness.resolve(&file)?,
            auth,
        })
    }
}
