//! A new client connection. Its first request is read here: a plain WebSocket upgrade to a
//! room is admitted and answered straight off the socket, which then becomes the client's
//! socket, with no HTTP server in between. Anything else (other requests, upgrades this
//! path leaves alone, heads it cannot parse) goes to the HTTP server (hyper serving the
//! gateway's router) with the bytes read so far replayed to it, and is answered exactly
//! as before. Nearly every connection a real-time service accepts is an upgrade; the HTTP
//! server's per-connection state, buffers and tasks were most of what one cost here.

use crate::addresses::{ClientAddress, Held, Slot};
use crate::route::parse_room_path;
use crate::server::authorize;
use crate::socket;
use crate::state::GatewayState;
use crate::upgrade::{admit, is_upgrade, switching_protocols_head};
use axum::Router;
use bytes::{Bytes, BytesMut};
use conclave_proto::Refusal;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a client may take to send a request's headers (slow-header clients hold a
/// socket and a task; they are cut off after this).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request heads longer than this go to the HTTP server, which has its own limit.
const HEAD_LIMIT: usize = 16 * 1024;
/// Heads with more header lines than this go to the HTTP server.
const MAX_HEADERS: usize = 64;
/// What the first read of a head is given room for: a browser's upgrade request without
/// large cookies, in an allocation malloc serves from its per-thread cache (to 1,032
/// bytes). A longer head doubles it.
const FIRST_READ: usize = 1024;
/// How long a refused client is given to read the refusal.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection the listener accepted, with what it was admitted as.
pub(crate) struct Accepted {
    pub stream: TcpStream,
    /// Its address's connection slot.
    pub slot: Slot,
    /// Who its requests come from: its own address, or a trusted proxy's word.
    pub client: ClientAddress,
}

/// Serves a new connection until it closes or becomes a client socket.
pub(crate) async fn serve(gw: Arc<GatewayState>, app: Router, mut conn: Accepted) {
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    let deadline = Instant::now() + HEADER_READ_TIMEOUT;
    let upgrade = loop {
        match tokio::time::timeout_at(deadline, conn.stream.read_buf(&mut buf)).await {
            // Too slow, gone, or failed before a whole head: the HTTP server would close
            // it too, with nothing to answer.
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
        }
        match read_head(&mut buf) {
            Head::Partial if buf.len() < HEAD_LIMIT => {
                if buf.capacity() == buf.len() {
                    buf.reserve(buf.len());
                }
            }
            Head::Partial | Head::Other => break None,
            Head::Request(req, head) => break Some((req, head)),
        }
    };
    let Some((req, head)) = upgrade else {
        return serve_http(app, conn, buf.freeze()).await;
    };
    match RoomUpgrade::new(&gw, req) {
        Some(upgrade) => upgrade.serve(gw, conn, buf.freeze()).await,
        None => serve_http(app, conn, rejoin(head, buf)).await,
    }
}

/// A head taken off the buffer put back in front of what followed it.
fn rejoin(head: Bytes, rest: BytesMut) -> Bytes {
    let mut whole = BytesMut::with_capacity(head.len() + rest.len());
    whole.extend_from_slice(&head);
    whole.extend_from_slice(&rest);
    whole.freeze()
}

/// Hands the connection to the HTTP server, which reads `replay` first.
async fn serve_http(app: Router, conn: Accepted, replay: Bytes) {
    let Accepted {
        stream,
        slot,
        client,
    } = conn;
    let app = tower_layer::Layer::layer(&axum::Extension(client), app);
    let service = TowerToHyperService::new(app);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(Held::new(stream, slot, replay)), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// What the bytes read so far hold.
#[allow(clippy::large_enum_variant)] // returned once per read, never stored
enum Head {
    /// The start of a head, or nothing yet.
    Partial,
    /// A whole head, taken off the front of the buffer (what follows it stays there), and
    /// the request read from it.
    Request(http::Request<()>, Bytes),
    /// Not a head this path reads: the HTTP server answers it.
    Other,
}

/// Parses the request head at the front of `buf`. Only what an upgrade can be is built:
/// a GET over HTTP/1.1; the header values and the target share the head's buffer.
fn read_head(buf: &mut BytesMut) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => return Head::Partial,
        Ok(httparse::Status::Complete(len)) => len,
        Err(_) => return Head::Other,
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return Head::Other;
    }
    // Where each piece lies in the head, to slice it once the head is its own buffer.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let Some(path) = parsed.path.map(|p| offset(p.as_bytes())) else {
        return Head::Other;
    };
    let mut spans = [((0, 0), (0, 0)); MAX_HEADERS];
    let count = parsed.headers.len();
    for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
        *span = (offset(h.name.as_bytes()), offset(h.value));
    }
    let head = buf.split_to(len).freeze();
    match request(&head, path, &spans[..count]) {
        Some(req) => Head::Request(req, head),
        None => {
            *buf = BytesMut::from(rejoin(head, std::mem::take(buf)));
            Head::Other
        }
    }
}

