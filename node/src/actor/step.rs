//! One step of a room: take the party instance out, run one of its handlers, put it back,
//! then commit the handler's writes and release its messages, or discard both.

use super::handler::{Handler, StepError};
use super::RoomActor;
use crate::message::Response;
use crate::party::{InstanceBroken, Party, PartyError};
use crate::room::{close_socket, Peer, SocketRef};
use crate::rooms::gauge;
use crate::storage::StorageError;
use tracing::{debug, warn};

impl RoomActor {
    /// Runs one handler as a step: its writes commit and its messages go out together, or
    /// neither does. Returns the response of a request's handler.
    pub(super) async fn step(&mut self, h: Handler<'_>) -> Result<Option<Response>, StepError> {
        let result = match self.run_step(h).await {
            Ok(response) => self.commit_and_release().await.map(|()| response),
            Err(e) => Err(e),
        };
        self.room.ledger().end_frames();
        result
    }

    /// Runs one handler, leaving its writes and messages (and a frame's acknowledgement)
    /// held for a commit to come, behind those of the steps before it that are still held.
    /// If the handler fails, its writes and messages are discarded (`Room::discard`: all
    /// that is held, unless the room marked where this step began).
    pub(super) async fn run_step(&mut self, h: Handler<'_>) -> Result<Option<Response>, StepError> {
        let ack = match &h {
            Handler::Message { conn, seq, .. } => Some((conn.peer(), *seq)),
            _ => None,
        };
        // A frame's record in the ledger commits with the step's writes: replayed, it is
        // recognised and not handled again.
        if let Some((peer, seq)) = ack.filter(|(_, seq)| *seq != 0) {
            let origin = self.room.shared().conns().get(peer).map(|e| e.origin);
            if let Some(origin) = origin {
                let socket = SocketRef {
                    origin,
                    socket: peer.socket.0,
                };
                self.room.ledger().begin_frame(socket, seq);
            }
        }
        let mut party = match self.take_party() {
            Ok(party) => party,
            Err(e) => {
                self.room.discard();
                return Err(StepError::Handler(e));
            }
        };
        // The store failing a read fails a client frame's step (or the start before it),
        // which the frame's retries then run again; other steps have no second try, and
        // their handlers deal with the error as it is.
        let reads_count =
            self.reads_fail_steps && matches!(h, Handler::Message { .. } | Handler::Start);
        // A failed read or commit from before this step is not its concern.
        let _ = self.room.storage().take_read_failure();
        let _ = self.room.take_failed_commit();
        let result = h.call(party.as_mut(), &mut self.room).await;
        self.party = Some(party);
        // A commit the handler made (`Room::sync`) failed, whatever the handler made of
        // that: its writes before it are gone, and a step recorded as done at the end
        // would have half taken effect. The step fails as if its own commit had, and is
        // tried again as such a step is.
        if let Some(e) = self.room.take_failed_commit() {
            return Err(self.commit_failed(e));
        }
        // The store failed a read: whatever the handler made of that (it may have caught
        // the error and gone on) rests on data it did not see. Nothing of the step holds,
        // and the instance whose memory saw it goes.
        let failed = self.room.storage().take_read_failure();
        if let Some(failed) = failed.filter(|_| reads_count) {
            self.room.discard();
            if self.party.take().is_some() {
                gauge::party_dropped();
            }
            return Err(StepError::Read(failed));
        }
        match result {
            Ok(response) => {
                if let Some((peer, seq)) = ack {
                    self.ack(peer, seq);
                }
                Ok(response)
            }
            Err(e) => {
                self.room.discard();
                if e.downcast_ref::<InstanceBroken>().is_some() && self.party.take().is_some() {
                    gauge::party_dropped();
                }
                Err(StepError::Handler(e))
            }
        }
    }

    /// Takes the started party out while one of its handlers runs (it needs `&mut self.room`).
    fn take_party(&mut self) -> Result<Box<dyn Party>, PartyError> {
        match self.party.take() {
            Some(party) => Ok(party),
            None => self.create_party(),
        }
    }

    /// A new party instance; its constructor may panic.
    fn create_party(&self) -> Result<Box<dyn Party>, PartyError> {
        crate::panics::guarded(|| self.factory.create())
            .map_err(|what| crate::panics::broken(&what))
    }

    /// Commits the step's writes and releases its messages; if the commit fails, discards
    /// both and drops the party instance.
    pub(super) async fn commit_and_release(&mut self) -> Result<(), StepError> {
        match self.room.commit().await {
            Ok(alarm_changed) => {
                if alarm_changed {
                    self.ctx.alarms_changed.notify_one();
                }
                self.room.flush().await;
                Ok(())
            }
            Err(e) => Err(self.commit_failed(e)),
        }
    }

