//! Ports for the servers and processes tests start: the harness picks a free one, passes
//! it explicitly, and waits until something listens there.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// A loopback address nothing listens on right now, for a process the test starts next.
///
/// Between this check and that process's bind the port is free for anyone, so it is picked
/// below the kernel's ephemeral range: the outgoing connections every test makes (to Redis,
/// PostgreSQL, placement, nodes) and `bind(0)` take their ports from that range, and once
/// took a gateway's port in CI. Each test process starts at a random place in the range
/// below and counts up, so test processes running side by side rarely meet either.
pub fn free_addr() -> SocketAddr {
    let (low, span) = *PORTS.get_or_init(ports_below_ephemeral);
    if span == 0 {
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("no free loopback port");
    }
    let next = NEXT.get_or_init(|| AtomicU32::new(random_u32() % span));
    for _ in 0..span {
        let port = (low + next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port in {low}..{}", low + span);
}

static PORTS: OnceLock<(u32, u32)> = OnceLock::new();
static NEXT: OnceLock<AtomicU32> = OnceLock::new();

/// The first port and the number of ports between 10000 and the ephemeral range's start
/// (none if the range starts that low).
fn ports_below_ephemeral() -> (u32, u32) {
    const LOWEST: u32 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    (LOWEST, ephemeral_start.saturating_sub(LOWEST))
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id()) as u32
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
