//! Gateway settings the edge uses (the CLI builds this from flags, env and TOML).

use crate::auth::PartyAuth;
use std::collections::HashMap;
use std::time::Duration;

/// How many connections' worth of the per-connection message rate one address's
/// connections share by default (so raising `messages_per_second` for a load test raises
/// the address's share with it).
pub const ADDRESS_SHARE: f64 = 20.0;
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Largest WebSocket frame or message accepted; over it the socket closes with 1009.
    pub max_frame_bytes: usize,
    /// Frames queued per connection before it counts as a slow consumer (closed with 1013).
    pub send_queue_frames: usize,
    /// Bytes queued per connection before it counts as a slow consumer (closed with 1013).
    pub send_queue_bytes: usize,
    /// Sustained messages per second one connection may send (token bucket)…
    pub messages_per_second: f64,
    /// …and the burst above it. Over the limit the socket closes with 1008.
    pub message_burst: f64,
    /// Protocol-level ping interval; a client silent for two intervals is closed.
    pub ping_interval: Duration,
    /// Largest HTTP request body forwarded to a room.
    pub max_http_body_bytes: usize,
    /// How long a request to a room may take to send its body, from its headers on; past
    /// it the request is answered 408 (a client dribbling a body holds nothing longer).
    pub http_body_timeout: Duration,
    /// How long a socket write may block before the client is dropped.
    pub write_timeout: Duration,
    /// Client connections one address may hold at once (more are answered 429); `None`:
    /// the process's open-file limit less a fortieth; `Some(0)`: no limit.
    pub max_connections_per_address: Option<usize>,
    /// Messages (and HTTP requests to rooms) per second that one address's connections
    /// share, sustained (`Some(0.0)`: no such limit); past it its sockets are read more
    /// slowly and its room requests answered 429. `None`: [`ADDRESS_SHARE`] connections'
    /// worth of `messages_per_second`.
    pub address_messages_per_second: Option<f64>,
    /// Burst above `address_messages_per_second`; `None`: [`ADDRESS_SHARE`] connections'
    /// worth of `message_burst`.
    pub address_message_burst: Option<f64>,
    /// New connections per second one address may open, sustained, and the burst above it
    /// (past it they are answered 429 before their request is read); `None`: no such
    /// limit (the connections an address holds at once are bounded all the same).
    pub address_connects: Option<(f64, f64)>,
    /// Balancers and proxies in front of the gateway: their connections carry many
    /// clients, so they are not held to one address's share.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a client may take to finish a message (all its fragments) from its first
    /// byte; checked at each ping, so a socket is closed (1008) within a ping interval of it.
    pub message_timeout: Duration,
    /// How long to wait for the node to answer an admission, or a request outside rooms.
    pub node_timeout: Duration,
    /// How long an HTTP request to a room waits for the room's answer (its `onRequest`
    /// may wait on slow services meanwhile); then 504.
    pub answer_timeout: Duration,
    /// Client frames buffered per connection until the node acknowledges them (replayed to
    /// the room's next node on failover). Over it, the gateway stops reading the socket.
    pub replay_buffer_bytes: usize,
    /// How long a socket whose node died or handed its room off may take to re-attach to
    /// the room's next owner before it is closed with 1012.
    pub reattach_timeout: Duration,
    /// Longest accepted `_pk` connection id, in bytes.
    pub max_conn_id_bytes: usize,
    /// JWT checks per party name.
    pub auth: HashMap<String, PartyAuth>,
    /// Bearer token for `/admin/*`; without one those routes answer 404.
    pub admin_token: Option<String>,
    /// The gateway's region: rooms first reached through it are homed here unless the
    /// client asks for another with `?_region=`.
    pub region: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1024 * 1024,
            send_queue_frames: 1024,
            send_queue_bytes: 4 * 1024 * 1024,
            messages_per_second: 100.0,
            message_burst: 200.0,
            ping_interval: Duration::from_secs(15),
            max_http_body_bytes: 1024 * 1024,
            http_body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(60),
            max_connections_per_address: None,
            address_messages_per_second: None,
            address_message_burst: None,
            address_connects: None,
            trusted_proxies: Vec::new(),
            node_timeout: Duration::from_secs(10),
            // As long as Cloudflare's edge waits for an origin; the nodes wait as long
            // (`NodeConfig::fetch_timeout`).
            answer_timeout: Duration::from_secs(100),
            replay_buffer_bytes: 256 * 1024,
            reattach_timeout: Duration::from_secs(30),
            max_conn_id_bytes: 256,
            auth: HashMap::new(),
            admin_token: None,
            region: conclave_proto::DEFAULT_REGION.to_string(),
        }
    }
}

impl GatewayConfig {
    /// One connection's message rate limit.
    pub(crate) fn message_rate(&self) -> crate::limits::Rate {
        crate::limits::Rate {
            per_second: self.messages_per_second,
            burst: self.message_burst,
        }
    }
}
