//! The room actor: one task per active room, handling its events one at a time.
//!
//! Each event is a step: run the handler, commit its writes (the storage gate), then
//! release its messages (the output gate). A handler error discards the step's writes and
//! messages; a failed commit also drops the party instance, so the next event starts from
//! `on_start` and storage. An idle room drops its party instance (hibernation) but keeps its
//! connection table; with no connections left, the actor retires entirely.

use super::{text_response, truncate_reason, ConnEntry, Connection, Peer, Room};
use crate::host::HostInner;
use crate::party::{Message, Party, PartyError, PartyFactory, Request, Response};
use crate::storage::StorageError;
use crate::time::now_ms;
use conclave_proto::wire::{node_event, Ack, AdmitReply, CloseSocket, Moved, Resume};
use conclave_proto::{ConnId, RoomKey};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn, Instrument};

/// How long a claim waits for another live holder to hand the room over.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Alarms retried this many times after a failure, then dropped (as Durable Objects do).
pub const MAX_ALARM_RETRIES: u32 = 6;

/// The admission answer that tells the gateway the socket is in the room.
fn admitted(request_id: u64, peer: Peer, tags: &[String]) -> node_event::Event {
    node_event::Event::AdmitReply(AdmitReply {
        request_id,
        status: 0,
        body: String::new(),
        socket: peer.socket.0,
        tags: tags.to_vec(),
        ring_version: 0,
    })
}

/// A socket asking to join the room: new (`on_connect` runs) or moving here from another
/// node (`resume`: it keeps its tags and state, and no hook runs).
pub(crate) struct OpenRequest {
    pub peer: Peer,
    pub conn_id: ConnId,
    pub uri: Arc<str>,
    /// The admission this open answers.
    pub request_id: u64,
    pub origin: u64,
    pub resume: Option<Resume>,
}

pub(crate) enum RoomEvent {
    Open(Box<OpenRequest>),
    Frame {
        peer: Peer,
        msg: Message,
        /// The gateway's sequence number for the frame (0: not acknowledged).
        seq: u64,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlarmOutcome {
    /// Ran and committed (or was no longer due).
    Done,
    /// Failed; retry later.
    Failed,
}

struct RoomActor {
    room: Room,
    factory: Arc<dyn PartyFactory>,
    party: Option<Box<dyn Party>>,
    host: Arc<HostInner>,
    /// Set when a commit found another owner: the actor tears down after this event.
    fenced: bool,
}

pub(crate) fn spawn_room(
    host: Arc<HostInner>,
    key: RoomKey,
    factory: Arc<dyn PartyFactory>,
    rx: mpsc::Receiver<RoomEvent>,
) {
    let span = tracing::info_span!("room", party = %key.party, room = %key.room);
    let room = host.new_room(key);
    let actor = RoomActor {
        room,
        factory,
        party: None,
        host,
        fenced: false,
    };
    tokio::spawn(actor.run(rx).instrument(span));
}

impl RoomActor {
    async fn run(mut self, mut rx: mpsc::Receiver<RoomEvent>) {
        let idle = self.host.config.hibernate_after;
        loop {
            let event = if self.party.is_some() || self.room.connection_count() == 0 {
                match tokio::time::timeout(idle, rx.recv()).await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(_) => {
                        if self.party.is_some() {
                            self.hibernate();
                            continue;
                        }
                        // Idle with no connections: let go of the room, then leave, unless
                        // events arrived meanwhile (the next one claims the room again).
                        self.release().await;
                        if self.host.retire(self.room.key(), &mut rx) {
                            break;
                        }
                        continue;
                    }
                }
            } else {
                // Hibernated with connections: nothing to time out, wait for the next event.
                match rx.recv().await {
                    Some(ev) => ev,
                    None => break,
                }
            };
            if matches!(event, RoomEvent::Fence) || !self.host.is_serving() {
                self.fenced = true;
                self.bounce(event).await;
            } else if matches!(event, RoomEvent::Handoff) {
                if self.host.places_here(self.room.key()) {
                    continue; // the ring moved back before we got here
                }
                self.release().await;
                self.fenced = true;
            } else {
                self.handle(event).await;
            }
            if self.fenced {
                self.tear_down().await;
                break;
            }
        }
        if self.party.is_some() {
            self.host.metrics_room_left_memory();
        }
        self.host.room_retired();
        // Anything that slipped in between retiring and closing goes to a fresh actor, unless
        // the room left this node.
        rx.close();
        while let Ok(ev) = rx.try_recv() {
            if self.fenced {
                self.bounce(ev).await;
            } else {
                self.host.clone().redispatch(self.room.key().clone(), ev);
            }
        }
    }

    /// Answers an event this actor will not handle because it is leaving the room. Frames
    /// need no answer: unacknowledged, they are replayed to the next owner.
    async fn bounce(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Open(o) => {
                self.refuse_open(o.peer, o.request_id, "the room is moving")
                    .await
            }
            RoomEvent::Request { reply, .. } => {
                let _ = reply.send(text_response(
                    503,
                    "The room is moving to another node; retry",
                ));
            }
            RoomEvent::Alarm { reply, .. } => {
                let _ = reply.send(AlarmOutcome::Failed);
            }
            _ => {}
        }
    }

