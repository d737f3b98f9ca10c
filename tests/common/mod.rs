//! Test harness. This file: a real `conclave dev` server in-process on a free port, and the
//! WebSocket/HTTP client helpers every test speaks through. The modules:
//!
//! - `cluster`: a cluster of real `conclave` processes (static or with placement, one or
//!   several regions) over a real PostgreSQL database, built with `Cluster::builder()`.
//! - `local`: an in-process cluster (nodes, one gateway, real client sockets) whose relay
//!   links the test breaks through `faults` (cut, stall, lost acknowledgements).
//! - `relay`: a gateway played by the test, relay events straight to one node, no sockets:
//!   where paused tokio time works.
//! - `store`: the real store wrapped for tests (failing commits; calls the paused clock
//!   waits for).
//! - `process`, `redis`, `postgres`, `net`: real processes and servers on free ports.
//! - `partition`: a TCP proxy the test cuts and heals, as a network partition.
//! - `tls`: a throwaway CA and server certificate for the TLS tests.
//! - `fdb` (`--features fdb`): the FoundationDB cluster a test uses — the one
//!   `FDB_CLUSTER_FILE` names, else the FoundationDB test double started on a free port.
#![allow(dead_code)]

pub mod cluster;
pub mod counting;
pub mod faults;
#[cfg(feature = "fdb")]
pub mod fdb;
pub mod local;
pub mod net;
pub mod partition;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod relay;
pub mod store;
pub mod tls;

use conclave::config::{default_parties, DevOpts, ListenOpts, StorageOpts};
use conclave::{DevConfig, DevServer};
use conclave_node::storage::{RedbStore, Store};
use conclave_node::PartyRegistry;
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub server: DevServer,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// A dev config on a free port with test-friendly limits; `edit` adjusts it.
pub fn config(dir: &std::path::Path, edit: impl FnOnce(&mut DevConfig)) -> DevConfig {
    let opts = DevOpts {
        listen: ListenOpts {
            port: Some(0),
            ..Default::default()
        },
        storage: StorageOpts {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut c = opts.resolve().expect("default config resolves");
    c.parties = default_parties();
    edit(&mut c);
    c
}

pub async fn start(
    edit: impl FnOnce(&mut DevConfig),
    parties: impl FnOnce(PartyRegistry) -> PartyRegistry,
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), edit);
    let registry = parties(c.registry());
    let server = DevServer::start(c, registry).await.unwrap();
    let addr = server.addr;
    TestServer { server, addr, dir }
}

/// A server on a [`store::TestStore`] over its redb file, and the store's switches.
pub async fn start_on_test_store(
    edit: impl FnOnce(&mut DevConfig),
    parties: impl FnOnce(PartyRegistry) -> PartyRegistry,
) -> (TestServer, store::TestStore) {
    let mut switches = None;
    let server = start_with_store(edit, parties, |inner| {
        let store = store::TestStore::new(inner);
        switches = Some(store.clone());
        Arc::new(store)
    })
    .await;
    (server, switches.expect("the server opened its store"))
}

pub async fn start_with_store(
    edit: impl FnOnce(&mut DevConfig),
    parties: impl FnOnce(PartyRegistry) -> PartyRegistry,
    store: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), edit);
    let registry = parties(c.registry());
    let redb: Arc<dyn Store> =
        Arc::new(RedbStore::open(&dir.path().join("conclave.redb")).unwrap());
    let server = DevServer::start_with_store(c, registry, store(redb))
        .await
        .unwrap();
    let addr = server.addr;
    TestServer { server, addr, dir }
}

impl TestServer {
    pub async fn connect(&self, path: &str) -> Ws {
        ws_connect(self.addr, path).await
    }

    /// The HTTP status of a refused upgrade (or 101).
    pub async fn connect_status(&self, path: &str) -> u16 {
        upgrade_status(self.addr, path).await
    }

    /// An HTTP request; returns (status, body).
    pub async fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(self.addr, method, path, None, body).await
    }
}

/// A WebSocket to `path` at `addr`, with Nagle's algorithm off as browsers and Node's `ws`
/// have it.
pub async fn try_ws_connect(
    addr: SocketAddr,
    path: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    Ok(ws)
}

