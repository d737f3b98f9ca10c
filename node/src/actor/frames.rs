//! A client frame's way through the room: a replayed one recognised, its step run, and
//! tried again while its writes do not commit or the store fails its reads; acknowledged
//! once it took effect (or its handler failed), never when the room leaves the node.

use super::handler::StepError;
use super::{Handler, RoomActor};
use crate::message::Message;
use crate::room::{Connection, Peer};
use std::time::Duration;
use tracing::warn;

/// The pauses before a frame whose writes did not commit is tried again on this actor.
pub(super) const COMMIT_RETRY_PAUSES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_millis(900),
];

/// The pauses before a frame whose step the store failed a read of is tried again: 5 s in
/// all, past the liveness TTL (1.6 s by default), so that a node cut off from its store
/// stops serving (the room leaves, the frame unacknowledged) before a read that fails
/// every time is given to the party as the error it is.
const READ_RETRY_PAUSES: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_millis(900),
    Duration::from_millis(1700),
    Duration::from_millis(2000),
];

impl RoomActor {
    /// Handles one client frame, then acknowledges it to the gateway: once acknowledged, a
    /// frame is never replayed to another node. A frame is not acknowledged when this node
    /// may no longer serve the room; the next owner gets it instead. Nor is it when its
    /// writes could not commit: it is tried again here after a pause, and after the last
    /// pause the room leaves the node, so its sockets re-attach (here, or wherever the ring
    /// says) and the gateway replays the frame to a fresh actor. Only a failing handler
    /// drops a frame.
    pub(super) async fn frame(&mut self, peer: Peer, msg: Message, seq: u64) {
        let Some(conn) = self.frame_to_handle(peer, seq) else {
            return;
        };
        let result = self.handle_frame(&conn, msg.clone(), seq).await;
        self.settle_frame(&conn, msg, seq, result).await;
    }

    /// The connection a frame came from, unless it left or the frame was handled here
    /// already (replayed); the frame then counts as seen.
    pub(super) fn frame_to_handle(&mut self, peer: Peer, seq: u64) -> Option<Connection> {
        let conn = self.conn(peer)?;
        if seq != 0 {
            let mut conns = self.room.shared().conns();
            let entry = conns.get_mut(peer)?;
            if seq <= entry.last_seq {
                return None; // replayed, and already handled here
            }
            entry.last_seq = seq;
        }
        Some(conn)
    }

    /// Finishes a frame after an attempt at it (`result`): tries it again while its writes
    /// do not commit, as [`RoomActor::frame`] says.
    pub(super) async fn settle_frame(
        &mut self,
        conn: &Connection,
        msg: Message,
        seq: u64,
        mut result: Result<(), StepError>,
    ) {
        let peer = conn.peer();
        let mut pauses = COMMIT_RETRY_PAUSES.iter();
        let mut read_pauses = READ_RETRY_PAUSES.iter();
        loop {
            match result {
                Ok(()) => return,
                Err(StepError::Handler(e)) => {
                    warn!(conn = %conn.id(), error = %e, "the party failed on a message; its writes and messages were discarded");
                    self.ack(peer, seq);
                    self.room.flush().await;
                    return;
                }
                Err(_) if self.fenced => return,
                Err(StepError::Read(e)) => match read_pauses.next() {
                    Some(pause) => {
                        warn!(conn = %conn.id(), error = %e, ?pause, "the store failed a read of a message's step; trying it again");
                        tokio::time::sleep(*pause).await;
                    }
                    // Not a store cut off (this node would have stopped serving): a read
                    // that fails every time. The party gets the error as it is, once.
                    None if self.ctx.cluster.is_serving() => {
                        warn!(conn = %conn.id(), error = %e, "the store keeps failing a read of a message's step; the party handles the error");
                        self.reads_fail_steps = false;
                        result = self.handle_frame(conn, msg.clone(), seq).await;
                        self.reads_fail_steps = true;
                        continue;
                    }
                    None => {
                        self.fenced = true;
                        return;
                    }
                },
                Err(e) => match pauses.next() {
                    Some(pause) => {
                        warn!(conn = %conn.id(), error = %e, ?pause, "a message's writes did not commit; trying it again");
                        tokio::time::sleep(*pause).await;
                        // The commit's outcome may be unknown (a connection lost while
                        // committing): if it did land, the frame is done.
                        match self.landed_after_all(peer, seq).await {
                            Some(true) => return,
                            Some(false) => {}
                            None => {
                                self.fenced = true;
                                return;
                            }
                        }
                    }
                    None => {
                        warn!(conn = %conn.id(), error = %e, "a message's writes still do not commit; the room leaves this node and its sockets re-attach, with the message replayed");
                        self.fenced = true;
                        return;
                    }
                },
            }
            result = self.handle_frame(conn, msg.clone(), seq).await;
        }
    }

    /// After a commit that failed: reads the room's ledger again to learn whether the
    /// commit landed after all. If it did, the outputs it numbered go to the sockets they
    /// were for (gateways drop those they have) and frame `seq` is acknowledged: `true`.
    /// `None` when the ledger cannot be read either.
    pub(super) async fn landed_after_all(&mut self, peer: Peer, seq: u64) -> Option<bool> {
        let store = self.room.storage().store().clone();
        let records = match store.ledger(self.room.key()).await {
            Ok(records) => records,
            Err(e) => {
                warn!(error = %e, "cannot read the room's ledger after a failed commit; the room leaves this node");
                return None;
            }
        };
        let landed = self.room.ledger().merge(records);
        if !landed.is_empty() {
            let shared = self.room.shared();
            let events: Vec<_> = shared
                .conns()
                .iter()
                .flat_map(|e| {
                    let gateway = e.gateway;
                    let events = landed.for_socket(e.socket_ref(), e.id());
                    events.into_iter().map(move |event| (gateway, event))
                })
                .collect();
            for (gateway, event) in events {
                shared.push(gateway, event);
            }
        }
        let socket = self.room.shared().conns().get(peer)?.socket_ref();
        let done = self.room.ledger().applied(socket) >= seq;
        if done {
            self.ack(peer, seq);
        }
        self.room.flush().await;
        Some(done)
    }

    /// One attempt at a frame: the party started (from storage, after a failed commit),
    /// then its `on_message` as a step.
    pub(super) async fn handle_frame(
        &mut self,
        conn: &Connection,
        msg: Message,
        seq: u64,
    ) -> Result<(), StepError> {
        self.ensure_started().await?;
        self.step(Handler::Message { conn, msg, seq })
            .await
            .map(drop)
    }
}
