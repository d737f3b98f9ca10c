//! A node: the room host plus the relay links to gateways.

use crate::alarms;
use crate::host::{GatewayId, HostInner};
use crate::party::{ConnectRequest, Message, PartyRegistry};
use crate::room::{OpenRequest, Peer, RoomEvent};
use crate::storage::Store;
use crate::NodeConfig;
use bytes::Bytes;
use conclave_proto::wire::{gateway_event, node_event, AdmitReply, Header, HttpReply, NodeEvent};
use conclave_proto::{ConnId, NodeSide, Refusal, RoomKey, SocketId};
use std::collections::HashMap;
use std::sync::Arc;

/// Hosts rooms. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    host: Arc<HostInner>,
}

impl Node {
    /// Starts a node over `store` (and its alarm scheduler).
    pub fn start(config: NodeConfig, parties: PartyRegistry, store: Arc<dyn Store>) -> Self {
        let host = HostInner::new(config, parties, store);
        tokio::spawn(alarms::run(Arc::downgrade(&host)));
        Self { host }
    }

    /// Serves one gateway over a relay link until the link closes.
    pub fn attach_gateway(&self, side: NodeSide) {
        let gateway = self.host.links.add(side.to_gateway.clone());
        tokio::spawn(serve_link(self.host.clone(), gateway, side));
    }

    /// Places rooms on `ring` from now on (a new version from placement).
    pub fn set_ring(&self, ring: conclave_proto::Ring) {
        self.host.set_ring(ring);
    }

    /// Fences (false) or unfences (true) the node; see the liveness heartbeat.
    pub fn set_serving(&self, serving: bool) {
        self.host.set_serving(serving);
    }

    /// This process's incarnation (fresh on every start).
    pub fn incarnation(&self) -> u64 {
        self.host.incarnation
    }

    /// Rooms this node holds (active or hibernated).
    pub fn room_count(&self) -> usize {
        self.host.room_count()
    }

    /// The party names this node serves.
    pub fn party_names(&self) -> Vec<String> {
        self.host.parties.names()
    }
}