/// The request of a GET head: its target and header lines at the given spans of `head`.
fn request(head: &Bytes, path: Span, headers: &[(Span, Span)]) -> Option<http::Request<()>> {
    let slice = |(at, len): Span| head.slice(at..at + len);
    let uri = Uri::from_maybe_shared(slice(path)).ok()?;
    let mut map = HeaderMap::with_capacity(headers.len());
    for &(name, value) in headers {
        let name = HeaderName::from_bytes(&slice(name)).ok()?;
        map.append(name, HeaderValue::from_maybe_shared(slice(value)).ok()?);
    }
    let mut req = http::Request::new(());
    *req.method_mut() = Method::GET;
    *req.version_mut() = Version::HTTP_11;
    *req.uri_mut() = uri;
    *req.headers_mut() = map;
    Some(req)
}

/// Where a piece of a head lies in it: offset and length.
type Span = (usize, usize);

/// A WebSocket upgrade to a room this path takes: its party's token (if it needs one)
/// checks out. Refusals past that point are answered here.
struct RoomUpgrade {
    key: conclave_proto::RoomKey,
    req: http::Request<()>,
}

impl RoomUpgrade {
    fn new(gw: &GatewayState, req: http::Request<()>) -> Option<Self> {
        if !is_upgrade(req.headers()) {
            return None;
        }
        let key = parse_room_path(req.uri().path()).ok()?;
        // A refused token is answered by the HTTP server, which counts and logs it.
        authorize(gw, &key, &req).ok()?;
        Some(Self { key, req })
    }

    /// Admits the socket and answers 101, or the refusal; `already_read` is what the
    /// client sent after the head.
    async fn serve(self, gw: Arc<GatewayState>, conn: Accepted, already_read: Bytes) {
        let Accepted {
            mut stream,
            slot,
            client,
        } = conn;
        let admitted = match admit(&gw, self.key, &self.req, Some(&client)).await {
            Ok(admitted) => admitted,
            Err(r) => return refuse(stream, &r).await,
        };
        drop(self.req);
        let answer = switching_protocols_head(&admitted.handshake);
        if let Err(e) = stream.write_all(&answer).await {
            tracing::debug!(error = %e, "upgrade failed");
            return socket::upgrade_failed(&gw, &admitted.session).await;
        }
        let slot = admitted.forwarded_slot.or(Some(slot));
        socket::start(
            gw,
            admitted.session,
            admitted.rate,
            stream,
            slot,
            &already_read,
        );
    }
}

/// Answers a refused upgrade as the HTTP server would (plain text), and closes.
async fn refuse(stream: TcpStream, r: &Refusal) {
    let status =
        http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        r.body.len(),
        r.body
    );
    answer_and_close(stream, answer.as_bytes()).await
}

/// Writes `answer` (whatever the request was, read or not) and closes, giving the client
/// [`REFUSAL_WRITE_TIMEOUT`] to take it.
pub(crate) async fn answer_and_close(mut stream: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(answer).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: impl AsRef<[u8]>) -> BytesMut {
        BytesMut::from(text.as_ref())
    }

    #[test]
    fn an_upgrade_head_is_taken_off_the_front_and_what_follows_stays() {
        let mut buf = head(
            b"GET /parties/main/r1?_pk=a HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nX-Two: a\r\nX-Two: b\r\n\r\n\x81\x80",
        );
        let Head::Request(req, _) = read_head(&mut buf) else {
            panic!("not read as a request")
        };
        assert_eq!(&buf[..], b"\x81\x80");
        assert_eq!(req.uri().path(), "/parties/main/r1");
        assert_eq!(req.uri().query(), Some("_pk=a"));
        assert!(is_upgrade(req.headers()));
        assert_eq!(req.headers()["host"], "example.com");
        let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["a", "b"]);
    }

    #[test]
    fn partial_heads_wait_and_other_requests_go_to_the_http_server() {
        let partial = "GET /parties/main/r1 HTTP/1.1\r\nHost: exa";
        let mut buf = head(partial);
        assert!(matches!(read_head(&mut buf), Head::Partial));
        assert_eq!(
            &buf[..],
            partial.as_bytes(),
            "a partial head stays in the buffer"
        );
        for other in [
            &b"POST /parties/main/r1 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /parties/main/r1 HTTP/1.0\r\nHost: a\r\n\r\n",
            b"GET /parties/main/r1 HTTP/1.1\r\nHo st: a\r\n\r\n",
            // Parsed, but not a target the URI type takes: put back whole.
            b"GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\nrest",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            let mut buf = head(other);
            assert!(matches!(read_head(&mut buf), Head::Other), "{other:?}");
            assert_eq!(&buf[..], other, "nothing taken from {other:?}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let mut buf = head(format!("GET / HTTP/1.1\r\n{many}\r\n"));
        assert!(matches!(read_head(&mut buf), Head::Other));
    }
}
