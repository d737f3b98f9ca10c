//! The gateway's side of one relay link to a node: the sockets it carries (and which rooms
//! they are in, for fan-out), request/reply matching, and the node's events applied to
//! those sockets.
//!
//! `link.rs` and `session.rs` are a two-way pair on purpose: a link holds the sessions it
//! delivers to, and a session holds the link its frames go out on. A socket moves between
//! links; whichever side notices the move first (a session re-attaching, a link that died)
//! must be able to reach the other.

use crate::session::Session;
use conclave_proto::trace;
use conclave_proto::wire::{
    gateway_event, node_event, Deliver, Detach, GatewayEvent, NodeEvent, Received, RoomRef,
};
use conclave_proto::{
    reply_id, GatewaySide, IdHasher, Inbound, Refusal, RelayRequest, RingVersion, RoomKey,
    SocketMap,
};
use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

mod writes;

use writes::{Writes, MAX_HELD_WRITES};

/// A request's wait for its reply in [`NodeLink::pending`], ended however the request ends:
/// also when its future is dropped (an admission whose client left; the node may never
/// answer it).
struct PendingReply<'a> {
    link: &'a NodeLink,
    request_id: u64,
}

impl Drop for PendingReply<'_> {
    fn drop(&mut self) {
        self.link.pending().remove(&self.request_id);
    }
}

fn detach_event(session: &Session) -> gateway_event::Event {
    gateway_event::Event::Detach(Detach {
        socket: session.id.0,
        room: Some(session.room.to_wire()),
    })
}

/// A socket that must move: to the owner of its room under a ring of at least `min_ring`.
pub(crate) struct MoveRequest {
    pub session: Arc<Session>,
    pub min_ring: RingVersion,
}

/// Work a link hands to the gateway (`reattach.rs` takes it): sockets that must move to
/// another node, and a node's requests to rooms on other nodes.
pub(crate) enum LinkWork {
    Move(MoveRequest),
    RoomFetch {
        link: Arc<NodeLink>,
        request: conclave_proto::wire::HttpRequest,
    },
}

/// Where a link's [`LinkWork`] goes.
pub(crate) type Mover = mpsc::UnboundedSender<LinkWork>;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("the room's node is unavailable")]
    Unavailable,
    #[error("the room's node did not answer in time")]
    TimedOut,
}

impl From<LinkError> for Refusal {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Unavailable => Refusal::unavailable(),
            LinkError::TimedOut => Refusal::timed_out(),
        }
    }
}

#[derive(Default)]
struct Registry {
    sockets: SocketMap<Arc<Session>>,
    /// Sockets the node accepted into each room: the targets of deliveries, with their
    /// sessions (the fan-out walks a room's table without a lookup per member). Room names
    /// are the clients' choice: SipHash, randomly keyed, as the standard map has it.
    rooms: hashbrown::HashMap<Arc<RoomKey>, SocketMap<Arc<Session>>, RandomState>,
}

/// A room as a node's event names it, for finding its entry in [`Registry::rooms`]
/// without validating or copying the names (the node validated them). It hashes as
/// [`RoomKey`] does: each name as a `str`, the party's first.
#[derive(Hash)]
struct WireRoom<'a> {
    party: &'a str,
    room: &'a str,
}

impl<'a> WireRoom<'a> {
    fn of(room: &'a RoomRef) -> Self {
        Self {
            party: &room.party,
            room: &room.room,
        }
    }
}

impl hashbrown::Equivalent<Arc<RoomKey>> for WireRoom<'_> {
    fn equivalent(&self, key: &Arc<RoomKey>) -> bool {
        key.party.as_str() == self.party && key.room.as_str() == self.room
    }
}

impl Registry {
    fn remove(&mut self, socket: u64) -> Option<Arc<Session>> {
        let s = self.sockets.remove(&socket)?;
        if let Some(members) = self.rooms.get_mut(&s.room) {
            members.remove(&socket);
            if members.is_empty() {
                self.rooms.remove(&s.room);
            }
        }
        Some(s)
    }
}

