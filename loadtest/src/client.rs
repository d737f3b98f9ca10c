//! WebSocket clients spread over 127.0.0.x source addresses (one source address has only
//! ~28k ephemeral ports towards one server).

use anyhow::Context;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tokio_tungstenite::{
    client_async_with_config, tungstenite::protocol::WebSocketConfig, WebSocketStream,
};

pub type Ws = WebSocketStream<TcpStream>;

/// Where a room URL template points.
pub struct Target {
    pub template: String,
    pub addr: SocketAddr,
}

impl Target {
    /// `template` is a ws:// URL in which `{room}` and `{id}` are substituted.
    pub async fn resolve(template: &str) -> anyhow::Result<Self> {
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

    pub fn url(&self, room: &str, id: &str) -> String {
        let url = self.template.replace("{room}", room);
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}_pk={id}")
    }

    /// Connects from source address 127.0.0.(1 + n % sources) when the server is on
    /// loopback.
    pub async fn connect(
        &self,
        room: &str,
        id: &str,
        n: usize,
        sources: usize,
    ) -> anyhow::Result<Ws> {
        let socket = TcpSocket::new_v4()?;
        if self.addr.ip().is_loopback() && sources > 1 {
            let last = 1 + (n % sources.min(254)) as u8;
            socket.bind(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
                0,
            ))?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = client_async_with_config(self.url(room, id), stream, Some(config)).await?;
        Ok(ws)
    }
}
