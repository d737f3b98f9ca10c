//! One client WebSocket after the upgrade: a task reads the client's frames while it
//! talks; what is sent to the client is written by the sender itself (`outbound/`), and
//! keepalive pings by one sweep over all sockets (`keepalive.rs`).
//!
//! A socket whose client has sent no message for half a ping interval (or none yet) has no
//! task: its state is parked ([`Parked`]) until it becomes readable or a close is
//! requested, and a task is spawned to serve it then. Most sockets of a real-time service
//! are idle most of the time; a task costs each of them 640 bytes.
//!
//! After the upgrade the gateway holds the TCP connection itself: a read takes what the
//! socket has into the worker thread's buffer and parses frames from there (`frames.rs`),
//! so an idle socket holds no read buffer, and writes go straight to the socket. The task
//! enforces the rate limits and maps protocol errors to close codes (1009 too big, 1007
//! bad UTF-8, 1002 protocol). Either side, the node, or a full queue can ask for a close
//! through the socket's [`CloseSignal`](crate::close_signal::CloseSignal).

use crate::addresses::{AddressRate, Held, Slot};
use crate::frames::{self, FrameReader, Incoming};
use crate::keepalive;
use crate::limits::Tokens;
use crate::link::NodeLink;
use crate::outbound::Outbound;
use crate::session::Session;
use crate::state::GatewayState;
use bytes::Bytes;
use conclave_proto::wire::gateway_event;
use conclave_proto::{close, trace};
use conclave_proto::{RoomKey, SocketId};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

/// The most one read takes from a socket, into the worker thread's buffer.
const READ_CHUNK: usize = 64 * 1024;
/// How long the close frame may take to go out before the connection is shut anyway.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

thread_local! {
    /// Where reads land: one buffer per worker thread rather than one per socket.
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// A socket admitted before the upgrade completes, so that what the party sends in
/// `on_connect` is already queued when the client sees "open".
pub(crate) fn new_session(
    gw: &GatewayState,
    socket: SocketId,
    room: RoomKey,
    conn_id: String,
    uri: String,
) -> Arc<Session> {
    let out = Outbound::new(gw.socket_limits.clone());
    let room = gw.sessions.room_key(room);
    Arc::new(Session::new(socket, room, conn_id, uri, out))
}

/// The TCP connection under an upgrade, with the address slot it holds when it came
/// through [`serve_http1`](crate::serve_http1) (the router served by `axum::serve` has
/// none) and the bytes read past the request, which the socket reads first.
fn into_tcp(
    upgraded: hyper::upgrade::Upgraded,
) -> Result<(TcpStream, Option<Slot>, Bytes), hyper::upgrade::Upgraded> {
    let upgraded = match upgraded.downcast::<TokioIo<Held<TcpStream>>>() {
        Ok(parts) => {
            let (stream, slot, unread) = parts.io.into_inner().into_parts();
            let already_read = match (parts.read_buf.is_empty(), unread.is_empty()) {
                (_, true) => parts.read_buf,
                (true, false) => unread,
                (false, false) => [parts.read_buf, unread].concat().into(),
            };
            return Ok((stream, Some(slot), already_read));
        }
        Err(upgraded) => upgraded,
    };
    let parts = upgraded.downcast::<TokioIo<TcpStream>>()?;
    Ok((parts.io.into_inner(), None, parts.read_buf))
}

/// A client socket after the upgrade: what its task holds.
struct Socket {
    gw: Arc<GatewayState>,
    session: Arc<Session>,
    /// The rate its address's connections share.
    rate: AddressRate,
    stream: Arc<TcpStream>,
    /// Its address's connection slot, held for as long as it lives.
    _slot: Option<Slot>,
    reader: FrameReader,
    /// The socket's own message rate (`GatewayConfig::message_rate`).
    bucket: Tokens,
    /// When the client last sent a message (not a control frame), in keepalive time; 0:
    /// never.
    last_message_ms: u64,
}

/// Where an idle socket waits without a task: it is the waker of the socket's read
/// readiness and of its close signal, and either wakes it into a new task.
struct Parked {
    socket: std::sync::Mutex<Option<Socket>>,
}

impl std::task::Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
        // None: a task serves the socket (this is a wake-up left from an earlier park).
        if let Some(socket) = socket {
            let runtime = socket.gw.runtime.clone();
            runtime.spawn(socket.serve(self.clone(), Vec::new()));
        }
    }
}

/// What the read loop came to.
enum Next {
    End(Ending),
    /// Nothing to read, no close requested, and no message for a while.
    Park,
}

