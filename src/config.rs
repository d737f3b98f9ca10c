//! Settings: command-line flags, then `CONCLAVE_*` environment variables, then the TOML
//! file (`--config`), then defaults. Each role's clap `*Opts` plus the [`FileConfig`]
//! resolve into the `*Config` types the roles use. Gateway and node limits are option
//! groups shared by `dev` and the cluster roles.

use crate::dev::DevConfig;
use anyhow::{bail, Context};
use clap::Args;
use conclave_gateway::{GatewayConfig, JwtAlgorithm, PartyAuth};
use conclave_node::NodeConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Edge settings (gateway). Each flag also reads `CONCLAVE_<NAME>`.
#[derive(Args, Debug, Default, Clone)]
pub struct GatewayLimitOpts {
    /// Bearer token for /admin/cluster and /admin/rooms/:party/:room; without it they are off
    #[arg(long, env = "CONCLAVE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Largest WebSocket message in bytes; larger closes the socket with 1009 [default: 1048576]
    #[arg(long, env = "CONCLAVE_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Frames queued per connection before it is closed as a slow consumer (1013) [default: 1024]
    #[arg(long, env = "CONCLAVE_SEND_QUEUE_FRAMES")]
    pub send_queue_frames: Option<usize>,
    /// Bytes queued per connection before it is closed as a slow consumer (1013) [default: 4194304]
    #[arg(long, env = "CONCLAVE_SEND_QUEUE_BYTES")]
    pub send_queue_bytes: Option<usize>,
    /// Messages per second a connection may send, sustained; over closes with 1008 [default: 100]
    #[arg(long, env = "CONCLAVE_MESSAGES_PER_SECOND")]
    pub messages_per_second: Option<f64>,
    /// Burst of messages above the sustained rate [default: 200]
    #[arg(long, env = "CONCLAVE_MESSAGE_BURST")]
    pub message_burst: Option<f64>,
    /// Keepalive ping interval in ms; clients silent for two intervals are closed [default: 15000]
    #[arg(long, env = "CONCLAVE_PING_INTERVAL_MS")]
    pub ping_interval_ms: Option<u64>,
    /// Client bytes per connection held until the node acknowledges them (replayed on failover); past it the socket is not read [default: 262144]
    #[arg(long, env = "CONCLAVE_REPLAY_BUFFER_BYTES")]
    pub replay_buffer_bytes: Option<usize>,
    /// How long a socket whose node died may wait for the room's next owner before it is closed with 1012, in ms [default: 30000]
    #[arg(long, env = "CONCLAVE_REATTACH_TIMEOUT_MS")]
    pub reattach_timeout_ms: Option<u64>,
}

/// Room runtime limits (node). Each flag also reads `CONCLAVE_<NAME>`.
#[derive(Args, Debug, Default, Clone)]
pub struct NodeLimitOpts {
    /// Connections per room; more get HTTP 503 before the upgrade [default: 10000]
    #[arg(long, env = "CONCLAVE_MAX_CONNECTIONS_PER_ROOM")]
    pub max_connections_per_room: Option<usize>,
    /// Idle time in ms after which a room leaves memory (hibernates) [default: 30000]
    #[arg(long, env = "CONCLAVE_HIBERNATE_AFTER_MS")]
    pub hibernate_after_ms: Option<u64>,
}

/// Liveness timing (nodes and placement must agree). Each flag also reads `CONCLAVE_<NAME>`.
#[derive(Args, Debug, Default, Clone)]
pub struct LivenessOpts {
    /// How often a node renews its heartbeat in Redis, in ms [default: 500]
    #[arg(long, env = "CONCLAVE_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// How long a heartbeat lives; a node that cannot renew fences itself at 3/4 of it [default: 2000]
    #[arg(long, env = "CONCLAVE_HEARTBEAT_TTL_MS")]
    pub heartbeat_ttl_ms: Option<u64>,
}

impl LivenessOpts {
    pub fn resolve(&self) -> anyhow::Result<conclave_placement::LivenessTiming> {
        let t = conclave_placement::LivenessTiming::from_heartbeat_and_ttl(
            Duration::from_millis(self.heartbeat_ms.unwrap_or(500)),
            Duration::from_millis(self.heartbeat_ttl_ms.unwrap_or(2000)),
        );
        t.check()
            .map_err(|e| anyhow::anyhow!("liveness timing: {e}"))?;
        Ok(t)
    }
}

