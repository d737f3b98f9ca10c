//! HTTP entry point: routes room URLs to WebSocket upgrades or HTTP forwarding.

use crate::moves::{self, await_newer_ring, join_room, resolve_home, MoveRequest, Mover};
use crate::nodes::{NodeConnector, NodeSet};
use crate::route::{parse_room_path, RouteError};
use crate::socket::{self, PendingSocket};
use crate::GatewayConfig;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use conclave_proto::query_param;
use conclave_proto::wire::{gateway_event, node_event, Header, HttpRequest};
use conclave_proto::{GatewaySide, Ring, Rings, RoomKey};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{debug, warn};

/// The WebSocket/HTTP edge. Each room is served by the node that owns it on the gateway's
/// ring; a socket stays on that node's relay link for its lifetime.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Arc<GatewayConfig>,
    pub(crate) nodes: NodeSet,
}

impl Gateway {
    /// A gateway in front of one node in the same process (`conclave dev`).
    pub fn new(config: GatewayConfig, node: GatewaySide) -> Self {
        Self::build(config, |mover| NodeSet::single(node, mover))
    }

    /// A gateway in front of the nodes of `ring` (in the gateway's region until placement
    /// says otherwise), reached through `connector`.
    pub fn with_nodes(config: GatewayConfig, ring: Ring, connector: impl NodeConnector) -> Self {
        let region = config.region.clone();
        let rings = Rings::new(
            ring.version(),
            ring.nodes().iter().map(|n| (n.clone(), region.clone())),
        );
        Self::build(config, |mover| {
            NodeSet::new(rings, region, Box::new(connector), mover)
        })
    }

    fn build(config: GatewayConfig, nodes: impl FnOnce(Mover) -> NodeSet) -> Self {
        let (mover, moves) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            config: Arc::new(config),
            nodes: nodes(mover),
        });
        tokio::spawn(moves::run(Arc::downgrade(&inner), moves));
        Self { inner }
    }

    /// Routes by a new ring version from placement (node id → relay URL).
    pub fn set_ring(&self, view: &conclave_proto::RingView) {
        self.inner
            .nodes
            .set_ring(view.rings(), view.members.clone().into_iter().collect());
    }

    /// Closes every client socket with 1001 (going away) and waits up to `grace` for them
    /// to finish closing, so clients reconnect at once instead of timing out.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        let sessions = self.inner.nodes.all_sessions();
        if sessions.is_empty() {
            return;
        }
        for s in &sessions {
            s.out.close.trigger(1001, "Server shutting down");
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.inner.nodes.all_sessions().is_empty() && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Serves room URLs; everything else is 404.
    pub fn router(&self) -> Router {
        crate::admin::router()
            .fallback(handle)
            .with_state(self.inner.clone())
    }
}