/// Serves the client's socket, once the upgrade completes, until it closes; its messages
/// take tokens of `rate`, the rate its address's connections share. Behind a trusted
/// proxy, `forwarded` is the client's connection slot, held in place of the proxy
/// connection's (which counts nothing).
pub(crate) async fn run(
    gw: Arc<GatewayState>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    session: Arc<Session>,
    rate: AddressRate,
    forwarded: Option<Slot>,
) {
    let tcp = match on_upgrade.await {
        Ok(upgraded) => into_tcp(upgraded)
            .map_err(|_| "the upgraded connection is not a plain TCP connection".to_string()),
        Err(e) => Err(e.to_string()),
    };
    match tcp {
        Ok((stream, slot, already_read)) => {
            let slot = forwarded.or(slot);
            start(gw, session, rate, stream, slot, &already_read);
        }
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            upgrade_failed(&gw, &session).await;
        }
    }
}

/// Serves an upgraded socket until it closes: parked at once unless the client's first
/// frames came with the upgrade request (`already_read`), else by a task of its own (the
/// caller's state, the upgrade and its arguments, would otherwise stay allocated for as
/// long as the socket lives).
pub(crate) fn start(
    gw: Arc<GatewayState>,
    session: Arc<Session>,
    rate: AddressRate,
    stream: TcpStream,
    slot: Option<Slot>,
    already_read: &[u8],
) {
    let stream = Arc::new(stream);
    session.out.attach(stream.clone());
    gw.connections.increment(1.0);
    let mut reader = FrameReader::new(gw.config.max_frame_bytes);
    let mut incoming = Vec::new();
    reader.read(already_read, Instant::now(), &mut incoming);
    let bucket = Tokens::new(gw.config.message_rate());
    let socket = Socket {
        gw,
        session,
        rate,
        stream,
        _slot: slot,
        reader,
        bucket,
        last_message_ms: 0,
    };
    let parked = Arc::new(Parked {
        socket: std::sync::Mutex::new(None),
    });
    if incoming.is_empty() {
        socket.park(parked);
    } else {
        tokio::spawn(socket.serve(parked, incoming));
    }
}

