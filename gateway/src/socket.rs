//! One client WebSocket after the upgrade: a reader (this task) and a writer task.
//!
//! The reader enforces the rate limit and maps protocol errors to close codes (1009 too
//! big, 1007 bad UTF-8, 1002 protocol). The writer drains the bounded send queue,
//! coalescing queued frames into one flush, and sends keepalive pings. Either side, the
//! node, or a full queue can ask for a close through the socket's [`CloseSignal`].

use crate::addresses::AddressRate;
use crate::limits::TokenBucket;
use crate::outbound::{CloseSignal, Outbound, OutboundRx};
use crate::session::Session;
use crate::state::GatewayState;
use crate::unfinished::{watched, UnfinishedSince, Watched};
use crate::GatewayConfig;
use conclave_proto::wire::gateway_event;
use conclave_proto::{close, trace};
use conclave_proto::{RoomKey, SocketId};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{
    frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

/// Frames written per flush at most (coalescing without starving the ping timer).
const MAX_FRAMES_PER_FLUSH: usize = 256;
/// Outgoing messages larger than this are sent in fragments of this size.
const FRAGMENT_BYTES: usize = 64 * 1024;

/// A socket admitted before the upgrade completes, so that what the party sends in
/// `on_connect` is already queued when the client sees "open". Holds the receiving end of
/// the send queue for the writer task.
pub(crate) struct PendingSocket {
    pub session: Arc<Session>,
    rx: OutboundRx,
}

impl PendingSocket {
    pub fn new(
        config: &GatewayConfig,
        socket: SocketId,
        room: RoomKey,
        conn_id: String,
        uri: String,
    ) -> Self {
        let (out, rx) = Outbound::new(config.send_queue_frames, config.send_queue_bytes);
        let session = Session::new(socket, room, conn_id, uri, out, config.replay_buffer_bytes);
        Self {
            session: Arc::new(session),
            rx,
        }
    }
}

pub(crate) fn ws_config(config: &GatewayConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        // Allocated up front for every socket, idle or not (~4 KB of its memory), and also
        // the most one read takes: smaller would cost a large message many more reads.
        .read_buffer_size(4096)
        .write_buffer_size(8192)
        // The writer feeds at most one fragment at a time (`feed`) and waits for a blocked
        // socket before the next, so the buffer never holds much more than one.
        .max_write_buffer_size(4 * FRAGMENT_BYTES)
        .max_frame_size(Some(config.max_frame_bytes))
        .max_message_size(Some(config.max_frame_bytes))
}

/// Serves the client's socket until it closes; its messages take tokens of `rate`, the
/// rate its address's connections share.
pub(crate) async fn run(
    gw: Arc<GatewayState>,
    upgraded: hyper::upgrade::Upgraded,
    p: PendingSocket,
    rate: AddressRate,
) {
    let config = gw.config.clone();
    let started = Instant::now();
    let unfinished = UnfinishedSince::new(started);
    let ws = WebSocketStream::from_raw_socket(
        watched(TokioIo::new(upgraded), unfinished.clone()),
        Role::Server,
        Some(ws_config(&config)),
    )
    .await;
    let PendingSocket { session, rx } = p;
    let close = session.out.close.clone();
    metrics::gauge!("conclave_gateway_connections").increment(1.0);

    let last_seen = Arc::new(AtomicU64::new(0));
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        close.clone(),
        config.clone(),
        Liveness {
            started,
            last_seen: last_seen.clone(),
            unfinished,
        },
    ));

    let Ending {
        code,
        reason,
        error,
    } = read_loop(&mut stream, &session, &config, &rate, started, &last_seen).await;
    debug!(socket = session.id.0, code, "socket closed");
    // Codes the protocol defines as themselves; the applications' range as one value.
    let label = if code < 3000 {
        code.to_string()
    } else {
        "3000-4999".to_string()
    };
    metrics::counter!("conclave_gateway_closes_total", "code" => label).increment(1);
    close.trigger(code, &reason);
    if let Some(link) = session.end() {
        session.tell_closed(&link, code, &reason, &error).await;
    }
    // Counted open until the close frame is out: shutdown waits for that.
    let _ = tokio::time::timeout(config.write_timeout, writer).await;
    gw.sessions.remove(session.id);
    metrics::gauge!("conclave_gateway_connections").decrement(1.0);
}

