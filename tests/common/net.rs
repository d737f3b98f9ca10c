//! Ports for the servers and processes tests start: the harness picks a free one, passes
//! it explicitly, and waits until something listens there.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// A loopback address nothing listens on right now (bound, read back, released).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free loopback port")
}

pub fn free_port() -> u16 {
    free_addr().port()
}

/// Whether something accepts TCP connections at `addr`.
pub async fn accepts(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// Waits until `what` accepts connections at `addr`; panics after `within`.
pub async fn wait_until_listening(addr: SocketAddr, within: Duration, what: &str) {
    assert!(
        super::eventually_within(within, async || accepts(addr).await).await,
        "{what} did not listen on {addr} within {within:?}"
    );
}