/// Settings of `conclave placement`: publishes rings from node liveness in Redis.
#[derive(Args, Debug, Default, Clone)]
pub struct PlacementOpts {
    /// Redis holding node heartbeats: redis://host:port
    #[arg(long, env = "CONCLAVE_REDIS_URL")]
    pub redis_url: String,
    /// Address of the placement gRPC service (port 0 picks one) [default: 127.0.0.1:7300]
    #[arg(long, env = "CONCLAVE_PLACEMENT_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub liveness: LivenessOpts,
}

/// Where the client-facing server listens (`dev`, `gateway`).
#[derive(Args, Debug, Default, Clone)]
pub struct ListenOpts {
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "CONCLAVE_HOST")]
    pub host: Option<IpAddr>,
    /// Port to listen on (0 picks a free one) [default: 1999]
    #[arg(long, env = "CONCLAVE_PORT")]
    pub port: Option<u16>,
}

impl ListenOpts {
    pub fn resolve(&self, file: &FileConfig) -> SocketAddr {
        let host = self
            .host
            .or(file.host)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        SocketAddr::new(host, self.port.or(file.port).unwrap_or(1999))
    }
}

/// Where rooms are stored (`dev`, `node`).
#[derive(Args, Debug, Default, Clone)]
pub struct StorageOpts {
    /// Room storage backend: redb (embedded file), postgres or fdb (FoundationDB; needs a
    /// build with the `fdb` cargo feature) [default: postgres with --postgres-url, else redb]
    #[arg(long, env = "CONCLAVE_STORAGE")]
    pub storage: Option<StorageKind>,
    /// Directory of the embedded database [default: .conclave]
    #[arg(long, env = "CONCLAVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL for room storage: postgres://user@host:port/db
    #[arg(long, env = "CONCLAVE_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// FoundationDB cluster file, with --storage fdb [default: the client's default]
    #[arg(long, env = "FDB_CLUSTER_FILE")]
    pub fdb_cluster_file: Option<String>,
    /// FoundationDB directory of this Conclave cluster's rooms: conclave/<name> [default: default]
    #[arg(long, env = "CONCLAVE_FDB_DIRECTORY")]
    pub fdb_directory: Option<String>,
}

#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Redb,
    Postgres,
    Fdb,
}

impl StorageOpts {
    fn data_dir(&self, file: &FileConfig) -> PathBuf {
        self.data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(".conclave"))
    }

    /// Where rooms are stored: flags/env over the file over defaults.
    pub fn target(&self, file: &FileConfig) -> anyhow::Result<StorageTarget> {
        let postgres_url = self.postgres_url.clone().or(file.postgres_url.clone());
        let kind = self
            .storage
            .or(file.storage)
            .unwrap_or(if postgres_url.is_some() {
                StorageKind::Postgres
            } else {
                StorageKind::Redb
            });
        Ok(match kind {
            StorageKind::Redb => StorageTarget::Redb(self.data_dir(file)),
            StorageKind::Postgres => StorageTarget::Postgres(
                postgres_url.context("--storage postgres needs --postgres-url")?,
            ),
            StorageKind::Fdb => StorageTarget::Fdb {
                cluster_file: self
                    .fdb_cluster_file
                    .clone()
                    .unwrap_or_else(|| "/etc/foundationdb/fdb.cluster".into()),
                directory: self
                    .fdb_directory
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            },
        })
    }
}

/// Where a node keeps its rooms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageTarget {
    /// The embedded redb file in this directory.
    Redb(PathBuf),
    Postgres(String),
    /// FoundationDB, under the directory `conclave/<directory>`.
    Fdb {
        cluster_file: String,
        directory: String,
    },
}

impl std::fmt::Display for StorageTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageTarget::Redb(dir) => write!(f, "{}", dir.display()),
            StorageTarget::Postgres(_) => f.write_str("PostgreSQL"),
            StorageTarget::Fdb {
                cluster_file,
                directory,
            } => write!(f, "FoundationDB ({cluster_file}, conclave/{directory})"),
        }
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
}