/// Admission attempts for a new socket when nodes answer that the room is elsewhere.
const ADMIT_ATTEMPTS: usize = 3;
/// How long an admission waits for a newer ring a node told it about.
const RING_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn plain(status: u16, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn wire_headers(headers: &HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .map(|(n, v)| Header {
            name: n.as_str().to_string(),
            value: Bytes::copy_from_slice(v.as_bytes()),
        })
        .collect()
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The URL the room sees, with PartyKit's `http://` scheme.
fn room_uri(req: &Request) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("http://{host}{pq}")
}

async fn handle(State(gw): State<Arc<Inner>>, req: Request) -> Response {
    let key = match parse_room_path(req.uri().path()) {
        Ok(k) => k,
        Err(RouteError::NotARoom) => return plain(404, "Not found: use /parties/:party/:room"),
        Err(RouteError::BadName(e)) => return plain(400, format!("Invalid room URL: {e}")),
    };
    if let Some(auth) = gw.config.auth.get(key.party.as_str()) {
        let token = req.uri().query().and_then(|q| query_param(q, "token"));
        let token = token.as_deref().or_else(|| bearer(req.headers()));
        if let Err(e) = auth.check(token, key.party.as_str(), key.room.as_str()) {
            debug!(room = %key, error = %e, "rejected by auth");
            return plain(e.status(), e.to_string());
        }
    }
    if is_upgrade(req.headers()) {
        upgrade(gw, key, req).await
    } else {
        forward_http(gw, key, req).await
    }
}

async fn upgrade(gw: Arc<Inner>, key: RoomKey, mut req: Request) -> Response {
    if req.method() != http::Method::GET {
        return plain(405, "WebSocket upgrades must use GET");
    }
    let Some(ws_key) = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return plain(400, "Missing Sec-WebSocket-Key");
    };
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return plain(426, "Unsupported WebSocket version (need 13)");
    }
    let conn_id = match req
        .uri()
        .query()
        .and_then(|q| query_param(q, "_pk"))
        .filter(|s| !s.is_empty())
    {
        Some(pk) if pk.len() > gw.config.max_conn_id_bytes => {
            return plain(
                400,
                format!("_pk is longer than {} bytes", gw.config.max_conn_id_bytes),
            );
        }
        Some(pk) => pk,
        None => uuid::Uuid::new_v4().to_string(),
    };
    let hint = req.uri().query().and_then(|q| query_param(q, "_region"));
    if let Err(r) = resolve_home(&gw, &key, hint.as_deref()).await {
        return plain(r.status, r.body);
    }
    let pending = PendingSocket::new(
        &gw.config,
        gw.nodes.next_socket_id(),
        key,
        conn_id,
        room_uri(&req),
    );
    let session = pending.session.clone();
    let headers = wire_headers(req.headers());
    // The node answers once the socket is in the room (on_connect has run) or refuses it;
    // a node with a newer ring that places the room elsewhere sends us there.
    let mut attempts = 0;
    let link = loop {
        match join_room(&gw, &session, headers.clone(), None).await {
            Ok(link) => break link,
            Err(r) => {
                attempts += 1;
                if attempts < ADMIT_ATTEMPTS && await_newer_ring(&gw, &r, RING_WAIT).await {
                    continue;
                }
                let status = if r.status == 421 { 503 } else { r.status };
                return plain(status, r.body);
            }
        }
    };
    // Echo the first offered subprotocol (PartyKit does not, which breaks `ws` clients).
    let protocol = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()))
        .and_then(|p| HeaderValue::from_str(p).ok());

    gw.nodes.add_session(session.clone());
    if !session.attach(link.clone()) {
        // The node died right after admitting the socket: it moves on like the others.
        let _ = gw.nodes.mover.send(MoveRequest {
            session: session.clone(),
            min_ring: 0,
        });
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => socket::run(gw, upgraded, pending).await,
            Err(e) => {
                debug!(error = %e, "upgrade failed");
                if let Some(link) = session.end() {
                    session.tell_closed(&link, 1006, "", "upgrade failed").await;
                }
                gw.nodes.remove_session(session.id);
            }
        }
    });

    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&ws_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}

async fn forward_http(gw: Arc<Inner>, key: RoomKey, req: Request) -> Response {
    let uri = room_uri(&req);
    let req_hint = req.uri().query().and_then(|q| query_param(q, "_region"));
    let method = req.method().to_string();
    let headers = wire_headers(req.headers());
    let body = match axum::body::to_bytes(req.into_body(), gw.config.max_http_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return plain(
                413,
                format!("Request body over {} bytes", gw.config.max_http_body_bytes),
            )
        }
    };
    let hint = req_hint;
    if let Err(r) = resolve_home(&gw, &key, hint.as_deref()).await {
        return plain(r.status, r.body);
    }
    // A node whose newer ring places the room elsewhere answers 421: wait for that ring.
    let mut attempts = 0;
    let r = loop {
        let Ok(link) = gw.nodes.link_for(&key).await else {
            return plain(503, "The room's node is unavailable");
        };
        let request_id = link.next_id();
        let request = HttpRequest {
            request_id,
            room: Some(key.to_wire()),
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
            body: body.clone(),
        };
        let reply = tokio::time::timeout(
            gw.config.node_timeout,
            link.call(request_id, gateway_event::Event::HttpRequest(request)),
        )
        .await;
        match reply {
            Ok(Ok(node_event::Event::HttpReply(r))) if r.status == 421 => {
                attempts += 1;
                if attempts >= ADMIT_ATTEMPTS {
                    return plain(503, "The room is moving between nodes; retry");
                }
                let seen = gw.nodes.ring_version();
                gw.nodes
                    .wait_for_ring(seen + 1, tokio::time::Instant::now() + RING_WAIT)
                    .await;
            }
            Ok(Ok(node_event::Event::HttpReply(r))) => break r,
            Ok(_) => return plain(503, "The room's node is unavailable"),
            Err(_) => {
                warn!(room = %key, "HTTP request timed out at the node");
                return plain(504, "The room did not answer in time");
            }
        }
    };
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for h in r.headers {
        let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(&h.value),
        ) else {
            continue;
        };
        if n == header::CONTENT_LENGTH || n == header::TRANSFER_ENCODING || n == header::CONNECTION
        {
            continue;
        }
        resp.headers_mut().append(n, v);
    }
    resp
}
