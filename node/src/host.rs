//! The room host: which rooms are live on this node, and how events reach them.

use crate::party::{ConnectRequest, PartyRegistry, Request, Response};
use crate::room::{spawn_room, FetchError, Room, RoomEvent, RoomFetcher};
use crate::storage::{Claim, Storage, Store};
use crate::NodeConfig;
use conclave_proto::wire::NodeEvent;
use conclave_proto::RoomKey;
use conclave_proto::{Refusal, Ring, RingVersion};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, Notify};

/// A number no earlier process of this node used: nanoseconds since the epoch, mixed with
/// the process id.
fn new_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ ((std::process::id() as u64) << 48)
}

/// Index of a gateway link on this node.
pub(crate) type GatewayId = usize;

/// The senders towards each attached gateway.
#[derive(Default)]
pub(crate) struct Links {
    senders: RwLock<Vec<Option<mpsc::Sender<NodeEvent>>>>,
}

impl Links {
    pub fn add(&self, tx: mpsc::Sender<NodeEvent>) -> GatewayId {
        let mut s = self.senders.write().unwrap_or_else(|e| e.into_inner());
        s.push(Some(tx));
        s.len() - 1
    }

    pub fn remove(&self, id: GatewayId) {
        let mut s = self.senders.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = s.get_mut(id) {
            *slot = None;
        }
    }

    pub fn get(&self, id: GatewayId) -> Option<mpsc::Sender<NodeEvent>> {
        let s = self.senders.read().unwrap_or_else(|e| e.into_inner());
        s.get(id).cloned().flatten()
    }
}

struct RoomHandle {
    tx: mpsc::Sender<RoomEvent>,
    conns: Arc<AtomicUsize>,
}

pub(crate) struct HostInner {
    pub config: NodeConfig,
    /// This process's incarnation: tells its claims apart from an earlier run's.
    pub incarnation: u64,
    /// The ring this node places rooms on (which alarms it runs, whose rooms it may take).
    ring: RwLock<Ring>,
    /// Cleared while the node is fenced (its liveness lapsed): no room may run here.
    serving: std::sync::atomic::AtomicBool,
    pub parties: PartyRegistry,
    pub store: Arc<dyn Store>,
    pub links: Arc<Links>,
    pub alarms_changed: Notify,
    rooms: Mutex<HashMap<RoomKey, RoomHandle>>,
    weak_self: std::sync::Weak<HostInner>,
}

/// Why an event could not reach a room.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DispatchError {
    #[error("Party {0} not found")]
    UnknownParty(String),
    #[error("room {0} has no running actor (the node is shutting down?)")]
    Unreachable(String),
}

/// Fresh actors a dispatch tries before giving up.
const DISPATCH_ATTEMPTS: usize = 4;

impl HostInner {
    pub fn new(config: NodeConfig, parties: PartyRegistry, store: Arc<dyn Store>) -> Arc<Self> {
        let ring = Ring::new(
            RingVersion(1),
            config.nodes.iter().cloned().chain([config.node_id.clone()]),
        );
        Arc::new_cyclic(|weak| Self {
            incarnation: new_incarnation(),
            ring: RwLock::new(ring),
            serving: std::sync::atomic::AtomicBool::new(true),
            config,
            parties,
            store,
            links: Arc::new(Links::default()),
            alarms_changed: Notify::new(),
            rooms: Mutex::new(HashMap::new()),
            weak_self: weak.clone(),
        })
    }

    /// This node's claim on a room.
    pub fn claim(&self) -> Claim {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        Claim {
            node: self.config.node_id.clone(),
            incarnation: self.incarnation,
            region: self.config.region.clone(),
            live_nodes: ring.nodes().to_vec(),
        }
    }

    /// Whether `room` belongs on this node under its ring.
    pub fn places_here(&self, room: &RoomKey) -> bool {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        ring.owner(room) == Some(self.config.node_id.as_str())
    }

    /// The version of the ring this node places rooms on.
    pub fn ring_version(&self) -> RingVersion {
        self.ring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version()
    }

    /// 421 unless `room` belongs on this node under its ring.
    pub fn check_placed_here(&self, room: &RoomKey) -> Result<(), Refusal> {
        if self.places_here(room) {
            Ok(())
        } else {
            Err(Refusal::misplaced(room, self.ring_version()))
        }
    }

