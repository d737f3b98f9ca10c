//! Bad input from clients: each gets a clear status or close code, and the process keeps
//! serving other rooms.

mod common;

use common::*;
use conclave_node::{async_trait, Connection, Message, Party, PartyError, Request, Response, Room};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A WebSocket opened by hand, to send frames no client library would.
async fn raw_ws(server: &TestServer, path: &str) -> TcpStream {
    upgrade_by_hand(TcpStream::connect(server.addr).await.unwrap(), path).await
}

/// Records each text message (`message <text>`) and how each connection ended
/// (`close <code>` or `error`); `GET` lists them.
#[derive(Default)]
struct Endings(Vec<String>);

#[async_trait]
impl Party for Endings {
    async fn on_message(
        &mut self,
        _room: &mut Room,
        _conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        if let Some(text) = msg.as_text() {
            self.0.push(format!("message {text}"));
        }
        Ok(())
    }

    async fn on_close(
        &mut self,
        _room: &mut Room,
        _conn: &Connection,
        code: u16,
        _reason: &str,
    ) -> Result<(), PartyError> {
        self.0.push(format!("close {code}"));
        Ok(())
    }

    async fn on_error(
        &mut self,
        _room: &mut Room,
        _conn: &Connection,
        _error: &str,
    ) -> Result<(), PartyError> {
        self.0.push("error".into());
        Ok(())
    }

    async fn on_request(
        &mut self,
        _room: &mut Room,
        _req: Request,
    ) -> Result<Response, PartyError> {
        Ok(Response::new(self.0.join(",").into()))
    }
}

#[tokio::test]
async fn a_connection_dropped_without_a_close_frame_ends_as_1006() {
    let server = start(|_| {}, |r| r.with::<Endings>("endings")).await;
    // A close frame with 1000, then a TCP end with no close frame at all.
    let mut clean = raw_ws(&server, "/parties/endings/r?_pk=clean").await;
    clean
        .write_all(&frame(0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut clean).await, Some(1000));
    let mut dropped = raw_ws(&server, "/parties/endings/r?_pk=dropped").await;
    dropped.shutdown().await.unwrap();
    let endings = async || get(server.addr, "/parties/endings/r").await.1;
    assert!(
        eventually(async || endings().await.split(',').count() == 2).await,
        "{}",
        endings().await
    );
    assert_eq!(endings().await, "close 1000,close 1006");
}

/// The gateway reads a socket once per readiness when the read leaves it empty: data and
/// the end of the connection arriving together must still both be seen.
#[tokio::test]
async fn messages_and_the_end_of_the_connection_sent_at_once_are_all_seen() {
    let server = start(|_| {}, |r| r.with::<Endings>("endings")).await;
    for round in 0..20 {
        let path = format!("/parties/endings/r{round}");
        let mut ws = raw_ws(&server, &format!("{path}?_pk=p")).await;
        let mut bytes = frame(0x1, b"one");
        bytes.extend(frame(0x1, b"two"));
        ws.write_all(&bytes).await.unwrap();
        ws.shutdown().await.unwrap();
        let endings = async || get(server.addr, &path).await.1;
        let want = "message one,message two,close 1006";
        assert!(
            eventually(async || endings().await == want).await,
            "round {round}: {}",
            endings().await
        );
        // Half of the rounds: the two messages in one read, then the end in the next.
        if round % 2 == 1 {
            let mut ws = raw_ws(&server, &format!("{path}-apart?_pk=p")).await;
            ws.write_all(&frame(0x1, b"three")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            ws.shutdown().await.unwrap();
            let path = format!("{path}-apart");
            let endings = async || get(server.addr, &path).await.1;
            assert!(
                eventually(async || endings().await == "message three,close 1006").await,
                "round {round}: {}",
                endings().await
            );
        }
    }
}

/// An upgrade whose head arrives in pieces, with the client's first frame right behind it,
/// is served and the frame is not lost; an upgrade refused before admission is answered
/// with its status and a body that says why.
#[tokio::test]
async fn upgrades_sent_in_pieces_keep_the_frame_behind_them_and_refusals_say_why() {
    let server = start(|_| {}, |r| r.with::<Endings>("endings")).await;
    let head = |version: u8| {
        format!(
            "GET /parties/endings/pieces?_pk=p HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: {version}\r\n\r\n"
        )
    };
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let upgrade = head(13);
    let (first, rest) = upgrade.split_at(30);
    s.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut last = rest.as_bytes().to_vec();
    last.extend(frame(0x1, b"early"));
    s.write_all(&last).await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        answer.push(byte[0]);
    }
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 101 "), "{answer}");
    // RFC 6455's example key and its accept value.
    assert!(
        answer.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{answer}"
    );
    s.shutdown().await.unwrap();
    let endings = async || get(server.addr, "/parties/endings/pieces").await.1;
    assert!(
        eventually(async || endings().await == "message early,close 1006").await,
        "{}",
        endings().await
    );

    let (reply, closed) = raw_http_reply(server.addr, &head(8)).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 426 "), "{reply}");
    assert!(
        reply.ends_with("Unsupported WebSocket version (need 13)"),
        "{reply}"
    );
    assert!(closed, "the refused connection was left open");
    assert_serving(&server).await;
}

