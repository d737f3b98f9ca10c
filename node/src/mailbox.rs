//! What reaches a room: the events of its actor's mailbox, and the answers to a socket's
//! admission.

use crate::links::GatewayId;
use crate::message::{Message, Request, Response};
use crate::room::{ConnNames, Peer};
use conclave_proto::wire::{node_event, AdmitReply, Resume};
use conclave_proto::{Refusal, SocketId};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Opens a room's mailbox, holding at most `capacity` events.
///
/// tokio's channel allocates its first block of 32 slots with the channel, each slot
/// the size of an event: 2,592 bytes an idle room kept. Its events go boxed (a slot is a
/// pointer, the block 288 bytes), at the cost of one small allocation per event.
pub(crate) fn mailbox(capacity: usize) -> (MailboxTx, MailboxRx) {
    let (tx, rx) = mpsc::channel(capacity);
    (MailboxTx(tx), MailboxRx(rx))
}

/// The sending end of a room's mailbox; cheap to clone.
#[derive(Clone)]
pub(crate) struct MailboxTx(mpsc::Sender<Box<RoomEvent>>);

impl MailboxTx {
    /// Queues `event`, waiting while the mailbox is full; gives it back if the mailbox
    /// is closed (the actor retired or died).
    pub async fn send(&self, event: RoomEvent) -> Result<(), RoomEvent> {
        self.0.send(Box::new(event)).await.map_err(|e| *e.0)
    }

    /// Queues `event` if there is room now.
    pub fn try_send(&self, event: RoomEvent) -> Result<(), RoomEvent> {
        self.0.try_send(Box::new(event)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e) => *e,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The actor's end of a room's mailbox.
pub(crate) struct MailboxRx(mpsc::Receiver<Box<RoomEvent>>);

impl MailboxRx {
    /// The next event; `None` once the mailbox is closed and empty.
    pub async fn recv(&mut self) -> Option<RoomEvent> {
        self.0.recv().await.map(|e| *e)
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<RoomEvent> {
        self.0.try_recv().ok().map(|e| *e)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses further events; those queued can still be taken.
    pub fn close(&mut self) {
        self.0.close();
    }
}

/// A socket asking to join the room: new (`on_connect` runs) or moving here from another
/// node (`resume`: it keeps its tags and state, and no hook runs).
pub(crate) struct OpenRequest {
    pub peer: Peer,
    pub names: ConnNames,
    /// The upgrade request's headers, for a new socket (`Room::upgrade_headers`).
    pub headers: Option<Arc<http::HeaderMap>>,
    /// The admission this open answers.
    pub request_id: u64,
    pub origin: u64,
    pub resume: Option<Resume>,
    /// The gateway's trace context for the connection (traces exported only).
    pub trace_parent: Option<Box<str>>,
}

pub(crate) enum RoomEvent {
    Open(Box<OpenRequest>),
    Frame {
        peer: Peer,
        msg: Message,
        /// The gateway's sequence number for the frame (0: not acknowledged).
        seq: u64,
        /// The gateway's trace context for it (traces exported only).
        trace_parent: Option<Box<str>>,
    },
    /// The socket moved to another node: it leaves without `on_close`.
    Detach {
        peer: Peer,
    },
    Closed {
        peer: Peer,
        code: u16,
        reason: String,
        error: Option<String>,
        /// Its gateway's link was lost and it did not come back within the grace: it may
        /// still, until the gateway's re-attach timeout, so its frames stay handled.
        link_lost: bool,
    },
    Request {
        req: Box<Request>,
        reply: oneshot::Sender<Response>,
    },
    /// The node stopped serving: close everything here and leave.
    Fence,
    /// The ring placed the room on another node: release it and leave.
    Handoff,
    Alarm {
        attempt: u32,
        reply: oneshot::Sender<AlarmOutcome>,
    },
    /// The party asked to run (`Party::on_wake`), e.g. for a JavaScript timer.
    Wake,
    /// A gateway link has every numbered output of the room up to `out_seq`.
    Received {
        gateway: GatewayId,
        out_seq: u64,
    },
    /// An operator deletes the room: its connections are closed, its keys and alarm
    /// deleted, its party instance dropped. The answer says what it held (JSON).
    Delete {
        reply: oneshot::Sender<serde_json::Value>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlarmOutcome {
    /// Ran and committed (or was no longer due).
    Done,
    /// Failed; retry later.
    Failed,
    /// `on_alarm` did not run (or commit) because this node could not serve the room: it
    /// was fenced (Redis restarting, its store cut off) or the room was not its own. Tried
    /// again soon; not one of the alarm's retries.
    NotRun,
}

/// The admission answer that tells the gateway the socket is in the room, after the
/// room's output number `last_out`, with its tags for a later move: all of them when it
/// has others than its id, `None` (sent as none) for the id alone.
pub(crate) fn admitted(
    request_id: u64,
    socket: SocketId,
    tags: Option<&[String]>,
    last_out: u64,
) -> node_event::Event {
    node_event::Event::AdmitReply(AdmitReply {
        request_id,
        status: 0,
        body: String::new(),
        socket: socket.0,
        tags: tags.map(<[String]>::to_vec).unwrap_or_default(),
        ring_version: 0,
        out_seq: last_out,
    })
}

/// The admission answer that refuses the socket with an HTTP status instead of an upgrade.
pub(crate) fn refused(request_id: u64, socket: SocketId, refusal: Refusal) -> node_event::Event {
    node_event::Event::AdmitReply(AdmitReply {
        request_id,
        status: refusal.status.into(),
        body: refusal.body,
        socket: socket.0,
        tags: Vec::new(),
        ring_version: refusal.ring_version.0,
        out_seq: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_mailbox_gives_events_back_and_keeps_those_queued() {
        let (tx, mut rx) = mailbox(2);
        assert!(tx.send(RoomEvent::Wake).await.is_ok());
        assert!(tx.try_send(RoomEvent::Fence).is_ok());
        assert!(
            matches!(tx.try_send(RoomEvent::Wake), Err(RoomEvent::Wake)),
            "full"
        );
        rx.close();
        assert!(tx.is_closed());
        assert!(matches!(
            tx.send(RoomEvent::Handoff).await,
            Err(RoomEvent::Handoff)
        ));
        assert!(!rx.is_empty());
        assert!(matches!(rx.try_recv(), Some(RoomEvent::Wake)));
        assert!(matches!(rx.recv().await, Some(RoomEvent::Fence)));
        assert!(rx.recv().await.is_none());
    }
}