    /// Places rooms on a new ring. Rooms that now belong on another node are handed off:
    /// they release their claim (so the new owner may take them) and their gateways move
    /// the sockets there.
    pub fn set_ring(&self, ring: Ring) {
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
        let moving: Vec<mpsc::Sender<RoomEvent>> = self
            .rooms()
            .iter()
            .filter(|(k, _)| !self.places_here(k))
            .map(|(_, h)| h.tx.clone())
            .collect();
        for tx in moving {
            let _ = tx.try_send(RoomEvent::Handoff);
        }
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Stops (or resumes) serving rooms. Stopping tears every room down at once: its
    /// sockets move away and nothing more is committed from here.
    pub fn set_serving(self: &Arc<Self>, serving: bool) {
        let was = self.serving.swap(serving, Ordering::AcqRel);
        if was && !serving {
            let rooms: Vec<(RoomKey, mpsc::Sender<RoomEvent>)> = self
                .rooms()
                .iter()
                .map(|(k, h)| (k.clone(), h.tx.clone()))
                .collect();
            for (_, tx) in rooms {
                // A full mailbox still sees the fence: the actor checks it before each event.
                let _ = tx.try_send(RoomEvent::Fence);
            }
        }
    }

    /// Drops a room's actor from the registry at once (it was fenced).
    pub fn evict(&self, key: &RoomKey) {
        self.rooms().remove(key);
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomKey, RoomHandle>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn new_room(&self, key: RoomKey) -> Room {
        let storage = Storage::new(key.clone(), self.store.clone());
        Room::new(
            key,
            storage,
            self.links.clone(),
            RoomFetcher {
                host: self.weak_self.clone(),
            },
        )
    }

    /// The mailbox of a room, starting its actor if needed.
    fn mailbox(self: &Arc<Self>, key: &RoomKey) -> Result<mpsc::Sender<RoomEvent>, DispatchError> {
        let mut rooms = self.rooms();
        if let Some(h) = rooms.get(key) {
            return Ok(h.tx.clone());
        }
        let factory = self
            .parties
            .get(key.party.as_str())
            .ok_or_else(|| DispatchError::UnknownParty(key.party.to_string()))?
            .clone();
        let (tx, rx) = mpsc::channel(self.config.room_mailbox);
        rooms.insert(
            key.clone(),
            RoomHandle {
                tx: tx.clone(),
                conns: Arc::new(AtomicUsize::new(0)),
            },
        );
        metrics::gauge!("conclave_rooms_hibernated").increment(1.0);
        spawn_room(self.clone(), key.clone(), factory, rx);
        Ok(tx)
    }

    /// Delivers an event to its room, in order with the caller's earlier events.
    pub async fn dispatch(
        self: &Arc<Self>,
        key: &RoomKey,
        mut event: RoomEvent,
    ) -> Result<(), DispatchError> {
        for _ in 0..DISPATCH_ATTEMPTS {
            let tx = self.mailbox(key)?;
            match tx.send(event).await {
                Ok(()) => return Ok(()),
                // The actor retired (or died) between lookup and send: forget its stale
                // entry, and a fresh actor takes the event.
                Err(mpsc::error::SendError(ev)) => {
                    event = ev;
                    {
                        let mut rooms = self.rooms();
                        if rooms.get(key).is_some_and(|h| h.tx.is_closed()) {
                            rooms.remove(key);
                        }
                    }
                    // A runtime that is shutting down cancels new actors at once: do not spin.
                    tokio::task::yield_now().await;
                }
            }
        }
        Err(DispatchError::Unreachable(key.to_string()))
    }

    pub fn redispatch(self: Arc<Self>, key: RoomKey, event: RoomEvent) {
        tokio::spawn(async move {
            let _ = self.dispatch(&key, event).await;
        });
    }

    /// Removes an idle room with no connections, unless events are waiting for it.
    pub fn retire(&self, key: &RoomKey, rx: &mut mpsc::Receiver<RoomEvent>) -> bool {
        let mut rooms = self.rooms();
        if !rx.is_empty() {
            return false;
        }
        if let Some(h) = rooms.get(key) {
            if h.conns.load(Ordering::Relaxed) > 0 {
                return false;
            }
        }
        rooms.remove(key);
        rx.close();
        true
    }

    pub fn room_retired(&self) {
        metrics::gauge!("conclave_rooms_hibernated").decrement(1.0);
    }

    pub fn metrics_room_entered_memory(&self) {
        metrics::gauge!("conclave_rooms_hibernated").decrement(1.0);
        metrics::gauge!("conclave_rooms_active").increment(1.0);
    }

    pub fn metrics_room_left_memory(&self) {
        metrics::gauge!("conclave_rooms_active").decrement(1.0);
        metrics::gauge!("conclave_rooms_hibernated").increment(1.0);
    }

    /// The live connection counter of a room (a detached counter if it is not live).
    pub fn conn_count(&self, key: &RoomKey) -> Arc<AtomicUsize> {
        self.rooms()
            .get(key)
            .map(|h| h.conns.clone())
            .unwrap_or_default()
    }

    /// Decides whether a socket may open; `Err((status, body))` refuses it. A new socket
    /// (`hook` given) also passes the party's `before_connect` and the room's capacity; a
    /// socket moving here from another node was admitted already.
    pub fn admit(&self, key: &RoomKey, hook: Option<&ConnectRequest<'_>>) -> Result<(), Refusal> {
        if !self.is_serving() {
            return Err(Refusal::new(
                503,
                "This node is not serving rooms right now; retry",
            ));
        }
        let Some(factory) = self.parties.get(key.party.as_str()) else {
            return Err(Refusal::new(404, format!("Party {} not found", key.party)));
        };
        self.check_placed_here(key)?;
        let Some(req) = hook else {
            return Ok(());
        };
        factory
            .before_connect(req)
            .map_err(|r| Refusal::new(r.status, r.body))?;
        let count = self
            .rooms()
            .get(key)
            .map(|h| h.conns.load(Ordering::Relaxed))
            .unwrap_or(0);
        if count >= self.config.max_connections_per_room {
            return Err(Refusal::new(
                503,
                format!(
                    "Room is full ({} connections)",
                    self.config.max_connections_per_room
                ),
            ));
        }
        Ok(())
    }

    /// An HTTP request to a room, answered by its `on_request`.
    pub async fn request(
        self: &Arc<Self>,
        key: RoomKey,
        req: Request,
    ) -> Result<Response, FetchError> {
        let (reply, rx) = oneshot::channel();
        self.dispatch(
            &key,
            RoomEvent::Request {
                req: Box::new(req),
                reply,
            },
        )
        .await
        .map_err(|e| match e {
            DispatchError::UnknownParty(p) => FetchError::UnknownParty(p),
            DispatchError::Unreachable(_) => FetchError::Closed,
        })?;
        match tokio::time::timeout(self.config.fetch_timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(FetchError::Closed),
            Err(_) => Err(FetchError::Timeout),
        }
    }

    /// Whether the room has an actor on this node (active or hibernated).
    pub fn is_live(&self, key: &RoomKey) -> bool {
        self.rooms().contains_key(key)
    }

    /// Rooms live on this node.
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }
}
