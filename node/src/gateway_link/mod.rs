//! Serving one gateway's relay link: the gateway's events become room events, and its
//! requests (admission, home region, room info, HTTP) get their replies.

use crate::gateway_bounds::{self, check_admit, check_headers};
use crate::host::Host;
use crate::links::GatewayId;
use crate::mailbox::{refused, OpenRequest, RoomEvent};
use crate::message::{Message, Response};
use crate::party::{ConnectCheck, ConnectRequest};
use crate::room::{close_socket, ConnNames, FetchError, Peer};
use bytes::Bytes;
use conclave_proto::close;
use conclave_proto::wire::{
    gateway_event, node_event, Admit, Closed, Detach, Frame, Header, HomeReply, HomeRequest,
    HttpReply, HttpRequest, NodeEvent, Received, RoomAdmin, RoomInfoReply, RoomInfoRequest,
    RoomRef,
};
use conclave_proto::{NodeSide, Refusal, RoomKey, SocketId, SocketMap};
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;

/// How long the connections of a lost gateway link stay in their rooms, waiting for the
/// gateway to re-attach them, before the rooms see them close.
const LINK_LOSS_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct GatewayLink {
    host: Arc<Host>,
    gateway: GatewayId,
    /// Which room each socket of this gateway is in: frames carry only the socket.
    sockets: SocketMap<Arc<RoomKey>>,
    /// Admissions whose party's asynchronous check passed, to go on with in order with
    /// the link's other events.
    checked: mpsc::UnboundedSender<(Admit, RoomKey)>,
}

