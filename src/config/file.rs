//! The TOML file (`--config`), the same for every role of a cluster, and the party table
//! it configures: which party kind serves each name, and with what auth.

use super::kinds::PartyKinds;
use super::layer::bound;
use anyhow::{bail, Context};
use conclave_gateway::{JwtAlgorithm, JwtRules, PartyAuth};
use conclave_node::parties::yjs::{Yjs, YjsOptions};
use conclave_node::{PartyRegistry, StorageQuota};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// A room storage backend (`--storage`, `storage`).
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Redb,
    Postgres,
    Fdb,
}

/// The TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub postgres_url: Option<String>,
    pub postgres_pool_size: Option<usize>,
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
    /// What every role of a cluster shares.
    #[serde(default)]
    pub cluster: FileCluster,
    /// Settings only nodes read.
    #[serde(default)]
    pub node: FileNode,
    /// Settings only gateways read.
    #[serde(default)]
    pub gateway: FileGateway,
    /// Settings only placement replicas read.
    #[serde(default)]
    pub placement: FilePlacement,
}

/// `[cluster]`: the same flags as every role's, for the settings a cluster's roles share.
/// Paths, not secrets: the cluster secret and tokens stay in files or the environment.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    pub region: Option<String>,
    pub redis_url: Option<String>,
    pub redis_ca_file: Option<PathBuf>,
    pub placement: Option<Vec<String>>,
    pub postgres_ca_file: Option<PathBuf>,
    pub fdb_cluster_file: Option<String>,
    pub fdb_directory: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_reload_ms: Option<u64>,
    pub heartbeat_ms: Option<u64>,
    pub heartbeat_ttl_ms: Option<u64>,
}

/// `[node]`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileNode {
    pub id: Option<String>,
    pub advertise_url: Option<String>,
    pub relay_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
}

/// `[gateway]` (its client address is the top-level `host` and `port`).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileGateway {
    pub ops_listen: Option<SocketAddr>,
    pub drain_delay_ms: Option<u64>,
}

/// `[placement]`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FilePlacement {
    pub listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
}

/// `[limits]`: the same settings as the limit flags, plus `max_http_body_bytes`.
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
    pub room_answer_timeout_ms: Option<u64>,
    pub max_connections_per_address: Option<usize>,
    pub address_messages_per_second: Option<f64>,
    pub address_message_burst: Option<f64>,
    pub address_connects_per_second: Option<f64>,
    pub address_connect_burst: Option<f64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_room_storage_bytes: Option<u64>,
    pub max_room_storage_keys: Option<u64>,
    pub max_party_storage_bytes: Option<u64>,
    pub max_party_storage_keys: Option<u64>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileParty {
    /// A built-in kind (relay, chat, presence, counter, yjs) or one the binary added.
    pub kind: String,
    pub auth: Option<FileAuth>,
    /// The `yjs` kind's settings (`[parties.NAME.yjs]`).
    pub yjs: Option<YjsOptions>,
    /// The party's own storage quota (`[parties.NAME.storage]`).
    pub storage: Option<FileStorageQuota>,
}

/// `[parties.NAME.storage]`: bounds of the party's own (0: none); those not given are the
/// `[limits]` ones.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct FileStorageQuota {
    pub max_room_bytes: Option<u64>,
    pub max_room_keys: Option<u64>,
    pub max_party_bytes: Option<u64>,
    pub max_party_keys: Option<u64>,
}