impl Socket {
    /// Not an `async fn`: one taking `self` by value would hold the socket twice in its
    /// state (the argument and the moved-in binding); the block captures it once.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn serve(
        mut self,
        parked: Arc<Parked>,
        incoming: Vec<Incoming>,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            match self.read(incoming).await {
                Next::End(ending) => Box::pin(self.close(ending)).await,
                Next::Park => self.park(parked),
            }
        }
    }

    /// Leaves the socket in `parked`, with no task, registered to wake on its read
    /// readiness and its close signal. Whatever came in meanwhile wakes it at once.
    fn park(self, parked: Arc<Parked>) {
        let (session, stream) = (self.session.clone(), self.stream.clone());
        *parked.socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(self);
        let waker = std::task::Waker::from(parked.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        if session.out.close().poll_requested(&mut cx).is_ready()
            | stream.poll_read_ready(&mut cx).is_ready()
        {
            waker.wake();
        }
    }

    /// Ends the socket: the close frame, the node told, the connection shut.
    async fn close(&self, ending: Ending) {
        let Ending {
            code,
            reason,
            error,
        } = ending;
        let session = &self.session;
        debug!(socket = session.id.0, code, "socket closed");
        self.gw.closes.count(code);
        session.out.close().trigger(code, &reason);
        session.out.finish(frames::close_frame(code, &reason));
        if let Some(link) = session.end() {
            session.tell_closed(&link, code, &reason, &error).await;
        }
        // Counted open until the close frame is out: shutdown waits for that.
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, session.out.drained()).await;
        shut_writes(&self.stream);
        session.out.end();
        self.gw.sessions.remove(session.id);
        self.gw.connections.decrement(1.0);
    }

    /// Reads client frames into the session until the socket ends or a close is
    /// requested, enforcing the rate limits and the replay buffer's bound; each read is
    /// noted for the keepalive sweep. `incoming`: events read already (with the upgrade).
    async fn read(&mut self, mut incoming: Vec<Incoming>) -> Next {
        let Socket {
            gw,
            session,
            rate: address_rate,
            stream,
            reader,
            bucket,
            last_message_ms,
            ..
        } = self;
        // Whoever asks for the close (this task by returning), `close` sends its code.
        let close_requested = session.out.close().wait();
        tokio::pin!(close_requested);
        let park_after_ms = gw.config.ping_interval.as_millis() as u64 / 2;
        let message_rate = gw.config.message_rate();
        // Wakes a client that talked, then fell quiet, to park: nothing else would (a
        // member that receives is not pinged while its TCP stack acknowledges). Armed once
        // per quiet spell it waits out, not per message.
        let mut park_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            // Of consecutive pings read together only the last is answered (RFC 6455,
            // 5.5.3), before the message after them, which may wait.
            let mut pong: Option<Bytes> = None;
            for event in incoming.drain(..) {
                if let (Some(ping), Incoming::Message { .. }) = (&pong, &event) {
                    session.out.enqueue(frames::pong(ping));
                    pong = None;
                }
                let (payload, binary) = match event {
                    Incoming::Message { payload, binary } => (payload, binary),
                    // A ping counts against the message rate: each one answered is a write.
                    Incoming::Ping(_) if !bucket.take(message_rate) => return rate_limited(),
                    Incoming::Ping(payload) => {
                        pong = Some(payload);
                        continue;
                    }
                    Incoming::Pong => continue,
                    Incoming::Close { code, reason } => return Next::closed(code, reason),
                    Incoming::Violation { code, reason } => {
                        return Next::closed(code, reason.to_string())
                    }
                };
                *last_message_ms = keepalive::now_ms();
                if !bucket.take(message_rate) {
                    return rate_limited();
                }
                if !address_rate.try_take() {
                    // Over its address's share: this socket waits (and is not read) meanwhile.
                    metrics::counter!("conclave_gateway_address_rate_limited_total").increment(1);
                    if let Some(ending) =
                        unless_closed(&mut close_requested, address_rate.take()).await
                    {
                        return Next::End(ending);
                    }
                }
                gw.messages_in.increment(1);
                // One span per client message when traces are exported; the node continues
                // it.
                let span = trace::enabled().then(|| {
                    let room = &session.room;
                    tracing::info_span!(target: trace::TARGET, "client.message", room = %room)
                });
                let blocked = session
                    .push_frame(payload, binary)
                    .and_then(|(link, mut frame)| {
                        if let (Some(span), gateway_event::Event::Frame(f)) = (&span, &mut frame) {
                            f.trace_parent = trace::traceparent(span);
                        }
                        forward(link, frame)
                    });
                if let Some(wait) = blocked {
                    wait.await;
                }
                drop(span);
                if let Some((code, reason)) = session.out.close().requested() {
                    return Next::closed(code, reason);
                }
                // Stop reading while the node is behind (or the socket is between nodes).
                if session.over_buffer_limit() {
                    let space = session.wait_for_buffer_space();
                    if let Some(ending) = unless_closed(&mut close_requested, space).await {
                        return Next::End(ending);
                    }
                }
            }
            if let Some(ping) = pong {
                session.out.enqueue(frames::pong(&ping));
            }
            // An idle socket keeps no room for events.
            incoming = Vec::new();
            // Nor a task, once its client has sent no message for a while (pongs do not
            // count: a quiet client answers one each interval) and nothing is waiting.
            let woke = std::future::poll_fn(|cx| {
                use std::task::Poll;
                if let Poll::Ready(r) = close_requested.as_mut().poll(cx) {
                    return Poll::Ready(Woke::Close(r));
                }
                // Not `readable()`: polling the stream's own read readiness replaces the
                // waker the HTTP server's task left there, which would keep that finished
                // task's memory (~900 bytes) allocated for as long as the socket lives.
                if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                    return Poll::Ready(Woke::Readable(r));
                }
                let since_message = keepalive::now_ms().saturating_sub(*last_message_ms);
                if *last_message_ms == 0 || since_message >= park_after_ms {
                    return Poll::Ready(Woke::Quiet);
                }
                let due = Instant::now() + Duration::from_millis(park_after_ms - since_message);
                let timer =
                    park_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                // Gone off while the client was still talking: on to the next quiet spell
                // (`due` is at least a millisecond ahead, so a reset one is pending).
                if timer.is_elapsed() || timer.as_mut().poll(cx).is_ready() {
                    timer.as_mut().reset(due);
                    if timer.as_mut().poll(cx).is_ready() {
                        cx.waker().wake_by_ref();
                    }
                }
                Poll::Pending
            })
            .await;
            match woke {
                Woke::Close((code, reason)) => return Next::closed(code, reason),
                Woke::Quiet => return Next::Park,
                Woke::Readable(Err(e)) => return Next::End(Ending::failed(e.to_string())),
                Woke::Readable(Ok(())) => match read_frames(stream, reader, &mut incoming) {
                    Ok(Read::Frames) => session.liveness.heard(reader.unfinished_since()),
                    Ok(Read::Nothing) => {}
                    // The client's TCP connection ended without a close frame: an abnormal
                    // close, not a protocol error.
                    Ok(Read::Eof) => return Next::closed(close::ABNORMAL, String::new()),
                    Err(e) => return Next::End(Ending::failed(e.to_string())),
                },
            }
        }
    }
}