impl GatewayLink {
    /// Serves the gateway attached as `gateway` until its link closes.
    pub async fn serve(host: Arc<Host>, gateway: GatewayId, mut side: NodeSide) {
        let (checked, mut checked_rx) = mpsc::unbounded_channel();
        let mut link = Self {
            host,
            gateway,
            sockets: SocketMap::default(),
            checked,
        };
        loop {
            let ev = tokio::select! {
                ev = side.from_gateway.recv() => ev,
                Some((a, key)) = checked_rx.recv() => {
                    link.open(a, key, None).await;
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
        let Some(old) = self.sockets.get(&a.socket).cloned() else {
            return Ok(());
        };
        if a.resume.is_none() {
            return Err(Refusal::new(409, "The socket is already in a room"));
        }
        self.sockets.remove(&a.socket);
        // Only a room still live here can hold it: starting one just to detach would
        // claim a room this node may not own.
        if let Some(tx) = self.host.rooms.live_mailbox(&old) {
            let peer = self.peer(a.socket);
            let _ = tx.send(RoomEvent::Detach { peer }).await;
        }
        Ok(())
    }

    /// Runs the party's asynchronous check off the link; the admission goes on (with the
    /// request as the check rewrote it) or is refused with the check's response.
    fn check_then_open(
        &self,
        mut a: Admit,
        key: RoomKey,
        pending: BoxFuture<'static, Result<ConnectCheck, Response>>,
    ) {
        let (checked, host, gateway) = (self.checked.clone(), self.host.clone(), self.gateway);
        tokio::spawn(async move {
            match pending.await {
                Ok(req) => {
                    a.uri = req.uri;
                    a.headers = wire_headers(&req.headers);
                    let _ = checked.send((a, key));
                }
                Err(resp) => {
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

    /// An admitted socket joins its room; `headers` are its request's, when already built
    /// from `a` (a new socket's room keeps them for `Room::upgrade_headers`).
    async fn open(&mut self, mut a: Admit, key: RoomKey, headers: Option<http::HeaderMap>) {
        let (request_id, socket) = (a.request_id, SocketId(a.socket));
        if let Err(refusal) = self.one_room_per_socket(&a).await {
            return self.send(refused(request_id, socket, refusal)).await;
        }
        let key = self.host.rooms.shared_key(key);
        self.sockets.insert(a.socket, key.clone());
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
            self.sockets.remove(&a.socket);
            let refusal = Refusal::new(404, e.to_string());
            self.send(refused(request_id, socket, refusal)).await;
        }
    }

    async fn frame(&mut self, f: Frame) {
        let Some(key) = self.sockets.get(&f.socket) else {
            return;
        };
        if f.payload.len() > self.host.config.max_frame_bytes {
            // No gateway forwards this: treat it as the client's message being too big.
            let key = key.clone();
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
        let peer = self.peer(f.socket);
        let event = RoomEvent::Frame {
            peer,
            msg,
            seq: f.seq,
            trace_parent: gateway_bounds::trace_parent(f.trace_parent),
        };
        let _ = self.host.dispatch(key, event).await;
    }

    /// Closes `socket` with 1009 and lets its room see it leave.
    async fn too_big(&mut self, socket: u64, key: Arc<RoomKey>) {
        tracing::warn!(gateway = ?self.gateway, socket, "a gateway forwarded a frame over max_frame_bytes");
        self.sockets.remove(&socket);
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
        };
        let _ = self.host.dispatch(&key, event).await;
    }

    /// The socket moved to another node.
    async fn detach(&mut self, d: Detach) {
        let Some(key) = self.sockets.remove(&d.socket) else {
            return;
        };
        let peer = self.peer(d.socket);
        let _ = self.host.dispatch(&key, RoomEvent::Detach { peer }).await;
    }

    async fn closed(&mut self, c: Closed) {
        let Some(key) = self.sockets.remove(&c.socket) else {
            return;
        };
        let event = RoomEvent::Closed {
            peer: self.peer(c.socket),
            code: gateway_bounds::close_code(c.code),
            reason: gateway_bounds::close_reason(c.reason),
            error: (!c.error.is_empty()).then(|| gateway_bounds::close_error(c.error)),
        };
        let _ = self.host.dispatch(&key, event).await;
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

    fn http_request(&self, r: HttpRequest) {
        let host = self.host.clone();
        self.reply_later(async move {
            let request_id = r.request_id;
            node_event::Event::HttpReply(http_reply(request_id, http_request(&host, r).await))
        });
    }

    /// The link is gone. If the gateway lives, it re-attaches its sockets (here or on
    /// another node) over a new link; whatever has not come back after a grace period has
    /// left with the gateway.
    async fn lost(self) {
        self.host.links.remove(self.gateway);
        if self.sockets.is_empty() {
            return;
        }
        tokio::time::sleep(LINK_LOSS_GRACE).await;
        for (socket, key) in &self.sockets {
            let event = RoomEvent::Closed {
                peer: self.peer(*socket),
                code: close::ABNORMAL,
                reason: String::new(),
                error: Some("gateway link lost".into()),
            };
            let _ = self.host.dispatch(key, event).await;
        }
    }
}

/// The room a request names; 400 if it names none or an invalid one.
fn room_key(room: Option<&RoomRef>) -> Result<RoomKey, Refusal> {
    room.map(RoomKey::from_wire)
        .ok_or_else(|| Refusal::new(400, "missing room"))?
        .map_err(|e| Refusal::new(400, e.to_string()))
}

fn wire_headers(headers: &http::HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .map(|(k, v)| Header {
            name: k.as_str().to_string(),
            value: v.as_bytes().to_vec().into(),
        })
        .collect()
}

/// The request headers a gateway sent, as a map. A value that is the whole of its own
/// allocation (the in-process link's) is kept as it is; any other (a slice of a decoded
/// relay batch) is copied, so that headers a party keeps never keep a batch's buffer.
pub(crate) fn header_map(headers: Vec<Header>) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for h in headers {
        let value = match h.value.try_into_mut() {
            Ok(own) if own.capacity() == own.len() => {
                http::HeaderValue::from_maybe_shared(own.freeze())
            }
            Ok(shared) => http::HeaderValue::from_bytes(&shared),
            Err(shared) => http::HeaderValue::from_bytes(&shared),
        };
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(h.name.as_bytes()), value) {
            // Bounded before (check_headers); `try_append` cannot panic past capacity.
            let _ = map.try_append(n, v);
        }
    }
    map
}

/// An HTTP request to a room on this node, answered by the room's `on_request`.
async fn http_request(host: &Arc<Host>, mut r: HttpRequest) -> Result<Response, Refusal> {
    let key = room_key(r.room.as_ref())?;
    check_headers(&r.headers)?;
    if r.body.len() > host.config.max_http_body_bytes {
        return Err(Refusal::new(413, "Request body too large"));
    }
    host.cluster.check_placed_here(&key)?;
    let mut builder = http::Request::builder()
        .method(r.method.as_str())
        .uri(r.uri.as_str());
    if let Some(h) = builder.headers_mut() {
        *h = header_map(std::mem::take(&mut r.headers));
    }
    let mut req = builder
        .body(r.body)
        .map_err(|e| Refusal::new(400, e.to_string()))?;
    if let Some(check) = host.check_request(&key, req.clone()) {
        match check.await {
            Ok(checked) => req = checked,
            Err(answer) => return Ok(answer),
        }
    }
    host.request(key, req).await.map_err(|e| match e {
        FetchError::UnknownParty(p) => Refusal::new(404, format!("Party {p} not found")),
        FetchError::Timeout => Refusal::new(504, "The room did not answer in time"),
        other => Refusal::new(503, other.to_string()),
    })
}

fn http_reply(request_id: u64, result: Result<Response, Refusal>) -> HttpReply {
    match result {
        Ok(resp) => HttpReply {
            request_id,
            status: resp.status().as_u16().into(),
            headers: resp
                .headers()
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: Bytes::copy_from_slice(v.as_bytes()),
                })
                .collect(),
            body: resp.into_body(),
            ring_version: 0,
        },
        Err(r) => HttpReply {
            request_id,
            status: r.status.into(),
            headers: Vec::new(),
            body: Bytes::from(r.body),
            ring_version: r.ring_version.0,
        },
    }
}

/// What this node knows about a room, for the admin endpoint.
async fn room_info(host: &Host, room: Option<&RoomRef>) -> serde_json::Value {
    let key = match room_key(room) {
        Ok(k) => k,
        Err(refusal) => return serde_json::json!({"error": refusal.body}),
    };
    let owner = match host.store.owner(&key).await {
        Ok(o) => serde_json::to_value(o).unwrap_or_default(),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    let storage = match host.store.usage(&key).await {
        Ok(u) => serde_json::to_value(u).unwrap_or_default(),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    serde_json::json!({
        "node": host.config.node_id,
        "placed_here": host.cluster.places_here(&key),
        "live_here": host.rooms.is_live(&key),
        "connections_here": host.rooms.conn_count(&key),
        "owner": owner,
        "storage": storage,
    })
}

/// Rooms listed per page when the request names no limit, and at most.
const LIST_PAGE: usize = 100;
const LIST_PAGE_MAX: usize = 1000;

/// The rooms of the request's party that store keys, a page at a time: `next` is the
/// `after` of the next page.
async fn list_party(host: &Host, q: &RoomInfoRequest) -> serde_json::Value {
    let Some(party) = q.room.as_ref().map(|r| r.party.as_str()) else {
        return serde_json::json!({"error": "missing party"});
    };
    let limit = match q.limit as usize {
        0 => LIST_PAGE,
        n => n.min(LIST_PAGE_MAX),
    };
    let after = (!q.after.is_empty()).then_some(q.after.as_str());
    match host.store.party_rooms(party, after, limit).await {
        Ok(rooms) => {
            let next = (rooms.len() == limit).then(|| rooms.last().map(|(r, _)| r.clone()));
            let rooms: Vec<_> = rooms
                .into_iter()
                .map(
                    |(room, u)| serde_json::json!({"room": room, "bytes": u.bytes, "keys": u.keys}),
                )
                .collect();
            serde_json::json!({"party": party, "rooms": rooms, "next": next.flatten()})
        }
        Err(e) => serde_json::json!({"error": e.to_string()}),
    }
}

/// How long a deletion may wait for the room's actor.
const DELETE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Deletes the room through its actor (so it waits for the room's running step, and its
/// commit is fenced like the room's own).
async fn delete_room(host: &Arc<Host>, room: Option<&RoomRef>) -> serde_json::Value {
    let key = match room_key(room) {
        Ok(k) => k,
        Err(refusal) => return serde_json::json!({"error": refusal.body}),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if let Err(e) = host.dispatch(&key, RoomEvent::Delete { reply }).await {
        return serde_json::json!({"error": e.to_string()});
    }
    match tokio::time::timeout(DELETE_TIMEOUT, answer).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => serde_json::json!({"error": "the room left this node before deleting"}),
        Err(_) => serde_json::json!({"error": "the room did not answer within 10 s"}),
    }
}

#[cfg(test)]
mod tests {
    use super::header_map;
    use bytes::Bytes;
    use conclave_proto::wire::Header;

    fn header(name: &str, value: Bytes) -> Header {
        Header {
            name: name.to_string(),
            value,
        }
    }

    /// A value that is its own allocation is kept; a slice of a larger buffer is copied,
    /// even when nothing else holds that buffer any more, so a kept header never keeps a
    /// decoded relay batch alive.
    #[test]
    fn header_values_keep_their_own_bytes_and_copy_slices_of_batches() {
        let own = Bytes::from(b"text/plain".to_vec());
        let own_at = own.as_ptr();
        let batch = Bytes::from(vec![b'x'; 64 * 1024]);
        let slice = batch.slice(100..110);
        let slice_at = slice.as_ptr();
        drop(batch);
        let map = header_map(vec![header("accept", own), header("x-from-batch", slice)]);
        assert_eq!(map["accept"].as_bytes().as_ptr(), own_at);
        assert_eq!(map["accept"], "text/plain");
        assert_ne!(map["x-from-batch"].as_bytes().as_ptr(), slice_at);
        assert_eq!(map["x-from-batch"], "xxxxxxxxxx");
    }
}
