//! Limit options shared by `dev` and the cluster roles: the gateway's (per connection) and
//! the node's (per room). Their defaults are `GatewayConfig::default()` and
//! `NodeConfig::default()`.

use super::file::{FileConfig, FileLimits};
use super::layer::{admin_token, bound, bound_or_zero, layer, millis, with_default};
use anyhow::bail;
use clap::Args;
use conclave_gateway::GatewayConfig;
use conclave_node::{NodeConfig, StorageQuota};
use std::time::Duration;

fn gateway() -> GatewayConfig {
    GatewayConfig::default()
}

fn node() -> NodeConfig {
    NodeConfig::default()
}

/// Edge settings (gateway). Each flag also reads `CONCLAVE_<NAME>`.
#[derive(Args, Debug, Default, Clone)]
pub struct GatewayLimitOpts {
    /// Bearer token for /admin/cluster and /admin/rooms/:party/:room; without it they are off.
    /// Prefer the environment variable or --admin-token-file: the process list shows flags
    #[arg(long, env = "CONCLAVE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File whose first line is the admin token (instead of --admin-token)
    #[arg(long, env = "CONCLAVE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    #[arg(long, env = "CONCLAVE_MAX_FRAME_BYTES", help = with_default(
        "Largest WebSocket message in bytes; larger closes the socket with 1009",
        gateway().max_frame_bytes,
    ))]
    pub max_frame_bytes: Option<usize>,
    #[arg(long, env = "CONCLAVE_SEND_QUEUE_FRAMES", help = with_default(
        "Frames queued per connection before it is closed as a slow consumer (1013)",
        gateway().send_queue_frames,
    ))]
    pub send_queue_frames: Option<usize>,
    #[arg(long, env = "CONCLAVE_SEND_QUEUE_BYTES", help = with_default(
        "Bytes queued per connection before it is closed as a slow consumer (1013)",
        gateway().send_queue_bytes,
    ))]
    pub send_queue_bytes: Option<usize>,
    #[arg(long, env = "CONCLAVE_MESSAGES_PER_SECOND", help = with_default(
        "Messages per second a connection may send, sustained; over closes with 1008",
        gateway().messages_per_second,
    ))]
    pub messages_per_second: Option<f64>,
    #[arg(long, env = "CONCLAVE_MESSAGE_BURST", help = with_default(
        "Burst of messages above the sustained rate",
        gateway().message_burst,
    ))]
    pub message_burst: Option<f64>,
    #[arg(long, env = "CONCLAVE_PING_INTERVAL_MS", help = with_default(
        "Keepalive ping interval in ms; clients silent for two intervals are closed",
        gateway().ping_interval.as_millis(),
    ))]
    pub ping_interval_ms: Option<u64>,
    #[arg(long, env = "CONCLAVE_REPLAY_BUFFER_BYTES", help = with_default(
        "Client bytes per connection held until the node acknowledges them (replayed on \
         failover); past it the socket is not read",
        gateway().replay_buffer_bytes,
    ))]
    pub replay_buffer_bytes: Option<usize>,
    #[arg(long, env = "CONCLAVE_REATTACH_TIMEOUT_MS", help = with_default(
        "How long a socket whose node died may wait for the room's next owner before it is \
         closed with 1012, in ms",
        gateway().reattach_timeout.as_millis(),
    ))]
    pub reattach_timeout_ms: Option<u64>,
    #[arg(long, env = "CONCLAVE_ROOM_ANSWER_TIMEOUT_MS", help = with_default(
        "How long an HTTP request to a room waits for its answer (its onRequest may wait on \
         slow services meanwhile), in ms; then 504. A cluster's nodes read \
         limits.room_answer_timeout_ms from their config file",
        gateway().answer_timeout.as_millis(),
    ))]
    pub room_answer_timeout_ms: Option<u64>,
    /// Messages and room requests per second one address's connections share, sustained;
    /// past it its sockets are read more slowly and its room requests answered 429 (0: off)
    /// [default: 20 × --messages-per-second]
    #[arg(long, env = "CONCLAVE_ADDRESS_MESSAGES_PER_SECOND")]
    pub address_messages_per_second: Option<f64>,
    /// Burst above --address-messages-per-second [default: 20 × --message-burst]
    #[arg(long, env = "CONCLAVE_ADDRESS_MESSAGE_BURST")]
    pub address_message_burst: Option<f64>,
    /// New connections per second one address may open, sustained; past it they are
    /// answered 429 before their request is read (0: off) [default: 0]
    #[arg(long, env = "CONCLAVE_ADDRESS_CONNECTS_PER_SECOND")]
    pub address_connects_per_second: Option<f64>,
    /// Burst above --address-connects-per-second [default: the rate, at least 1]
    #[arg(long, env = "CONCLAVE_ADDRESS_CONNECT_BURST")]
    pub address_connect_burst: Option<f64>,
    /// Client connections one address may hold at once; more are answered 429 (0: no
    /// limit) [default: the open-file limit less a fortieth]
    #[arg(long, env = "CONCLAVE_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Addresses (CIDR, comma-separated) of the balancers in front: their connections are
    /// not held to one address's share; the clients they name in X-Forwarded-For are
    #[arg(long, env = "CONCLAVE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
}

