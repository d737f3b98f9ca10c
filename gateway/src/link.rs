//! The gateway's side of a relay link: the local socket registry, request/reply matching,
//! and fan-out of node events to sockets.

use conclave_proto::wire::{gateway_event, node_event, GatewayEvent, NodeEvent};
use conclave_proto::{GatewaySide, RoomKey, SocketId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
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

pub(crate) struct SocketEntry {
    pub room: RoomKey,
    pub tx: mpsc::Sender<WsMessage>,
    pub close: Arc<CloseSignal>,
    /// Payload bytes in `tx`, decremented by the writer as it takes frames.
    pub queued_bytes: Arc<AtomicUsize>,
    pub max_queued_bytes: usize,
}

#[derive(Default)]
struct Registry {
    sockets: HashMap<u64, SocketEntry>,
    /// Sockets the node accepted into each room: the targets of deliveries.
    rooms: HashMap<RoomKey, HashSet<u64>>,
}

/// One relay link to a node.
pub(crate) struct NodeLink {
    to_node: mpsc::Sender<GatewayEvent>,
    /// Counted once per node event, not per frame: the fan-out loop is the hot path.
    messages_out: metrics::Counter,
    registry: Mutex<Registry>,
    pending: Mutex<HashMap<u64, oneshot::Sender<node_event::Event>>>,
    next_id: AtomicU64,
    /// Cleared when the node's side of the link ends.
    alive: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("the room's node is unavailable")]
    Unavailable,
}

impl NodeLink {
    pub fn start(side: GatewaySide) -> Arc<Self> {
        let link = Arc::new(Self {
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

    /// Asks every socket to close with `code`; returns how many were open.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        let reg = self.registry();
        for e in reg.sockets.values() {
            e.close.trigger(code, reason);
        }
        reg.sockets.len()
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

    pub fn register(&self, socket: SocketId, entry: SocketEntry) {
        self.registry().sockets.insert(socket.0, entry);
    }

    pub fn unregister(&self, socket: SocketId) {
        let mut reg = self.registry();
        if let Some(e) = reg.sockets.remove(&socket.0) {
            if let Some(set) = reg.rooms.get_mut(&e.room) {
                set.remove(&socket.0);
                if set.is_empty() {
                    reg.rooms.remove(&e.room);
                }
            }
        }
    }

    /// Queues a frame for one socket; a full queue marks a slow consumer and closes it.
    /// Returns whether the frame was queued.
    fn enqueue(entry: &SocketEntry, msg: WsMessage) -> bool {
        let len = msg.len();
        let before = entry.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let result = if before + len > entry.max_queued_bytes {
            Err(mpsc::error::TrySendError::Full(msg))
        } else {
            entry.tx.try_send(msg)
        };
        if result.is_err() {
            entry.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        }
        match result {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if entry.close.requested().is_none() {
                    metrics::counter!("conclave_gateway_slow_consumer_closes_total").increment(1);
                }
                entry
                    .close
                    .trigger(1013, "Send queue full: client is not reading fast enough");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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
                    if let Some(room) = reg.sockets.get(&r.socket).map(|e| e.room.clone()) {
                        reg.rooms.entry(room).or_default().insert(r.socket);
                    }
                }
                reply(&link, r.request_id, ev.clone())
            }
            node_event::Event::HttpReply(ref r) => reply(&link, r.request_id, ev.clone()),
            node_event::Event::RoomInfoReply(ref r) => reply(&link, r.request_id, ev.clone()),
            node_event::Event::Send(s) => {
                let Some(msg) = ws_message(s.payload, s.binary) else {
                    continue;
                };
                let reg = link.registry();
                if let Some(e) = reg.sockets.get(&s.socket) {
                    if NodeLink::enqueue(e, msg) {
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
                        queued += NodeLink::enqueue(e, msg.clone()) as u64;
                    }
                }
                link.messages_out.increment(queued);
            }
            node_event::Event::CloseSocket(c) => {
                let reg = link.registry();
                if let Some(e) = reg.sockets.get(&c.socket) {
                    e.close.trigger(c.code as u16, &c.reason);
                }
            }
        }
    }
    // The node is gone: close every socket so clients reconnect (1012: service restart).
    link.alive.store(false, Ordering::Release);
    link.pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let reg = link.registry();
    for e in reg.sockets.values() {
        e.close.trigger(1012, "Node unavailable");
    }
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
