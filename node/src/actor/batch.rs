//! Client frames queued behind each other run as a batch: each is its own step, whose
//! handler sees the writes of the steps before it, but their writes commit together and
//! their messages and acknowledgements go out once that one commit is durable. A Durable
//! Object likewise goes on handling events while a write is in flight and holds back only
//! the outputs; here a busy room needs one durable commit per batch instead of one per
//! frame.
//!
//! A handler that fails discards its own step only (the room marks where each step of a
//! batch begins), as when it runs alone. When the commit fails, every held write and
//! message is discarded, and the frames are handled again one at a time from a fresh party
//! instance, each as if it had come alone.

use super::frames::COMMIT_RETRY_PAUSES;
use super::{RoomActor, StepError};
use crate::mailbox::{MailboxRx, RoomEvent};
use crate::message::Message;
use crate::room::{Connection, Peer};
use crate::rooms::gauge;
use tracing::warn;

/// Most frames whose steps share one commit.
const MAX_BATCH: usize = 64;

/// A client frame from the mailbox, not traced (a traced frame is handled alone, inside
/// its span).
pub(super) struct QueuedFrame {
    peer: Peer,
    msg: Message,
    seq: u64,
}

impl QueuedFrame {
    /// The event as a frame that may join a batch, or the event back.
    pub(super) fn from_event(event: RoomEvent) -> Result<Self, RoomEvent> {
        match event {
            RoomEvent::Frame {
                peer,
                msg,
                seq,
                trace_parent,
            } if trace_parent.is_none() || !conclave_proto::trace::enabled() => {
                Ok(Self { peer, msg, seq })
            }
            other => Err(other),
        }
    }

    fn into_event(self) -> RoomEvent {
        RoomEvent::Frame {
            peer: self.peer,
            msg: self.msg,
            seq: self.seq,
            trace_parent: None,
        }
    }
}

impl RoomActor {
    /// Handles `first` and the frames queued right behind it as one batch. The paths taken
    /// only when a step or commit fails are boxed: inline, they would set the size of
    /// every room's task.
    pub(super) async fn frames(&mut self, first: QueuedFrame, rx: &mut MailboxRx) {
        let mut held: Vec<(Connection, QueuedFrame)> = Vec::new();
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            if !held.is_empty() && !self.instance_ready() {
                // A handler of the batch broke the instance (or a reload outdated it):
                // the held steps commit before a new one starts (its start commits steps
                // of its own), and this frame is the actor's next event.
                debug_assert!(self.lookahead.is_none());
                self.lookahead = Some(frame.into_event());
                break;
            }
            if let Some(conn) = self.frame_to_handle(frame.peer, frame.seq) {
                if !held.is_empty() {
                    self.room.mark_step();
                }
                let failed_commits = self.room.failed_commits();
                let result = self.run_frame(&conn, &frame).await;
                if self.room.failed_commits() != failed_commits && !held.is_empty() {
                    // A commit inside the handler (`sync`) failed, and the held steps'
                    // writes and messages with it.
                    held.push((conn, frame));
                    Box::pin(self.one_at_a_time(held, true)).await;
                    return;
                }
                match result {
                    Ok(()) => {}
                    Err(e) if held.is_empty() => {
                        // Alone so far: as any single frame.
                        self.room.ledger().end_frames();
                        Box::pin(self.settle_frame(&conn, frame.msg, frame.seq, Err(e))).await;
                        return;
                    }
                    Err(StepError::Handler(e)) => {
                        // Its step is discarded; it is acknowledged with the batch.
                        warn!(conn = %conn.id(), error = %e, "the party failed on a message; its writes and messages were discarded");
                        self.ack(frame.peer, frame.seq);
                    }
                    Err(_) => {
                        held.push((conn, frame));
                        Box::pin(self.one_at_a_time(held, false)).await;
                        return;
                    }
                }
                held.push((conn, frame));
            }
            if held.len() < MAX_BATCH {
                next = self.queued_frame(rx);
            }
        }
        if held.is_empty() {
            return;
        }
        let committed = self.commit_and_release().await;
        self.room.ledger().end_frames();
        if let Err(e) = committed {
            if held.len() == 1 {
                let (conn, frame) = held.remove(0);
                Box::pin(self.settle_frame(&conn, frame.msg, frame.seq, Err(e))).await;
            } else if !self.fenced {
                warn!(error = %e, frames = held.len(), "a batch of messages did not commit; handling them again one at a time");
                Box::pin(self.one_at_a_time(held, true)).await;
            }
        }
    }

    /// One frame's step, its writes and messages held for the batch's commit.
    async fn run_frame(&mut self, conn: &Connection, frame: &QueuedFrame) -> Result<(), StepError> {
        self.ensure_started().await?;
        let handler = super::Handler::Message {
            conn,
            msg: frame.msg.clone(),
            seq: frame.seq,
        };
        self.run_step(handler).await.map(drop)
    }

    /// The next event, if one is queued already and is a frame that may join the batch
    /// (not while the node stops serving or the ring changed: the actor's loop sees to
    /// those first). A gateway's confirmation is taken in passing; any other event waits
    /// as the actor's next one.
    fn queued_frame(&mut self, rx: &mut MailboxRx) -> Option<QueuedFrame> {
        let event = loop {
            match rx.try_recv()? {
                RoomEvent::Received { gateway, out_seq } => {
                    self.room.ledger().confirm(gateway, out_seq);
                }
                event => break event,
            }
        };
        let cluster = &self.ctx.cluster;
        if !cluster.is_serving() || cluster.rings_seen() != self.placed_as_of {
            self.lookahead = Some(event);
            return None;
        }
        match QueuedFrame::from_event(event) {
            Ok(frame) => Some(frame),
            Err(event) => {
                self.lookahead = Some(event);
                None
            }
        }
    }

    /// The batch did not take effect: discards what it holds, drops the party instance
    /// (its memory saw the discarded steps), and handles each frame alone. After a failed
    /// commit (`commit_failed`) the store gets a pause first, and frames whose writes
    /// landed after all are not handled again.
    async fn one_at_a_time(&mut self, frames: Vec<(Connection, QueuedFrame)>, commit_failed: bool) {
        self.room.discard_all();
        self.room.ledger().end_frames();
        if self.party.take().is_some() {
            gauge::party_dropped();
        }
        if commit_failed {
            tokio::time::sleep(COMMIT_RETRY_PAUSES[0]).await;
        }
        for (conn, frame) in frames {
            if self.fenced {
                return;
            }
            if commit_failed {
                match self.landed_after_all(frame.peer, frame.seq).await {
                    Some(true) => continue,
                    Some(false) => {}
                    None => {
                        self.fenced = true;
                        return;
                    }
                }
            }
            let result = self.handle_frame(&conn, frame.msg.clone(), frame.seq).await;
            self.settle_frame(&conn, frame.msg, frame.seq, result).await;
        }
    }
}
