//! The room host: wires this node's parts together. It starts a room's actor when an event
//! first reaches the room, delivers events to rooms in order, admits sockets, and tells
//! rooms when the ring or the serving flag changes.

use crate::actor::{ActorContext, RoomActor};
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::links::{GatewayId, Links};
use crate::mailbox::{mailbox, MailboxTx, RoomEvent};
use crate::message::{Request, Response};
use crate::party::{ConnectCheck, ConnectRequest, PartyFactory, PartyRegistry};
use crate::room::{FetchError, Room, RoomFetcher, RoomRequests};
use crate::rooms::Rooms;
use crate::storage::{PartyTotals, Storage, Store};
use conclave_proto::wire::{node_event, HttpReply, HttpRequest, NodeEvent};
use conclave_proto::{Refusal, Ring, RoomKey};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};
use tokio::sync::{oneshot, Notify};
use tracing::Instrument;

pub(crate) struct Host {
    pub config: NodeConfig,
    pub cluster: Arc<Cluster>,
    pub parties: PartyRegistry,
    pub store: Arc<dyn Store>,
    pub links: Arc<Links>,
    /// Woken when a commit changes an alarm: the scheduler looks at the index again.
    pub alarms_changed: Arc<Notify>,
    pub rooms: Arc<Rooms>,
    /// The storage totals of the parties whose quota bounds the whole party.
    party_totals: Arc<PartyTotals>,
    /// Room-to-room requests come back here.
    fetcher: RoomFetcher,
    /// Requests to rooms other nodes own, asked through a gateway: by the request id this
    /// node gave them, the gateway link asked and where the reply goes.
    elsewhere: std::sync::Mutex<HashMap<u64, (GatewayId, oneshot::Sender<HttpReply>)>>,
    next_elsewhere: std::sync::atomic::AtomicU64,
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

impl Host {
    pub fn new(config: NodeConfig, parties: PartyRegistry, store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new_cyclic(|host: &Weak<Host>| {
            let requests: Weak<dyn RoomRequests> = host.clone();
            let bounded = parties
                .names()
                .into_iter()
                .filter(|p| config.storage_quota(p).bounds_party());
            let party_totals = PartyTotals::start(store.clone(), bounded);
            let fetcher = RoomFetcher::new(requests);
            for factory in parties.factories() {
                factory.attach(&fetcher);
            }
            Self {
                party_totals,
                cluster: Arc::new(Cluster::new(&config)),
                config,
                parties,
                store,
                links: Arc::new(Links::default()),
                alarms_changed: Arc::new(Notify::new()),
                rooms: Arc::new(Rooms::default()),
                fetcher,
                elsewhere: std::sync::Mutex::default(),
                next_elsewhere: std::sync::atomic::AtomicU64::new(1),
            }
        })
    }

    /// Places rooms on a new ring. Rooms that now belong on another node are handed off:
    /// they release their claim (so the new owner may take them) and their gateways move
    /// the sockets there.
    pub fn set_ring(&self, ring: Ring) {
        let version = ring.version();
        metrics::gauge!("conclave_ring_version").set(version.0 as f64);
        self.cluster.set_ring(ring);
        let moving = self.rooms.mailboxes(|k| !self.cluster.places_here(k));
        tracing::debug!(
            version = version.0,
            rooms = moving.len(),
            "new ring; handing rooms off"
        );
        for tx in moving {
            let _ = tx.try_send(RoomEvent::Handoff);
        }
    }

    /// Stops (or resumes) serving rooms. Stopping tears every room down at once: its
    /// sockets move away and nothing more is committed from here.
    pub fn set_serving(&self, serving: bool) {
        metrics::gauge!("conclave_node_serving").set(if serving { 1.0 } else { 0.0 });
        if self.cluster.set_serving(serving) {
            for tx in self.rooms.mailboxes(|_| true) {
                // A full mailbox still sees the fence: the actor checks it before each event.
                let _ = tx.try_send(RoomEvent::Fence);
            }
        }
    }

    /// The mailbox of a room, starting its actor if needed.
    fn mailbox(self: &Arc<Self>, key: &RoomKey) -> Result<MailboxTx, DispatchError> {
        self.rooms.mailbox(key, |conn_count| {
            let factory = self
                .parties
                .get(key.party.as_str())
                .ok_or_else(|| DispatchError::UnknownParty(key.party.to_string()))?;
            Ok(self.start_actor(key.clone(), factory.clone(), conn_count))
        })
    }