/// The client sent faster than its message rate: closed with 1008.
fn rate_limited() -> Next {
    metrics::counter!("conclave_gateway_rate_limited_total").increment(1);
    Next::closed(
        close::POLICY_VIOLATION,
        "Message rate limit exceeded".into(),
    )
}

/// What the read loop's wait came to.
enum Woke {
    Close((u16, String)),
    Readable(std::io::Result<()>),
    /// Neither, and the client has been quiet: time to park.
    Quiet,
}

/// Waits for `wait` unless a close is requested first, which ends the socket. Boxed: the
/// waits it serves are rare, and held inline in the socket's task each would size every
/// socket's task, idle or not.
fn unless_closed<'a, C>(
    close_requested: &'a mut C,
    wait: impl std::future::Future<Output = ()> + Send + 'a,
) -> futures::future::BoxFuture<'a, Option<Ending>>
where
    C: std::future::Future<Output = (u16, String)> + Unpin + Send,
{
    Box::pin(async move {
        tokio::select! {
            biased;
            (code, reason) = close_requested => Some(Ending::closed(code, reason)),
            _ = wait => None,
        }
    })
}

/// Ends a socket whose upgrade failed: the node hears it closed.
pub(crate) async fn upgrade_failed(gw: &GatewayState, session: &Session) {
    session.out.end();
    if let Some(link) = session.end() {
        session
            .tell_closed(&link, close::ABNORMAL, "", "upgrade failed")
            .await;
    }
    gw.sessions.remove(session.id);
}

/// Sends the client a FIN after the close frame, as a WebSocket server ends its side.
fn shut_writes(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor belongs to `stream`, which is alive; shutdown does not
    // release it.
    unsafe {
        libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR);
    }
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

impl Next {
    fn closed(code: u16, reason: String) -> Self {
        Next::End(Ending::closed(code, reason))
    }
}

/// What one read from the socket came to.
enum Read {
    Frames,
    /// The client's end of the connection closed.
    Eof,
    Nothing,
}

/// Reads what the socket has and parses it into `incoming`.
///
/// A read that does not fill the buffer emptied the socket's receive queue, so the
/// socket's read readiness is cleared right away: without that, every message would cost
/// a second read just to hear "would block". (Safe against data arriving meanwhile: tokio
/// clears readiness only if no readiness event came after the one this read answered, and
/// never clears a closed read side.)
fn read_frames(
    stream: &TcpStream,
    reader: &mut FrameReader,
    incoming: &mut Vec<Incoming>,
) -> std::io::Result<Read> {
    use std::io::ErrorKind::WouldBlock;
    READ_BUFFER.with_borrow_mut(|buf| {
        let mut drained = 0;
        let read = stream.try_io(tokio::io::Interest::READABLE, || match recv(stream, buf)? {
            n if n > 0 && n < buf.len() => {
                drained = n;
                Err(WouldBlock.into())
            }
            n => Ok(n),
        });
        let n = match read {
            Ok(0) => return Ok(Read::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == WouldBlock && drained > 0 => drained,
            Err(e) if e.kind() == WouldBlock => return Ok(Read::Nothing),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(Read::Nothing),
            Err(e) => return Err(e),
        };
        reader.read(&buf[..n], Instant::now(), incoming);
        Ok(Read::Frames)
    })
}

/// One `recv` on the socket, outside tokio's readiness bookkeeping (which the caller's
/// `try_io` does).
fn recv(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor belongs to `stream`, which is alive, and `buf` is valid for
    // `buf.len()` bytes of writes.
    let n = unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Hands a client frame to its node's link; what to wait on when the link's queue is
/// full. (Boxed: that wait is rare, and held in the socket's task it would triple the size
/// of every socket's task, idle or not.) If the link is dead, its end moves the socket and
/// the frame is replayed.
fn forward(
    link: Arc<NodeLink>,
    frame: gateway_event::Event,
) -> Option<futures::future::BoxFuture<'static, ()>> {
    let frame = link.try_send(frame)?;
    Some(Box::pin(async move {
        let _ = link.send(frame).await;
    }))
}