impl FileStorageQuota {
    /// This party's quota: its own bounds over `defaults`.
    pub fn over(&self, defaults: StorageQuota) -> StorageQuota {
        let pick = |own: Option<u64>, default| own.map_or(default, bound);
        StorageQuota {
            room_bytes: pick(self.max_room_bytes, defaults.room_bytes),
            room_keys: pick(self.max_room_keys, defaults.room_keys),
            party_bytes: pick(self.max_party_bytes, defaults.party_bytes),
            party_keys: pick(self.max_party_keys, defaults.party_keys),
        }
    }
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
    /// `iss` required and equal to this.
    pub issuer: Option<String>,
    /// `aud` required and containing this.
    pub audience: Option<String>,
    /// Accept tokens without `exp` (never expiring). Default false.
    #[serde(default)]
    pub allow_no_exp: bool,
    /// A claim (e.g. "sub") that must equal a socket's connection id (`_pk`).
    pub bind_id_to: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// The file at `path`, or an empty one.
    pub(super) fn load_opt(path: Option<&PathBuf>) -> anyhow::Result<Self> {
        path.map_or_else(|| Ok(Self::default()), |p| Self::load(p))
    }

    /// The party table of a process that runs parties: `kinds`' defaults, then the file's
    /// entries, each naming one of `kinds`.
    pub fn parties(&self, kinds: &PartyKinds) -> anyhow::Result<BTreeMap<String, FileParty>> {
        let mut parties: BTreeMap<String, FileParty> = kinds
            .default_parties()
            .into_iter()
            .map(|(name, kind)| {
                let party = FileParty {
                    kind,
                    auth: None,
                    yjs: None,
                    storage: None,
                };
                (name, party)
            })
            .collect();
        parties.extend(self.parties.clone());
        for (name, p) in &parties {
            conclave_proto::PartyName::new(name).with_context(|| format!("party name {name:?}"))?;
            if !kinds.contains(&p.kind) {
                bail!(
                    "party {name}: unknown kind {:?} (kinds: {:?})",
                    p.kind,
                    kinds.names()
                );
            }
            if let Some(yjs) = &p.yjs {
                if p.kind != "yjs" {
                    bail!(
                        "party {name}: [parties.{name}.yjs] is for kind \"yjs\", not {:?}",
                        p.kind
                    );
                }
                yjs.validate()
                    .map_err(|e| anyhow::anyhow!("party {name}: yjs: {e}"))?;
            }
        }
        Ok(parties)
    }

    /// The JWT checks of the file's parties that have `auth`. A gateway runs no party, so
    /// it does not need to know their kinds (the kinds of your own binary's nodes, say).
    pub(super) fn party_auth(&self) -> anyhow::Result<Vec<(String, PartyAuth)>> {
        let mut auth = Vec::new();
        for (name, p) in &self.parties {
            conclave_proto::PartyName::new(name).with_context(|| format!("party name {name:?}"))?;
            if let Some(a) = &p.auth {
                auth.push((name.clone(), party_auth(name, a)?));
            }
        }
        Ok(auth)
    }
}

/// The default party table of the `conclave` binary (built-in kinds only).
pub fn default_parties() -> BTreeMap<String, FileParty> {
    FileConfig::default()
        .parties(&PartyKinds::builtin())
        .unwrap_or_default()
}

/// A registry serving each party of `table` with its kind from `kinds` (a `yjs` party
/// with settings of its own gets them).
pub fn registry_for(table: &BTreeMap<String, FileParty>, kinds: &PartyKinds) -> PartyRegistry {
    let registry = kinds.registry(
        table
            .iter()
            .filter(|(_, p)| p.yjs.is_none())
            .map(|(name, p)| (name.as_str(), p.kind.as_str())),
    );
    table
        .iter()
        .fold(registry, |registry, (name, p)| match &p.yjs {
            Some(options) => {
                let options = options.clone();
                registry.with_factory(name, move || {
                    Box::new(Yjs::new(options.clone())) as Box<dyn conclave_node::Party>
                })
            }
            None => registry,
        })
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
    let rules = JwtRules {
        issuer: a.issuer.clone(),
        audience: a.audience.clone(),
        allow_no_exp: a.allow_no_exp,
        bind_id_to: a.bind_id_to.clone(),
    };
    PartyAuth::new(a.algorithm, &material, rules).with_context(|| format!("party {name}"))
}
