//! A request to close a client socket, made by anything that holds the socket's way out
//! (the node, the fan-out, a limit, a failed write) and acted on by the socket's task.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

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