    /// Starts a room's actor; events it received too late go to its successor.
    fn start_actor(
        self: &Arc<Self>,
        key: RoomKey,
        factory: Arc<dyn PartyFactory>,
        conn_count: Arc<AtomicUsize>,
    ) -> MailboxTx {
        let (tx, rx) = mailbox(self.config.room_mailbox);
        let ctx = ActorContext {
            cluster: self.cluster.clone(),
            rooms: self.rooms.clone(),
            alarms_changed: self.alarms_changed.clone(),
            hibernate_after: self.config.hibernate_after,
            max_connections: self.config.max_connections_per_room,
            storage_quota: self.config.storage_quota(key.party.as_str()),
            party_total: self.party_totals.get(key.party.as_str()),
        };
        let storage = Storage::new(key.clone(), self.store.clone());
        let room = Room::new(
            key.clone(),
            storage,
            self.links.clone(),
            self.fetcher.clone(),
            conn_count,
        );
        let actor = Box::new(RoomActor::new(ctx, room, factory));
        let span = tracing::info_span!("room", party = %key.party, room = %key.room);
        let host = self.clone();
        tokio::spawn(
            async move {
                // In order, one after another: an admission and the frames behind it must
                // reach the successor as they reached this actor.
                for event in actor.run(rx).await {
                    let _ = host.dispatch(&key, event).await;
                }
            }
            .instrument(span),
        );
        tx
    }

    /// Delivers an event to its room, in order with the caller's earlier events; returns
    /// the mailbox that took it (the caller may keep it for the room's next events, while
    /// its actor lives).
    pub async fn dispatch(
        self: &Arc<Self>,
        key: &RoomKey,
        mut event: RoomEvent,
    ) -> Result<MailboxTx, DispatchError> {
        for _ in 0..DISPATCH_ATTEMPTS {
            let tx = self.mailbox(key)?;
            match tx.send(event).await {
                Ok(()) => return Ok(tx),
                // The actor retired (or died) between lookup and send: forget its stale
                // entry, and a fresh actor takes the event.
                Err(ev) => {
                    event = ev;
                    self.rooms.forget_if_closed(key);
                    // A runtime that is shutting down cancels new actors at once: do not spin.
                    tokio::task::yield_now().await;
                }
            }
        }
        Err(DispatchError::Unreachable(key.to_string()))
    }

    /// Decides whether a socket may open. A new socket (`hook` given) also passes the
    /// party's `before_connect`; a socket moving here from another node was admitted
    /// already. (The room's actor checks its capacity: it knows whether the socket
    /// replaces one with the same id.)
    pub fn admit(&self, key: &RoomKey, hook: Option<&ConnectRequest<'_>>) -> Result<(), Refusal> {
        if !self.cluster.is_serving() {
            return Err(Refusal::new(
                503,
                "This node is not serving rooms right now; retry",
            ));
        }
        let Some(factory) = self.parties.get(key.party.as_str()) else {
            return Err(Refusal::new(404, format!("Party {} not found", key.party)));
        };
        self.cluster.check_placed_here(key)?;
        let Some(req) = hook else {
            return Ok(());
        };
        match crate::panics::guarded(|| factory.before_connect(req)) {
            Ok(checked) => checked.map_err(|r| Refusal::new(r.status, r.body)),
            Err(what) => {
                tracing::error!(room = %key, "the party panicked in before_connect: {what}");
                Err(Refusal::new(500, "The party's connection check failed"))
            }
        }
    }

    /// Whether the party may check a new socket asynchronously ([`Host::check_connect`]).
    pub fn checks_connections(&self, key: &RoomKey) -> bool {
        self.parties
            .get(key.party.as_str())
            .is_some_and(|p| p.checks_connections())
    }

    /// The party's asynchronous check of a new socket, if it has one.
    pub fn check_connect(
        &self,
        key: &RoomKey,
        req: ConnectCheck,
    ) -> Option<BoxFuture<'static, Result<ConnectCheck, Response>>> {
        let factory = self.parties.get(key.party.as_str())?;
        guard_check(key, "check_connect", || factory.check_connect(req))
    }

