//! A request to close a client socket, made by anything that holds the socket's way out
//! (the node, the fan-out, a limit, a failed write) and acted on by the socket's task.

use futures::task::AtomicWaker;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

/// A request to close a socket from outside its tasks (node request, slow consumer,
/// limit), with the close code to send. One task waits for it: the socket's. (A waker
/// slot rather than a `Notify`: the wait is then a reference, not a waiter entry held in
/// every open socket's task.)
#[derive(Default)]
pub(crate) struct CloseSignal {
    code: AtomicU32,
    reason: Mutex<String>,
    waiter: AtomicWaker,
}

impl CloseSignal {
    /// Asks the socket to close; the first request wins.
    pub fn trigger(&self, code: u16, reason: &str) {
        {
            // The reason is written under its lock before the code is visible, so whoever
            // sees the code reads the reason that came with it.
            let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            if self
                .code
                .compare_exchange(0, code as u32, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return;
            }
            *slot = reason.to_string();
        }
        self.waiter.wake();
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

    /// Ready once a close is requested; otherwise the task is woken when it is. Only the
    /// latest task to poll is woken.
    pub fn poll_requested(&self, cx: &mut Context<'_>) -> Poll<(u16, String)> {
        if let Some(r) = self.requested() {
            return Poll::Ready(r);
        }
        self.waiter.register(cx.waker());
        match self.requested() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }

    /// Waits until a close is requested (one waiter at a time, see
    /// [`poll_requested`](Self::poll_requested)).
    pub fn wait(&self) -> impl Future<Output = (u16, String)> + Send + Unpin + '_ {
        std::future::poll_fn(move |cx| self.poll_requested(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiting_task_hears_the_first_request_with_its_reason() {
        let signal = Arc::new(CloseSignal::default());
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        signal.trigger(4000, "first");
        signal.trigger(4001, "second");
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(got, (4000, "first".to_string()));
        assert_eq!(signal.requested(), Some((4000, "first".to_string())));
    }

    #[test]
    fn whoever_sees_the_code_sees_its_reason() {
        for _ in 0..200 {
            let signal = Arc::new(CloseSignal::default());
            let watcher = std::thread::spawn({
                let signal = signal.clone();
                move || loop {
                    if let Some(r) = signal.requested() {
                        return r;
                    }
                    std::hint::spin_loop();
                }
            });
            signal.trigger(1008, "Message rate limit exceeded");
            let seen = watcher.join().expect("watcher");
            assert_eq!(seen, (1008, "Message rate limit exceeded".to_string()));
        }
    }
}
