//! The public client listener: HTTP/1.1 only. WebSocket upgrades and room requests are all
//! PartySocket and browsers send there; HTTP/2 cleartext (h2c) would only be one more
//! protocol parser facing the internet.

use crate::addresses::{AddressLimits, ClientAddress, Held, REFUSAL};
use crate::GatewayConfig;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a client may take to send a request's headers (slow-header clients hold a
/// socket and a task; they are cut off after this).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Pending connections the kernel may queue before they are accepted (it caps this at
/// `net.core.somaxconn`). A full queue drops SYNs, and a client whose SYN was dropped
/// waits a second before it retries: tokio's default queue (128 here) overflowed with
/// 200 handshakes in flight, putting 1 s into the 99th percentile of a connect storm.
const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with a deep accept queue (and `SO_REUSEADDR`, as tokio's
/// `TcpListener::bind` sets it).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long a refused client is given to read its 429.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `app` on `listener` over HTTP/1.1 (with upgrades) until the task is dropped,
/// holding each client address to its share of connections (`config`).
pub fn serve_http1(
    listener: TcpListener,
    app: Router,
    config: &GatewayConfig,
) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
    crate::addresses::raise_open_file_limit();
    let per_address = config
        .max_connections_per_address
        .unwrap_or_else(crate::addresses::default_per_address);
    let share = |own: Option<f64>, per_connection: f64| {
        own.unwrap_or(crate::config::ADDRESS_SHARE * per_connection)
    };
    let per_second = share(
        config.address_messages_per_second,
        config.messages_per_second,
    );
    let burst = share(config.address_message_burst, config.message_burst);
    let rate = (per_second > 0.0).then_some((per_second, burst));
    let limits = AddressLimits::new(per_address, rate, config.trusted_proxies.clone());
    async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Some(slot) = limits.admit(peer.ip()) else {
                metrics::counter!("conclave_gateway_address_limit_refusals_total").increment(1);
                tokio::spawn(refuse(stream));
                continue;
            };
            // Every request of the connection carries who it comes from: the connection's
            // address and its rate, or a proxy's word for each request.
            let client = if limits.is_trusted(peer.ip()) {
                ClientAddress::Proxied(limits.clone())
            } else {
                ClientAddress::Direct(slot.rate())
            };
            let app = tower_layer::Layer::layer(&axum::Extension(client), app.clone());
            let service = TowerToHyperService::new(app);
            tokio::spawn(async move {
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(Held::new(stream, slot)), service)
                    .with_upgrades();
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            });
        }
    }
}

/// Answers 429 without reading the request, and closes.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,000 connections to a listener that is not accepting yet all complete their TCP
    /// handshake at once: none waits out a SYN retransmit (a 128-deep queue would hold
    /// ~129 and leave the rest retrying after 1 s).
    #[tokio::test]
    async fn a_burst_of_connections_queues_without_dropped_syns() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..1000).map(|_| {
            tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures::future::join_all(connects).await;
        let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(
            connected, 1000,
            "connections left waiting on a full accept queue"
        );
        drop(listener);
    }
}