/// A WebSocket to `path` at `addr`; panics (naming the path) when it is refused.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> Ws {
    try_ws_connect(addr, path)
        .await
        .unwrap_or_else(|e| panic!("connect {path}: {e}"))
}

/// The HTTP status of a refused upgrade (or 101).
pub async fn upgrade_status(addr: SocketAddr, path: &str) -> u16 {
    match try_ws_connect(addr, path).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected connect error: {e}"),
    }
}

/// An HTTP/1.1 request, with `Authorization: Bearer <bearer>` when given; (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    raw_http(addr, &format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await
}

/// `GET path`; (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, None, "").await
}

/// A raw HTTP/1.1 exchange; returns (status, body). Panics when nothing listens at `addr`.
pub async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    try_raw_http(addr, request)
        .await
        .unwrap_or_else(|e| panic!("HTTP to {addr}: {e}"))
}

/// Writes `request` and reads the reply for up to 5 s: the reply's text, and whether the
/// server closed the connection within that time.
pub async fn raw_http_reply(addr: SocketAddr, request: &str) -> std::io::Result<(String, bool)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    Ok((String::from_utf8_lossy(&buf).to_string(), read.is_ok()))
}

/// A raw HTTP/1.1 exchange, or the error connecting or writing.
pub async fn try_raw_http(addr: SocketAddr, request: &str) -> std::io::Result<(u16, String)> {
    let (text, _) = raw_http_reply(addr, request).await?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The next text message, failing after 5 s.
pub async fn next_text(ws: &mut Ws) -> String {
    next_text_within(ws, Duration::from_secs(5)).await
}

/// The next text message, failing after `within` or when the socket closes or fails.
pub async fn next_text_within(ws: &mut Ws, within: Duration) -> String {
    // One deadline for the whole wait: pings do not restart it.
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no message in time");
        match msg.expect("socket ended").expect("socket error") {
            Message::Text(t) => return t.to_string(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => continue,
        }
    }
}

/// The string `field` of each object in the JSON array `list` (none if it is no array).
pub fn strings_of<'a>(list: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    let items = list.as_array().into_iter().flatten();
    items.filter_map(|item| item[field].as_str()).collect()
}

pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    serde_json::from_str(&next_text(ws).await).unwrap()
}

/// Whether no data message arrives within `ms` — on a socket that stays open: a socket
/// that closes or fails meanwhile is not silent, it is a failure (the panic shows how it
/// ended).
pub async fn silent_for(ws: &mut Ws, ms: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))) => return false,
            Ok(Some(Ok(Message::Close(frame)))) => {
                panic!("the socket was closed while it should have stayed open: {frame:?}")
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("the socket failed while it should have stayed open: {e}"),
            Ok(None) => panic!("the socket ended while it should have stayed open"),
        }
    }
}

/// The close code the server sends, failing after 5 s.
pub async fn close_code(ws: &mut Ws) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no close in time");
        match msg {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before close frame: {e}"),
            None => return 1006,
        }
    }
}

/// Upgrades `s` to a WebSocket on `path` by hand (to send frames no client library
/// would, or to never read).
pub async fn upgrade_by_hand(mut s: TcpStream, path: &str) -> TcpStream {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// Polls `f` until it returns true, for up to 5 s.
pub async fn eventually(f: impl AsyncFnMut() -> bool) -> bool {
    eventually_within(Duration::from_secs(5), f).await
}

/// Polls `f` every 20 ms until it returns true, for up to `within`; whether it did.
pub async fn eventually_within(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two fresh sockets in a fresh room still exchange messages.
pub async fn assert_serving(server: &TestServer) {
    let room = format!("/parties/main/health-{}", rand_suffix());
    let mut a = server.connect(&format!("{room}?_pk=a")).await;
    let mut b = server.connect(&format!("{room}?_pk=b")).await;
    send(&mut a, "still serving").await;
    assert_eq!(next_text(&mut b).await, "still serving");
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The time of day (UTC, `HH:MM:SS.micros`), as the roles' log lines show it.
pub fn wall_clock() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let secs = (micros / 1_000_000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        micros % 1_000_000
    )
}
