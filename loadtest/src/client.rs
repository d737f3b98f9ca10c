//! WebSocket clients spread over 127.0.0.x source addresses (one source address has only
//! ~28k ephemeral ports towards one server) and over several server URLs (gateways).

use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::{
    client_async_with_config, tungstenite::protocol::WebSocketConfig, WebSocketStream,
};

pub type Ws = WebSocketStream<TcpStream>;

/// Where a room URL template points.
struct Target {
    template: String,
    addr: SocketAddr,
}

impl Target {
    /// `template` is a ws:// URL in which `{room}` is substituted.
    async fn resolve(template: &str) -> anyhow::Result<Self> {
        let rest = template
            .strip_prefix("ws://")
            .context("only ws:// URLs are supported")?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr = lookup_host(hostport)
            .await?
            .next()
            .with_context(|| format!("cannot resolve {hostport}"))?;
        Ok(Self {
            template: template.to_string(),
            addr,
        })
    }

    fn url(&self, room: &str, id: &str) -> String {
        let url = self.template.replace("{room}", room);
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}_pk={id}")
    }
}

/// Several URL templates (say, one per gateway) and source addresses: connection `n`
/// uses template `n % len` and, when the server is on loopback, source address
/// 127.0.0.(1 + n % sources).
pub struct Targets {
    all: Vec<Target>,
    sources: usize,
}

impl Targets {
    pub async fn resolve(templates: &[String], sources: usize) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(!templates.is_empty(), "give at least one --url");
        let mut all = Vec::new();
        for t in templates {
            all.push(Target::resolve(t).await?);
        }
        Ok(Arc::new(Self { all, sources }))
    }

    /// Opens connection `n` to `room` with id `id`: TCP connect, then the WebSocket
    /// upgrade.
    pub async fn connect(&self, room: &str, id: &str, n: usize) -> anyhow::Result<Ws> {
        let target = &self.all[n % self.all.len()];
        let socket = TcpSocket::new_v4()?;
        if target.addr.ip().is_loopback() && self.sources > 1 {
            let last = 1 + (n % self.sources.min(254)) as u8;
            socket.bind(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
                0,
            ))?;
        }
        let stream = socket.connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = client_async_with_config(target.url(room, id), stream, Some(config)).await?;
        Ok(ws)
    }
}

/// The outcome of opening many connections.
pub struct Opened {
    pub sockets: Vec<(usize, Ws)>,
    /// Handshake times (TCP connect + WebSocket upgrade), µs.
    pub handshake_us: Histogram<u64>,
    pub failures: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

/// Opens `count` connections, `concurrency` handshakes at a time; connection `n` joins
/// room `room_of(n)` with id `{id_prefix}-{n}`.
pub async fn open_many(
    targets: &Arc<Targets>,
    count: usize,
    concurrency: usize,
    id_prefix: &str,
    room_of: impl Fn(usize) -> String,
    progress: &ProgressBar,
) -> anyhow::Result<Opened> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let permit = gate.clone().acquire_owned().await?;
        let (targets, room, id) = (targets.clone(), room_of(n), format!("{id_prefix}-{n}"));
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = targets.connect(&room, &id, n).await;
            drop(permit);
            progress.inc(1);
            r.map(|ws| (ws, t0.elapsed()))
        }));
    }
    let mut opened = Opened {
        sockets: Vec::with_capacity(count),
        handshake_us: Histogram::new(3)?,
        failures: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    for (n, t) in tasks.into_iter().enumerate() {
        match t.await? {
            Ok((ws, took)) => {
                opened.handshake_us.record(took.as_micros().max(1) as u64)?;
                opened.sockets.push((n, ws));
            }
            Err(e) => {
                opened.failures += 1;
                opened.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    opened.elapsed = started.elapsed();
    Ok(opened)
}
