//! Settings: command-line flags, then `CONCLAVE_*` environment variables, then the TOML
//! file (`--config`), then defaults. `DevOpts` (clap) + `FileConfig` (TOML) resolve into
//! the `*Config` types the roles use.

use crate::dev::DevConfig;
use anyhow::{bail, Context};
use clap::Args;
use conclave_gateway::{GatewayConfig, JwtAlgorithm, PartyAuth};
use conclave_node::NodeConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Settings of `conclave dev`. Each flag also reads `CONCLAVE_<NAME>`; the TOML file
/// gives the value when neither is set.
#[derive(Args, Debug, Default, Clone)]
pub struct DevOpts {
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "CONCLAVE_HOST")]
    pub host: Option<IpAddr>,
    /// Port to listen on (0 picks a free one) [default: 1999]
    #[arg(long, env = "CONCLAVE_PORT")]
    pub port: Option<u16>,
    /// Directory of the embedded database [default: .conclave]
    #[arg(long, env = "CONCLAVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file: parties, auth, limits (see README "Configuration")
    #[arg(long, env = "CONCLAVE_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// Connections per room; more get HTTP 503 before the upgrade [default: 10000]
    #[arg(long, env = "CONCLAVE_MAX_CONNECTIONS_PER_ROOM")]
    pub max_connections_per_room: Option<usize>,
    /// Keepalive ping interval in ms; clients silent for two intervals are closed [default: 15000]
    #[arg(long, env = "CONCLAVE_PING_INTERVAL_MS")]
    pub ping_interval_ms: Option<u64>,
    /// Idle time in ms after which a room leaves memory (hibernates) [default: 30000]
    #[arg(long, env = "CONCLAVE_HIBERNATE_AFTER_MS")]
    pub hibernate_after_ms: Option<u64>,
}

/// The TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub limits: FileLimits,
    /// Party name → what serves it. Merged over the defaults
    /// (`main` = relay, `chat`, `presence`, `counter`).
    #[serde(default)]
    pub parties: BTreeMap<String, FileParty>,
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
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
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

impl DevOpts {
    /// Resolves flags/env over the TOML file over defaults.
    pub fn resolve(&self) -> anyhow::Result<DevConfig> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let l = &file.limits;
        let host = self
            .host
            .or(file.host)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let port = self.port.or(file.port).unwrap_or(1999);
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(".conclave"));

        let mut gateway = GatewayConfig::default();
        gateway.max_frame_bytes = self
            .max_frame_bytes
            .or(l.max_frame_bytes)
            .unwrap_or(gateway.max_frame_bytes);
        gateway.send_queue_frames = self
            .send_queue_frames
            .or(l.send_queue_frames)
            .unwrap_or(gateway.send_queue_frames);
        gateway.send_queue_bytes = self
            .send_queue_bytes
            .or(l.send_queue_bytes)
            .unwrap_or(gateway.send_queue_bytes);
        gateway.messages_per_second = self
            .messages_per_second
            .or(l.messages_per_second)
            .unwrap_or(gateway.messages_per_second);
        gateway.message_burst = self
            .message_burst
            .or(l.message_burst)
            .unwrap_or(gateway.message_burst);
        if let Some(ms) = self.ping_interval_ms.or(l.ping_interval_ms) {
            gateway.ping_interval = Duration::from_millis(ms);
        }
        gateway.max_http_body_bytes = l.max_http_body_bytes.unwrap_or(gateway.max_http_body_bytes);

        let mut node = NodeConfig::default();
        node.max_connections_per_room = self
            .max_connections_per_room
            .or(l.max_connections_per_room)
            .unwrap_or(node.max_connections_per_room);
        if let Some(ms) = self.hibernate_after_ms.or(l.hibernate_after_ms) {
            node.hibernate_after = Duration::from_millis(ms);
        }

        let mut parties = default_parties();
        parties.extend(file.parties);
        for (name, p) in &parties {
            conclave_proto::PartyName::new(name).with_context(|| format!("party name {name:?}"))?;
            if !conclave_node::parties::BUILTIN_KINDS.contains(&p.kind.as_str()) {
                bail!(
                    "party {name}: unknown kind {:?} (built-in kinds: {:?})",
                    p.kind,
                    conclave_node::parties::BUILTIN_KINDS
                );
            }
            if let Some(a) = &p.auth {
                gateway.auth.insert(name.clone(), party_auth(name, a)?);
            }
        }
        validate(&gateway, &node)?;
        Ok(DevConfig {
            listen: SocketAddr::new(host, port),
            data_dir,
            gateway,
            node,
            parties,
        })
    }
}

fn validate(g: &GatewayConfig, n: &NodeConfig) -> anyhow::Result<()> {
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
    if n.max_connections_per_room == 0 {
        bail!("max_connections_per_room must be positive");
    }
    Ok(())
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
            max_frame_bytes: Some(2048),
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
