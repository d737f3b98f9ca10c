//! The room actor: one task per active room, handling its events one at a time.
//!
//! Each event is a step (`step.rs`): run a party handler (`handler.rs`), commit its
//! writes (the storage gate), then release its messages (the output gate). A handler error
//! discards the step's writes and messages; a failed commit also drops the party instance,
//! so the next event starts from `on_start` and storage. An idle room drops its party instance (hibernation)
//! but keeps its connection table; with no connections left, the actor retires entirely.
//!
//! This file holds the actor's state, its loop and the dispatch of events; the other files
//! add the actor's methods for one concern each:
//!
//! - `step.rs`: running one handler as a step.
//! - `ownership.rs`: claiming the room in storage, letting go of it, leaving it.
//! - `admission.rs`: sockets joining the room (new, or moving here from another node).
//! - `alarm.rs`: the alarm step.
//! - `frames.rs`: one client frame: duplicates, retries, acknowledgement.
//! - `batch.rs`: client frames queued behind each other, as steps sharing one commit.
//! - `delete.rs`: an operator deleting the room.

mod admission;
mod alarm;
mod batch;
mod delete;
mod frames;
mod handler;
mod ownership;
mod step;

use crate::cluster::Cluster;
use crate::mailbox::{MailboxRx, RoomEvent};
use crate::message::{text_response, Request, Response};
use crate::party::{Party, PartyFactory};
use crate::room::{Connection, Peer, Room, SocketRef};
use crate::rooms::{gauge, Rooms};
use crate::storage::{PartyTotal, StorageError, StorageQuota};
use conclave_proto::wire::{node_event, Ack};
use handler::{Handler, StepError};
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// When an idle spell of `length` starting now ends (far ahead for a length too long to
/// add).
fn idle_deadline(length: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(length)
        .unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24 * 365))
}

/// How often, at most, a room whose party is busy is looked at again for hibernating.
const BUSY_RECHECK: Duration = Duration::from_secs(1);

