//! The way to a client: its bounded send queue and its close signal. Anything may queue a
//! frame or ask for a close (the node, the fan-out, a limit); only the socket's writer
//! task drains the queue and only the socket's tasks act on the close.

use conclave_proto::close;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A request to close a socket from outside its tasks (node request, slow consumer,
/// limit), with the close code to send.
#[derive(Default)]
pub(crate) struct CloseSignal {
    code: AtomicU32,
    reason: Mutex<String>,
    notify: Notify,
}

impl CloseSignal {
    /// Asks the socket to close; the first request wins.
    pub fn trigger(&self, code: u16, reason: &str) {
        if self
            .code
            .compare_exchange(0, code as u32, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.to_string();
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
    }

    /// The requested close, if any.
    pub fn requested(&self) -> Option<(u16, String)> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            c => Some((
                c as u16,
                self.reason
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            )),
        }
    }

    /// Waits until a close is requested.
    pub async fn wait(&self) -> (u16, String) {
        loop {
            let notified = self.notify.notified();
            if let Some(r) = self.requested() {
                return r;
            }
            notified.await;
        }
    }
}

/// The socket's bounded send queue and its close signal.
///
/// The queue is a `VecDeque` under a mutex rather than a channel: an idle socket's queue
/// then costs no allocation at all (a bounded tokio channel allocates its first block of
/// slots up front, ~2 KB per socket), and it is only ever touched by the fan-out and the
/// socket's writer.
pub(crate) struct Outbound {
    queue: Arc<Queue>,
    pub close: Arc<CloseSignal>,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a frame is queued or the sending side goes away.
    ready: Notify,
}

#[derive(Default)]
struct QueueState {
    frames: VecDeque<WsMessage>,
    /// Payload bytes in `frames`.
    bytes: usize,
    /// The writer is gone: nothing queued would be sent.
    receiver_gone: bool,
    /// The `Outbound` is gone: nothing more will be queued.
    sender_gone: bool,
}

impl Queue {
    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer's end of a socket's send queue.
pub(crate) struct OutboundRx {
    queue: Arc<Queue>,
}

impl OutboundRx {
    /// The next frame, once there is one; `None` once the queue's sender is gone and it
    /// is empty. Cancel-safe: a frame stays queued until it is returned.
    pub async fn recv(&mut self) -> Option<WsMessage> {
        loop {
            {
                let mut state = self.queue.state();
                if let Some(frame) = state.pop() {
                    return Some(frame);
                }
                if state.sender_gone {
                    return None;
                }
            }
            // A frame queued since the check left a permit: this returns at once.
            self.queue.ready.notified().await;
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<WsMessage> {
        self.queue.state().pop()
    }
}

impl QueueState {
    fn pop(&mut self) -> Option<WsMessage> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.len();
        if self.frames.is_empty() && self.frames.capacity() > IDLE_QUEUE_CAPACITY {
            // A burst is over: give its slots back.
            self.frames = VecDeque::new();
        }
        Some(frame)
    }
}

/// Frame slots an empty queue keeps; a larger one, grown by a burst, is freed.
const IDLE_QUEUE_CAPACITY: usize = 8;

impl Drop for OutboundRx {
    fn drop(&mut self) {
        let mut state = self.queue.state();
        state.receiver_gone = true;
        state.frames = VecDeque::new();
        state.bytes = 0;
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.queue.state().sender_gone = true;
        self.queue.ready.notify_one();
    }
}

impl Outbound {
    /// A queue of at most `frames` frames and `bytes` payload bytes, plus the one frame that
    /// crosses the byte bound (so a single message larger than `bytes`, such as a large
    /// document's sync, still goes out when the client keeps up); the writer gets the
    /// receiving end.
    pub fn new(frames: usize, bytes: usize) -> (Self, OutboundRx) {
        let queue = Arc::new(Queue::default());
        let out = Self {
            queue: queue.clone(),
            close: Arc::default(),
            max_frames: frames,
            max_bytes: bytes,
        };
        (out, OutboundRx { queue })
    }

    /// Queues a frame; a full queue marks a slow consumer and closes it. Returns whether
    /// the frame was queued.
    pub fn enqueue(&self, msg: WsMessage) -> bool {
        {
            let mut state = self.queue.state();
            if state.receiver_gone {
                return false;
            }
            if state.frames.len() < self.max_frames && state.bytes < self.max_bytes {
                state.bytes += msg.len();
                state.frames.push_back(msg);
                drop(state);
                self.queue.ready.notify_one();
                return true;
            }
        }
        if self.close.requested().is_none() {
            metrics::counter!("conclave_gateway_slow_consumer_closes_total").increment(1);
        }
        self.close.trigger(
            close::TRY_AGAIN_LATER,
            "Send queue full: client is not reading fast enough",
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: usize) -> WsMessage {
        WsMessage::binary(vec![0u8; bytes])
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_the_writer_ends_when_the_sender_goes() {
        let (out, mut rx) = Outbound::new(8, 1024);
        assert!(out.enqueue(WsMessage::text("a")));
        assert!(out.enqueue(WsMessage::text("b")));
        assert_eq!(rx.recv().await, Some(WsMessage::text("a")));
        assert_eq!(rx.try_recv(), Some(WsMessage::text("b")));
        assert_eq!(rx.try_recv(), None);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        drop(out);
        assert_eq!(waiting.await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_a_frame() {
        let (out, mut rx) = Outbound::new(8, 1024);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        assert!(out.enqueue(WsMessage::text("late")));
        assert_eq!(waiting.await.unwrap(), Some(WsMessage::text("late")));
    }

    #[test]
    fn a_full_queue_closes_the_socket_as_a_slow_consumer() {
        let (out, _rx) = Outbound::new(2, 1024);
        assert!(out.enqueue(frame(1)));
        assert!(out.enqueue(frame(1)));
        assert!(!out.enqueue(frame(1)), "a third frame in a two-frame queue");
        assert_eq!(
            out.close.requested().map(|(c, _)| c),
            Some(close::TRY_AGAIN_LATER)
        );
    }

    #[test]
    fn one_frame_may_cross_the_byte_bound_but_none_after_it() {
        let (out, mut rx) = Outbound::new(100, 1000);
        assert!(
            out.enqueue(frame(5000)),
            "one large frame into an empty queue"
        );
        assert!(
            !out.enqueue(frame(1)),
            "a frame behind a queue over its bound"
        );
        assert!(out.close.requested().is_some());
        assert_eq!(rx.try_recv().map(|m| m.len()), Some(5000));
    }

    #[test]
    fn nothing_is_queued_once_the_writer_is_gone() {
        let (out, rx) = Outbound::new(8, 1024);
        drop(rx);
        assert!(!out.enqueue(frame(1)));
        assert!(
            out.close.requested().is_none(),
            "a gone writer is not a slow consumer"
        );
    }
}
