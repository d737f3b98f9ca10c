//! Batching a link's writes to local sockets: the frames from the node events the link
//! holds at once go out together, each socket's in one write.

use crate::session::Session;
use std::sync::Arc;

/// Frames for local sockets held at most before they are written, however busy the link.
pub(super) const MAX_HELD_WRITES: usize = 4096;

/// The frames for local sockets from the node events the link had at once, written when
/// they are all in: a socket behind on a busy link gets its frames in one write, not one
/// each. (An idle link's events come one at a time, and are written at once.)
#[derive(Default)]
pub(super) struct Writes {
    pub(super) frames: Vec<(Arc<Session>, bytes::Bytes)>,
    /// Events that added frames: with one, no socket appears twice.
    pub(super) sources: usize,
    /// A socket's frames, put together for its write.
    run: Vec<bytes::Bytes>,
}

impl Writes {
    pub(super) fn push(&mut self, session: &Arc<Session>, frame: bytes::Bytes) {
        self.frames.push((session.clone(), frame));
    }

    /// Writes every held frame, each socket's together and in order; returns how many the
    /// sockets took.
    pub(super) fn flush(&mut self) -> u64 {
        if self.sources > 1 {
            // Stable: a socket's frames keep their order.
            self.frames.sort_by_key(|(s, _)| Arc::as_ptr(s) as usize);
        }
        self.sources = 0;
        let mut taken = 0;
        let mut frames = self.frames.drain(..);
        let mut next = frames.next();
        while let Some((session, frame)) = next.take() {
            self.run.push(frame);
            loop {
                match frames.next() {
                    Some((s, frame)) if Arc::ptr_eq(&s, &session) => self.run.push(frame),
                    other => {
                        next = other;
                        break;
                    }
                }
            }
            // While this socket's write goes out, the CPU loads the next member's queue and
            // the session after it (most are not in cache when a broadcast reaches them).
            if let Some((s, _)) = &next {
                s.out.prefetch();
            }
            if let Some((s, _)) = frames.as_slice().first() {
                crate::outbound::prefetch(Arc::as_ptr(s));
                crate::outbound::prefetch(std::ptr::from_ref(&s.out));
            }
            taken += session.out.enqueue_all(&self.run) as u64;
            self.run.clear();
        }
        drop(frames);
        // Room for a large room's broadcast is kept; a rare giant's is let go.
        if self.frames.capacity() > 16 * MAX_HELD_WRITES {
            self.frames = Vec::new();
        }
        taken
    }
}
