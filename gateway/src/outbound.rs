//! The way to a client: its bounded send queue and its close signal. Anything may queue a
//! frame or ask for a close (the node, the fan-out, a limit); only the socket's writer
//! task drains the queue and only the socket's tasks act on the close.

use conclave_proto::close;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};
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
pub(crate) struct Outbound {
    pub tx: mpsc::Sender<WsMessage>,
    pub close: Arc<CloseSignal>,
    /// Payload bytes in `tx`, decremented by the writer as it takes frames.
    pub queued_bytes: Arc<AtomicUsize>,
    pub max_queued_bytes: usize,
}

impl Outbound {
    /// A queue of at most `frames` frames and `bytes` payload bytes, plus the one frame that
    /// crosses the byte bound (so a single message larger than `bytes`, such as a large
    /// document's sync, still goes out when the client keeps up); the writer gets the
    /// receiving end.
    pub fn new(frames: usize, bytes: usize) -> (Self, mpsc::Receiver<WsMessage>) {
        let (tx, rx) = mpsc::channel(frames);
        let out = Self {
            tx,
            close: Arc::default(),
            queued_bytes: Arc::default(),
            max_queued_bytes: bytes,
        };
        (out, rx)
    }

    /// Queues a frame; a full queue marks a slow consumer and closes it. Returns whether
    /// the frame was queued.
    pub fn enqueue(&self, msg: WsMessage) -> bool {
        let len = msg.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let result = if before >= self.max_queued_bytes {
            Err(mpsc::error::TrySendError::Full(msg))
        } else {
            self.tx.try_send(msg)
        };
        if result.is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        }
        match result {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.close.requested().is_none() {
                    metrics::counter!("conclave_gateway_slow_consumer_closes_total").increment(1);
                }
                self.close.trigger(
                    close::TRY_AGAIN_LATER,
                    "Send queue full: client is not reading fast enough",
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