/// Settings of `conclave node`: hosts rooms, serves gateways over gRPC.
#[derive(Args, Debug, Default, Clone)]
pub struct NodeOpts {
    /// This node's id, as gateways name it in their node list [default: node]
    #[arg(long, env = "CONCLAVE_NODE_ID")]
    pub id: Option<String>,
    /// Address of the relay gRPC service gateways connect to (port 0 picks one) [default: 127.0.0.1:7100]
    #[arg(long, env = "CONCLAVE_RELAY_LISTEN")]
    pub relay_listen: Option<SocketAddr>,
    /// Address of /metrics, /healthz and /readyz [default: 127.0.0.1:7101]
    #[arg(long, env = "CONCLAVE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub storage: StorageOpts,
    /// TOML config file (the same file for every role of a cluster)
    #[arg(long, env = "CONCLAVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Every node of the cluster as id or id=http://host:port, comma separated (the same
    /// list the gateways get; also `[nodes]` in the TOML file) [default: this node alone]
    #[arg(long, env = "CONCLAVE_NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Redis for the liveness heartbeat (with --placement: a dynamic cluster)
    #[arg(long, env = "CONCLAVE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Placement replicas to follow for the ring, comma separated http:// URLs
    #[arg(long, env = "CONCLAVE_PLACEMENT", value_delimiter = ',')]
    pub placement: Vec<String>,
    /// The relay URL gateways should use for this node [default: http://<relay address>]
    #[arg(long, env = "CONCLAVE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Bearer token for the admin endpoints (POST /admin/drain); without it they are off
    #[arg(long, env = "CONCLAVE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// This node's region; it runs only rooms homed there (each region has its own ring) [default: default]
    #[arg(long, env = "CONCLAVE_REGION")]
    pub region: Option<String>,
    #[command(flatten)]
    pub liveness: LivenessOpts,
    #[command(flatten)]
    pub node: NodeLimitOpts,
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
    /// This gateway's region: rooms first reached through it live there unless the client
    /// asks for another with ?_region= [default: default]
    #[arg(long, env = "CONCLAVE_REGION")]
    pub region: Option<String>,
    #[command(flatten)]
    pub gateway: GatewayLimitOpts,
}

/// The TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub postgres_url: Option<String>,
    pub storage: Option<StorageKind>,
    #[serde(default)]
    pub limits: FileLimits,
    /// Party name → what serves it. Merged over the defaults
    /// (`main` = relay, `chat`, `presence`, `counter`).
    #[serde(default)]
    pub parties: BTreeMap<String, FileParty>,
    /// Node id → relay address, for gateways.
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_frame_bytes: Option<usize>,
    pub send_queue_frames: Option<usize>,
    pub send_queue_bytes: Option<usize>,
    pub messages_per_second: Option<f64>,
    pub message_burst: Option<f64>,
    pub max_connections_per_room: Option<usize>,
    pub ping_interval_ms: Option<u64>,
    pub hibernate_after_ms: Option<u64>,
    pub max_http_body_bytes: Option<usize>,
    pub replay_buffer_bytes: Option<usize>,
    pub reattach_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileParty {
    /// A built-in party: relay, chat, presence or counter.
    pub kind: String,
    pub auth: Option<FileAuth>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// Name of an environment variable holding the HS256 secret.
    pub secret_env: Option<String>,
    /// PEM file with the RS256/ES256 public key.
    pub public_key_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    fn load_opt(path: Option<&PathBuf>) -> anyhow::Result<Self> {
        path.map_or_else(|| Ok(Self::default()), |p| Self::load(p))
    }

    /// The party table: defaults, then the file's entries, each checked.
    pub fn parties(&self) -> anyhow::Result<BTreeMap<String, FileParty>> {
        let mut parties = default_parties();
        parties.extend(self.parties.clone());
        for (name, p) in &parties {
            conclave_proto::PartyName::new(name).with_context(|| format!("party name {name:?}"))?;
            if !conclave_node::parties::BUILTIN_KINDS.contains(&p.kind.as_str()) {
                bail!(
                    "party {name}: unknown kind {:?} (built-in kinds: {:?})",
                    p.kind,
                    conclave_node::parties::BUILTIN_KINDS
                );
            }
        }
        Ok(parties)
    }
}

/// The default party table.
pub fn default_parties() -> BTreeMap<String, FileParty> {
    [
        ("main", "relay"),
        ("chat", "chat"),
        ("presence", "presence"),
        ("counter", "counter"),
    ]
    .into_iter()
    .map(|(n, k)| {
        (
            n.to_string(),
            FileParty {
                kind: k.to_string(),
                auth: None,
            },
        )
    })
    .collect()
}

fn party_auth(name: &str, a: &FileAuth) -> anyhow::Result<PartyAuth> {
    let material = match a.algorithm {
        JwtAlgorithm::HS256 => match (&a.secret, &a.secret_env) {
            (Some(s), _) => s.clone(),
            (None, Some(var)) => std::env::var(var)
                .with_context(|| format!("party {name}: env var {var} is not set"))?,
            (None, None) => bail!("party {name}: HS256 needs `secret` or `secret_env`"),
        },
        JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
            let file = a
                .public_key_file
                .as_ref()
                .with_context(|| format!("party {name}: needs `public_key_file`"))?;
            std::fs::read_to_string(file)
                .with_context(|| format!("party {name}: cannot read {}", file.display()))?
        }
    };
    PartyAuth::new(
        a.algorithm,
        &material,
        a.issuer.as_deref(),
        a.audience.as_deref(),
    )
    .with_context(|| format!("party {name}"))
}

