//! Serving one gateway's relay link: the gateway's events become room events, and its
//! requests (admission, home region, room info, HTTP) get their replies.

mod headers;
mod requests;

pub(crate) use headers::header_map;
use requests::{delete_room, http_reply, http_request, list_party, room_info, room_key};

use crate::gateway_bounds::{self, check_admit};
use crate::host::Host;
use crate::links::GatewayId;
use crate::mailbox::{refused, MailboxTx, OpenRequest, RoomEvent};
use crate::message::{Message, Response};
use crate::party::{ConnectCheck, ConnectRequest};
use crate::room::{close_socket, ConnNames, Peer};
use conclave_proto::close;
use conclave_proto::wire::{
    gateway_event, node_event, Admit, Closed, Detach, Frame, HomeReply, HomeRequest, HttpRequest,
    NodeEvent, Received, RoomAdmin, RoomInfoReply, RoomInfoRequest,
};
use conclave_proto::{wire_headers, NodeSide, Refusal, RoomKey, SocketId, SocketMap};
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;

/// How long the connections of a lost gateway link stay in their rooms, waiting for the
/// gateway to re-attach them, before the rooms see them close.
const LINK_LOSS_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The client sockets this node's gateway links hold in its rooms.
const SOCKETS_GAUGE: &str = "conclave_node_sockets";

pub(crate) struct GatewayLink {
    host: Arc<Host>,
    gateway: GatewayId,
    /// Which room each socket of this gateway is in: frames carry only the socket.
    /// Changed only through [`Self::remember`] and [`Self::forget`], which keep
    /// `conclave_node_sockets` with it.
    sockets: SocketMap<SocketRoom>,
    sockets_gauge: metrics::Gauge,
    /// Admissions whose party's asynchronous check ended, to go on with in order with the
    /// link's other events.
    checked: mpsc::UnboundedSender<Checked>,
    /// Sockets whose admission waits on the party's asynchronous check. The gateway gives
    /// up on one after its node timeout (it sends `Closed`): the socket leaves this set and
    /// is not admitted when its check passes later, or it would stay in its room for good.
    checking: SocketMap<()>,
    /// HTTP requests to rooms being answered: they stop when the link goes (no one would
    /// hear the answer), so a slow handler's request does not wait out its time.
    requests: tokio::task::JoinSet<()>,
}

/// How a party's asynchronous check of a socket ended.
enum Checked {
    /// The socket goes on into its room, with the request as the check rewrote it.
    Passed(Box<Admit>, RoomKey),
    /// The check refused it; the refusal went to the gateway.
    Refused(u64),
}

/// The room a socket is in.
struct SocketRoom {
    key: Arc<RoomKey>,
    /// The room's mailbox as its socket's last frame found it: the next goes straight in
    /// while that actor lives (a closed one sends it the long way, by the room's key).
    mailbox: Option<MailboxTx>,
}

impl GatewayLink {
    /// Serves the gateway attached as `gateway` until its link closes.
    pub async fn serve(host: Arc<Host>, gateway: GatewayId, mut side: NodeSide) {
        let (checked, mut checked_rx) = mpsc::unbounded_channel();
        let mut link = Self {
            host,
            gateway,
            sockets: SocketMap::default(),
            sockets_gauge: metrics::gauge!(SOCKETS_GAUGE),
            checked,
            checking: SocketMap::default(),
            requests: tokio::task::JoinSet::new(),
        };
        loop {
            let ev = tokio::select! {
                ev = side.from_gateway.recv() => ev,
                Some(checked) = checked_rx.recv() => {
                    link.checked(checked).await;
                    continue;
                }
            };
            let Some(ev) = ev else { break };
            let Some(ev) = ev.event else { continue };
            match ev {
                gateway_event::Event::Admit(a) => link.admit(a).await,
                gateway_event::Event::Frame(f) => link.frame(f).await,
                gateway_event::Event::Detach(d) => link.detach(d).await,
                gateway_event::Event::Closed(c) => link.closed(c).await,
                gateway_event::Event::Home(h) => link.home(h),
                gateway_event::Event::RoomInfo(q) => link.room_info(q),
                gateway_event::Event::HttpRequest(r) => link.http_request(r),
                gateway_event::Event::Received(r) => link.received(r),
                gateway_event::Event::RoomFetchReply(r) => link.host.answered_elsewhere(r),
            }
        }
        link.lost().await;
    }