/// Networks in CIDR form (a bare address is a network of one).
fn networks(list: &[String]) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!("trusted_proxies: {s:?} is not an address or a CIDR network")
                })
        })
        .collect()
}

impl GatewayLimitOpts {
    /// The gateway's settings, with per-party auth from the file.
    pub fn resolve(&self, file: &FileConfig) -> anyhow::Result<GatewayConfig> {
        let (l, d) = (&file.limits, gateway());
        let mut g = GatewayConfig {
            max_frame_bytes: layer(self.max_frame_bytes, l.max_frame_bytes, d.max_frame_bytes),
            send_queue_frames: layer(
                self.send_queue_frames,
                l.send_queue_frames,
                d.send_queue_frames,
            ),
            send_queue_bytes: layer(
                self.send_queue_bytes,
                l.send_queue_bytes,
                d.send_queue_bytes,
            ),
            messages_per_second: layer(
                self.messages_per_second,
                l.messages_per_second,
                d.messages_per_second,
            ),
            message_burst: layer(self.message_burst, l.message_burst, d.message_burst),
            ping_interval: layer(
                millis(self.ping_interval_ms),
                millis(l.ping_interval_ms),
                d.ping_interval,
            ),
            max_http_body_bytes: layer(None, l.max_http_body_bytes, d.max_http_body_bytes),
            replay_buffer_bytes: layer(
                self.replay_buffer_bytes,
                l.replay_buffer_bytes,
                d.replay_buffer_bytes,
            ),
            reattach_timeout: layer(
                millis(self.reattach_timeout_ms),
                millis(l.reattach_timeout_ms),
                d.reattach_timeout,
            ),
            answer_timeout: layer(
                millis(self.room_answer_timeout_ms),
                millis(l.room_answer_timeout_ms),
                d.answer_timeout,
            ),
            admin_token: admin_token(self.admin_token.as_ref(), self.admin_token_file.as_ref())?,
            address_messages_per_second: self
                .address_messages_per_second
                .or(l.address_messages_per_second),
            address_message_burst: self.address_message_burst.or(l.address_message_burst),
            address_connects: {
                let rate = self
                    .address_connects_per_second
                    .or(l.address_connects_per_second)
                    .unwrap_or(0.0);
                let burst = self
                    .address_connect_burst
                    .or(l.address_connect_burst)
                    .unwrap_or(rate.max(1.0));
                if rate < 0.0 || burst < 1.0 {
                    bail!("address_connects_per_second must not be negative, nor address_connect_burst below 1");
                }
                (rate > 0.0).then_some((rate, burst))
            },
            max_connections_per_address: self
                .max_connections_per_address
                .or(l.max_connections_per_address)
                .or(d.max_connections_per_address),
            trusted_proxies: networks(
                self.trusted_proxies
                    .as_ref()
                    .or(l.trusted_proxies.as_ref())
                    .map_or(&[][..], Vec::as_slice),
            )?,
            ..d
        };
        g.auth.extend(file.party_auth()?);
        check_gateway(&g)?;
        Ok(g)
    }
}

fn check_gateway(g: &GatewayConfig) -> anyhow::Result<()> {
    if g.max_frame_bytes < 125 {
        bail!("max_frame_bytes must be at least 125");
    }
    if g.send_queue_bytes < g.max_frame_bytes {
        bail!("send_queue_bytes must be at least max_frame_bytes");
    }
    if g.send_queue_frames == 0 || g.messages_per_second <= 0.0 || g.message_burst < 1.0 {
        bail!("send_queue_frames, messages_per_second and message_burst must be positive");
    }
    if g.address_messages_per_second.is_some_and(|r| r < 0.0)
        || g.address_message_burst.is_some_and(|b| b < 1.0)
    {
        bail!(
            "address_messages_per_second must not be negative, nor address_message_burst below 1"
        );
    }
    if g.ping_interval < Duration::from_millis(100) {
        bail!("ping_interval_ms must be at least 100");
    }
    check_answer_timeout(g.answer_timeout)
}