impl GatewayLimitOpts {
    /// The gateway's settings, with per-party auth from the file.
    pub fn resolve(&self, file: &FileConfig) -> anyhow::Result<GatewayConfig> {
        let l = &file.limits;
        let d = GatewayConfig::default();
        let mut g = GatewayConfig {
            max_frame_bytes: self
                .max_frame_bytes
                .or(l.max_frame_bytes)
                .unwrap_or(d.max_frame_bytes),
            send_queue_frames: self
                .send_queue_frames
                .or(l.send_queue_frames)
                .unwrap_or(d.send_queue_frames),
            send_queue_bytes: self
                .send_queue_bytes
                .or(l.send_queue_bytes)
                .unwrap_or(d.send_queue_bytes),
            messages_per_second: self
                .messages_per_second
                .or(l.messages_per_second)
                .unwrap_or(d.messages_per_second),
            message_burst: self
                .message_burst
                .or(l.message_burst)
                .unwrap_or(d.message_burst),
            ping_interval: self
                .ping_interval_ms
                .or(l.ping_interval_ms)
                .map_or(d.ping_interval, Duration::from_millis),
            max_http_body_bytes: l.max_http_body_bytes.unwrap_or(d.max_http_body_bytes),
            replay_buffer_bytes: self
                .replay_buffer_bytes
                .or(l.replay_buffer_bytes)
                .unwrap_or(d.replay_buffer_bytes),
            reattach_timeout: self
                .reattach_timeout_ms
                .or(l.reattach_timeout_ms)
                .map_or(d.reattach_timeout, Duration::from_millis),
            admin_token: self.admin_token.clone(),
            ..d
        };
        for (name, p) in file.parties()? {
            if let Some(a) = &p.auth {
                g.auth.insert(name.clone(), party_auth(&name, a)?);
            }
        }
        if g.max_frame_bytes < 125 {
            bail!("max_frame_bytes must be at least 125");
        }
        if g.send_queue_bytes < g.max_frame_bytes {
            bail!("send_queue_bytes must be at least max_frame_bytes");
        }
        if g.send_queue_frames == 0 || g.messages_per_second <= 0.0 || g.message_burst < 1.0 {
            bail!("send_queue_frames, messages_per_second and message_burst must be positive");
        }
        if g.ping_interval < Duration::from_millis(100) {
            bail!("ping_interval_ms must be at least 100");
        }
        Ok(g)
    }
}

impl NodeLimitOpts {
    pub fn resolve(&self, file: &FileConfig) -> anyhow::Result<NodeConfig> {
        let l = &file.limits;
        let d = NodeConfig::default();
        let n = NodeConfig {
            max_connections_per_room: self
                .max_connections_per_room
                .or(l.max_connections_per_room)
                .unwrap_or(d.max_connections_per_room),
            hibernate_after: self
                .hibernate_after_ms
                .or(l.hibernate_after_ms)
                .map_or(d.hibernate_after, Duration::from_millis),
            ..d
        };
        if n.max_connections_per_room == 0 {
            bail!("max_connections_per_room must be positive");
        }
        Ok(n)
    }
}

impl DevOpts {
    /// Resolves flags/env over the TOML file over defaults.
    pub fn resolve(&self) -> anyhow::Result<DevConfig> {
        let file = FileConfig::load_opt(self.config.as_ref())?;
        Ok(DevConfig {
            listen: self.listen.resolve(&file),
            storage: self.storage.target(&file)?,
            gateway: self.gateway.resolve(&file)?,
            node: self.node.resolve(&file)?,
            parties: file.parties()?,
        })
    }
}

/// What `conclave node` runs with.
#[derive(Clone, Debug)]
pub struct NodeRoleConfig {
    pub id: String,
    pub redis_url: Option<String>,
    pub placement: Vec<String>,
    pub advertise_url: Option<String>,
    pub admin_token: Option<String>,
    pub liveness: conclave_placement::LivenessTiming,
    pub relay_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub storage: StorageTarget,
    pub node: NodeConfig,
    pub parties: BTreeMap<String, FileParty>,
}