/// One relay link to a node.
pub(crate) struct NodeLink {
    /// The node's id on the ring.
    pub node: String,
    to_node: mpsc::Sender<GatewayEvent>,
    /// Counted once per node event, not per frame: the fan-out loop is the hot path.
    messages_out: metrics::Counter,
    registry: Mutex<Registry>,
    /// Requests waiting for their replies, by the ids this link assigns.
    pending: Mutex<HashMap<u64, oneshot::Sender<node_event::Event>, IdHasher>>,
    next_id: AtomicU64,
    /// How long a request waits for its reply.
    request_timeout: Duration,
    /// Cleared when the node's side of the link ends.
    alive: AtomicBool,
    /// Where sockets go that must move to another node.
    mover: Mover,
}

impl NodeLink {
    pub fn start(
        node: String,
        side: GatewaySide,
        mover: Mover,
        request_timeout: Duration,
    ) -> Arc<Self> {
        let link = Arc::new(Self {
            node,
            mover,
            to_node: side.to_node,
            messages_out: metrics::counter!("conclave_gateway_messages_out_total"),
            registry: Mutex::default(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            request_timeout,
            alive: AtomicBool::new(true),
        });
        tokio::spawn(link.clone().run(side.from_node));
        link
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(
        &self,
    ) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<node_event::Event>, IdHasher>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Queues `event` for the node, waiting while the link's queue is full.
    pub async fn send(&self, event: gateway_event::Event) -> Result<(), LinkError> {
        let event = match self.to_node.try_send(GatewayEvent { event: Some(event) }) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(LinkError::Unavailable),
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        // Boxed: the channel's send future holds the event and its wait for a slot, and
        // held inline it would size every caller's future (each connection's handshake
        // task among them) for a wait that is rare.
        let wait: futures::future::BoxFuture<'_, _> = Box::pin(self.to_node.send(event));
        wait.await.map_err(|_| LinkError::Unavailable)
    }

    /// Sends without waiting; returns the event when the link's queue is full (to be sent
    /// with [`Self::send`]). When the link is gone the event is dropped: the link's end
    /// moves the socket, and replays its frames.
    pub fn try_send(&self, event: gateway_event::Event) -> Option<gateway_event::Event> {
        match self.to_node.try_send(GatewayEvent { event: Some(event) }) {
            Err(mpsc::error::TrySendError::Full(full)) => full.event,
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    }

    /// Sends a request and waits, up to the link's request timeout, for its reply.
    pub async fn request<R: RelayRequest>(&self, request: R) -> Result<R::Reply, LinkError> {
        self.request_within(request, self.request_timeout).await
    }

    /// Sends a request and waits, up to `timeout`, for its reply.
    pub async fn request_within<R: RelayRequest>(
        &self,
        request: R,
        timeout: Duration,
    ) -> Result<R::Reply, LinkError> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(request_id, tx);
        let _pending = PendingReply {
            link: self,
            request_id,
        };
        let reply = tokio::time::timeout(timeout, async {
            self.send(request.into_event(request_id)).await?;
            rx.await.map_err(|_| LinkError::Unavailable)
        })
        .await;
        match reply {
            Err(_) => Err(LinkError::TimedOut),
            Ok(reply) => R::reply(reply?).ok_or(LinkError::Unavailable),
        }
    }

    pub fn socket_count(&self) -> usize {
        self.registry().sockets.len()
    }

    /// Rooms with sockets on this link.
    pub fn room_count(&self) -> usize {
        self.registry().rooms.len()
    }

    /// Sockets of `room` on this link.
    pub fn sockets_in(&self, room: &RoomKey) -> usize {
        self.registry()
            .rooms
            .get(room)
            .map_or(0, |members| members.len())
    }

    /// Routes the node's events for the socket to it (deliveries start once admitted).
    pub fn register(&self, session: Arc<Session>) {
        self.registry().sockets.insert(session.id.0, session);
    }

    /// Whether the node's events for `socket` are routed to its session here.
    pub fn holds(&self, socket: u64) -> bool {
        self.registry().sockets.contains_key(&socket)
    }

    pub fn unregister(&self, session: &Session) -> Option<Arc<Session>> {
        self.registry().remove(session.id.0)
    }

    /// Moves every socket of this link to its room's next owner (under a ring of at least
    /// `min_ring`). With `tell_node` (the node left the ring but may still run), the node is
    /// asked to let go of each socket. Returns how many moved.
    pub fn evacuate(self: &Arc<Self>, min_ring: RingVersion, tell_node: bool) -> usize {
        let sessions: Vec<Arc<Session>> = {
            let mut reg = self.registry();
            reg.rooms.clear();
            reg.sockets.drain().map(|(_, s)| s).collect()
        };
        let mut moved = 0;
        for session in sessions {
            if !session.detach_from(self) {
                continue;
            }
            if tell_node {
                // The node left the ring and may be gone: the move does not wait for it.
                self.send_then(detach_event(&session), || {});
            }
            self.move_session(session, min_ring);
            moved += 1;
        }
        moved
    }

    /// Queues an event the node must see even when the link's queue is full, without
    /// waiting here (the link's own task and drops call this): at once when there is room,
    /// else from a task that waits for room, up to the request timeout (a node that stays
    /// stuck that long forgets the socket with the link). `then` runs once the event is
    /// queued or given up on: what follows it for the socket reaches the node after it.
    pub fn send_then(
        self: &Arc<Self>,
        event: gateway_event::Event,
        then: impl FnOnce() + Send + 'static,
    ) {
        let Some(event) = self.try_send(event) else {
            return then();
        };
        let link = self.clone();
        tokio::spawn(async move {
            link.send_within_timeout(event).await;
            then();
        });
    }

    /// Queues `event`, waiting for room up to the request timeout.
    /// Sends `event`, waiting at most the request timeout for room on the link.
    pub(crate) async fn send_or_drop(&self, event: gateway_event::Event) {
        let _ = tokio::time::timeout(self.request_timeout, self.send(event)).await;
    }

    async fn send_within_timeout(&self, event: gateway_event::Event) {
        if tokio::time::timeout(self.request_timeout, self.send(event))
            .await
            .is_err()
        {
            tracing::warn!(node = %self.node, "relay link stayed full; a socket's detach or close was dropped");
        }
    }

    /// Tells the node the socket left it, so that it forgets which room the socket was in.
    /// Awaited, so that whatever the caller sends next on this link (another admission of
    /// the socket) goes after the `Detach`; see [`Self::send_then`] for callers that cannot
    /// wait.
    pub async fn tell_detached(&self, session: &Session) {
        self.send_within_timeout(detach_event(session)).await;
    }

    /// Hands a socket that left this link to the mover.
    pub fn move_session(&self, session: Arc<Session>, min_ring: RingVersion) {
        let _ = self
            .mover
            .send(LinkWork::Move(MoveRequest { session, min_ring }));
    }

    /// Applies the node's events until its side of the link ends; then its sockets move to
    /// the rooms' next owners. (`alive` is cleared first: a socket attaching concurrently
    /// sees it and moves on by itself.)
    async fn run(self: Arc<Self>, mut from_node: Inbound<NodeEvent>) {
        // Per room, the highest numbered output that arrived since the last confirmation.
        let mut received: HashMap<RoomKey, u64> = HashMap::new();
        let mut writes = Writes::default();
        while let Some(event) = from_node.recv().await {
            if let Some(event) = event.event {
                self.apply(event, &mut received, &mut writes);
            }
            // The end of what the node had sent: its frames go out.
            if from_node.is_empty() || writes.frames.len() >= MAX_HELD_WRITES {
                self.messages_out.increment(writes.flush());
            }
            if !received.is_empty() && from_node.is_empty() {
                self.confirm(&mut received);
            }
        }
        self.messages_out.increment(writes.flush());
        self.alive.store(false, Ordering::Release);
        self.pending().clear();
        self.evacuate(RingVersion(0), false);
    }

    /// Tells the node which numbered outputs of each room arrived (it then forgets the
    /// copies it keeps for a crash). Advisory: skipped when the link is full, as a later
    /// confirmation covers earlier numbers.
    fn confirm(&self, received: &mut HashMap<RoomKey, u64>) {
        for (room, out_seq) in received.drain() {
            let event = gateway_event::Event::Received(Received {
                room: Some(room.to_wire()),
                out_seq,
            });
            let _ = self.try_send(event);
        }
    }

    fn apply(
        self: &Arc<Self>,
        event: node_event::Event,
        received: &mut HashMap<RoomKey, u64>,
        writes: &mut Writes,
    ) {
        use node_event::Event;
        let mut arrived = |room: &RoomKey, out_seq: u64| {
            if out_seq != 0 {
                let n = received.entry(room.clone()).or_default();
                *n = (*n).max(out_seq);
            }
        };
        match event {
            Event::AdmitReply(ref r) if r.status == 0 => {
                self.admitted(r.socket, &r.tags, r.out_seq);
                self.reply(event);
            }
            Event::AdmitReply(_)
            | Event::HttpReply(_)
            | Event::RoomInfoReply(_)
            | Event::HomeReply(_) => self.reply(event),
            Event::Ack(a) => {
                if let Some(s) = self.registry().sockets.get(&a.socket) {
                    s.ack(a.seq);
                }
            }
            Event::ConnState(c) => {
                if let Some(s) = self.registry().sockets.get(&c.socket) {
                    s.set_state(c.state);
                }
            }
            Event::Moved(m) => {
                for socket in m.sockets {
                    let Some(s) = self.registry().remove(socket) else {
                        continue;
                    };
                    // The node keeps which room each socket is in until told otherwise:
                    // a node that stays up would hold every socket that ever moved away.
                    // Told before the move, so that a socket going back to this node is
                    // admitted after it.
                    let moves = s.detach_from(self);
                    let link = self.clone();
                    self.send_then(detach_event(&s), move || {
                        if moves {
                            link.move_session(s, RingVersion(m.ring_version));
                        }
                    });
                }
            }
            Event::Send(s) => {
                let Some(msg) = crate::frames::message(&s.payload, s.binary) else {
                    return;
                };
                if let Some(e) = self.registry().sockets.get(&s.socket) {
                    arrived(&e.room, s.out_seq);
                    if e.takes_output(s.out_seq) {
                        writes.push(e, msg);
                    }
                }
                writes.sources += 1;
            }
            Event::Deliver(d) => self.deliver(d, writes, arrived),
            Event::RoomFetch(request) => {
                let _ = self.mover.send(LinkWork::RoomFetch {
                    link: self.clone(),
                    request,
                });
            }
            Event::CloseSocket(c) => {
                // What was sent before the close goes before it.
                self.messages_out.increment(writes.flush());
                if let Some(e) = self.registry().sockets.get(&c.socket) {
                    arrived(&e.room, c.out_seq);
                    if e.takes_output(c.out_seq) {
                        e.out.close().trigger(c.code as u16, &c.reason);
                    }
                }
            }
        }
    }

    /// The socket is in its room from now on: later deliveries include it.
    fn admitted(&self, socket: u64, tags: &[String], last_out: u64) {
        let mut reg = self.registry();
        if let Some(s) = reg.sockets.get(&socket).cloned() {
            s.set_tags(tags.to_vec());
            s.admitted_after(last_out);
            reg.rooms
                .entry(s.room.clone())
                .or_default()
                .insert(socket, s);
        }
    }

    /// Broadcast fan-out: one frame from the node, for every local member; `arrived`
    /// counts its output as received.
    fn deliver(&self, d: Deliver, writes: &mut Writes, arrived: impl FnOnce(&RoomKey, u64)) {
        let Some(wire) = d.room.as_ref() else {
            return;
        };
        // Encoded once: every member writes the same bytes.
        let msg = crate::frames::message(&d.payload, d.binary);
        let reg = self.registry();
        let Some((room, members)) = reg.rooms.get_key_value(&WireRoom::of(wire)) else {
            drop(reg);
            // Its members here left meanwhile; the output still arrived.
            if let Ok(room) = RoomKey::from_wire(wire) {
                arrived(&room, d.out_seq);
            }
            return;
        };
        arrived(room, d.out_seq);
        let Some(msg) = msg else {
            return;
        };
        // The fan-out continues the node's trace when there is one.
        let span = (!d.trace_parent.is_empty() && trace::enabled()).then(|| {
            let span = tracing::info_span!(target: trace::TARGET, "room.fanout", room = %room);
            trace::continue_from(&span, &d.trace_parent);
            span
        });
        let _entered = span.as_ref().map(tracing::Span::enter);
        for (socket, e) in members {
            if !d.exclude.contains(socket) && e.takes_output(d.out_seq) {
                writes.push(e, msg.clone());
            }
        }
        writes.sources += 1;
    }

    fn reply(&self, event: node_event::Event) {
        let Some(id) = reply_id(&event) else { return };
        if let Some(tx) = self.pending().remove(&id) {
            let _ = tx.send(event);
        }
    }
}

#[cfg(test)]
mod tests;