#[tokio::test]
async fn a_request_body_that_never_finishes_is_answered_408_and_the_connection_closed() {
    let server = start(
        |c| c.gateway.http_body_timeout = Duration::from_millis(300),
        |r| r,
    )
    .await;
    let request =
        "POST /parties/main/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n0123456789";
    let (reply, closed) = raw_http_reply(server.addr, request).await.unwrap();
    assert!(closed, "the connection was held open");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert_serving(&server).await;
}

#[tokio::test]
async fn built_in_parties_answer_405_with_allow_to_methods_they_do_not_serve() {
    let server = start(|_| {}, |r| r).await;
    for (method, path) in [
        ("POST", "/parties/counter/m"),
        ("DELETE", "/parties/chat/m"),
        ("PUT", "/parties/main/m"),
    ] {
        let (status, body) = server.http(method, path, "").await;
        assert_eq!(
            (status, body.as_str()),
            (405, "Method not allowed"),
            "{method} {path}"
        );
    }
    let (status, body) = server.http("GET", "/parties/counter/m", "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"value":0}"#));
    let request = "DELETE /parties/chat/m HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let (reply, _) = raw_http_reply(server.addr, request).await.unwrap();
    let reply = reply.to_lowercase();
    assert!(reply.contains("\r\nallow: get, head\r\n"), "{reply}");
}

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The close code of the server's close frame (None if the socket just ended).
async fn read_close_code(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<u16> {
    let buf = read_for(s, Duration::from_secs(5)).await;
    server_frames(&buf)
        .into_iter()
        .find(|(op, payload)| *op == 0x8 && payload.len() >= 2)
        .map(|(_, p)| u16::from_be_bytes([p[0], p[1]]))
}

/// What the server sends within `limit` (or until it closes the connection).
async fn read_for(s: &mut (impl tokio::io::AsyncRead + Unpin), limit: Duration) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut chunk).await {
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    buf
}

/// The server's frames in `buf` (unmasked, payloads under 126 bytes): opcode and payload.
fn server_frames(buf: &[u8]) -> Vec<(u8, &[u8])> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i + 2 <= buf.len() {
        let (op, len) = (buf[i] & 0x0f, (buf[i + 1] & 0x7f) as usize);
        frames.push((op, &buf[i + 2..(i + 2 + len).min(buf.len())]));
        i += 2 + len;
    }
    frames
}

#[tokio::test]
async fn garbage_frames_close_with_1002() {
    let server = start(|_| {}, |r| r).await;
    let mut s = raw_ws(&server, "/parties/main/garbage").await;
    // Reserved opcode 0x3 with RSV bits set, unmasked: three protocol violations.
    s.write_all(&[0xF3, 0x05, b'h', b'e', b'l', b'l', b'o'])
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut s).await, Some(1002));
    assert_serving(&server).await;
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let server = start(|_| {}, |r| r).await;
    let mut s = raw_ws(&server, "/parties/main/utf8").await;
    s.write_all(&frame(0x1, &[0xC3, 0x28, 0xFF])).await.unwrap();
    assert_eq!(read_close_code(&mut s).await, Some(1007));
    assert_serving(&server).await;
}

