//! A client socket's attachment to the node serving its room. The socket outlives any one
//! node: when its node dies, hands the room off or is fenced, the session detaches and is
//! re-attached to the room's next owner (`reattach.rs`) while the client stays connected.
//!
//! Every client frame gets a sequence number and stays buffered until the node
//! acknowledges it (after the handler's writes committed and its messages went out). On a
//! move, the frames after the last acknowledgement are replayed to the next node, in order,
//! before any newer frame: none is dropped silently. The buffer is bounded; when it is
//! full the socket's reader stops reading, which pushes back on the client.

use crate::link::NodeLink;
use crate::outbound::Outbound;
use bytes::Bytes;
use conclave_proto::close;
use conclave_proto::wire::{gateway_event, Closed, Frame, Resume};
use conclave_proto::{RoomKey, SocketId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Replay buffer slots kept after the buffer empties while its socket is active.
const BURST_CAPACITY: usize = 16;

struct Unacked {
    seq: u64,
    payload: Bytes,
    binary: bool,
}

#[derive(Default)]
struct Attachment {
    /// The node link the socket is on; `None` while it moves.
    link: Option<Arc<NodeLink>>,
    next_seq: u64,
    acked_seq: u64,
    unacked: VecDeque<Unacked>,
    unacked_bytes: usize,
    /// What the room gave the connection to keep across a move; `None` (nothing
    /// allocated) for most: no tags besides the id, no state.
    carried: Option<Box<Carried>>,
    /// Set once the client socket has ended.
    ended: bool,
}

#[derive(Default)]
struct Carried {
    tags: Vec<String>,
    state: Bytes,
}

impl Attachment {
    /// Changes what is carried; nothing stays allocated once it is all empty again.
    fn carry(&mut self, change: impl FnOnce(&mut Carried)) {
        change(self.carried.get_or_insert_with(Box::default));
        if self
            .carried
            .as_ref()
            .is_some_and(|c| c.tags.is_empty() && c.state.is_empty())
        {
            self.carried = None;
        }
    }

    /// An empty replay buffer holding more than `kept` slots gives them all back.
    fn release_unacked_slots_over(&mut self, kept: usize) {
        if self.unacked.is_empty() && self.unacked.capacity() > kept {
            self.unacked = VecDeque::new();
        }
    }
}

pub(crate) struct Session {
    pub id: SocketId,
    /// Shared by the room's sockets (`Sessions::room_key`).
    pub room: Arc<RoomKey>,
    pub conn_id: Box<str>,
    pub uri: Box<str>,
    pub out: Outbound,
    /// When the client was last heard from (read by the keepalive sweep).
    pub liveness: crate::keepalive::Liveness,
    attachment: Mutex<Attachment>,
    /// Signalled when acknowledgements free replay buffer space.
    acked: Notify,
    /// The room's last numbered output this socket has taken (`u64::MAX` until the first
    /// admission says where the socket starts). After a crash the room's next owner sends
    /// outputs again that may have arrived already: each number is taken once.
    last_out: AtomicU64,
}

impl Session {
    pub fn new(
        id: SocketId,
        room: Arc<RoomKey>,
        conn_id: String,
        uri: String,
        out: Outbound,
    ) -> Self {
        Self {
            id,
            room,
            conn_id: conn_id.into_boxed_str(),
            uri: uri.into_boxed_str(),
            out,
            liveness: crate::keepalive::Liveness::new(),
            attachment: Mutex::default(),
            acked: Notify::new(),
            last_out: AtomicU64::new(u64::MAX),
        }
    }

    /// An admission to the room, whose outputs so far end at `last_out`: a new socket
    /// takes only later ones; a moving one goes on from where it was, unless the room
    /// never made the numbers it saw (its storage was replaced).
    pub fn admitted_after(&self, last_out: u64) {
        let _ = self
            .last_out
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |seen| {
                Some(if seen == u64::MAX {
                    last_out
                } else {
                    seen.min(last_out)
                })
            });
    }

    /// Whether the socket takes output `out_seq` of its room (0: not numbered, always).
    pub fn takes_output(&self, out_seq: u64) -> bool {
        out_seq == 0
            || self
                .last_out
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |seen| {
                    (seen != u64::MAX && out_seq > seen).then_some(out_seq)
                })
                .is_ok()
    }

    fn attachment(&self) -> MutexGuard<'_, Attachment> {
        self.attachment.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A freshly admitted socket joins its first link. False if that link has died since
    /// (its end could not see the socket to move it).
    pub fn attach(&self, link: Arc<NodeLink>) -> bool {
        {
            let mut a = self.attachment();
            if !link.is_alive() {
                return false;
            }
            a.link = Some(link.clone());
        }
        self.settle(&link)
    }

    /// Confirms an attachment to `link`: it holds only while the link still routes the
    /// node's events for this socket here. An evacuation or a `Moved` that raced the attach
    /// took the socket out of the link's registry but could not move it (it was not
    /// attached yet): the attachment is undone and the move starts over. Without this the
    /// socket's frames would reach the node while its replies were dropped, for good.
    fn settle(&self, link: &Arc<NodeLink>) -> bool {
        if link.holds(self.id.0) {
            return true;
        }
        let mut a = self.attachment();
        if a.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
            a.link = None;
        }
        false
    }

    /// Leaves `link` (when the socket is still on it); the caller then moves the socket.
    /// Returns false when the socket was elsewhere or has ended: nothing to move.
    pub fn detach_from(&self, link: &Arc<NodeLink>) -> bool {
        let mut a = self.attachment();
        if a.ended || !a.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
            return false;
        }
        a.link = None;
        true
    }

    /// Buffers a client frame under the next sequence number; returns the event to send
    /// and the link to send it on, unless the socket is between nodes (the frame then goes
    /// out with the replay).
    pub fn push_frame(
        &self,
        payload: Bytes,
        binary: bool,
    ) -> Option<(Arc<NodeLink>, gateway_event::Event)> {
        let mut a = self.attachment();
        a.next_seq += 1;
        let seq = a.next_seq;
        a.unacked_bytes += payload.len();
        a.unacked.push_back(Unacked {
            seq,
            payload: payload.clone(),
            binary,
        });
        let link = a.link.clone()?;
        Some((link, self.frame_event(seq, payload, binary)))
    }

    fn frame_event(&self, seq: u64, payload: Bytes, binary: bool) -> gateway_event::Event {
        gateway_event::Event::Frame(Frame {
            socket: self.id.0,
            payload,
            binary,
            seq,
            trace_parent: String::new(),
        })
    }

    /// Whether the replay buffer is over its limit (the client is sending faster than
    /// the node acknowledges, or the socket is between nodes).
    pub fn over_buffer_limit(&self) -> bool {
        self.attachment().unacked_bytes > self.out.limits().replay_bytes
    }

    /// Waits while the replay buffer is over its limit.
    pub async fn wait_for_buffer_space(&self) {
        loop {
            let notified = self.acked.notified();
            if !self.over_buffer_limit() {
                return;
            }
            notified.await;
        }
    }

    /// The sequence number of the last frame the client sent (0: none yet).
    pub fn sent_seq(&self) -> u64 {
        self.attachment().next_seq
    }

    /// Whether the node acknowledged every frame up to `seq`.
    pub fn acked_through(&self, seq: u64) -> bool {
        self.attachment().acked_seq >= seq
    }

    /// The node handled every frame up to `seq`.
    pub fn ack(&self, seq: u64) {
        let mut a = self.attachment();
        if seq <= a.acked_seq {
            return;
        }
        a.acked_seq = seq;
        while a.unacked.front().is_some_and(|f| f.seq <= seq) {
            if let Some(f) = a.unacked.pop_front() {
                a.unacked_bytes -= f.payload.len();
            }
        }
        // A burst is over: its slots go back at once.
        a.release_unacked_slots_over(BURST_CAPACITY);
        drop(a);
        self.acked.notify_waiters();
    }

    /// The socket has been quiet: its replay buffer, if every frame in it is
    /// acknowledged, gives back the room it kept for the next frame. (Kept while the
    /// client talks, so that a chatty socket does not allocate per message.)
    pub fn release_idle_buffers(&self) {
        self.attachment().release_unacked_slots_over(0);
    }

    pub fn set_tags(&self, tags: Vec<String>) {
        self.attachment().carry(|c| c.tags = tags);
    }

    pub fn set_state(&self, state: Bytes) {
        self.attachment().carry(|c| c.state = state);
    }

    /// What the next node needs to take the socket over as it is.
    pub fn resume(&self) -> Resume {
        let a = self.attachment();
        let carried = a.carried.as_deref();
        Resume {
            tags: carried.map(|c| c.tags.clone()).unwrap_or_default(),
            state: carried.map(|c| c.state.clone()).unwrap_or_default(),
            acked_seq: a.acked_seq,
        }
    }

    pub fn has_ended(&self) -> bool {
        self.attachment().ended
    }

    /// The client socket ended: returns the link whose node must hear about it.
    pub fn end(&self) -> Option<Arc<NodeLink>> {
        let mut a = self.attachment();
        a.ended = true;
        self.acked.notify_waiters();
        a.link.take()
    }

    /// Completes a move: replays the unacknowledged frames to the node on `link` (which
    /// has admitted the socket), then attaches, so newer frames follow the replay in order.
    /// If the client left meanwhile, the node hears that instead. False if the link died
    /// on the way: the move must start over.
    pub async fn switch_to(&self, link: Arc<NodeLink>) -> bool {
        let mut sent = 0;
        loop {
            let batch: Option<Vec<gateway_event::Event>> = {
                let mut a = self.attachment();
                if a.ended {
                    None
                } else {
                    let batch: Vec<_> = a
                        .unacked
                        .iter()
                        .filter(|f| f.seq > sent)
                        .map(|f| self.frame_event(f.seq, f.payload.clone(), f.binary))
                        .collect();
                    if batch.is_empty() {
                        if !link.is_alive() {
                            return false;
                        }
                        a.link = Some(link.clone());
                        drop(a);
                        return self.settle(&link);
                    }
                    sent = a.next_seq;
                    Some(batch)
                }
            };
            let Some(batch) = batch else {
                self.tell_closed(
                    &link,
                    close::ABNORMAL,
                    "",
                    "client left while the room moved",
                )
                .await;
                return true;
            };
            metrics::counter!("conclave_gateway_frames_replayed_total")
                .increment(batch.len() as u64);
            for event in batch {
                if link.send(event).await.is_err() {
                    return false;
                }
            }
        }
    }

    /// Tells the node on `link` the socket is gone.
    pub async fn tell_closed(&self, link: &NodeLink, code: u16, reason: &str, error: &str) {
        link.unregister(self);
        let _ = link.send(self.closed_event(code, reason, error)).await;
    }

    /// [`Self::tell_closed`] without waiting (from a drop), with 1006.
    pub fn tell_closed_soon(&self, link: &Arc<NodeLink>, error: &str) {
        link.unregister(self);
        link.send_then(self.closed_event(close::ABNORMAL, "", error), || {});
    }

    fn closed_event(&self, code: u16, reason: &str, error: &str) -> gateway_event::Event {
        gateway_event::Event::Closed(Closed {
            socket: self.id.0,
            room: Some(self.room.to_wire()),
            code: code.into(),
            reason: reason.to_string(),
            error: error.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;
