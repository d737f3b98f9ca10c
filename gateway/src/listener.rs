//! The public client listener: HTTP/1.1 only. WebSocket upgrades and room requests are all
//! PartySocket and browsers send there; HTTP/2 cleartext (h2c) would only be one more
//! protocol parser facing the internet.

use crate::accept::{answer_and_close, Accepted};
use crate::addresses::{AddressLimits, ClientAddress, REFUSAL};
use crate::Gateway;
use axum::Router;
use std::time::Duration;
use tokio::net::TcpListener;

/// The pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Pending connections the kernel may queue before they are accepted (it caps this at
/// `net.core.somaxconn`). A full queue drops SYNs, and a client whose SYN was dropped
/// waits a second before it retries: tokio's default queue (128 here) overflowed with
/// 200 handshakes in flight, putting 1 s into the 99th percentile of a connect storm.
const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with a deep accept queue, Nagle's algorithm off for what it
/// accepts (see [`no_delay`]), and `SO_REUSEADDR`, as tokio's `TcpListener::bind` sets it.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Turns Nagle's algorithm off on `listener`; the sockets it accepts inherit that (Linux
/// and the BSDs copy `TCP_NODELAY` to them), so no connection pays a system call for it.
///
/// With Nagle on, a frame written while the client has not yet acknowledged the previous
/// one waits for that acknowledgement, and a client that also sends (so its TCP stack
/// delays its acknowledgements to carry them on its own data) leaves the second of two
/// broadcasts a millisecond apart waiting up to its next send or ~40 ms. Every frame the
/// gateway writes is a whole message that should leave at once.
fn no_delay(listener: &TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(listener).set_tcp_nodelay(true)
}

/// Serves `app` on `listener` over HTTP/1.1 (with upgrades) until the task is dropped,
/// holding each client address to its share of connections (the gateway's config).
/// WebSocket upgrades to rooms go straight to `gateway` (`accept.rs`); `app` serves every
/// other request, and should hold the gateway's [`Gateway::router`] or
/// [`Gateway::client_router`].
pub fn serve_http1(
    listener: TcpListener,
    app: Router,
    gateway: &Gateway,
) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
    let gw = gateway.state().clone();
    let config = gateway.config();
    crate::addresses::raise_open_file_limit();
    // A listener made elsewhere than `bind` gets it too.
    if let Err(e) = no_delay(&listener) {
        tracing::warn!(error = %e, "could not turn Nagle's algorithm off for client sockets");
    }
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
    let limits = AddressLimits::new(
        per_address,
        rate,
        config.address_connects,
        config.trusted_proxies.clone(),
    );
    let ceiling = crate::addresses::connection_ceiling();
    let mut spare = Spare::open();
    async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) if spare.is_held() && out_of_descriptors(&e) => {
                    // Past every reserve: the spare descriptor makes room to take the
                    // next connection off the queue and answer it, rather than leave
                    // clients (and health checks) to time out.
                    tracing::warn!(error = %e, "out of file descriptors: answering 503");
                    spare.release();
                    if let Ok((stream, _)) = listener.accept().await {
                        metrics::counter!("conclave_gateway_capacity_refusals_total").increment(1);
                        answer_and_close(stream, AT_CAPACITY).await;
                    }
                    spare = Spare::open();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if limits.open() >= ceiling {
                // The newest connections are the ones turned away: open ones go on.
                metrics::counter!("conclave_gateway_capacity_refusals_total").increment(1);
                tokio::spawn(at_capacity(stream));
                continue;
            }
            let Some(slot) = limits.admit(peer.ip()) else {
                metrics::counter!("conclave_gateway_address_limit_refusals_total").increment(1);
                tokio::spawn(answer_and_close(stream, REFUSAL));
                continue;
            };
            // Every request of the connection carries who it comes from: the connection's
            // address and its rate, or a proxy's word for each request.
            let client = if limits.is_trusted(peer.ip()) {
                ClientAddress::Proxied(limits.clone())
            } else {
                ClientAddress::Direct(slot.rate())
            };
            let accepted = Accepted {
                stream,
                slot,
                client,
            };
            tokio::spawn(crate::accept::serve(gw.clone(), app.clone(), accepted));
        }
    }
}

/// What a connection past the gateway's ceiling reads, unless it is a health check.
const AT_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Retry-After: 5\r\nConnection: close\r\nContent-Length: 37\r\n\r\nServer at its connection limit (503)\n";

/// How long a connection past the ceiling may take to send its request line.
const AT_CAPACITY_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection past the gateway's ceiling: a health check is answered (`/healthz`: alive;
/// `/readyz`: not ready, so balancers send new clients elsewhere), anything else gets 503;
/// then it is closed. It lives on the descriptors kept below the ceiling.
async fn at_capacity(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 64];
    let mut len = 0;
    let read = tokio::time::timeout(AT_CAPACITY_READ_TIMEOUT, async {
        while len < head.len() && !head[..len].contains(&b'\n') {
            match stream.read(&mut head[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
    })
    .await;
    let line = &head[..len];
    let answer: &[u8] = if read.is_err() {
        return;
    } else if line.starts_with(b"GET /healthz ") || line.starts_with(b"HEAD /healthz ") {
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    } else if line.starts_with(b"GET /readyz ") || line.starts_with(b"HEAD /readyz ") {
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 29\r\n\r\nat the connection limit (503)"
    } else {
        AT_CAPACITY
    };
    answer_and_close(stream, answer).await
}

/// Whether accepting failed for want of a file descriptor (the process's or the system's).
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// One descriptor held back, to be let go when every other is taken.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn open() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    fn is_held(&self) -> bool {
        self.0.is_some()
    }

    fn release(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection past the ceiling: health checks answered, anything else 503, and each
    /// canned answer's length right.
    #[tokio::test]
    async fn past_the_ceiling_health_checks_are_answered_and_the_rest_get_503() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(at_capacity(stream));
            }
        });
        for (request, status, body) in [
            ("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", "200", "ok"),
            (
                "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n",
                "503",
                "at the connection limit (503)",
            ),
            (
                "GET /parties/main/r HTTP/1.1\r\nHost: t\r\n\r\n",
                "503",
                "Server at its connection limit (503)\n",
            ),
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.unwrap();
            let (head, got) = reply.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{reply}");
            assert_eq!(got, body);
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{reply}"
            );
        }
    }

    /// What the listener accepts has Nagle's algorithm off, whether it was bound here or
    /// by the caller of `serve_http1`.
    #[tokio::test]
    async fn accepted_sockets_send_without_waiting_for_acknowledgements() {
        let ours = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let theirs = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(!socket2::SockRef::from(&theirs).tcp_nodelay().unwrap());
        no_delay(&theirs).unwrap();
        for listener in [ours, theirs] {
            let addr = listener.local_addr().unwrap();
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            assert!(
                accepted.nodelay().unwrap(),
                "Nagle on for a socket of {addr}"
            );
        }
    }

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
