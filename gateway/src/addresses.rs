//! Client connections per address: one address may hold at most so many at once, so a
//! single client cannot take every file descriptor of the gateway (before, two processes
//! on one host took all 20,000 and new clients timed out), and its connections share one
//! rate of messages and room requests ([`AddressRate`]), so reconnecting does not reset a
//! client's rate (before, reconnecting every 199 messages pushed 366,000 msg/s through a
//! 100 msg/s limit). Connections from trusted proxies (the balancer in front) carry many
//! clients each: their requests are counted by the client address the proxy forwards
//! (`X-Forwarded-For`, or `Forwarded: for=`) instead ([`ClientAddress`]).

use crate::limits::TokenBucket;
use bytes::Bytes;
use http::HeaderMap;
use ipnet::IpNet;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a refused client reads before its connection is closed.
pub(crate) const REFUSAL: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n\
Retry-After: 10\r\nConnection: close\r\nContent-Length: 45\r\n\r\nToo many connections from this address (429)\n";

/// The rate one address's messages and room requests share: `(per second, burst)`.
pub(crate) type RateSettings = Option<(f64, f64)>;

/// One address's shared rate; every request of a connection carries it (as an extension).
/// Empty for trusted proxies and when the rate is off.
#[derive(Clone, Default)]
pub(crate) struct AddressRate(Option<Arc<SharedRate>>);

pub(crate) struct SharedRate {
    bucket: Mutex<TokenBucket>,
    /// Sockets waiting for a token queue here, first come first served: only the first
    /// sleeps until the next token, however many wait.
    queue: tokio::sync::Mutex<()>,
}

impl AddressRate {
    fn new(rate: f64, burst: f64) -> Self {
        Self(Some(Arc::new(SharedRate {
            bucket: Mutex::new(TokenBucket::new(rate, burst)),
            queue: tokio::sync::Mutex::new(()),
        })))
    }

    fn bucket(shared: &SharedRate) -> std::sync::MutexGuard<'_, TokenBucket> {
        shared.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a token now; false when the address is over its rate.
    pub fn try_take(&self) -> bool {
        self.0.as_ref().is_none_or(|s| Self::bucket(s).take())
    }

    /// Takes a token, waiting in turn for one while the address is over its rate (the
    /// socket is not read meanwhile: its client is slowed, not cut off).
    pub async fn take(&self) {
        let Some(shared) = &self.0 else { return };
        let _turn = shared.queue.lock().await;
        loop {
            let wait = {
                let mut bucket = Self::bucket(shared);
                if bucket.take() {
                    return;
                }
                bucket.time_to_token()
            };
            tokio::time::sleep(wait.max(std::time::Duration::from_millis(1))).await;
        }
    }

    fn is_full(&self) -> bool {
        self.0.as_ref().is_none_or(|s| Self::bucket(s).is_full())
    }
}

/// Who a request comes from, as every request of a connection carries it (an extension):
/// the connection's own address, or a trusted proxy that names the client in a header.
#[derive(Clone)]
pub(crate) enum ClientAddress {
    Direct(AddressRate),
    Proxied(Arc<AddressLimits>),
}

impl ClientAddress {
    /// The rate the request's client shares with its other connections and requests.
    pub fn rate(&self, headers: &HeaderMap) -> AddressRate {
        match self {
            ClientAddress::Direct(rate) => rate.clone(),
            ClientAddress::Proxied(limits) => match forwarded_client(headers, &limits.trusted) {
                Some(client) => limits.rate_of(client),
                None => AddressRate::default(),
            },
        }
    }

    /// For a socket: its client's rate, and behind a proxy the forwarded client's slot
    /// among its connections (held for as long as the socket lives); `None` when that
    /// client holds its share already.
    pub fn admit_socket(&self, headers: &HeaderMap) -> Option<(AddressRate, Option<Slot>)> {
        match self {
            ClientAddress::Direct(rate) => Some((rate.clone(), None)),
            ClientAddress::Proxied(limits) => match forwarded_client(headers, &limits.trusted) {
                Some(client) => {
                    let slot = limits.admit(client)?;
                    Some((slot.rate(), Some(slot)))
                }
                None => Some((AddressRate::default(), None)),
            },
        }
    }
}

/// The client a trusted proxy forwards the request for: in `X-Forwarded-For` (else the
/// `for=` of `Forwarded`), the nearest address that is not itself a trusted proxy. An
/// entry that is not an address ends the search: what a client wrote before it is not
/// trusted.
pub(crate) fn forwarded_client(headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let listed = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|entry| entry.trim().to_string())
            .collect()
    };
    let mut hops = listed("x-forwarded-for");
    if hops.is_empty() {
        hops = listed("forwarded")
            .iter()
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.eq_ignore_ascii_case("for")
                        .then(|| value.trim_matches('"').to_string())
                })
            })
            .collect();
    }
    for hop in hops.iter().rev() {
        let addr = canonical(parse_hop(hop)?);
        if !trusted.iter().any(|net| net.contains(&addr)) {
            return Some(addr);
        }
    }
    None
}

