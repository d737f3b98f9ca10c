//! The way to a client: its bounded send queue and its close signal. Anything may send a
//! frame or ask for a close (the node, the fan-out, a limit); only the socket's task acts
//! on the close.
//!
//! A frame sent to a socket with nothing queued is written at once, from the sender's own
//! task (the fan-out loop writes a broadcast to each member in turn): no hand-off, no
//! wake-up, no task per socket. Only what the socket does not take at once is queued, and a
//! flusher task runs just while something is.

mod sys;

use crate::close_signal::CloseSignal;
use bytes::{Buf, Bytes};
use conclave_proto::close;
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
pub(crate) use sys::prefetch;
use sys::{since_last_ack, write_direct, write_now, write_some, Descriptor, FRAMES_PER_WRITE};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The socket's bounded send queue and its close signal.
pub(crate) struct Outbound {
    writer: Arc<Writer>,
}

/// The bounds every socket of a gateway is held to (one copy, shared).
#[derive(Clone, Debug)]
pub(crate) struct SocketLimits {
    /// Frames queued before the socket counts as a slow consumer.
    pub send_frames: usize,
    /// Bytes queued before the socket counts as a slow consumer.
    pub send_bytes: usize,
    /// How long a blocked socket may take nothing before it is given up.
    pub write_timeout: Duration,
    /// Client frames buffered until the node acknowledges them (`session.rs`).
    pub replay_bytes: usize,
}

impl SocketLimits {
    pub fn of(config: &crate::GatewayConfig) -> Self {
        Self {
            send_frames: config.send_queue_frames,
            send_bytes: config.send_queue_bytes,
            write_timeout: config.write_timeout,
            replay_bytes: config.replay_buffer_bytes,
        }
    }
}

/// The client connection's write side, shared by the senders and the flusher; one
/// allocation per socket with its close signal.
struct Writer {
    state: Mutex<WriteState>,
    /// Signalled when the queue has emptied (or will never empty).
    drained: Notify,
    close: CloseSignal,
    limits: Arc<SocketLimits>,
}

#[derive(Default)]
struct WriteState {
    /// Encoded frames not yet written; the first may have been written in part.
    frames: VecDeque<Bytes>,
    /// Bytes in `frames`.
    bytes: usize,
    /// The connection, once the upgrade has completed (until the socket ends).
    socket: Option<Arc<TcpStream>>,
    /// `socket`'s descriptor, kept next to the queue: the fan-out's write to an idle
    /// socket reads no other line of the socket's memory (see [`write_direct`]).
    fd: Option<Descriptor>,
    /// A flusher task is writing the queue out.
    flushing: bool,
    /// Nothing more is sent: the close frame is queued, or the socket has ended.
    finished: bool,
}

impl WriteState {
    /// Writes queued frames until the socket would block or the queue is empty.
    fn write_queued(&mut self) -> io::Result<()> {
        let Some(socket) = self.socket.clone() else {
            return Ok(());
        };
        while !self.frames.is_empty() {
            let count = self.frames.len().min(FRAMES_PER_WRITE);
            let queued = &self.frames.make_contiguous()[..count];
            let written = write_some(write_now(&socket, queued))?;
            if written == 0 {
                return Ok(());
            }
            self.consume(written);
        }
        Ok(())
    }

    fn consume(&mut self, mut written: usize) {
        self.bytes -= written;
        while written > 0 {
            let Some(front) = self.frames.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.frames.pop_front();
        }
        if self.frames.is_empty() && self.frames.capacity() > IDLE_QUEUE_CAPACITY {
            // A burst is over: give its slots back.
            self.frames = VecDeque::new();
        }
    }

    fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    fn clear(&mut self) {
        self.frames = VecDeque::new();
        self.bytes = 0;
    }
}

/// Frame slots an empty queue keeps; a larger one, grown by a burst, is freed.
const IDLE_QUEUE_CAPACITY: usize = 8;