    /// The gateway confirms a room's numbered outputs: the room (if it is still here)
    /// forgets its copies. Advisory: dropped when the room's mailbox is full.
    fn received(&self, r: Received) {
        let Some(Ok(key)) = r.room.as_ref().map(RoomKey::from_wire) else {
            return;
        };
        if let Some(tx) = self.host.rooms.live_mailbox(&key) {
            let _ = tx.try_send(RoomEvent::Received {
                gateway: self.gateway,
                out_seq: r.out_seq,
            });
        }
    }

    /// Records that `socket` is in `room` from now on.
    fn remember(&mut self, socket: u64, room: SocketRoom) {
        if self.sockets.insert(socket, room).is_none() {
            self.sockets_gauge.increment(1.0);
        }
    }

    /// Forgets which room `socket` is in; returns it, if it was known.
    fn forget(&mut self, socket: u64) -> Option<SocketRoom> {
        let room = self.sockets.remove(&socket);
        if room.is_some() {
            self.sockets_gauge.decrement(1.0);
        }
        room
    }

    fn peer(&self, socket: u64) -> Peer {
        Peer {
            gateway: self.gateway,
            socket: SocketId(socket),
        }
    }

    async fn send(&self, event: node_event::Event) {
        let event = NodeEvent { event: Some(event) };
        self.host.links.send(self.gateway, event).await;
    }

    /// A socket asks to join a room. The room answers the admission itself, once the
    /// socket has joined; only a refusal before that is answered here.
    async fn admit(&mut self, mut a: Admit) {
        let (request_id, socket) = (a.request_id, SocketId(a.socket));
        let key = match room_key(a.room.as_ref()).and_then(|key| check_admit(&a).map(|()| key)) {
            Ok(key) => key,
            Err(refusal) => return self.send(refused(request_id, socket, refusal)).await,
        };
        // Before the party's hooks run; `open` checks again after an asynchronous one.
        if let Err(refusal) = self.one_room_per_socket(&a).await {
            return self.send(refused(request_id, socket, refusal)).await;
        }
        // A socket coming back (`resume`) was checked when it first connected.
        let headers = a
            .resume
            .is_none()
            .then(|| header_map(std::mem::take(&mut a.headers)));
        let hook = headers.as_ref().map(|headers| ConnectRequest {
            party: key.party.as_str(),
            room: key.room.as_str(),
            conn_id: &a.conn_id,
            uri: &a.uri,
            headers,
        });
        if let Err(refusal) = self.host.admit(&key, hook.as_ref()) {
            return self.send(refused(request_id, socket, refusal)).await;
        }
        let Some(headers) = headers else {
            return self.open(a, key, None).await;
        };
        if !self.host.checks_connections(&key) {
            return self.open(a, key, Some(headers)).await;
        }
        let check = ConnectCheck {
            party: key.party.to_string(),
            room: key.room.to_string(),
            conn_id: a.conn_id.clone(),
            uri: a.uri.clone(),
            headers,
        };
        match self.host.check_connect(&key, check) {
            Some(pending) => self.check_then_open(a, key, pending),
            None => self.open(a, key, None).await,
        }
    }

    /// Keeps a socket in one room. A socket coming back to this node (`resume`) may still
    /// be listed where it was before — it left while this node was fenced, say, and no
    /// detach reached it — so it is detached from there first. A new admission of a
    /// socket already in a room comes from a faulty gateway: refused (409), or the first
    /// connection would stay behind in its room for ever.
    async fn one_room_per_socket(&mut self, a: &Admit) -> Result<(), Refusal> {
        if !self.sockets.contains_key(&a.socket) {
            return Ok(());
        }
        if a.resume.is_none() {
            return Err(Refusal::new(409, "The socket is already in a room"));
        }
        self.leave_room(a.socket).await;
        Ok(())
    }

    /// Runs the party's asynchronous check off the link; the admission goes on (with the
    /// request as the check rewrote it) or is refused with the check's response.
    fn check_then_open(
        &mut self,
        mut a: Admit,
        key: RoomKey,
        pending: BoxFuture<'static, Result<ConnectCheck, Response>>,
    ) {
        self.checking.insert(a.socket, ());
        let (checked, host, gateway) = (self.checked.clone(), self.host.clone(), self.gateway);
        tokio::spawn(async move {
            match pending.await {
                Ok(req) => {
                    a.uri = req.uri;
                    a.headers = wire_headers(&req.headers);
                    let _ = checked.send(Checked::Passed(Box::new(a), key));
                }
                Err(resp) => {
                    let _ = checked.send(Checked::Refused(a.socket));
                    let refusal = Refusal::new(
                        resp.status().as_u16(),
                        String::from_utf8_lossy(resp.body()).into_owned(),
                    );
                    let event = refused(a.request_id, SocketId(a.socket), refusal);
                    host.links
                        .send(gateway, NodeEvent { event: Some(event) })
                        .await;
                }
            }
        });
    }