/// Waits until `deadline`, or for ever without one.
async fn sleep_until_some(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// What an actor needs from its node.
pub(crate) struct ActorContext {
    pub cluster: Arc<Cluster>,
    /// Where the actor retires, or is evicted when it leaves the room.
    pub rooms: Arc<Rooms>,
    /// Woken when a commit changes the room's alarm.
    pub alarms_changed: Arc<Notify>,
    /// A room with no event for this long hibernates.
    pub hibernate_after: Duration,
    /// Most connections the room takes (a socket replacing one with its id aside).
    pub max_connections: usize,
    /// What the room (and its party) may store.
    pub storage_quota: StorageQuota,
    /// The total of the room's party, when its quota bounds the whole party.
    pub party_total: Option<Arc<PartyTotal>>,
}

pub(crate) struct RoomActor {
    ctx: ActorContext,
    room: Room,
    factory: Arc<dyn PartyFactory>,
    party: Option<Box<dyn Party>>,
    /// Set when a commit found another owner: the actor tears down after this event.
    fenced: bool,
    /// Whether a read the store fails fails a client frame's step (`run_step`): off for
    /// a frame's last try.
    reads_fail_steps: bool,
    /// The ring (`Cluster::rings_seen`) under which the room was last found placed here.
    placed_as_of: u64,
    /// An event taken from the mailbox (to see whether it could join a batch of frames)
    /// and not handled yet: the next one.
    lookahead: Option<RoomEvent>,
    /// Whether the started instance hears `on_connect` for the connections it inherits
    /// ([`Party::greets_inherited_connections`], asked once after `on_start`).
    greets: bool,
    /// For an instance that `greets`: the sockets it has heard `on_connect` for (and not
    /// `on_close`), so that it hears of each once. Empty otherwise.
    greeted: HashSet<SocketRef>,
    /// The socket whose admission is under way: a new instance does not greet it, since
    /// its own `on_connect` (or its greeting after the admission) follows.
    admitting: Option<SocketRef>,
}

impl RoomActor {
    pub fn new(ctx: ActorContext, room: Room, factory: Arc<dyn PartyFactory>) -> Self {
        Self {
            ctx,
            room,
            factory,
            party: None,
            fenced: false,
            reads_fail_steps: true,
            placed_as_of: 0,
            lookahead: None,
            greets: false,
            greeted: HashSet::new(),
            admitting: None,
        }
    }

    /// Handles the room's events until the actor retires or leaves the room. Returns the
    /// events that reached the mailbox too late, for a fresh actor to handle. The actor is
    /// boxed: an `async fn`'s state holds a by-value `self` twice.
    pub async fn run(mut self: Box<Self>, mut rx: MailboxRx) -> Vec<RoomEvent> {
        // The end of the current idle spell (hibernation, or retiring with no connections):
        // one timer, in the task's own memory, moved on by each event rather than one set
        // and cancelled per event (a later deadline is a store, not a trip through the
        // timer wheel).
        let idle_timer = tokio::time::sleep_until(idle_deadline(self.ctx.hibernate_after));
        tokio::pin!(idle_timer);
        // Whether something happened since the idle spell began: the next wait begins a
        // new one. A wake (the party's own timers and fetches coming due) and the
        // gateways' receipts for what the room sent are not activity, so that a party's
        // interval does not keep its room in memory for good.
        let mut active = false;
        while let Some(event) = self
            .next_event(&mut rx, idle_timer.as_mut(), &mut active)
            .await
        {
            if !matches!(event, RoomEvent::Wake | RoomEvent::Received { .. }) {
                active = true;
            }
            if matches!(event, RoomEvent::Fence) || !self.ctx.cluster.is_serving() {
                self.fenced = true;
                self.bounce(event).await;
            } else if self.placed_elsewhere() {
                // A new ring moved the room: leave now rather than after the events queued
                // ahead of the hand-off (frames go unanswered and are replayed there).
                debug!("the ring places the room elsewhere: handing it off");
                self.bounce(event).await;
                self.release().await;
                self.fenced = true;
            } else if matches!(event, RoomEvent::Handoff) {
                if self.ctx.cluster.places_here(self.room.key()) {
                    continue; // the ring moved back before we got here
                }
                debug!("the ring places the room elsewhere: handing it off");
                self.release().await;
                self.fenced = true;
            } else {
                match batch::QueuedFrame::from_event(event) {
                    Ok(frame) => self.frames(frame, &mut rx).await,
                    Err(event) => self.handle(event).await,
                }
            }
            if self.fenced {
                self.tear_down().await;
                break;
            }
        }
        if self.party.is_some() {
            gauge::party_dropped();
        }
        gauge::room_retired();
        // Anything that slipped in between retiring and closing goes to a fresh actor, unless
        // the room left this node.
        rx.close();
        let mut leftovers = Vec::new();
        let queued = std::iter::from_fn(|| rx.try_recv());
        for ev in self.lookahead.take().into_iter().chain(queued) {
            if matches!(ev, RoomEvent::Received { .. }) {
                continue; // about outputs this actor kept: nothing for a fresh one
            }
            if self.fenced {
                self.bounce(ev).await;
            } else {
                leftovers.push(ev);
            }
        }
        leftovers
    }

    /// Whether the ring, since it last changed, places the room on another node.
    fn placed_elsewhere(&mut self) -> bool {
        let seen = self.ctx.cluster.rings_seen();
        if seen == self.placed_as_of {
            return false;
        }
        self.placed_as_of = seen;
        !self.ctx.cluster.places_here(self.room.key())
    }

    /// The next event. While none comes, an active room hibernates and a room with no
    /// connections retires: `None` then, or when the mailbox closed. A wait after
    /// activity (`active`, which it clears) begins a new idle spell; otherwise the spell
    /// under way goes on.
    async fn next_event(
        &mut self,
        rx: &mut MailboxRx,
        mut idle_timer: Pin<&mut tokio::time::Sleep>,
        active: &mut bool,
    ) -> Option<RoomEvent> {
        if let Some(event) = self.lookahead.take() {
            return Some(event);
        }
        // Broadcasts held for sockets coming back after a move (`Ledger::released`)
        // are let go when the hold ends, also in a room that has gone quiet. (Ended by this
        // timer, not by comparing clocks: tokio's may run ahead of the ledger's in tests.)
        let mut new_spell = std::mem::take(active);
        loop {
            let hold_end = self.room.ledger().hold_deadline();
            let connected = self.room.connection_count() > 0;
            if connected && (self.party.is_none() || self.keeps_instance()) {
                // Hibernated with connections, or a party that must not hibernate while
                // connected: nothing to time out, wait for the next event. (A busy party
                // is looked at again when its idle spell ends: what keeps it busy may end
                // outside any event, such as an answer due to a requester.)
                tokio::select! {
                    biased;
                    event = rx.recv() => return event,
                    () = sleep_until_some(hold_end) => {
                        self.room.ledger().end_hold();
                        continue;
                    }
                }
            }
            if new_spell {
                idle_timer
                    .as_mut()
                    .reset(idle_deadline(self.ctx.hibernate_after));
            }
            new_spell = true;
            let event = tokio::select! {
                biased;
                event = rx.recv() => Some(event),
                () = idle_timer.as_mut() => None,
                () = sleep_until_some(hold_end) => {
                    // The same idle spell goes on.
                    self.room.ledger().end_hold();
                    new_spell = false;
                    continue;
                }
            };
            match event {
                Some(event) => return event,
                // Work of the instance under way (a fetch a handler waits on) comes back
                // within its own time limit: it is looked at again after another spell,
                // and not more often than every second.
                None if self.party_busy() => {
                    idle_timer
                        .as_mut()
                        .reset(idle_deadline(self.ctx.hibernate_after.max(BUSY_RECHECK)));
                    new_spell = false;
                }
                None if self.party.is_some() => self.hibernate(),
                None => {
                    // Idle with no connections: let go of the room, then leave, unless
                    // events arrived meanwhile (the next one claims the room again).
                    self.release().await;
                    if self.ctx.rooms.retire(self.room.key(), rx) {
                        return None;
                    }
                }
            }
        }
    }

    /// Whether the started instance must live as long as the room has connections (its
    /// party does not hibernate).
    fn keeps_instance(&mut self) -> bool {
        matches!(
            self.ask_party("hibernates", |p| p.hibernates()),
            Ok(Some(false))
        )
    }

    /// What the started instance answers (`None` without one), outside any step. A panic
    /// in its answer drops the instance, as one in a handler does, and comes back as the
    /// error a step fails with then.
    fn ask_party<T>(
        &mut self,
        question: &str,
        ask: impl FnOnce(&dyn Party) -> T,
    ) -> Result<Option<T>, crate::party::PartyError> {
        let Some(party) = self.party.as_deref() else {
            return Ok(None);
        };
        match crate::panics::guarded(|| ask(party)) {
            Ok(answer) => Ok(Some(answer)),
            Err(what) => {
                warn!("the party panicked in {question}, dropping its instance: {what}");
                self.party = None;
                gauge::party_dropped();
                Err(crate::panics::broken(&what))
            }
        }
    }

    /// Whether the started instance has work of its own under way ([`Party::busy`]).
    fn party_busy(&mut self) -> bool {
        matches!(self.ask_party("busy", |p| p.busy()), Ok(Some(true)))
    }

    fn hibernate(&mut self) {
        debug!("hibernating");
        self.party = None;
        gauge::party_dropped();
    }

    async fn handle(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Open(o) => {
                let span = o
                    .trace_parent
                    .as_deref()
                    .filter(|_| conclave_proto::trace::enabled())
                    .map(|parent| {
                        let room = self.room.key().clone();
                        let span = tracing::info_span!(
                            target: conclave_proto::trace::TARGET,
                            "room.connect",
                            room = %room
                        );
                        conclave_proto::trace::continue_from(&span, parent);
                        span
                    });
                // Boxed: admission is the largest of the handlers' futures, and inline it
                // would set the size of every room's task (one allocation per connect
                // instead of kilobytes per room).
                Box::pin(conclave_proto::trace::within(span, self.admit(*o))).await
            }
            RoomEvent::Frame {
                peer,
                msg,
                seq,
                trace_parent,
            } => match trace_parent.filter(|_| conclave_proto::trace::enabled()) {
                None => self.frame(peer, msg, seq).await,
                Some(parent) => {
                    use tracing::Instrument;
                    let room = self.room.key().clone();
                    let span = tracing::info_span!(
                        target: conclave_proto::trace::TARGET,
                        "room.message",
                        room = %room
                    );
                    conclave_proto::trace::continue_from(&span, &parent);
                    self.frame(peer, msg, seq).instrument(span).await
                }
            },
            RoomEvent::Detach { peer } => {
                self.room.shared().conns().remove(peer);
            }
            RoomEvent::Closed {
                peer,
                code,
                reason,
                error,
                link_lost,
            } => {
                let entry = self.room.shared().conns().remove(peer);
                let Some(entry) = entry else { return };
                let socket = entry.socket_ref();
                if link_lost {
                    self.room.ledger().gone_quiet(socket);
                } else {
                    self.room.ledger().closed(socket);
                }
                let conn = Connection::departed(&entry, self.room.shared());
                self.closed(conn, code, &reason, error.as_deref()).await;
            }
            RoomEvent::Request { req, reply } => match self.request(*req).await {
                Answer::Now(resp) => {
                    let _ = reply.send(resp);
                }
                // The handler goes on after its step; the room takes its next events.
                Answer::Later(answer) => {
                    let mut reply = reply;
                    tokio::spawn(async move {
                        tokio::select! {
                            resp = answer => {
                                let _ = reply.send(resp);
                            }
                            // The requester gave up.
                            () = reply.closed() => {}
                        }
                    });
                }
            },
            RoomEvent::Fence | RoomEvent::Handoff => self.fenced = true,
            RoomEvent::Wake => {
                // A hibernated party has nothing to wake: whatever asked went with it. An
                // outdated one is replaced first (a reloaded room driven by its timers).
                if self.party.is_some() {
                    let result = match self.ensure_started().await {
                        Ok(()) => self.step(Handler::Wake).await.map(drop),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        warn!(error = %e, "on_wake failed");
                    }
                }
            }
            RoomEvent::Alarm { attempt, reply } => {
                let outcome = self.alarm(attempt).await;
                let _ = reply.send(outcome);
            }
            RoomEvent::Received { gateway, out_seq } => {
                self.room.ledger().confirm(gateway, out_seq);
            }
            RoomEvent::Delete { reply } => {
                let outcome = self.delete().await;
                let _ = reply.send(outcome);
            }
        }
    }

    fn conn(&self, peer: Peer) -> Option<Connection> {
        let conns = self.room.shared().conns();
        conns
            .get(peer)
            .map(|e| Connection::from_entry(e, self.room.shared()))
    }

    /// Queues the acknowledgement of frame `seq` (0: none) behind the step's messages.
    fn ack(&self, peer: Peer, seq: u64) {
        if seq != 0 {
            let ack = Ack {
                socket: peer.socket.0,
                seq,
            };
            self.room
                .shared()
                .push(peer.gateway, node_event::Event::Ack(ack));
        }
    }

    /// A connection left the room: `on_close`, or `on_error` if it failed. Tried again
    /// after the pauses a client frame gets while the store fails it (the room's start or
    /// the step's commit), so that a store's hiccup does not leave the party believing
    /// the connection is still there; not once the room leaves the node.
    async fn closed(&mut self, conn: Connection, code: u16, reason: &str, error: Option<&str>) {
        let mut pauses = frames::COMMIT_RETRY_PAUSES.iter();
        loop {
            let result = match self.ensure_started().await {
                // An instance that greets hears of the leaving only of connections it
                // heard join: one started since never knew this one.
                Ok(()) if self.greets && !self.greeted.remove(&conn.socket_ref()) => return,
                Ok(()) => {
                    let step = match error {
                        Some(error) => Handler::Error(&conn, error),
                        None => Handler::Close(&conn, code, reason),
                    };
                    self.step(step).await.map(drop)
                }
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(()) => return,
                Err(e @ StepError::Handler(_)) => e,
                Err(e) if self.fenced => e,
                Err(e) => match pauses.next() {
                    Some(pause) => {
                        warn!(conn = %conn.id(), error = %e, ?pause, "the store failed a close's step; trying it again");
                        tokio::time::sleep(*pause).await;
                        continue;
                    }
                    None => e,
                },
            };
            warn!(conn = %conn.id(), error = %e, "on_close failed; the close is not delivered to the party");
            return;
        }
    }

    /// An HTTP request to the room, answered by `on_request`.
    async fn request(&mut self, req: Request) -> Answer {
        if let Err(e) = self.ensure_started().await {
            warn!(error = %e, "on_start failed");
            return Answer::Now(text_response(500, "The room failed to start"));
        }
        let result = self.step(Handler::Request(req)).await;
        let later = self.room.take_later_answer();
        Answer::Now(match result {
            Ok(Some(resp)) => match later {
                Some(later) => return Answer::Later(later),
                None => resp,
            },
            Err(StepError::Handler(e)) => match e.downcast_ref::<StorageError>() {
                Some(quota @ StorageError::QuotaExceeded { .. }) => {
                    text_response(507, &format!("{quota}"))
                }
                _ => {
                    warn!(error = %e, "on_request failed");
                    text_response(500, "The room failed to handle the request")
                }
            },
            Err(_) => text_response(500, "The room could not commit its writes"),
            // Not reached: a request's handler always answers.
            Ok(None) => text_response(500, "The room failed to handle the request"),
        })
    }
}

/// A request's answer: given by its step, or to come after it (`Room::answer_later`).
enum Answer {
    Now(Response),
    Later(futures::future::BoxFuture<'static, Response>),
}