    /// The party's asynchronous check of a client's HTTP request, if it has one.
    pub fn check_request(
        &self,
        key: &RoomKey,
        req: Request,
    ) -> Option<BoxFuture<'static, Result<Request, Response>>> {
        let factory = self.parties.get(key.party.as_str())?;
        guard_check(key, "check_request", || {
            factory.check_request(key.room.as_str(), req)
        })
    }

    /// An HTTP request outside any room's URL, answered by the main party's
    /// [`fetch`](crate::PartyFactory::fetch), if it answers those.
    pub fn fetch_outside_rooms(&self, req: Request) -> Option<BoxFuture<'static, Response>> {
        let factory = self.parties.get("main")?;
        let failed = |what: String| {
            tracing::error!("the main party panicked in its fetch: {what}");
            crate::message::text_response(500, "The party's fetch failed")
        };
        let pending = match crate::panics::guarded(|| factory.fetch(req)) {
            Ok(pending) => pending?,
            Err(what) => return Some(Box::pin(async move { failed(what) })),
        };
        Some(Box::pin(async move {
            crate::panics::guarded_future(pending)
                .await
                .unwrap_or_else(failed)
        }))
    }

    /// An HTTP request to a room another node owns (a room's or a static handler's fetch),
    /// asked through one of the gateways linked to this node, which asks the owner.
    async fn request_elsewhere(&self, key: RoomKey, req: Request) -> Result<Response, FetchError> {
        let gateway = self.links.any().ok_or(FetchError::Unreachable)?;
        let request_id = self
            .next_elsewhere
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (parts, body) = req.into_parts();
        // As a client's request body is bounded on its way to a room.
        if body.len() > self.config.max_http_body_bytes {
            return Err(FetchError::TooLarge(self.config.max_http_body_bytes));
        }
        let request = HttpRequest {
            request_id,
            room: Some(key.to_wire()),
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: conclave_proto::wire_headers(&parts.headers),
            body,
            outside_rooms: false,
            from_room: true,
        };
        let (tx, rx) = oneshot::channel();
        self.elsewhere().insert(request_id, (gateway, tx));
        // Gone however the wait ends (a dropped fetch too).
        let _pending = PendingElsewhere {
            host: self,
            request_id,
        };
        let event = NodeEvent {
            event: Some(node_event::Event::RoomFetch(request)),
        };
        let answered = tokio::time::timeout(self.config.fetch_timeout, async {
            self.links.send(gateway, event).await;
            rx.await
        })
        .await;
        let reply = match answered {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(FetchError::Unreachable),
            Err(_) => return Err(FetchError::Timeout),
        };
        let mut resp = http::Response::new(reply.body);
        *resp.status_mut() = http::StatusCode::from_u16(reply.status as u16)
            .unwrap_or(http::StatusCode::BAD_GATEWAY);
        *resp.headers_mut() = crate::gateway_link::header_map(reply.headers);
        Ok(resp)
    }

    /// A gateway's answer to one of [`Self::request_elsewhere`]'s requests.
    pub(crate) fn answered_elsewhere(&self, reply: HttpReply) {
        if let Some((_, tx)) = self.elsewhere().remove(&reply.request_id) {
            let _ = tx.send(reply);
        }
    }

    /// The link to `gateway` is gone: what was asked through it will not be answered.
    pub(crate) fn link_lost(&self, gateway: GatewayId) {
        self.elsewhere().retain(|_, (asked, _)| *asked != gateway);
    }

    fn elsewhere(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (GatewayId, oneshot::Sender<HttpReply>)>> {
        self.elsewhere.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An HTTP request to a room, answered by its `on_request`: here when this node owns
    /// the room, else through a gateway, by its owner.
    pub async fn request(
        self: &Arc<Self>,
        key: RoomKey,
        req: Request,
    ) -> Result<Response, FetchError> {
        if self.cluster.places_elsewhere(&key) {
            return self.request_elsewhere(key, req).await;
        }
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
}

impl RoomRequests for Host {
    fn fetch(
        self: Arc<Self>,
        room: RoomKey,
        req: Request,
    ) -> BoxFuture<'static, Result<Response, FetchError>> {
        Box::pin(async move { self.request(room, req).await })
    }

    fn wake(self: Arc<Self>, room: RoomKey) {
        tokio::spawn(async move {
            let _ = self.dispatch(&room, RoomEvent::Wake).await;
        });
    }
}

/// Removes a request to a room elsewhere from the pending ones when its wait ends.
struct PendingElsewhere<'a> {
    host: &'a Host,
    request_id: u64,
}

impl Drop for PendingElsewhere<'_> {
    fn drop(&mut self) {
        self.host.elsewhere().remove(&self.request_id);
    }
}

/// A party's asynchronous check (`start` makes it) whose panic, starting or running,
/// refuses with 500 instead of leaving its admission or request unanswered.
fn guard_check<T: Send + 'static>(
    room: &RoomKey,
    check: &'static str,
    start: impl FnOnce() -> Option<BoxFuture<'static, Result<T, Response>>>,
) -> Option<BoxFuture<'static, Result<T, Response>>> {
    let room = room.clone();
    let pending = match crate::panics::guarded(start) {
        Ok(pending) => pending?,
        Err(what) => {
            return Some(Box::pin(
                async move { Err(check_panicked(&room, check, &what)) },
            ))
        }
    };
    Some(Box::pin(async move {
        match crate::panics::guarded_future(pending).await {
            Ok(checked) => checked,
            Err(what) => Err(check_panicked(&room, check, &what)),
        }
    }))
}

fn check_panicked(room: &RoomKey, check: &str, what: &str) -> Response {
    tracing::error!(%room, "the party panicked in {check}: {what}");
    crate::message::text_response(500, "The party's check failed")
}