impl Writer {
    fn state(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the queue out while the socket blocks; gives the socket up (closing it as
    /// abnormal) when it takes nothing for `write_timeout` or fails.
    async fn flush(self: Arc<Self>) {
        let write_timeout = self.limits.write_timeout;
        let mut deadline = tokio::time::Instant::now() + write_timeout;
        loop {
            // Registered before the state is read: an `end` from now on wakes this wait, so
            // an ended socket's connection is let go at once, not at the write timeout.
            let ended = self.drained.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let socket = {
                let mut state = self.state();
                let before = state.bytes;
                let result = state.write_queued();
                let socket = state.socket.clone();
                match (result, socket) {
                    (Ok(()), Some(socket)) if !state.frames.is_empty() => {
                        if state.bytes < before {
                            deadline = tokio::time::Instant::now() + write_timeout;
                        }
                        socket
                    }
                    (Ok(()), _) => {
                        state.flushing = false;
                        drop(state);
                        self.drained.notify_waiters();
                        return;
                    }
                    (Err(_), _) => {
                        drop(state);
                        return self.give_up("write failed");
                    }
                }
            };
            // The stream's own write readiness (one waiter: this flusher), which also lets go
            // of a waker an earlier writer left there.
            let writable = std::future::poll_fn(|cx| socket.poll_write_ready(cx));
            let blocked = tokio::select! {
                blocked = tokio::time::timeout_at(deadline, writable) => blocked,
                // The socket ended (or went past its close): the next turn finds out.
                _ = &mut ended => continue,
            };
            drop(socket);
            if !matches!(blocked, Ok(Ok(()))) {
                return self.give_up("write timed out");
            }
        }
    }

    /// The socket cannot be written to: nothing more is sent, what is queued is let go, and
    /// the socket is closed as abnormal.
    fn give_up(&self, reason: &str) {
        {
            let mut state = self.state();
            state.flushing = false;
            state.finished = true;
            state.clear();
        }
        self.drained.notify_waiters();
        self.close.trigger(close::ABNORMAL, reason);
    }
}

impl Outbound {
    /// A queue of at most `limits.send_frames` frames and `limits.send_bytes` bytes, plus
    /// the one frame that crosses the byte bound (so a single message larger than the
    /// bound, such as a large document's sync, still goes out when the client keeps up). A
    /// socket that takes nothing for `limits.write_timeout` while frames wait is closed.
    pub fn new(limits: Arc<SocketLimits>) -> Self {
        Self {
            writer: Arc::new(Writer {
                state: Mutex::default(),
                drained: Notify::new(),
                close: CloseSignal::default(),
                limits,
            }),
        }
    }

    /// The socket's close signal.
    pub fn close(&self) -> &CloseSignal {
        &self.writer.close
    }

    pub fn limits(&self) -> &SocketLimits {
        &self.writer.limits
    }

    /// The upgrade completed: frames go to `socket` from now on, those queued first.
    pub fn attach(&self, socket: Arc<TcpStream>) {
        let mut state = self.writer.state();
        if state.finished {
            return;
        }
        state.fd = Descriptor::new(socket.as_raw_fd());
        state.socket = Some(socket);
        if !state.frames.is_empty() {
            self.start_flusher(&mut state);
        }
    }

    fn start_flusher(&self, state: &mut WriteState) {
        state.flushing = true;
        tokio::spawn(self.writer.clone().flush());
    }

    /// Sends an encoded frame: written at once when nothing is queued and the socket
    /// takes it, queued otherwise. A full queue marks a slow consumer and closes it.
    /// Returns whether the frame was taken.
    pub fn enqueue(&self, frame: Bytes) -> bool {
        self.send(frame, false)
    }

    /// Sends a control frame of the server's own (a keepalive ping) even into a full
    /// queue.
    pub fn enqueue_control(&self, frame: Bytes) -> bool {
        self.send(frame, true)
    }

    fn send(&self, frame: Bytes, past_bounds: bool) -> bool {
        self.send_all(std::slice::from_ref(&frame), past_bounds) == 1
    }

    /// Starts loading the socket's queue into the CPU's cache: the fan-out calls it for the
    /// next member while it writes to this one, so the next queue's first touch does not
    /// wait on memory (with many rooms, most members' queues are not in cache).
    pub fn prefetch(&self) {
        prefetch(std::ptr::from_ref(&self.writer.state));
    }

    /// Sends frames in order, as [`Self::enqueue`] does one: written at once (in one
    /// vectored write) when nothing is queued, queued otherwise. Returns how many were
    /// taken; a full queue closes the socket as a slow consumer and takes no more.
    pub fn enqueue_all(&self, frames: &[Bytes]) -> usize {
        self.send_all(frames, false)
    }

    fn send_all(&self, frames: &[Bytes], past_bounds: bool) -> usize {
        let mut state = self.writer.state();
        if state.finished || frames.is_empty() {
            return 0;
        }
        let mut rest = frames;
        let written = match state.fd {
            Some(fd) if state.frames.is_empty() && !state.flushing => {
                let batch = &frames[..frames.len().min(FRAMES_PER_WRITE)];
                rest = &frames[batch.len()..];
                Some((batch, write_some(write_direct(fd.get(), batch))))
            }
            _ => None,
        };
        match written {
            Some((_, Err(e))) => {
                drop(state);
                tracing::debug!(error = %e, "writing to a client failed");
                self.writer.give_up("write failed");
                return 0;
            }
            Some((batch, Ok(mut written))) => {
                // What the socket did not take waits in the queue, in order.
                for frame in batch {
                    if written >= frame.len() {
                        written -= frame.len();
                    } else {
                        state.push(frame.slice(written..));
                        written = 0;
                    }
                }
            }
            None => {}
        }
        let mut taken = frames.len() - rest.len();
        let limits = &self.writer.limits;
        for frame in rest {
            if !(past_bounds
                || (state.frames.len() < limits.send_frames && state.bytes < limits.send_bytes))
            {
                drop(state);
                if self.close().requested().is_none() {
                    metrics::counter!("conclave_gateway_slow_consumer_closes_total").increment(1);
                }
                self.close().trigger(
                    close::TRY_AGAIN_LATER,
                    "Send queue full: client is not reading fast enough",
                );
                return taken;
            }
            state.push(frame.clone());
            taken += 1;
        }
        if !state.frames.is_empty() && !state.flushing && state.socket.is_some() {
            self.start_flusher(&mut state);
        }
        taken
    }

    /// Whether the client's TCP stack has acknowledged something this server sent within
    /// `within` (what it sends is only acknowledged by a peer that is there). False before
    /// the upgrade completes, and where the kernel does not say.
    pub fn acknowledged_within(&self, within: Duration) -> bool {
        let socket = self.writer.state().socket.clone();
        socket.is_some_and(|s| since_last_ack(&s).is_some_and(|since| since < within))
    }

    /// Sends the close frame, the last frame the socket sends (past the queue's bounds:
    /// it goes after what is queued).
    pub fn finish(&self, close_frame: Bytes) {
        self.send(close_frame, true);
        self.writer.state().finished = true;
    }

    /// Waits until everything queued is written (or the socket is given up).
    pub async fn drained(&self) {
        loop {
            let notified = self.writer.drained.notified();
            {
                let state = self.writer.state();
                if state.frames.is_empty() || state.socket.is_none() || !state.flushing {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The socket has ended: whatever is queued is dropped and the connection let go.
    pub fn end(&self) {
        let mut state = self.writer.state();
        state.finished = true;
        state.clear();
        state.socket = None;
        state.fd = None;
        drop(state);
        self.writer.drained.notify_waiters();
    }

    #[cfg(test)]
    fn queued(&self) -> (usize, usize) {
        let state = self.writer.state();
        (state.frames.len(), state.bytes)
    }
}

#[cfg(test)]
mod tests;