impl NodeOpts {
    pub fn resolve(&self) -> anyhow::Result<NodeRoleConfig> {
        let file = FileConfig::load_opt(self.config.as_ref())?;
        let id = self.id.clone().unwrap_or_else(|| "node".into());
        let mut node = self.node.resolve(&file)?;
        node.node_id = id.clone();
        if let Some(region) = &self.region {
            node.region = valid_region(region)?;
        }
        node.nodes = if self.nodes.is_empty() {
            file.nodes.keys().cloned().collect()
        } else {
            self.nodes
                .iter()
                .map(|n| {
                    n.split_once('=')
                        .map_or(n.as_str(), |(id, _)| id)
                        .trim()
                        .to_string()
                })
                .collect()
        };
        if !node.nodes.contains(&id) {
            node.nodes.push(id.clone());
        }
        if self.redis_url.is_some() == self.placement.is_empty() {
            bail!("a dynamic cluster needs both --redis-url and --placement");
        }
        Ok(NodeRoleConfig {
            id,
            redis_url: self.redis_url.clone(),
            placement: self.placement.clone(),
            advertise_url: self.advertise_url.clone(),
            admin_token: self.admin_token.clone(),
            liveness: self.liveness.resolve()?,
            relay_listen: self
                .relay_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7100))),
            http_listen: self
                .http_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7101))),
            storage: self.storage.target(&file)?,
            node,
            parties: file.parties()?,
        })
    }
}

/// What `conclave placement` runs with.
#[derive(Clone, Debug)]
pub struct PlacementRoleConfig {
    pub redis_url: String,
    pub listen: SocketAddr,
    pub liveness: conclave_placement::LivenessTiming,
}

impl PlacementOpts {
    pub fn resolve(&self) -> anyhow::Result<PlacementRoleConfig> {
        Ok(PlacementRoleConfig {
            redis_url: self.redis_url.clone(),
            listen: self
                .listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7300))),
            liveness: self.liveness.resolve()?,
        })
    }
}

/// What `conclave gateway` runs with.
#[derive(Clone, Debug)]
pub struct GatewayRoleConfig {
    pub listen: SocketAddr,
    pub placement: Vec<String>,
    pub gateway: GatewayConfig,
    /// Node id → relay URL.
    pub nodes: BTreeMap<String, String>,
}

impl GatewayOpts {
    pub fn resolve(&self) -> anyhow::Result<GatewayRoleConfig> {
        let file = FileConfig::load_opt(self.config.as_ref())?;
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
        if nodes.is_empty() && self.placement.is_empty() {
            bail!("a gateway needs --placement URL,… or its nodes: --nodes id=http://host:port,… or [nodes] in the config");
        }
        for (id, url) in &nodes {
            if !url.starts_with("http://") {
                bail!("node {id}: address {url:?} must start with http://");
            }
        }
        let mut gateway = self.gateway.resolve(&file)?;
        if let Some(region) = &self.region {
            gateway.region = valid_region(region)?;
        }
        Ok(GatewayRoleConfig {
            listen: self.listen.resolve(&file),
            placement: self.placement.clone(),
            gateway,
            nodes,
        })
    }
}

/// A region name: 1–64 characters of `[A-Za-z0-9._-]`.
fn valid_region(r: &str) -> anyhow::Result<String> {
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("region {r:?}: use 1-64 characters of letters, digits, '.', '_' and '-'");
    }
    Ok(r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "port = 2000\n[limits]\nmax_frame_bytes = 4096\nmessage_burst = 5\n[parties.secure]\nkind = \"chat\"\n[parties.secure.auth]\nalgorithm = \"HS256\"\nsecret = \"x\"\n",
        )
        .unwrap();
        let opts = DevOpts {
            config: Some(path),
            gateway: GatewayLimitOpts {
                max_frame_bytes: Some(2048),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = opts.resolve().unwrap();
        assert_eq!(c.listen.port(), 2000);
        assert_eq!(c.gateway.max_frame_bytes, 2048);
        assert_eq!(c.gateway.message_burst, 5.0);
        assert_eq!(c.gateway.messages_per_second, 100.0);
        assert_eq!(c.parties["secure"].kind, "chat");
        assert_eq!(c.parties["main"].kind, "relay");
        assert!(c.gateway.auth.contains_key("secure"));
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[parties.x]\nkind = \"nope\"\n").unwrap();
        let e = DevOpts {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{e:#}").contains("unknown kind"), "{e:#}");
        std::fs::write(&path, "prot = 1\n").unwrap();
        let e = DevOpts {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{e:#}").contains("unknown field"), "{e:#}");
    }
}