    fn hibernate(&mut self) {
        debug!("hibernating");
        self.party = None;
        self.host.metrics_room_left_memory();
    }

    /// Owns the room in storage before anything runs: claims it unless this actor already
    /// holds the claim.
    /// Failing, it marks the actor to leave: the room's sockets move on and retry.
    async fn ensure_owned(&mut self) -> Result<(), PartyError> {
        let r = self.claim().await;
        if r.is_err() {
            self.fenced = true;
        }
        r
    }

    async fn claim(&mut self) -> Result<(), PartyError> {
        if !self.host.is_serving() {
            return Err("this node is fenced: its liveness lapsed".into());
        }
        if self.room.storage().fence().is_some() {
            return Ok(());
        }
        let store = self.room.storage().store().clone();
        // A node handing the room to us releases it in a moment: wait for that, briefly.
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        let owner = loop {
            match store.claim(self.room.key(), &self.host.claim()).await {
                Err(StorageError::Held { .. }) if tokio::time::Instant::now() < deadline => {
                    let left = deadline - tokio::time::Instant::now();
                    store.wait_owner_change(self.room.key(), left).await;
                }
                other => break other?,
            }
        };
        debug!(epoch = owner.epoch, "claimed");
        self.room.storage().set_fence(Some(owner));
        Ok(())
    }

    async fn release(&mut self) {
        let Some(owner) = self.room.storage().fence().cloned() else {
            return;
        };
        self.room.storage().set_fence(None);
        if !self.host.is_serving() {
            return; // a fenced node writes nothing
        }
        let store = self.room.storage().store().clone();
        if let Err(e) = store.release(self.room.key(), &owner).await {
            warn!(error = %e, "cannot release the room");
        }
    }

    /// This actor must not serve the room any more (hand-off, fencing, or a claim it could
    /// not get). Its sockets are not closed: each gateway is told they moved, and re-attaches
    /// them to the room's owner, replaying the frames not acknowledged here.
    async fn tear_down(&mut self) {
        debug!("leaving the room; its connections move to the next owner");
        let mut per_gateway: std::collections::BTreeMap<crate::host::GatewayId, Vec<u64>> =
            Default::default();
        for e in self.room.shared().conns().iter() {
            per_gateway.entry(e.gateway).or_default().push(e.socket.0);
        }
        let ring_version = self.host.ring_version().0;
        self.room.shared().clear_outbox();
        for (gateway, sockets) in per_gateway {
            self.room.shared().push(
                gateway,
                node_event::Event::Moved(Moved {
                    sockets,
                    ring_version,
                }),
            );
        }
        self.room.flush().await;
        self.host.evict(self.room.key());
    }