/// An address as proxies write it: bare, with a port, or IPv6 in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(addr);
    }
    if let Ok(with_port) = hop.parse::<std::net::SocketAddr>() {
        return Some(with_port.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// An address's open connections and shared rate.
struct Address {
    open: usize,
    rate: AddressRate,
    /// The new connections it may open (with a connect rate configured).
    connects: Option<TokenBucket>,
}

impl Address {
    /// Whether nothing of the address need be kept: no connection, and its buckets full.
    fn forgettable(&mut self) -> bool {
        self.open == 0
            && self.rate.is_full()
            && self.connects.as_mut().is_none_or(TokenBucket::is_full)
    }
}

/// Addresses with no open connection are kept while their rate has not refilled (so
/// closing every connection does not reset it), and swept after this many admissions.
const SWEEP_EVERY: u32 = 1024;

/// The open connections of each address.
pub(crate) struct AddressLimits {
    /// At most this many per address (0: no limit).
    per_address: usize,
    rate: RateSettings,
    /// New connections per second per address, and the burst (`None`: not limited).
    connects: RateSettings,
    trusted: Vec<IpNet>,
    addresses: Mutex<(HashMap<IpAddr, Address>, u32)>,
    /// Slots held now.
    open: AtomicUsize,
}

impl AddressLimits {
    pub fn new(
        per_address: usize,
        rate: RateSettings,
        connects: RateSettings,
        trusted: Vec<IpNet>,
    ) -> Arc<Self> {
        Arc::new(Self {
            per_address,
            rate,
            connects,
            trusted,
            addresses: Mutex::default(),
            open: AtomicUsize::new(0),
        })
    }

    /// Whether `addr` is a trusted proxy's.
    pub fn is_trusted(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.trusted.iter().any(|net| net.contains(&addr))
    }

    /// The rate `addr`'s connections and requests share, for a request that holds no
    /// connection of its own (one of many on a proxy's connection).
    fn rate_of(&self, addr: IpAddr) -> AddressRate {
        let addr = canonical(addr);
        if self.rate.is_none() || self.is_trusted(addr) {
            return AddressRate::default();
        }
        self.with_address(addr, |address| address.rate.clone())
    }

    /// A slot for one more connection from `addr`, or `None` if it holds its share.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Option<Slot> {
        let addr = canonical(addr);
        let unlimited = self.per_address == 0 && self.rate.is_none() && self.connects.is_none();
        if self.is_trusted(addr) || unlimited {
            return Some(self.slot(addr, false, AddressRate::default()));
        }
        let rate = self.with_address(addr, |address| {
            if self.per_address != 0 && address.open >= self.per_address {
                return None;
            }
            if !address.connects.as_mut().is_none_or(TokenBucket::take) {
                return None;
            }
            address.open += 1;
            Some(address.rate.clone())
        })?;
        Some(self.slot(addr, true, rate))
    }

    /// Runs `f` on `addr`'s entry, made if it has none; entries with nothing left to keep
    /// are swept every [`SWEEP_EVERY`] calls.
    fn with_address<T>(&self, addr: IpAddr, f: impl FnOnce(&mut Address) -> T) -> T {
        let mut guard = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let (addresses, calls) = &mut *guard;
        *calls += 1;
        if *calls % SWEEP_EVERY == 0 {
            addresses.retain(|_, a| !a.forgettable());
        }
        f(addresses.entry(addr).or_insert_with(|| self.new_address()))
    }

    fn new_address(&self) -> Address {
        Address {
            open: 0,
            rate: self
                .rate
                .map_or_else(AddressRate::default, |(rate, burst)| {
                    AddressRate::new(rate, burst)
                }),
            connects: self
                .connects
                .map(|(rate, burst)| TokenBucket::new(rate, burst)),
        }
    }

    fn slot(self: &Arc<Self>, addr: IpAddr, counted: bool, rate: AddressRate) -> Slot {
        self.open.fetch_add(1, Ordering::Relaxed);
        Slot {
            limits: self.clone(),
            counted,
            addr,
            rate,
        }
    }

    /// Client connections open now (every slot: the gateway's part of its descriptors).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn release(&self, addr: IpAddr) {
        let mut guard = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let addresses = &mut guard.0;
        if let Some(a) = addresses.get_mut(&addr) {
            a.open -= 1;
            if a.forgettable() {
                addresses.remove(&addr);
            }
        }
    }
}

/// An IPv4 client on a dual-stack socket counts as its IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// One connection's place among the open ones and in its address's count, given back
/// when dropped.
pub(crate) struct Slot {
    limits: Arc<AddressLimits>,
    /// Counted in its address's share (not a trusted proxy's, nor without limits).
    counted: bool,
    addr: IpAddr,
    rate: AddressRate,
}