    /// A commit failed (the step's own, or one its handler made with `Room::sync`):
    /// everything held is discarded and the party instance, whose memory saw the writes,
    /// goes. A commit another owner fenced off means the actor leaves the room.
    fn commit_failed(&mut self, e: StorageError) -> StepError {
        if matches!(e, StorageError::Fenced { .. }) {
            self.fenced = true;
        }
        warn!(error = %e, "commit failed; dropping held messages and resetting the room");
        self.room.discard_all();
        if self.party.take().is_some() {
            gauge::party_dropped();
        }
        StepError::Commit(e)
    }

    /// Makes sure the room is owned and a party instance exists and has run `on_start`
    /// (and, for one that asks, heard `on_connect` for the connections it inherits).
    pub(super) async fn ensure_started(&mut self) -> Result<(), StepError> {
        if self.instance_ready() {
            return Ok(());
        }
        if self.party.take().is_some() {
            gauge::party_dropped();
        }
        // Boxed: a start is rare (a room's first event, or its first after hibernating),
        // and inline its future would be part of, and copied into, every caller's.
        Box::pin(self.start_party()).await
    }

    /// Whether there is an instance to run the next event: started, and not to be
    /// replaced ([`Party::outdated`]: its code was reloaded, or its runtime dropped it).
    pub(super) fn instance_ready(&mut self) -> bool {
        match self.ask_party("outdated", |p| p.outdated()) {
            Ok(Some(false)) => true,
            Ok(Some(true)) => {
                debug!("the party instance is outdated; starting a fresh one");
                false
            }
            Ok(None) | Err(_) => false,
        }
    }

    /// Starts an instance: `on_start`, then, if it asks, `on_connect` for each connection
    /// it inherits (all in the table but one being admitted). One whose greeting breaks it
    /// is closed, and a fresh instance starts in its place.
    async fn start_party(&mut self) -> Result<(), StepError> {
        self.ensure_owned().await?;
        loop {
            self.party = Some(self.create_party().map_err(StepError::Handler)?);
            gauge::party_loaded();
            self.greeted.clear();
            self.greets = false;
            if let Err(e) = self.step(Handler::Start).await {
                // Not kept: the next event starts afresh, from `on_start`.
                if self.party.take().is_some() {
                    gauge::party_dropped();
                }
                return Err(e);
            }
            self.greets = self.asks_for_greetings()?;
            if !self.greets {
                return Ok(());
            }
            let admitting = self.admitting;
            let inherited: Vec<Peer> = self
                .room
                .shared()
                .conns()
                .iter()
                .filter(|e| Some(e.socket_ref()) != admitting)
                .map(|e| e.peer())
                .collect();
            let mut broken = false;
            for peer in inherited {
                self.greet(peer).await?;
                if self.party.is_none() {
                    broken = true;
                    break;
                }
            }
            if !broken {
                return Ok(());
            }
        }
    }

    /// Whether the started instance hears `on_connect` for connections it inherits
    /// ([`Party::greets_inherited_connections`]).
    fn asks_for_greetings(&mut self) -> Result<bool, StepError> {
        let greets = self.ask_party("greets_inherited_connections", |p| {
            p.greets_inherited_connections()
        });
        Ok(greets.map_err(StepError::Handler)?.unwrap_or(false))
    }

    /// `on_connect`, as its own step, for a connection the instance (one that `greets`)
    /// has not heard of. A handler error closes the socket with 1011 and takes it out of
    /// the room, as at admission; if it broke the instance, the caller starts another. A
    /// failed commit is the caller's (the instance is gone; the next one greets again).
    pub(super) async fn greet(&mut self, peer: Peer) -> Result<(), StepError> {
        let Some(conn) = self.conn(peer) else {
            return Ok(()); // it left meanwhile
        };
        let socket = conn.socket_ref();
        if !self.greets || !self.greeted.insert(socket) {
            return Ok(());
        }
        // A socket being admitted may have started the instance: its upgrade headers are
        // its own, not this connection's.
        let joining_headers = self.room.take_upgrade_headers();
        let result = self.step(Handler::Connect(&conn)).await;
        self.room.set_upgrade_headers(joining_headers);
        match result {
            Ok(_) => Ok(()),
            Err(StepError::Handler(e)) => {
                warn!(conn = %conn.id(), error = %e, "on_connect for an inherited connection failed; closing it with 1011");
                self.greeted.remove(&socket);
                self.room.shared().conns().remove(peer);
                self.room.ledger().closed(socket);
                let why = e.to_string();
                self.room.shared().push(
                    peer.gateway,
                    close_socket(peer.socket, conclave_proto::close::INTERNAL_ERROR, &why),
                );
                self.room.flush().await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
