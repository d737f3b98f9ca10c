//! The gateway's side of a relay link: the local socket registry, request/reply matching,
//! and fan-out of node events to sockets.

use crate::moves::{MoveRequest, Mover};
use crate::session::Session;
use conclave_proto::wire::{gateway_event, node_event, Detach, GatewayEvent, NodeEvent};
use conclave_proto::{GatewaySide, RoomKey, SocketId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

/// A request to close a socket from outside its tasks (node request, slow consumer,
/// limit), with the close code to send.
#[derive(Default)]
pub(crate) struct CloseSignal {
    code: AtomicU32,
    reason: Mutex<String>,
    notify: Notify,
}

impl CloseSignal {
    /// Asks the socket to close; the first request wins.
    pub fn trigger(&self, code: u16, reason: &str) {
        if self
            .code
            .compare_exchange(0, code as u32, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.to_string();
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
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

    /// Waits until a close is requested.
    pub async fn wait(&self) -> (u16, String) {
        loop {
            let notified = self.notify.notified();
            if let Some(r) = self.requested() {
                return r;
            }
            notified.await;
        }
    }
}

#[derive(Default)]
struct Registry {
    sockets: HashMap<u64, Arc<Session>>,
    /// Sockets the node accepted into each room: the targets of deliveries.
    rooms: HashMap<RoomKey, HashSet<u64>>,
}

impl Registry {
    fn remove(&mut self, socket: u64) -> Option<Arc<Session>> {
        let s = self.sockets.remove(&socket)?;
        if let Some(set) = self.rooms.get_mut(&s.room) {
            set.remove(&socket);
            if set.is_empty() {
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
    pending: Mutex<HashMap<u64, oneshot::Sender<node_event::Event>>>,
    next_id: AtomicU64,
    /// Cleared when the node's side of the link ends.
    alive: AtomicBool,
    /// Where sockets go that must move to another node.
    mover: Mover,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("the room's node is unavailable")]
    Unavailable,
}

impl NodeLink {
    pub fn start(node: String, side: GatewaySide, mover: Mover) -> Arc<Self> {
        let link = Arc::new(Self {
            node,
            mover,
            to_node: side.to_node,
            messages_out: metrics::counter!("conclave_gateway_messages_out_total"),
            registry: Mutex::default(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(true),
        });
        tokio::spawn(run_node_events(link.clone(), side.from_node));
        link
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn send(&self, event: gateway_event::Event) -> Result<(), LinkError> {
        self.to_node
            .send(GatewayEvent { event: Some(event) })
            .await
            .map_err(|_| LinkError::Unavailable)
    }

    /// Sends a request and waits for the reply with the same id.
    pub async fn call(
        &self,
        request_id: u64,
        event: gateway_event::Event,
    ) -> Result<node_event::Event, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request_id, tx);
        let sent = self.send(event).await;
        let reply = match sent {
            Ok(()) => rx.await.map_err(|_| LinkError::Unavailable),
            Err(e) => Err(e),
        };
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&request_id);
        reply
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
        self.registry().rooms.get(room).map_or(0, HashSet::len)
    }

    /// Routes the node's events for the socket to it (deliveries start once admitted).
    pub fn register(&self, session: Arc<Session>) {
        self.registry().sockets.insert(session.id.0, session);
    }

    pub fn unregister(&self, socket: SocketId) -> Option<Arc<Session>> {
        self.registry().remove(socket.0)
    }

    /// Moves every socket of this link to its room's next owner (under a ring of at least
    /// `min_ring`). With `tell_node` (the node left the ring but may still run), the node is
    /// asked to let go of each socket. Returns how many moved.
    pub fn evacuate(self: &Arc<Self>, min_ring: u64, tell_node: bool) -> usize {
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
                let detach = Detach {
                    socket: session.id.0,
                    room: Some(session.room.to_wire()),
                };
                let _ = self.to_node.try_send(GatewayEvent {
                    event: Some(gateway_event::Event::Detach(detach)),
                });
            }
            self.move_session(session, min_ring);
            moved += 1;
        }
        moved
    }

    fn move_session(&self, session: Arc<Session>, min_ring: u64) {
        let _ = self.mover.send(MoveRequest { session, min_ring });
    }
}

fn ws_message(payload: bytes::Bytes, binary: bool) -> Option<WsMessage> {
    if binary {
        Some(WsMessage::Binary(payload))
    } else {
        Utf8Bytes::try_from(payload).ok().map(WsMessage::Text)
    }
}

async fn run_node_events(link: Arc<NodeLink>, mut from_node: mpsc::Receiver<NodeEvent>) {
    while let Some(ev) = from_node.recv().await {
        let Some(ev) = ev.event else { continue };
        match ev {
            node_event::Event::AdmitReply(ref r) => {
                if r.status == 0 {
                    // In the room from now on: later deliveries include this socket.
                    let mut reg = link.registry();
                    if let Some(s) = reg.sockets.get(&r.socket).cloned() {
                        s.set_tags(r.tags.clone());
                        reg.rooms
                            .entry(s.room.clone())
                            .or_default()
                            .insert(r.socket);
                    }
                }
                reply(&link, r.request_id, ev.clone())
            }
            node_event::Event::Ack(a) => {
                if let Some(s) = link.registry().sockets.get(&a.socket) {
                    s.ack(a.seq);
                }
            }
            node_event::Event::ConnState(c) => {
                if let Some(s) = link.registry().sockets.get(&c.socket) {
                    s.set_state(c.state);
                }
            }
            node_event::Event::Moved(m) => {
                for socket in m.sockets {
                    let Some(s) = link.registry().remove(socket) else {
                        continue;
                    };
                    if s.detach_from(&link) {
                        link.move_session(s, m.ring_version);
                    }
                }
            }
            node_event::Event::HttpReply(ref r) => reply(&link, r.request_id, ev.clone()),
            node_event::Event::RoomInfoReply(ref r) => reply(&link, r.request_id, ev.clone()),
            node_event::Event::HomeReply(ref r) => reply(&link, r.request_id, ev.clone()),
            node_event::Event::Send(s) => {
                let Some(msg) = ws_message(s.payload, s.binary) else {
                    continue;
                };
                let reg = link.registry();
                if let Some(e) = reg.sockets.get(&s.socket) {
                    if e.out.enqueue(msg) {
                        link.messages_out.increment(1);
                    }
                }
            }
            node_event::Event::Deliver(d) => {
                let Some(msg) = ws_message(d.payload, d.binary) else {
                    continue;
                };
                let Some(Ok(room)) = d.room.as_ref().map(RoomKey::from_wire) else {
                    continue;
                };
                let reg = link.registry();
                let Some(members) = reg.rooms.get(&room) else {
                    continue;
                };
                let mut queued = 0;
                for socket in members {
                    if d.exclude.contains(socket) {
                        continue;
                    }
                    if let Some(e) = reg.sockets.get(socket) {
                        queued += e.out.enqueue(msg.clone()) as u64;
                    }
                }
                link.messages_out.increment(queued);
            }
            node_event::Event::CloseSocket(c) => {
                let reg = link.registry();
                if let Some(e) = reg.sockets.get(&c.socket) {
                    e.out.close.trigger(c.code as u16, &c.reason);
                }
            }
        }
    }
    // The node is gone: its sockets move to the rooms' next owners. (`alive` is cleared
    // first: a socket attaching concurrently sees it and moves on by itself.)
    link.alive.store(false, Ordering::Release);
    link.pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    link.evacuate(0, false);
}

fn reply(link: &NodeLink, request_id: u64, ev: node_event::Event) {
    if let Some(tx) = link
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&request_id)
    {
        let _ = tx.send(ev);
    }
}