impl Slot {
    /// The rate the connection's address shares.
    pub fn rate(&self) -> AddressRate {
        self.rate.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
        if self.counted {
            self.limits.release(self.addr);
        }
    }
}

/// A connection holding its slot for as long as it lives (through an upgrade to a
/// WebSocket, which keeps the connection), and what was read from it before the HTTP
/// server took it over: the server reads that first.
pub(crate) struct Held<S> {
    io: S,
    _slot: Slot,
    replay: Bytes,
}

impl<S> Held<S> {
    pub fn new(io: S, slot: Slot, replay: Bytes) -> Self {
        Self {
            io,
            _slot: slot,
            replay,
        }
    }

    /// The connection, its slot, and what of the replayed bytes the server left unread.
    pub fn into_parts(self) -> (S, Slot, Bytes) {
        (self.io, self._slot, self.replay)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The default share of one address: the process's open-file limit less a fortieth (at
/// least 64), kept for everyone else: one address cannot take every descriptor, yet a
/// load generator on one host can still hold 19,000 connections under a limit of 20,000.
pub(crate) fn default_per_address() -> usize {
    connection_ceiling()
}

/// Client connections the gateway holds at most: the open-file limit less a fortieth (at
/// least 64), kept for its other descriptors (node links, the store, logs) and for the
/// connections it answers past this (health checks, and a 503 to the others).
pub(crate) fn connection_ceiling() -> usize {
    let Some(limit) = open_file_limit() else {
        return 16_384;
    };
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return 16_384;
    }
    let files = limit.rlim_cur as usize;
    files.saturating_sub((files / 40).max(64)).max(64)
}

fn open_file_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit)
}

/// Raises the process's open-file limit to its hard limit (a server holding a socket per
/// client should not stop at a shell's default 1,024 when the system allows more).
pub(crate) fn raise_open_file_limit() {
    let Some(mut limit) = open_file_limit() else {
        return;
    };
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::debug!("cannot raise the open-file limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_opens_connections_at_its_connect_rate_closing_them_does_not_reset_it() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let limits = AddressLimits::new(0, None, Some((1.0, 3.0)), trusted);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limits.admit(a).is_some(), "within the burst");
        }
        assert!(
            limits.admit(a).is_none(),
            "past the burst, though none is open"
        );
        assert!(limits.admit("192.0.2.2".parse().unwrap()).is_some());
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        assert!((0..10).all(|_| limits.admit(proxy).is_some()));
        assert_eq!(limits.open(), 0, "every slot was given back");
    }

    #[test]
    fn the_forwarded_client_is_the_nearest_address_no_trusted_proxy_holds() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let client = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            forwarded_client(&h, &trusted).map(|a| a.to_string())
        };
        let xff = |v: &str| client(&[("x-forwarded-for", v)]);
        assert_eq!(xff("203.0.113.9").as_deref(), Some("203.0.113.9"));
        // What the client wrote itself, left of the proxies' entries, does not count.
        assert_eq!(
            xff("1.2.3.4, 203.0.113.9, 10.0.0.2").as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            xff("not-an-address, 203.0.113.9").as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(xff("203.0.113.9, not-an-address"), None);
        assert_eq!(xff("10.0.0.3, 10.0.0.2"), None);
        assert_eq!(xff("[2001:db8::1]:4711").as_deref(), Some("2001:db8::1"));
        assert_eq!(xff("192.0.2.1:80").as_deref(), Some("192.0.2.1"));
        assert_eq!(xff("::ffff:192.0.2.1").as_deref(), Some("192.0.2.1"));
        // Two header lines are one list.
        let two = client(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(two.as_deref(), Some("198.51.100.1"));
        let rfc7239 = client(&[(
            "forwarded",
            "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\"",
        )]);
        assert_eq!(rfc7239.as_deref(), Some("2001:db8:cafe::17"));
        assert_eq!(client(&[]), None);
    }

    #[test]
    fn an_address_holds_its_share_and_gets_slots_back_trusted_ones_are_not_counted() {
        let limits = AddressLimits::new(2, None, None, vec!["10.0.0.0/8".parse().unwrap()]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(mapped).unwrap();
        assert!(limits.admit(a).is_none(), "a third from one address");
        assert!(limits.admit("192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        assert!(limits.admit(a).is_some(), "a slot given back");
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let many: Vec<_> = (0..10).map(|_| limits.admit(proxy)).collect();
        assert!(many.iter().all(Option::is_some));
        let (_, body) = std::str::from_utf8(REFUSAL)
            .unwrap()
            .split_once("\r\n\r\n")
            .unwrap();
        assert!(REFUSAL.ends_with(b"(429)\n"));
        assert!(std::str::from_utf8(REFUSAL)
            .unwrap()
            .contains(&format!("Content-Length: {}", body.len())));
    }
}