fn header_map(headers: &[Header]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for h in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(&h.value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// Answers an admission with an HTTP status instead of an upgrade.
async fn refuse(host: &HostInner, gateway: GatewayId, a: &conclave_proto::wire::Admit, r: Refusal) {
    let event = AdmitReply {
        request_id: a.request_id,
        status: r.status.into(),
        body: r.body,
        socket: a.socket,
        tags: Vec::new(),
        ring_version: r.ring_version.0,
    };
    reply(host, gateway, node_event::Event::AdmitReply(event)).await;
}

async fn reply(host: &HostInner, gateway: GatewayId, event: node_event::Event) {
    if let Some(tx) = host.links.get(gateway) {
        let _ = tx.send(NodeEvent { event: Some(event) }).await;
    }
}

async fn serve_link(host: Arc<HostInner>, gateway: GatewayId, mut side: NodeSide) {
    // Which room each socket of this gateway is in: frames carry only the socket.
    let mut sockets: HashMap<u64, RoomKey> = HashMap::new();
    while let Some(ev) = side.from_gateway.recv().await {
        let Some(ev) = ev.event else { continue };
        match ev {
            gateway_event::Event::Admit(a) => {
                let key = match a.room.as_ref().map(RoomKey::from_wire) {
                    Some(Ok(key)) => key,
                    Some(Err(e)) => {
                        refuse(&host, gateway, &a, Refusal::new(400, e.to_string())).await;
                        continue;
                    }
                    None => {
                        refuse(&host, gateway, &a, Refusal::new(400, "missing room")).await;
                        continue;
                    }
                };
                let headers = header_map(&a.headers);
                let req = ConnectRequest {
                    party: key.party.as_str(),
                    room: key.room.as_str(),
                    conn_id: &a.conn_id,
                    uri: &a.uri,
                    headers: &headers,
                };
                let hook = a.resume.is_none().then_some(&req);
                if let Err(refusal) = host.admit(&key, hook) {
                    refuse(&host, gateway, &a, refusal).await;
                    continue;
                }
                // The room answers the admission itself, once the socket has joined.
                sockets.insert(a.socket, key.clone());
                let event = RoomEvent::Open(Box::new(OpenRequest {
                    peer: Peer {
                        gateway,
                        socket: SocketId(a.socket),
                    },
                    conn_id: ConnId::new(&a.conn_id),
                    uri: Arc::from(a.uri.as_str()),
                    request_id: a.request_id,
                    origin: a.origin,
                    resume: a.resume.clone(),
                }));
                if let Err(e) = host.dispatch(&key, event).await {
                    sockets.remove(&a.socket);
                    refuse(&host, gateway, &a, Refusal::new(404, e.to_string())).await;
                }
            }
            gateway_event::Event::Frame(f) => {
                let Some(key) = sockets.get(&f.socket) else {
                    continue;
                };
                let msg = if f.binary {
                    Message::binary(f.payload)
                } else {
                    match Message::text_from_bytes(f.payload) {
                        Some(m) => m,
                        None => continue, // the gateway already validated UTF-8
                    }
                };
                let _ = host
                    .dispatch(
                        key,
                        RoomEvent::Frame {
                            peer: Peer {
                                gateway,
                                socket: SocketId(f.socket),
                            },
                            msg,
                            seq: f.seq,
                        },
                    )
                    .await;
            }
            gateway_event::Event::Detach(d) => {
                let Some(key) = sockets.remove(&d.socket) else {
                    continue;
                };
                let peer = Peer {
                    gateway,
                    socket: SocketId(d.socket),
                };
                let _ = host.dispatch(&key, RoomEvent::Detach { peer }).await;
            }
            gateway_event::Event::Closed(c) => {
                let Some(key) = sockets.remove(&c.socket) else {
                    continue;
                };
                let error = (!c.error.is_empty()).then_some(c.error);
                let event = RoomEvent::Closed {
                    peer: Peer {
                        gateway,
                        socket: SocketId(c.socket),
                    },
                    code: c.code as u16,
                    reason: c.reason,
                    error,
                };
                let _ = host.dispatch(&key, event).await;
            }
            gateway_event::Event::Home(h) => {
                let host = host.clone();
                tokio::spawn(async move {
                    let (region, error) = match h.room.as_ref().map(RoomKey::from_wire) {
                        Some(Ok(key)) => match host.store.home_region(&key, &h.proposed).await {
                            Ok(region) => (region, String::new()),
                            Err(e) => (String::new(), e.to_string()),
                        },
                        _ => (String::new(), "invalid room".to_string()),
                    };
                    let event = node_event::Event::HomeReply(conclave_proto::wire::HomeReply {
                        request_id: h.request_id,
                        region,
                        error,
                    });
                    reply(&host, gateway, event).await;
                });
            }
            gateway_event::Event::RoomInfo(q) => {
                let host = host.clone();
                tokio::spawn(async move {
                    let json = room_info(&host, q.room.as_ref()).await.to_string();
                    let event =
                        node_event::Event::RoomInfoReply(conclave_proto::wire::RoomInfoReply {
                            request_id: q.request_id,
                            json,
                        });
                    reply(&host, gateway, event).await;
                });
            }
            gateway_event::Event::HttpRequest(r) => {
                let host = host.clone();
                tokio::spawn(async move {
                    let request_id = r.request_id;
                    let reply_event = match http_request(&host, r).await {
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
                    };
                    reply(&host, gateway, node_event::Event::HttpReply(reply_event)).await;
                });
            }
        }
    }
    // The link is gone. If the gateway lives, it re-attaches its sockets (here or on
    // another node) over a new link; whatever has not come back after a grace period has
    // left with the gateway.
    host.links.remove(gateway);
    if sockets.is_empty() {
        return;
    }
    tokio::time::sleep(LINK_LOSS_GRACE).await;
    for (socket, key) in sockets {
        let event = RoomEvent::Closed {
            peer: Peer {
                gateway,
                socket: SocketId(socket),
            },
            code: 1006,
            reason: String::new(),
            error: Some("gateway link lost".into()),
        };
        let _ = host.dispatch(&key, event).await;
    }
}

/// How long the connections of a lost gateway link stay in their rooms, waiting for the
/// gateway to re-attach them, before the rooms see them close.
const LINK_LOSS_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn http_request(
    host: &Arc<HostInner>,
    r: conclave_proto::wire::HttpRequest,
) -> Result<crate::Response, Refusal> {
    let key = r
        .room
        .as_ref()
        .map(RoomKey::from_wire)
        .ok_or_else(|| Refusal::new(400, "missing room"))?
        .map_err(|e| Refusal::new(400, e.to_string()))?;
    host.check_placed_here(&key)?;
    let mut builder = http::Request::builder()
        .method(r.method.as_str())
        .uri(r.uri.as_str());
    if let Some(h) = builder.headers_mut() {
        *h = header_map(&r.headers);
    }
    let req = builder
        .body(r.body)
        .map_err(|e| Refusal::new(400, e.to_string()))?;
    host.request(key, req).await.map_err(|e| match e {
        crate::room::FetchError::UnknownParty(p) => {
            Refusal::new(404, format!("Party {p} not found"))
        }
        crate::room::FetchError::Timeout => Refusal::new(504, "The room did not answer in time"),
        other => Refusal::new(503, other.to_string()),
    })
}

/// What this node knows about a room, for the admin endpoint.
async fn room_info(
    host: &HostInner,
    room: Option<&conclave_proto::wire::RoomRef>,
) -> serde_json::Value {
    let key = match room.map(RoomKey::from_wire) {
        Some(Ok(k)) => k,
        Some(Err(e)) => return serde_json::json!({"error": e.to_string()}),
        None => return serde_json::json!({"error": "missing room"}),
    };
    let owner = match host.store.owner(&key).await {
        Ok(o) => serde_json::to_value(o).unwrap_or_default(),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    serde_json::json!({
        "node": host.config.node_id,
        "placed_here": host.places_here(&key),
        "live_here": host.is_live(&key),
        "connections_here": host.conn_count(&key).load(std::sync::atomic::Ordering::Relaxed),
        "owner": owner,
    })
}