/// How the socket ended, as the node hears it.
struct Ending {
    code: u16,
    reason: String,
    /// Set when the socket failed rather than closed.
    error: String,
}

impl Ending {
    fn closed(code: u16, reason: String) -> Self {
        Self {
            code,
            reason,
            error: String::new(),
        }
    }

    fn failed(error: String) -> Self {
        Self {
            code: close::ABNORMAL,
            reason: String::new(),
            error,
        }
    }
}

/// The client's connection as the WebSocket reads and writes it.
type Io = Watched<TokioIo<hyper::upgrade::Upgraded>>;
type Stream = futures::stream::SplitStream<WebSocketStream<Io>>;

/// Reads client frames into the session until the socket ends or a close is requested,
/// enforcing the rate limit and the replay buffer's bound.
async fn read_loop(
    stream: &mut Stream,
    session: &Session,
    config: &GatewayConfig,
    address_rate: &AddressRate,
    started: Instant,
    last_seen: &AtomicU64,
) -> Ending {
    let close = &session.out.close;
    let mut bucket = TokenBucket::new(config.messages_per_second, config.message_burst);
    let close_requested = close.wait();
    tokio::pin!(close_requested);
    loop {
        let next = tokio::select! {
            biased;
            (code, reason) = &mut close_requested => return Ending::closed(code, reason),
            next = stream.next() => next,
        };
        last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let (payload, binary) = match next {
            Some(Ok(WsMessage::Text(t))) => (bytes::Bytes::from(t), false),
            Some(Ok(WsMessage::Binary(b))) => (b, true),
            Some(Ok(WsMessage::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((close::NO_STATUS, String::new()));
                close.trigger(code, &reason);
                return Ending::closed(code, reason);
            }
            Some(Ok(_)) => continue, // ping, pong: liveness only
            // The client's TCP connection ended without a close frame: an abnormal close,
            // not a protocol error.
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                return Ending::closed(close::ABNORMAL, String::new());
            }
            Some(Err(e)) => match protocol_close(&e) {
                Some((code, reason)) => {
                    close.trigger(code, reason);
                    continue;
                }
                None => return Ending::failed(e.to_string()),
            },
            None => return Ending::failed("connection lost".into()),
        };
        if !bucket.take() {
            metrics::counter!("conclave_gateway_rate_limited_total").increment(1);
            close.trigger(close::POLICY_VIOLATION, "Message rate limit exceeded");
            continue;
        }
        if !address_rate.try_take() {
            // Over its address's share: this socket waits (and is not read) meanwhile.
            metrics::counter!("conclave_gateway_address_rate_limited_total").increment(1);
            tokio::select! {
                biased;
                (code, reason) = &mut close_requested => return Ending::closed(code, reason),
                _ = address_rate.take() => {}
            }
        }
        metrics::counter!("conclave_gateway_messages_in_total").increment(1);
        // One span per client message when traces are exported; the node continues it.
        let span = trace::enabled().then(
            || tracing::info_span!(target: trace::TARGET, "client.message", room = %session.room),
        );
        if let Some((link, mut frame)) = session.push_frame(payload, binary) {
            if let (Some(span), gateway_event::Event::Frame(f)) = (&span, &mut frame) {
                f.trace_parent = trace::traceparent(span);
            }
            // If the link is dead, its end moves the socket and the frame is replayed.
            let _ = link.send(frame).await;
        }
        drop(span);
        // Stop reading while the node is behind (or the socket is between nodes).
        tokio::select! {
            biased;
            (code, reason) = &mut close_requested => return Ending::closed(code, reason),
            _ = session.wait_for_buffer_space() => {}
        }
    }
}