    /// Makes sure the room is owned and a party instance exists and has run `on_start`.
    async fn ensure_started(&mut self) -> Result<(), PartyError> {
        if self.party.is_some() {
            return Ok(());
        }
        self.ensure_owned().await?;
        let mut party = self.factory.create();
        let r = party.on_start(&mut self.room).await;
        self.party = Some(party);
        self.host.metrics_room_entered_memory();
        self.finish(r).await
    }

    /// Commits the step's writes and releases its messages, or discards both.
    async fn finish(&mut self, result: Result<(), PartyError>) -> Result<(), PartyError> {
        if let Err(e) = result {
            self.room.discard();
            return Err(e);
        }
        match self.room.commit().await {
            Ok(alarm_changed) => {
                if alarm_changed {
                    self.host.alarms_changed.notify_one();
                }
                self.room.flush().await;
                Ok(())
            }
            Err(e) => {
                if matches!(e, StorageError::Fenced { .. }) {
                    self.fenced = true;
                }
                warn!(error = %e, "commit failed; dropping held messages and resetting the room");
                self.room.discard();
                if self.party.take().is_some() {
                    self.host.metrics_room_left_memory();
                }
                Err(Box::new(e))
            }
        }
    }

    /// Takes the started party out while one of its handlers runs (it needs `&mut self.room`).
    fn take_party(&mut self) -> Box<dyn Party> {
        self.party.take().unwrap_or_else(|| self.factory.create())
    }