    /// A party's asynchronous check ended: a socket it passed joins its room, unless the
    /// gateway gave it up meanwhile.
    async fn checked(&mut self, checked: Checked) {
        match checked {
            Checked::Passed(a, key) => {
                if self.checking.remove(&a.socket).is_some() {
                    self.open(*a, key, None).await;
                }
            }
            Checked::Refused(socket) => {
                self.checking.remove(&socket);
            }
        }
    }

    /// An admitted socket joins its room; `headers` are its request's, when already built
    /// from `a` (a new socket's room keeps them for `Room::upgrade_headers`).
    async fn open(&mut self, mut a: Admit, key: RoomKey, headers: Option<http::HeaderMap>) {
        let (request_id, socket) = (a.request_id, SocketId(a.socket));
        if let Err(refusal) = self.one_room_per_socket(&a).await {
            return self.send(refused(request_id, socket, refusal)).await;
        }
        let key = self.host.rooms.shared_key(key);
        let room = SocketRoom {
            key: key.clone(),
            mailbox: None,
        };
        self.remember(a.socket, room);
        let event = RoomEvent::Open(Box::new(OpenRequest {
            peer: self.peer(a.socket),
            names: ConnNames::new(&a.uri, &a.conn_id),
            headers: (a.resume.is_none()).then(|| {
                Arc::new(headers.unwrap_or_else(|| header_map(std::mem::take(&mut a.headers))))
            }),
            request_id,
            origin: a.origin,
            resume: a.resume,
            trace_parent: gateway_bounds::trace_parent(a.trace_parent),
        }));
        if let Err(e) = self.host.dispatch(&key, event).await {
            self.forget(a.socket);
            let refusal = Refusal::new(404, e.to_string());
            self.send(refused(request_id, socket, refusal)).await;
        }
    }

    async fn frame(&mut self, f: Frame) {
        let peer = self.peer(f.socket);
        let Some(room) = self.sockets.get_mut(&f.socket) else {
            return;
        };
        if f.payload.len() > self.host.config.max_frame_bytes {
            // No gateway forwards this: treat it as the client's message being too big.
            let key = room.key.clone();
            return self.too_big(f.socket, key).await;
        }
        let msg = if f.binary {
            Message::binary(f.payload)
        } else {
            match Message::text_from_bytes(f.payload) {
                Some(m) => m,
                None => return, // the gateway already validated UTF-8
            }
        };
        let mut event = RoomEvent::Frame {
            peer,
            msg,
            seq: f.seq,
            trace_parent: gateway_bounds::trace_parent(f.trace_parent),
        };
        if let Some(mailbox) = &room.mailbox {
            match mailbox.send(event).await {
                Ok(()) => return,
                // That actor is gone (the room retired, or moved): the key finds its
                // successor, if the room is still here.
                Err(back) => event = back,
            }
        }
        room.mailbox = self.host.dispatch(&room.key, event).await.ok();
    }

    /// Closes `socket` with 1009 and lets its room see it leave.
    async fn too_big(&mut self, socket: u64, key: Arc<RoomKey>) {
        tracing::warn!(gateway = ?self.gateway, socket, "a gateway forwarded a frame over max_frame_bytes");
        self.forget(socket);
        self.send(close_socket(
            SocketId(socket),
            close::MESSAGE_TOO_BIG,
            "Message too big",
        ))
        .await;
        let event = RoomEvent::Closed {
            peer: self.peer(socket),
            code: close::MESSAGE_TOO_BIG,
            reason: String::new(),
            error: Some("message too big".into()),
            link_lost: false,
        };
        let _ = self.host.dispatch(&key, event).await;
    }

    /// The socket moved to another node: the gateway moved it on a ring change, or this
    /// node's room told the gateway it moved (`Moved`) and the gateway says it is done with
    /// it here.
    async fn detach(&mut self, d: Detach) {
        if !self.leave_room(d.socket).await {
            // Not in a room yet: if its check is still running, it is not coming.
            self.checking.remove(&d.socket);
        }
    }