/// Close codes for errors the client caused.
fn protocol_close(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Capacity(_) => Some((close::MESSAGE_TOO_BIG, "Message too big")),
        WsError::Utf8(_) => Some((close::INVALID_PAYLOAD, "Invalid UTF-8 in text message")),
        WsError::Protocol(_) => Some((close::PROTOCOL_ERROR, "WebSocket protocol error")),
        _ => None,
    }
}

type Sink = futures::stream::SplitSink<WebSocketStream<Io>, WsMessage>;

/// What the writer checks at each ping: when the client was last heard from, and whether
/// it has left a message unfinished.
struct Liveness {
    started: Instant,
    /// Ms after `started` of the client's last frame.
    last_seen: Arc<AtomicU64>,
    unfinished: Arc<UnfinishedSince>,
}

async fn write_loop(
    mut sink: Sink,
    mut rx: OutboundRx,
    close: Arc<CloseSignal>,
    config: Arc<GatewayConfig>,
    live: Liveness,
) {
    let timeout = config.write_timeout;
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    let close_requested = close.wait();
    tokio::pin!(close_requested);
    loop {
        tokio::select! {
            biased;
            (code, reason) = &mut close_requested => {
                let frame = close_frame(code, &reason);
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = sink.send(WsMessage::Close(frame)).await;
                    let _ = sink.close().await;
                }).await;
                return;
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                let write = async {
                    feed(&mut sink, msg).await?;
                    for _ in 1..MAX_FRAMES_PER_FLUSH {
                        match rx.try_recv() {
                            Some(m) => feed(&mut sink, m).await?,
                            None => break,
                        }
                    }
                    sink.flush().await
                };
                tokio::pin!(write);
                // Most writes complete at once; only a blocked socket pays for a timer.
                let ok = match futures::poll!(&mut write) {
                    std::task::Poll::Ready(r) => Ok(r),
                    std::task::Poll::Pending => tokio::time::timeout(timeout, write).await,
                };
                if !matches!(ok, Ok(Ok(()))) {
                    close.trigger(close::ABNORMAL, "write failed");
                    return;
                }
            }
            _ = ping.tick() => {
                let silent_ms = (live.started.elapsed().as_millis() as u64).saturating_sub(live.last_seen.load(Ordering::Relaxed));
                if silent_ms > 2 * config.ping_interval.as_millis() as u64 {
                    close.trigger(close::GOING_AWAY, "Keepalive timeout");
                    continue;
                }
                if live.unfinished.for_how_long().is_some_and(|d| d > config.message_timeout) {
                    close.trigger(close::POLICY_VIOLATION, "Message not finished in time");
                    continue;
                }
                let ok = tokio::time::timeout(timeout, sink.send(WsMessage::Ping(bytes::Bytes::new()))).await;
                if !matches!(ok, Ok(Ok(()))) {
                    close.trigger(close::ABNORMAL, "write failed");
                    return;
                }
            }
        }
    }
}

/// Feeds `msg` to the socket; a message over [`FRAGMENT_BYTES`] goes as fragments of that
/// size (RFC 6455 5.4; every client reassembles them). tungstenite's write buffer keeps
/// the capacity it grew to for the connection's life, so one large message written whole
/// (a late joiner's 5 MB document) would stay in memory as long as its socket.
async fn feed(sink: &mut Sink, msg: WsMessage) -> Result<(), WsError> {
    let (payload, kind) = match msg {
        WsMessage::Binary(b) if b.len() > FRAGMENT_BYTES => (b, OpData::Binary),
        WsMessage::Text(t) if t.len() > FRAGMENT_BYTES => (bytes::Bytes::from(t), OpData::Text),
        small => return sink.feed(small).await,
    };
    let mut start = 0;
    while start < payload.len() {
        let end = (start + FRAGMENT_BYTES).min(payload.len());
        let opcode = OpCode::Data(if start == 0 { kind } else { OpData::Continue });
        let fragment = Frame::message(payload.slice(start..end), opcode, end == payload.len());
        sink.feed(WsMessage::Frame(fragment)).await?;
        start = end;
    }
    Ok(())
}

fn close_frame(code: u16, reason: &str) -> Option<CloseFrame> {
    if !close::is_sendable(code) {
        return None;
    }
    Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    })
}