    async fn handle(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Open(o) => {
                let mut o = *o;
                match o.resume.take() {
                    Some(resume) => self.resume(o, resume).await,
                    None => self.open(o).await,
                }
            }
            RoomEvent::Frame { peer, msg, seq } => self.frame(peer, msg, seq).await,
            RoomEvent::Detach { peer } => {
                let entry = self.room.shared().conns().remove(peer);
                self.host
                    .conn_count(self.room.key())
                    .fetch_sub(entry.is_some() as usize, Ordering::Relaxed);
            }
            RoomEvent::Closed {
                peer,
                code,
                reason,
                error,
            } => {
                let entry = self.room.shared().conns().remove(peer);
                self.host
                    .conn_count(self.room.key())
                    .fetch_sub(entry.is_some() as usize, Ordering::Relaxed);
                let Some(entry) = entry else { return };
                let conn = Connection::from_entry(&entry, self.room.shared());
                self.closed(conn, code, &reason, error.as_deref()).await;
            }
            RoomEvent::Request { req, reply } => {
                let resp = match self.ensure_started().await {
                    Err(e) => {
                        warn!(error = %e, "on_start failed");
                        text_response(500, "The room failed to start")
                    }
                    Ok(()) => {
                        let mut p = self.take_party();
                        let r = p.on_request(&mut self.room, *req).await;
                        self.party = Some(p);
                        match r {
                            Ok(resp) => match self.finish(Ok(())).await {
                                Ok(()) => resp,
                                Err(_) => {
                                    text_response(500, "The room could not commit its writes")
                                }
                            },
                            Err(e) => {
                                let _ = self.finish(Err(e.to_string().into())).await;
                                warn!(error = %e, "on_request failed");
                                text_response(500, "The room failed to handle the request")
                            }
                        }
                    }
                };
                let _ = reply.send(resp);
            }
            RoomEvent::Fence | RoomEvent::Handoff => self.fenced = true,
            RoomEvent::Alarm { attempt, reply } => {
                let outcome = self.alarm(attempt).await;
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

    /// Handles one client frame, then acknowledges it to the gateway: once acknowledged, a
    /// frame is never replayed to another node. A frame is not acknowledged when this node
    /// may no longer serve the room; the next owner gets it instead.
    async fn frame(&mut self, peer: Peer, msg: Message, seq: u64) {
        let Some(conn) = self.conn(peer) else {
            return;
        };
        if seq != 0 {
            let mut conns = self.room.shared().conns();
            let Some(entry) = conns.get_mut(peer) else {
                return;
            };
            if seq <= entry.last_seq {
                return; // replayed, and already handled here
            }
            entry.last_seq = seq;
        }
        if let Err(e) = self.ensure_started().await {
            if !self.fenced {
                warn!(conn = %conn.id(), error = %e, "on_start failed; message dropped");
                self.ack(peer, seq);
                self.room.flush().await;
            }
            return;
        }
        let mut p = self.take_party();
        let r = p.on_message(&mut self.room, &conn, msg).await;
        self.party = Some(p);
        if r.is_ok() {
            self.ack(peer, seq);
        }
        if let Err(e) = self.finish(r).await {
            warn!(conn = %conn.id(), error = %e, "on_message failed; its writes and messages were discarded");
            if !self.fenced {
                self.ack(peer, seq);
                self.room.flush().await;
            }
        }
    }

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

    /// Adds a connection. Newest wins: an older socket with the same id is closed and leaves
    /// first, unless it is this very socket seen over an earlier link.
    async fn insert_conn(&mut self, entry: ConnEntry) {
        let (origin, socket) = (entry.origin, entry.socket);
        let replaced = self.room.shared().conns().insert(entry);
        match replaced {
            None => {
                self.host
                    .conn_count(self.room.key())
                    .fetch_add(1, Ordering::Relaxed);
            }
            Some(old) if old.origin == origin && old.socket == socket => {}
            Some(old) => {
                self.room.shared().push(
                    old.gateway,
                    node_event::Event::CloseSocket(CloseSocket {
                        socket: old.socket.0,
                        code: 1000,
                        reason: "Replaced by a newer connection with the same id".into(),
                    }),
                );
                let old_conn = Connection::from_entry(&old, self.room.shared());
                self.closed(old_conn, 1000, "replaced", None).await;
            }
        }
    }

    /// A socket moving here from another node: it joins as it was, without `on_connect`.
    async fn resume(&mut self, o: OpenRequest, resume: Resume) {
        let peer = o.peer;
        let tags: Arc<[String]> = if resume.tags.is_empty() {
            Arc::from(vec![o.conn_id.to_string()])
        } else {
            Arc::from(resume.tags)
        };
        let state = (!resume.state.is_empty())
            .then(|| serde_json::from_slice(&resume.state).ok())
            .flatten();
        self.insert_conn(ConnEntry {
            id: o.conn_id,
            socket: peer.socket,
            gateway: peer.gateway,
            uri: o.uri,
            tags: tags.clone(),
            state,
            origin: o.origin,
            last_seq: resume.acked_seq,
        })
        .await;
        if let Err(e) = self.ensure_started().await {
            self.refuse_open(peer, o.request_id, &e.to_string()).await;
            return;
        }
        self.room
            .shared()
            .push(peer.gateway, admitted(o.request_id, peer, &tags));
        self.room.flush().await;
    }

    async fn open(&mut self, o: OpenRequest) {
        let OpenRequest {
            peer,
            conn_id,
            uri,
            request_id,
            origin,
            resume: _,
        } = o;
        self.insert_conn(ConnEntry {
            id: conn_id.clone(),
            socket: peer.socket,
            gateway: peer.gateway,
            uri,
            tags: Arc::from(vec![conn_id.to_string()]),
            state: None,
            origin,
            last_seq: 0,
        })
        .await;
        if let Err(e) = self.ensure_started().await {
            if self.fenced {
                self.refuse_open(peer, request_id, &e.to_string()).await;
            } else {
                self.reject_open(peer, request_id, &format!("Room failed to start: {e}"))
                    .await;
            }
            return;
        }
        let Some(conn) = self.conn(peer) else {
            return;
        };
        let extra = self
            .party
            .as_ref()
            .map(|p| p.connection_tags(&conn))
            .unwrap_or_default();
        let mut tags = vec![conn_id.to_string()];
        tags.extend(
            extra
                .into_iter()
                .filter(|t| !t.is_empty() && t.len() <= 256)
                .take(9),
        );
        self.room
            .shared()
            .push(peer.gateway, admitted(request_id, peer, &tags));
        self.room.shared().conns().set_tags(peer, Arc::from(tags));
        let Some(conn) = self.conn(peer) else {
            return;
        };
        let mut p = self.take_party();
        let r = p.on_connect(&mut self.room, &conn).await;
        self.party = Some(p);
        if let Err(e) = self.finish(r).await {
            warn!(conn = %conn_id, error = %e, "on_connect failed; closing with 1011");
            self.reject_open(peer, request_id, &e.to_string()).await;
        }
    }

    /// This node cannot take the socket now (it may not own the room): 503, and the
    /// gateway tries again.
    async fn refuse_open(&mut self, peer: Peer, request_id: u64, why: &str) {
        if self.room.shared().conns().remove(peer).is_some() {
            self.host
                .conn_count(self.room.key())
                .fetch_sub(1, Ordering::Relaxed);
        }
        let refusal = AdmitReply {
            request_id,
            status: 503,
            body: format!("The room cannot be served here right now: {why}"),
            socket: peer.socket.0,
            tags: Vec::new(),
            ring_version: self.host.ring_version().0,
        };
        let shared = self.room.shared().clone();
        shared.push(peer.gateway, node_event::Event::AdmitReply(refusal));
        self.room.flush().await;
    }

    /// Accept-then-close with 1011, as PartyKit does when `onConnect` throws.
    async fn reject_open(&mut self, peer: Peer, request_id: u64, why: &str) {
        let Peer { gateway, socket } = peer;
        if self.room.shared().conns().remove(peer).is_some() {
            self.host
                .conn_count(self.room.key())
                .fetch_sub(1, Ordering::Relaxed);
        }
        let shared = self.room.shared().clone();
        shared.push(gateway, admitted(request_id, peer, &[]));
        shared.push(
            gateway,
            node_event::Event::CloseSocket(CloseSocket {
                socket: socket.0,
                code: 1011,
                reason: truncate_reason(why),
            }),
        );
        self.room.flush().await;
    }

    async fn closed(&mut self, conn: Connection, code: u16, reason: &str, error: Option<&str>) {
        if let Err(e) = self.ensure_started().await {
            warn!(conn = %conn.id(), error = %e, "on_start failed; close not delivered to the party");
            return;
        }
        let mut p = self.take_party();
        let r = match error {
            Some(err) => p.on_error(&mut self.room, &conn, err).await,
            None => p.on_close(&mut self.room, &conn, code, reason).await,
        };
        self.party = Some(p);
        if let Err(e) = self.finish(r).await {
            warn!(conn = %conn.id(), error = %e, "on_close failed");
        }
    }

    async fn alarm(&mut self, attempt: u32) -> AlarmOutcome {
        let due = match self.room.storage().get_alarm().await {
            Ok(Some(at)) if at <= now_ms() => at,
            Ok(_) => return AlarmOutcome::Done,
            Err(e) => {
                warn!(error = %e, "cannot read alarm");
                return AlarmOutcome::Failed;
            }
        };
        if let Err(e) = self.ensure_started().await {
            if self.fenced {
                // Not this node's room (now): its owner runs the alarm; never drop it here.
                debug!(error = %e, "alarm left to the room's owner");
                return AlarmOutcome::Failed;
            }
            warn!(error = %e, "on_start failed before alarm");
            return self.alarm_failed(attempt).await;
        }
        // Cleared in the same commit as the handler's writes, unless the handler sets a new one.
        self.room.storage().delete_alarm();
        let mut p = self.take_party();
        let r = p.on_alarm(&mut self.room).await;
        self.party = Some(p);
        match self.finish(r).await {
            Ok(()) => AlarmOutcome::Done,
            Err(e) => {
                warn!(due, attempt, error = %e, "on_alarm failed");
                self.alarm_failed(attempt).await
            }
        }
    }

    async fn alarm_failed(&mut self, attempt: u32) -> AlarmOutcome {
        if attempt < MAX_ALARM_RETRIES {
            return AlarmOutcome::Failed;
        }
        warn!(
            attempts = attempt + 1,
            "alarm failed every retry; dropping it"
        );
        self.room.storage().delete_alarm();
        let _ = self.finish(Ok(())).await;
        AlarmOutcome::Done
    }
}