#[tokio::test]
async fn http_garbage_and_huge_headers_are_refused() {
    let server = start(|_| {}, |r| r).await;
    let (status, _) = raw_http(server.addr, "NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(status, 400);
    let huge = "x".repeat(1024 * 1024);
    let (status, _) = raw_http(
        server.addr,
        &format!("GET /parties/main/r HTTP/1.1\r\nHost: t\r\nX-Big: {huge}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 431);
    assert_serving(&server).await;
}

#[tokio::test]
async fn invalid_room_urls_are_400_or_404() {
    let server = start(|_| {}, |r| r).await;
    for (path, want) in [
        ("/parties/main/%FF%FE", 400),
        ("/parties/ma%01in/r", 400),
        (&format!("/parties/main/{}", "r".repeat(600)) as &str, 400),
        ("/parties/main/", 404),
        ("/elsewhere", 404),
        ("/parties/unknown/r", 404),
        // A connection id with control characters (it would reach chat's `from` and logs).
        ("/parties/main/r?_pk=a%0Ab", 400),
        ("/parties/main/r?_pk=%1B%5B31m", 400),
    ] {
        assert_eq!(server.connect_status(path).await, want, "{path}");
    }
    let (status, body) = server.http("GET", "/parties/main/%FF", "").await;
    assert_eq!(status, 400);
    assert!(body.contains("not valid UTF-8"), "{body}");
    assert_serving(&server).await;
}

#[tokio::test]
async fn message_flood_closes_with_1008() {
    let server = five_messages_a_second().await;
    let mut ws = server.connect("/parties/main/flood?_pk=f").await;
    for i in 0..50 {
        if futures::SinkExt::send(
            &mut ws,
            tokio_tungstenite::tungstenite::Message::text(format!("m{i}")),
        )
        .await
        .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, 1008);
    assert_serving(&server).await;
}

/// Pings count against the message rate (each one answered is a write): a client that
/// only pings, past the rate, is closed like one that floods messages.
#[tokio::test]
async fn ping_flood_closes_with_1008() {
    let server = five_messages_a_second().await;
    let mut s = raw_ws(&server, "/parties/main/pings").await;
    for i in 0..50u8 {
        if s.write_all(&frame(0x9, &[i])).await.is_err() {
            break;
        }
    }
    assert_eq!(read_close_code(&mut s).await, Some(1008));
    assert_serving(&server).await;
}

/// Pings read together are answered once, with the last one's payload (RFC 6455, 5.5.3);
/// a ping on its own gets its own pong.
#[tokio::test]
async fn pings_read_together_get_one_pong() {
    let server = start(|_| {}, |r| r).await;
    let mut s = raw_ws(&server, "/parties/main/pongs").await;
    let burst: Vec<u8> = [&b"a"[..], b"b", b"c"]
        .iter()
        .flat_map(|p| frame(0x9, p))
        .collect();
    s.write_all(&burst).await.unwrap();
    assert_eq!(read_pongs(&mut s).await, vec![b"c".to_vec()]);
    s.write_all(&frame(0x9, b"d")).await.unwrap();
    assert_eq!(read_pongs(&mut s).await, vec![b"d".to_vec()]);
}

/// The payloads of the pong frames that arrive within 300 ms.
async fn read_pongs(s: &mut TcpStream) -> Vec<Vec<u8>> {
    let buf = read_for(s, Duration::from_millis(300)).await;
    server_frames(&buf)
        .into_iter()
        .filter(|(op, _)| *op == 0xA)
        .map(|(_, payload)| payload.to_vec())
        .collect()
}

/// A server whose sockets may send 5 messages a second (5 at once).
async fn five_messages_a_second() -> TestServer {
    start(
        |c| {
            c.gateway.messages_per_second = 5.0;
            c.gateway.message_burst = 5.0;
        },
        |r| r,
    )
    .await
}

#[tokio::test]
async fn full_room_is_503_before_the_upgrade_except_for_a_socket_replacing_its_own_id() {
    let server = start(|c| c.node.max_connections_per_room = 2, |r| r).await;
    let mut a = server.connect("/parties/main/full?_pk=a").await;
    let _b = server.connect("/parties/main/full?_pk=b").await;
    assert_eq!(server.connect_status("/parties/main/full?_pk=c").await, 503);
    // A client reconnecting with its id replaces its old socket: not one more connection.
    let _a_again = server.connect("/parties/main/full?_pk=a").await;
    assert_eq!(close_code(&mut a).await, 1000);
    assert_eq!(server.connect_status("/parties/main/full?_pk=c").await, 503);
    assert_serving(&server).await;
}

async fn assert_slow_consumer_closed(edit: impl FnOnce(&mut conclave::DevConfig)) {
    let server = start(edit, |r| r).await;
    // Never reads: the kernel buffers fill, then the gateway's queue.
    let _slow = raw_ws(&server, "/parties/main/slow?_pk=slow").await;
    let payload = "p".repeat(60_000);
    let mut closed = false;
    for _ in 0..1000 {
        server.http("POST", "/parties/main/slow", &payload).await;
        let (_, body) = server.http("GET", "/parties/main/slow", "").await;
        if body.contains("\"connections\":0") {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow consumer was never closed");
    assert_serving(&server).await;
}

fn slow_consumer_closes() -> f64 {
    conclave::telemetry::metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("conclave_gateway_slow_consumer_closes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn slow_consumer_is_closed_with_1013_when_its_queue_is_full() {
    let before = slow_consumer_closes();
    assert_slow_consumer_closed(|c| c.gateway.send_queue_frames = 8).await;
    assert!(
        slow_consumer_closes() > before,
        "closed for something other than a full queue"
    );
}

#[tokio::test]
async fn slow_consumer_is_closed_when_its_queued_bytes_reach_the_limit() {
    let before = slow_consumer_closes();
    assert_slow_consumer_closed(|c| {
        c.gateway.send_queue_frames = 1_000_000;
        c.gateway.send_queue_bytes = 256 * 1024;
        c.gateway.max_frame_bytes = 128 * 1024;
    })
    .await;
    assert!(
        slow_consumer_closes() > before,
        "closed for something other than a full queue"
    );
}

/// A client that starts a fragmented message and then only pings is closed with 1008 once
/// the message timeout passes (before, it held up to the message limit of memory for ever).
#[tokio::test]
async fn a_message_left_unfinished_is_closed_even_while_pings_keep_coming() {
    let server = start(
        |c| {
            c.gateway.ping_interval = Duration::from_millis(200);
            c.gateway.message_timeout = Duration::from_secs(1);
        },
        |r| r,
    )
    .await;
    let (mut read, mut write) = raw_ws(&server, "/parties/main/unfinished")
        .await
        .into_split();
    let mut first_fragment = frame(0x1, b"the start of");
    first_fragment[0] &= 0x7f; // not final
    write.write_all(&first_fragment).await.unwrap();
    let started = std::time::Instant::now();
    let pinger = tokio::spawn(async move {
        while write.write_all(&frame(0x9, b"")).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(read_close_code(&mut read).await, Some(1008));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed before the timeout"
    );
    pinger.abort();
}

#[tokio::test]
async fn clients_that_stop_answering_pings_are_closed() {
    let server = start(
        |c| c.gateway.ping_interval = Duration::from_millis(200),
        |r| r,
    )
    .await;
    // A raw socket never answers pings.
    let mut silent = raw_ws(&server, "/parties/main/keepalive?_pk=quiet").await;
    assert_eq!(read_close_code(&mut silent).await, Some(1001));
    // A client library answers them and stays.
    let mut live = server.connect("/parties/main/keepalive?_pk=live").await;
    assert!(silent_for(&mut live, 1000).await);
    let (_, body) = server.http("GET", "/parties/main/keepalive", "").await;
    assert!(body.contains("\"connections\":1"), "{body}");
}

/// A client that keeps talking is known to be there: it is not pinged, and stays open past
/// two ping intervals without answering any ping.
#[tokio::test]
async fn clients_that_keep_talking_are_not_pinged() {
    let server = start(
        |c| c.gateway.ping_interval = Duration::from_millis(500),
        |r| r,
    )
    .await;
    let (mut read, mut write) = raw_ws(&server, "/parties/main/talker?_pk=talker")
        .await
        .into_split();
    let talker = tokio::spawn(async move {
        for _ in 0..40 {
            write.write_all(&frame(0x1, b"still here")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        write
    });
    // Alone in its room, it gets nothing back but what keepalive would send.
    let mut got = [0u8; 64];
    let heard = tokio::time::timeout(Duration::from_millis(1800), read.read(&mut got)).await;
    assert!(
        heard.is_err(),
        "the talking client got {heard:?}: {:?}",
        &got[..2]
    );
    let _write = talker.await.unwrap();
    let (_, body) = server.http("GET", "/parties/main/talker", "").await;
    assert!(body.contains("\"connections\":1"), "{body}");
}

/// A client that talked and then fell quiet gives its socket's task back half a ping
/// interval after its last message, as one that never talked has none. (Nothing else
/// wakes such a task to park: a member the room keeps sending to is not pinged while its
/// TCP stack acknowledges, so the task, its buffers and its timer stayed for as long as
/// the socket did.)
#[tokio::test]
async fn clients_that_talked_then_fell_quiet_give_their_tasks_back() {
    let server = start(|c| c.gateway.ping_interval = Duration::from_secs(2), |r| r).await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let mut sockets = Vec::new();
    for i in 0..20 {
        sockets.push(raw_ws(&server, &format!("/parties/main/quiet-talkers?_pk=t{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = tasks();
    for s in &mut sockets {
        s.write_all(&frame(0x1, b"hello")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let talking = tasks();
    assert!(
        talking >= idle + 15,
        "{idle} tasks before the messages, {talking} after one from each socket"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let quiet = tasks();
    assert!(
        quiet <= idle + 2,
        "{idle} tasks before the messages, {quiet} 1.8 s after them"
    );
    // Parked, a socket still wakes for its client's next message.
    sockets[0]
        .write_all(&frame(0x1, b"hello again"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tasks() > quiet, "the socket did not wake for a message");
    let (_, body) = server.http("GET", "/parties/main/quiet-talkers", "").await;
    assert!(body.contains("\"connections\":20"), "{body}");
}

/// The frames `s` receives until `deadline`: each one's opcode, and when its first bytes
/// arrived.
async fn frames_until(s: &mut TcpStream, deadline: Instant) -> Vec<(u8, Instant)> {
    let mut got = Vec::new();
    // Where each read's bytes start in `got`, and when they arrived.
    let mut arrivals: Vec<(usize, Instant)> = Vec::new();
    let _ = tokio::time::timeout_at(deadline.into(), async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut chunk).await {
            arrivals.push((got.len(), Instant::now()));
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let mut frames = Vec::new();
    let mut i = 0;
    while i + 2 <= got.len() {
        let arrived = arrivals
            .iter()
            .rev()
            .find(|(start, _)| *start <= i)
            .unwrap()
            .1;
        frames.push((got[i] & 0x0f, arrived));
        i += 2 + (got[i + 1] & 0x7f) as usize;
    }
    frames
}

/// A raw socket that only listens in `room` (and when it connected), and a client that
/// says something there every 50 ms for `secs`, on a gateway pinging every `ping_ms`.
async fn listener_and_talker(
    ping_ms: u64,
    room: &str,
    secs: u64,
) -> (TestServer, TcpStream, Instant, tokio::task::JoinHandle<Ws>) {
    let server = start(
        |c| c.gateway.ping_interval = Duration::from_millis(ping_ms),
        |r| r,
    )
    .await;
    let listener = raw_ws(&server, &format!("/parties/main/{room}?_pk=listener")).await;
    let connected = Instant::now();
    let mut talker = server
        .connect(&format!("/parties/main/{room}?_pk=talker"))
        .await;
    let talking = tokio::spawn(async move {
        for i in 0..secs * 20 {
            send(&mut talker, &format!("m{i}")).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        talker
    });
    (server, listener, connected, talking)
}

/// A member that only receives is known to be there by its TCP stack acknowledging what it
/// is sent: it is not pinged for up to three sweeps in a row, and stays open past two ping
/// intervals without sending a byte. (A member that only receives and stops acknowledging
/// is pinged; once pinged, only an answer counts:
/// `clients_that_stop_answering_pings_are_closed`.)
#[tokio::test]
async fn clients_that_keep_receiving_are_not_pinged() {
    let (server, mut listener, connected, talking) = listener_and_talker(500, "listener", 2).await;
    // 1.4 s after it connected: more than two intervals, and at most three sweeps have
    // found it quiet (the first half an interval after it connected at the earliest). It
    // got the talker's messages and no ping.
    let frames = frames_until(&mut listener, connected + Duration::from_millis(1400)).await;
    let opcodes: Vec<u8> = frames.iter().map(|f| f.0).collect();
    assert!(opcodes.contains(&0x1), "{opcodes:?}");
    assert!(
        !opcodes.contains(&0x9),
        "the listener was pinged: {opcodes:?}"
    );
    assert!(
        !opcodes.contains(&0x8),
        "the listener was closed: {opcodes:?}"
    );
    let (_, body) = server.http("GET", "/parties/main/listener", "").await;
    assert!(body.contains("\"connections\":2"), "{body}");
    talking.abort();
}

/// Acknowledgements stand in for three pings in a row at most: behind a proxy that ends
/// TCP they are the proxy's, so a member that only receives is still pinged end to end.
#[tokio::test]
async fn clients_that_keep_receiving_are_still_pinged_now_and_then() {
    let (_server, mut listener, connected, talking) = listener_and_talker(400, "pinged", 4).await;
    // A sweep each 0.4 s. The first three that find the listener quiet (from 0.2 s after
    // it connected; by 0.6 s at the latest, when a ping would go out if acknowledgements
    // did not stand in) take its acknowledgements; the fourth pings, 1.4 s after the
    // socket was opened at the earliest. The listener never answers, so from then on every
    // sweep pings it until the silence closes it.
    let frames = frames_until(&mut listener, connected + Duration::from_secs(4)).await;
    let Some((_, pinged)) = frames.iter().find(|f| f.0 == 0x9) else {
        panic!("never pinged: {frames:?}");
    };
    let after = pinged.duration_since(connected);
    assert!(
        after >= Duration::from_millis(1000),
        "pinged {after:?} after connecting"
    );
    talking.abort();
}

/// The public port speaks HTTP/1.1 only: an HTTP/2 prior-knowledge (h2c) preface gets no
/// HTTP/2 session (no SETTINGS frame back), and the server goes on serving.
#[tokio::test]
async fn the_public_port_speaks_no_http2_cleartext() {
    let server = start(|_| {}, |p| p).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await;
    // An HTTP/2 server answers the preface with a SETTINGS frame: type 0x4 at byte 3.
    assert!(
        reply.is_empty() || reply.starts_with(b"HTTP/1.1 "),
        "answered like an HTTP/2 server: {reply:?}"
    );
    assert_serving(&server).await;
}

/// A client that opens a connection and never finishes its request headers is cut off
/// (it would otherwise hold a socket and a task for ever).
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_or_never_sends_a_byte_is_cut_off() {
    let server = start(|_| {}, |p| p).await;
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /parties/main/slow HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let closed_within = async |s: &mut TcpStream| {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut rest))
            .await
            .is_ok()
    };
    let (half_closed, silent_closed) =
        tokio::join!(closed_within(&mut half), closed_within(&mut silent));
    assert!(
        half_closed,
        "the half-sent request was still open after 15 s"
    );
    assert!(
        silent_closed,
        "a connection that sent nothing was still open after 15 s"
    );
}

/// Sends (`"send"`) or broadcasts to everyone else (`"broadcast"`) one message over
/// `MAX_SEND_BYTES`.
#[derive(Default)]
struct Oversized;

#[conclave_node::async_trait]
impl conclave_node::Party for Oversized {
    async fn on_message(
        &mut self,
        room: &mut conclave_node::Room,
        conn: &conclave_node::Connection,
        msg: conclave_node::Message,
    ) -> Result<(), conclave_node::PartyError> {
        let huge = conclave_node::Message::binary(vec![0u8; conclave_node::MAX_SEND_BYTES + 1]);
        match msg.as_text() {
            Some("send") => conn.send(huge),
            Some("broadcast") => room.broadcast(&huge, &[conn.id()]),
            _ => conn.send(msg),
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_big_to_send_closes_its_receivers_with_1009_and_nothing_else() {
    let server = start(|_| {}, |r| r.with::<Oversized>("oversized")).await;
    let mut sender = server.connect("/parties/oversized/r?_pk=sender").await;
    let mut other = server.connect("/parties/oversized/r?_pk=other").await;
    let mut elsewhere = server.connect("/parties/oversized/calm?_pk=calm").await;

    send(&mut sender, "broadcast").await;
    assert_eq!(close_code(&mut other).await, 1009);
    // The broadcaster was not a receiver: it goes on.
    send(&mut sender, "echo").await;
    assert_eq!(next_text(&mut sender).await, "echo");

    send(&mut sender, "send").await;
    assert_eq!(close_code(&mut sender).await, 1009);
    send(&mut elsewhere, "still here").await;
    assert_eq!(next_text(&mut elsewhere).await, "still here");
    assert_serving(&server).await;
}

/// Reading rooms that were never written leaves nothing in storage once they idle (before,
/// every room read kept an owner record: 100,000 GETs to new names kept 100,000). A room
/// that was written keeps its record.
#[tokio::test]
async fn rooms_that_were_only_read_leave_no_record_once_idle() {
    let mut store = None;
    let server = start_with_store(
        |c| c.node.hibernate_after = Duration::from_millis(200),
        |r| r,
        |s| {
            store = Some(s.clone());
            s
        },
    )
    .await;
    let store = store.unwrap();
    let rooms: Vec<String> = (0..50).map(|i| format!("read-{i}")).collect();
    for r in &rooms {
        let (status, _) = server
            .http("GET", &format!("/parties/counter/{r}"), "")
            .await;
        assert_eq!(status, 200);
    }
    let mut ws = server.connect("/parties/counter/written").await;
    send(&mut ws, "incr").await;
    next_text(&mut ws).await;
    drop(ws);

    let key = |r: &str| conclave_proto::RoomKey::new("counter", r).unwrap();
    let forgotten = eventually(async || {
        for r in &rooms {
            if store.owner(&key(r)).await.unwrap().is_some() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(forgotten, "rooms only read still have owner records");
    let written = store.owner(&key("written")).await.unwrap();
    assert!(written.is_some(), "a written room lost its owner record");
}

/// One address may hold only its share of connections: past it the gateway answers 429
/// at once (before, two processes took every file descriptor); a connection that ends
/// gives its place back, and a trusted proxy's address is not held to a share.
#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let server = start(|c| c.gateway.max_connections_per_address = Some(3), |r| r).await;
    let path = "/parties/main/crowd";
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(server.connect(path).await);
    }
    assert_eq!(server.connect_status(path).await, 429);
    let (status, _) = server.http("GET", path, "").await;
    assert_eq!(status, 429, "plain requests count too");
    held.pop();
    let reopened = eventually(async || server.connect_status(path).await == 101).await;
    assert!(reopened, "a closed connection did not give its place back");

    let proxied = start(
        |c| {
            c.gateway.max_connections_per_address = Some(3);
            c.gateway.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        },
        |r| r,
    )
    .await;
    let mut many = Vec::new();
    for _ in 0..10 {
        many.push(proxied.connect(path).await);
    }
}

/// The messages of one address share one rate across its connections: reconnecting does
/// not reset it (before, reconnecting every 199 messages pushed 366,000 msg/s through a
/// 100 msg/s limit). Over it, sockets are read more slowly and room requests get 429.
#[tokio::test]
async fn reconnecting_does_not_reset_an_address_rate() {
    let mut store = None;
    let server = start_with_store(
        |c| {
            c.gateway.address_messages_per_second = Some(100.0);
            c.gateway.address_message_burst = Some(100.0);
        },
        |r| r,
        |s| {
            store = Some(s.clone());
            s
        },
    )
    .await;
    let store = store.unwrap();
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(2) {
        // Under the per-connection burst (200), then a fresh connection.
        let mut ws = server.connect("/parties/counter/rate").await;
        for _ in 0..150 {
            send(&mut ws, "incr").await;
            sent += 1;
        }
    }
    // The throttled sockets take each token as it comes; requests mostly find none.
    let mut refused = 0;
    for _ in 0..20 {
        if server.http("GET", "/parties/counter/rate", "").await.0 == 429 {
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "no room request refused over the address's rate"
    );
    let room = conclave_proto::RoomKey::new("counter", "rate").unwrap();
    let counted: i64 = match &store.get(&room, &["value".into()]).await.unwrap()[0] {
        Some(v) => serde_json::from_slice(v).unwrap(),
        None => 0,
    };
    let allowed = 100.0 + 100.0 * started.elapsed().as_secs_f64();
    assert!(
        (counted as f64) <= allowed + 20.0,
        "{counted} messages counted of {sent} sent; the address's rate allows {allowed:.0}"
    );
    assert!(
        sent as f64 > 2.0 * allowed,
        "the test sent too little to tell"
    );
}

/// Stores each POST's body under `body`.
#[derive(Default)]
struct Writer;

#[async_trait]
impl Party for Writer {
    async fn on_message(
        &mut self,
        _room: &mut Room,
        _conn: &Connection,
        _msg: Message,
    ) -> Result<(), PartyError> {
        Ok(())
    }

    async fn on_request(&mut self, room: &mut Room, req: Request) -> Result<Response, PartyError> {
        room.storage().put("body", req.into_body())?;
        Ok(Response::new("stored".into()))
    }
}

/// Sends chat messages of `chars` characters until one is refused; how many were stored,
/// and the refusal.
async fn chat_until_refused(ws: &mut Ws, chars: usize) -> (usize, String) {
    let text = "x".repeat(chars);
    for stored in 0..1000 {
        send(
            ws,
            &serde_json::json!({"type": "message", "text": text}).to_string(),
        )
        .await;
        let reply = next_json(ws).await;
        if reply["type"] == "error" {
            return (stored, reply["error"].as_str().unwrap().to_string());
        }
        assert_eq!(reply["type"], "message", "{reply}");
    }
    panic!("1,000 messages stored without a refusal");
}

/// Storage is bounded per room and per party (before, 20 chat rooms grew the database by
/// 201 MB in 13.6 s): a chat message past its room's quota is refused to its sender with an
/// error and not stored, a room request past it is answered 507, other rooms go on, and a
/// party's rooms together stop at the party's quota.
#[tokio::test]
async fn storage_quotas_refuse_writes_past_them_with_a_clear_error() {
    use conclave_node::StorageQuota;
    let server = start(
        |c| {
            c.node.storage_quota = StorageQuota {
                room_bytes: Some(2_000),
                ..StorageQuota::UNLIMITED
            };
            let capped = StorageQuota {
                party_bytes: Some(3_000),
                ..StorageQuota::UNLIMITED
            };
            c.node.party_storage_quotas.insert("capped".into(), capped);
        },
        |r| {
            r.with::<Writer>("writer")
                .with::<conclave_node::parties::Chat>("capped")
        },
    )
    .await;

    // One room: a message of ~370 bytes stored (key, id, sender, time) fits five times.
    let mut ws = server.connect("/parties/chat/full?_pk=alice").await;
    assert_eq!(next_json(&mut ws).await["type"], "history");
    let (stored, refusal) = chat_until_refused(&mut ws, 300).await;
    assert!((4..=5).contains(&stored), "{stored} messages stored");
    assert!(
        refusal.contains("storage quota exceeded") && refusal.contains("2000"),
        "{refusal}"
    );
    let (status, body) = server.http("GET", "/parties/chat/full", "").await;
    assert_eq!(status, 200);
    let messages: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(messages["messages"].as_array().unwrap().len(), stored);
    // The socket stays open (a message that fits in what is left is still stored), and
    // the next room is not bound by this one's use.
    assert_eq!(chat_until_refused(&mut ws, 300).await.0, 0);
    let mut other = server.connect("/parties/chat/other").await;
    next_json(&mut other).await;
    send(&mut other, r#"{"type":"message","text":"fine"}"#).await;
    assert_eq!(next_json(&mut other).await["type"], "message");

    // A request whose handler writes past the quota.
    let (status, body) = server
        .http("POST", "/parties/writer/w", &"b".repeat(2_500))
        .await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("storage quota exceeded"), "{body}");
    let (status, _) = server.http("POST", "/parties/writer/w", "small").await;
    assert_eq!(status, 200);

    // A party's rooms together: room a takes four messages, room b what is left.
    let mut a = server.connect("/parties/capped/a").await;
    next_json(&mut a).await;
    for _ in 0..4 {
        send(
            &mut a,
            &serde_json::json!({"type": "message", "text": "y".repeat(300)}).to_string(),
        )
        .await;
        assert_eq!(next_json(&mut a).await["type"], "message");
    }
    let mut b = server.connect("/parties/capped/b").await;
    next_json(&mut b).await;
    let (in_b, refusal) = chat_until_refused(&mut b, 300).await;
    assert!(in_b <= 4, "room b stored {in_b} past the party's quota");
    assert!(refusal.contains("party"), "{refusal}");
}

/// A WebSocket opened through "a proxy" (the test, from a trusted address) on behalf of
/// `client`; the HTTP status it gets.
async fn upgrade_status_for(server: &TestServer, path: &str, client: &str) -> (u16, Option<Ws>) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}{path}", server.addr)
        .into_client_request()
        .unwrap();
    let forwarded = format!("{client}, 127.0.0.1").parse().unwrap();
    request.headers_mut().insert("x-forwarded-for", forwarded);
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => (101, Some(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => (r.status().as_u16(), None),
        Err(e) => panic!("{e}"),
    }
}

/// Behind a trusted balancer, clients are told apart by the address it forwards: each
/// holds its own share of connections and its own rate (before, the balancer's address was
/// exempt and its clients were not limited at all).
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_holds_its_own_share() {
    let server = start(
        |c| {
            c.gateway.max_connections_per_address = Some(2);
            c.gateway.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            c.gateway.address_messages_per_second = Some(5.0);
            c.gateway.address_message_burst = Some(5.0);
        },
        |r| r,
    )
    .await;
    let path = "/parties/main/behind";
    let mut held = Vec::new();
    for _ in 0..2 {
        let (status, ws) = upgrade_status_for(&server, path, "203.0.113.7").await;
        assert_eq!(status, 101);
        held.push(ws);
    }
    assert_eq!(
        upgrade_status_for(&server, path, "203.0.113.7").await.0,
        429
    );
    assert_eq!(
        upgrade_status_for(&server, path, "203.0.113.8").await.0,
        101
    );
    held.pop();
    let reopened =
        eventually(async || upgrade_status_for(&server, path, "203.0.113.7").await.0 == 101).await;
    assert!(
        reopened,
        "a closed socket did not give its client's place back"
    );
    // The proxy's own connections (no forwarded client) are not limited.
    let mut direct = Vec::new();
    for _ in 0..5 {
        direct.push(server.connect(path).await);
    }
    // Room requests are counted per forwarded client: one client's run out, another's not.
    let request = |client: &str| {
        format!(
            "GET /parties/counter/c HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"
        )
    };
    let mut refused = 0;
    for _ in 0..10 {
        if raw_http(server.addr, &request("198.51.100.1")).await.0 == 429 {
            refused += 1;
        }
    }
    assert!(
        refused >= 4,
        "{refused} of 10 requests over a rate of 5 refused"
    );
    assert_eq!(raw_http(server.addr, &request("198.51.100.2")).await.0, 200);
}

/// When its descriptors run short, the gateway holds the connections it has, answers
/// health checks (`/healthz` alive, `/readyz` not ready) and turns the newest connections
/// away with 503 at once (before: accept failed with "Too many open files" every second
/// while new clients, health checks included, timed out); room comes back as sockets close.
#[tokio::test]
async fn at_its_descriptor_ceiling_the_gateway_answers_health_checks_and_turns_new_ones_away() {
    use common::process::{conclave, Readiness, Role};
    let addr = common::net::free_addr();
    let binary = conclave();
    let dir = tempfile::tempdir().unwrap();
    let launch = "ulimit -n 256 && exec \"$0\" \"$@\"";
    let args = [
        "-c",
        launch,
        binary.to_str().unwrap(),
        "dev",
        "--port",
        &addr.port().to_string(),
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--max-connections-per-address",
        "0",
    ];
    let mut server = Role::start_program(
        "/bin/bash".into(),
        "dev with 256 descriptors",
        args.iter().map(|a| a.to_string()).collect(),
        Readiness::Readyz(addr),
    )
    .await;
    // The ceiling is 256 less 64 kept back: 192 connections.
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..260 {
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            try_ws_connect(addr, "/parties/main/full").await
        });
        match attempt
            .await
            .expect("a connection neither opened nor was refused in 5 s")
        {
            Ok(ws) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 503);
                refused += 1;
            }
            Err(e) => panic!("a connection neither opened nor was refused: {e}"),
        }
    }
    assert!((185..=192).contains(&open.len()), "{} opened", open.len());
    assert_eq!(open.len() + refused, 260);
    assert_eq!(get(addr, "/healthz").await, (200, "ok".to_string()));
    assert_eq!(get(addr, "/readyz").await.0, 503);
    // The open ones still work.
    send(&mut open[0], "still here").await;
    let mut fresh = false;
    for _ in 0..10 {
        open.pop();
    }
    for _ in 0..50 {
        if try_ws_connect(addr, "/parties/main/full").await.is_ok() {
            fresh = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fresh, "no connection taken after ten closed");
    assert_eq!(get(addr, "/readyz").await.0, 200);
    server.kill().await;
}

/// With a connect rate set, an address opens new connections at that rate: closing them
/// does not give the burst back, time does, and other addresses are not held to it.
#[tokio::test]
async fn an_address_opens_connections_no_faster_than_its_connect_rate() {
    let server = start(|c| c.gateway.address_connects = Some((2.0, 3.0)), |r| r).await;
    let path = "/parties/main/rush";
    for _ in 0..3 {
        assert_eq!(server.connect_status(path).await, 101);
    }
    assert_eq!(server.connect_status(path).await, 429);
    assert_eq!(
        server.http("GET", path, "").await.0,
        429,
        "plain requests count too"
    );
    let refilled = eventually(async || server.connect_status(path).await == 101).await;
    assert!(refilled, "no connection allowed again at 2 a second");
}