/// The time a room's HTTP answer may take, as gateways and nodes both read it.
pub(super) fn check_answer_timeout(t: Duration) -> anyhow::Result<()> {
    if t < Duration::from_millis(100) {
        bail!("room_answer_timeout_ms must be at least 100");
    }
    Ok(())
}

/// Room runtime limits (node). Each flag also reads `CONCLAVE_<NAME>`.
#[derive(Args, Debug, Default, Clone)]
pub struct NodeLimitOpts {
    #[arg(long, env = "CONCLAVE_MAX_CONNECTIONS_PER_ROOM", help = with_default(
        "Connections per room; more get HTTP 503 before the upgrade",
        node().max_connections_per_room,
    ))]
    pub max_connections_per_room: Option<usize>,
    #[arg(long, env = "CONCLAVE_HIBERNATE_AFTER_MS", help = with_default(
        "Idle time in ms after which a room leaves memory (hibernates)",
        node().hibernate_after.as_millis(),
    ))]
    pub hibernate_after_ms: Option<u64>,
    #[arg(long, env = "CONCLAVE_MAX_ROOM_STORAGE_BYTES", help = with_default(
        "Bytes of keys and values one room may store (0: no bound); past it a write fails",
        bound_or_zero(node().storage_quota.room_bytes),
    ))]
    pub max_room_storage_bytes: Option<u64>,
    #[arg(long, env = "CONCLAVE_MAX_ROOM_STORAGE_KEYS", help = with_default(
        "Keys one room may store (0: no bound); past it a write fails",
        bound_or_zero(node().storage_quota.room_keys),
    ))]
    pub max_room_storage_keys: Option<u64>,
    #[arg(long, env = "CONCLAVE_MAX_PARTY_STORAGE_BYTES", help = with_default(
        "Bytes all rooms of one party may store together (0: no bound)",
        bound_or_zero(node().storage_quota.party_bytes),
    ))]
    pub max_party_storage_bytes: Option<u64>,
    #[arg(long, env = "CONCLAVE_MAX_PARTY_STORAGE_KEYS", help = with_default(
        "Keys all rooms of one party may store together (0: no bound)",
        bound_or_zero(node().storage_quota.party_keys),
    ))]
    pub max_party_storage_keys: Option<u64>,
}

impl NodeLimitOpts {
    /// The storage quota of every party without one of its own.
    fn storage_quota(&self, l: &FileLimits) -> StorageQuota {
        let d = node().storage_quota;
        let pick = |flag: Option<u64>, file: Option<u64>, default: Option<u64>| {
            bound(layer(flag, file, bound_or_zero(default)))
        };
        StorageQuota {
            room_bytes: pick(
                self.max_room_storage_bytes,
                l.max_room_storage_bytes,
                d.room_bytes,
            ),
            room_keys: pick(
                self.max_room_storage_keys,
                l.max_room_storage_keys,
                d.room_keys,
            ),
            party_bytes: pick(
                self.max_party_storage_bytes,
                l.max_party_storage_bytes,
                d.party_bytes,
            ),
            party_keys: pick(
                self.max_party_storage_keys,
                l.max_party_storage_keys,
                d.party_keys,
            ),
        }
    }

    pub fn resolve(&self, file: &FileConfig) -> anyhow::Result<NodeConfig> {
        let (l, d) = (&file.limits, node());
        let storage_quota = self.storage_quota(l);
        let party_storage_quotas = file
            .parties
            .iter()
            .filter_map(|(name, p)| Some((name.clone(), p.storage.as_ref()?.over(storage_quota))))
            .collect();
        let n = NodeConfig {
            storage_quota,
            party_storage_quotas,
            max_connections_per_room: layer(
                self.max_connections_per_room,
                l.max_connections_per_room,
                d.max_connections_per_room,
            ),
            hibernate_after: layer(
                millis(self.hibernate_after_ms),
                millis(l.hibernate_after_ms),
                d.hibernate_after,
            ),
            ..d
        };
        if n.max_connections_per_room == 0 {
            bail!("max_connections_per_room must be positive");
        }
        Ok(n)
    }
}