    /// Forgets `socket` and detaches it (no `on_close`) from its room, if that room is
    /// still live here: only a live room can hold it, and starting one just to detach
    /// would claim a room this node may not own. False when the socket was in no room.
    async fn leave_room(&mut self, socket: u64) -> bool {
        let Some(room) = self.forget(socket) else {
            return false;
        };
        if let Some(tx) = self.host.rooms.live_mailbox(&room.key) {
            let peer = self.peer(socket);
            let _ = tx.send(RoomEvent::Detach { peer }).await;
        }
        true
    }

    async fn closed(&mut self, c: Closed) {
        let Some(room) = self.forget(c.socket) else {
            // Not in a room yet: if its check is still running, it is not coming.
            self.checking.remove(&c.socket);
            return;
        };
        let event = RoomEvent::Closed {
            peer: self.peer(c.socket),
            code: gateway_bounds::close_code(c.code),
            reason: gateway_bounds::close_reason(c.reason),
            error: (!c.error.is_empty()).then(|| gateway_bounds::close_error(c.error)),
            link_lost: false,
        };
        let _ = self.host.dispatch(&room.key, event).await;
    }

    /// Sends the reply `answer` makes, off the link's loop: it may wait on storage or on a
    /// room.
    fn reply_later(&self, answer: impl Future<Output = node_event::Event> + Send + 'static) {
        let links = self.host.links.clone();
        let gateway = self.gateway;
        tokio::spawn(async move {
            let event = NodeEvent {
                event: Some(answer.await),
            };
            links.send(gateway, event).await;
        });
    }

    /// The room's home region, fixed now if the room never had one.
    fn home(&self, h: HomeRequest) {
        let host = self.host.clone();
        self.reply_later(async move {
            let (region, error) = match room_key(h.room.as_ref()) {
                Err(_) => (String::new(), "invalid room".to_string()),
                Ok(_) if !host.cluster.knows_region(&h.proposed) => {
                    (String::new(), "unknown region".to_string())
                }
                Ok(key) => match host.store.home_region(&key, &h.proposed).await {
                    Ok(region) => (region, String::new()),
                    Err(e) => (String::new(), e.to_string()),
                },
            };
            node_event::Event::HomeReply(HomeReply {
                request_id: h.request_id,
                region,
                error,
            })
        });
    }

    fn room_info(&self, q: RoomInfoRequest) {
        let host = self.host.clone();
        self.reply_later(async move {
            let json = match q.action() {
                RoomAdmin::Info => room_info(&host, q.room.as_ref()).await,
                RoomAdmin::ListParty => list_party(&host, &q).await,
                RoomAdmin::Delete => delete_room(&host, q.room.as_ref()).await,
            }
            .to_string();
            node_event::Event::RoomInfoReply(RoomInfoReply {
                request_id: q.request_id,
                json,
            })
        });
    }

    fn http_request(&mut self, r: HttpRequest) {
        while self.requests.try_join_next().is_some() {}
        let (host, links, gateway) = (self.host.clone(), self.host.links.clone(), self.gateway);
        self.requests.spawn(async move {
            let request_id = r.request_id;
            let reply = http_reply(request_id, http_request(&host, r).await);
            let event = NodeEvent {
                event: Some(node_event::Event::HttpReply(reply)),
            };
            links.send(gateway, event).await;
        });
    }

    /// The link is gone. If the gateway lives, it re-attaches its sockets (here or on
    /// another node) over a new link; whatever has not come back after a grace period has
    /// left with the gateway.
    async fn lost(mut self) {
        self.requests.abort_all();
        self.host.links.remove(self.gateway);
        self.host.link_lost(self.gateway);
        if self.sockets.is_empty() {
            return;
        }
        tokio::time::sleep(LINK_LOSS_GRACE).await;
        for (socket, SocketRoom { key, .. }) in &self.sockets {
            let event = RoomEvent::Closed {
                peer: self.peer(*socket),
                code: close::ABNORMAL,
                reason: String::new(),
                error: Some("gateway link lost".into()),
                link_lost: true,
            };
            let _ = self.host.dispatch(key, event).await;
        }
    }
}

impl Drop for GatewayLink {
    fn drop(&mut self) {
        self.sockets_gauge.decrement(self.sockets.len() as f64);
    }
}
