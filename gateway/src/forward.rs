//! Plain HTTP to a room: forwarded to the room's node, answered by its `on_request`; and
//! HTTP outside /parties/, for the main party's static `onFetch` on a node of this region.

use crate::addresses::{AddressRate, ClientAddress};
use crate::admission::{resolve_home, RingFollower};
use crate::http::{plain, refused, room_uri};
use crate::link::NodeLink;
use crate::state::GatewayState;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use conclave_proto::wire::{gateway_event, HttpReply, HttpRequest};
use conclave_proto::wire_headers;
use conclave_proto::{query_param, Refusal, RingVersion, RoomKey, MISPLACED};
use http::{header, HeaderValue, StatusCode};
use std::sync::Arc;
use tracing::warn;

pub(crate) async fn forward_http(gw: Arc<GatewayState>, key: RoomKey, req: Request) -> Response {
    forward(gw, Target::Room(key), req).await
}

/// A request outside /parties/: a node of the gateway's region (else of the first region
/// with nodes) answers it, without a room (the main party's `onFetch`, else 404). Paths
/// spread over the nodes by hash.
pub(crate) async fn forward_outside_rooms(gw: Arc<GatewayState>, req: Request) -> Response {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.uri().path().hash(&mut h);
    let spread = h.finish() % OUTSIDE_ROOMS_SPREAD;
    match RoomKey::new(OUTSIDE_ROOMS_PARTY, &spread.to_string()) {
        Ok(key) => forward(gw, Target::OutsideRooms(key), req).await,
        Err(e) => plain(500, e.to_string()),
    }
}

/// How many routing keys requests outside /parties/ spread over (so over the nodes).
const OUTSIDE_ROOMS_SPREAD: u64 = 64;

/// The party of those routing keys: a name no PartyKit project can give a party, so a node
/// that predates `outside_rooms` answers 404 (no such party) rather than serve a room.
const OUTSIDE_ROOMS_PARTY: &str = "(outside rooms)";

enum Target {
    Room(RoomKey),
    /// Routed as this key, which names no room.
    OutsideRooms(RoomKey),
}

async fn forward(gw: Arc<GatewayState>, target: Target, req: Request) -> Response {
    let (key, outside_rooms) = match target {
        Target::Room(key) => (key, false),
        Target::OutsideRooms(key) => (key, true),
    };
    let client = req.extensions().get::<ClientAddress>();
    let rate = client.map(|c| c.rate(req.headers()));
    if !rate.as_ref().is_none_or(AddressRate::try_take) {
        metrics::counter!("conclave_gateway_address_rate_limited_total").increment(1);
        return plain(429, "Too many requests from this address");
    }
    let hint = req.uri().query().and_then(|q| query_param(q, "_region"));
    let head = req.method() == http::Method::HEAD;
    let request = HttpRequest {
        request_id: 0,
        room: Some(key.to_wire()),
        method: req.method().to_string(),
        uri: room_uri(&req),
        headers: wire_headers(req.headers()),
        body: Default::default(),
        outside_rooms,
        from_room: false,
    };
    let limit = gw.config.max_http_body_bytes;
    let body_timeout = gw.config.http_body_timeout;
    let request = match tokio::time::timeout(
        body_timeout,
        axum::body::to_bytes(req.into_body(), limit),
    )
    .await
    {
        Ok(Ok(body)) => HttpRequest { body, ..request },
        Ok(Err(_)) => return plain(413, format!("Request body over {limit} bytes")),
        Err(_) => {
            let secs = body_timeout.as_secs_f64();
            return plain(408, format!("Request body not received within {secs} s"));
        }
    };
    if !outside_rooms {
        if let Err(r) = resolve_home(&gw, &key, hint.as_deref()).await {
            return refused(r);
        }
    }
    // A node whose newer ring places the room elsewhere answers 421: follow that ring.
    let mut follower = RingFollower::default();
    loop {
        match ask_room(&gw, &key, request.clone(), outside_rooms).await {
            Ok(reply) => return response(reply, head),
            Err(r) => {
                if let Err(r) = follower.retry(&gw, r).await {
                    return refused(r);
                }
            }
        }
    }
}

/// A node's request to a room it does not own: asked of the room's owner as a client's
/// would be, and answered over the node's link under the node's request id.
pub(crate) async fn for_node(gw: Arc<GatewayState>, link: Arc<NodeLink>, request: HttpRequest) {
    let request_id = request.request_id;
    let request = HttpRequest {
        from_room: true,
        outside_rooms: false,
        ..request
    };
    // As long as a client's request waits (the asking node waits as long).
    let timeout = gw.config.answer_timeout;
    let reply = match request.room.as_ref().map(RoomKey::from_wire) {
        Some(Ok(key)) => tokio::time::timeout(timeout, ask_owner(&gw, &key, request))
            .await
            .unwrap_or_else(|_| Err(Refusal::new(504, "The room did not answer in time"))),
        _ => Err(Refusal::new(400, "missing or invalid room")),
    };
    let reply = match reply {
        Ok(reply) => HttpReply {
            request_id,
            ..reply
        },
        Err(r) => HttpReply {
            request_id,
            status: r.status.into(),
            headers: Vec::new(),
            body: r.body.into(),
            ring_version: 0,
        },
    };
    link.send_or_drop(gateway_event::Event::RoomFetchReply(reply))
        .await;
}

/// The room's owner's answer, following newer rings, after finding the room's home.
async fn ask_owner(
    gw: &GatewayState,
    key: &RoomKey,
    request: HttpRequest,
) -> Result<HttpReply, Refusal> {
    resolve_home(gw, key, None).await?;
    let mut follower = RingFollower::default();
    loop {
        match ask_room(gw, key, request.clone(), false).await {
            Ok(reply) => return Ok(reply),
            Err(r) => follower.retry(gw, r).await?,
        }
    }
}

/// One attempt on the room's current owner; 421 comes back as a refusal.
async fn ask_room(
    gw: &GatewayState,
    key: &RoomKey,
    request: HttpRequest,
    outside_rooms: bool,
) -> Result<HttpReply, Refusal> {
    let link = if outside_rooms {
        let region = gw.routing.default_home();
        let node = gw
            .routing
            .owner_in(&region, key)
            .ok_or_else(Refusal::unavailable)?;
        gw.links.link_to(&node).await?
    } else {
        gw.link_for(key).await?
    };
    // A room's answer may take its handler's time; a request outside rooms is bounded
    // there (code outside rooms gets 8 s) and waits only the node's usual time.
    let timeout = if outside_rooms {
        gw.config.node_timeout
    } else {
        gw.config.answer_timeout
    };
    match link.request_within(request, timeout).await {
        Ok(r) if r.status == u32::from(MISPLACED) => Err(Refusal {
            status: MISPLACED,
            body: String::from_utf8_lossy(&r.body).into_owned(),
            ring_version: RingVersion(r.ring_version),
        }),
        Ok(r) => Ok(r),
        Err(crate::link::LinkError::TimedOut) => {
            warn!(room = %key, "HTTP request timed out at the node");
            Err(Refusal::new(504, "The room did not answer in time"))
        }
        Err(e) => Err(e.into()),
    }
}

/// The room's answer, minus the hop-by-hop headers the gateway sets itself. The answer to
/// a HEAD keeps its `Content-Length`: the length of what a GET would get, not of its empty
/// body.
fn response(r: HttpReply, head: bool) -> Response {
    let empty = r.body.is_empty();
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
        let length_of_get = head && empty && n == header::CONTENT_LENGTH;
        if !length_of_get
            && (n == header::CONTENT_LENGTH
                || n == header::TRANSFER_ENCODING
                || n == header::CONNECTION)
        {
            continue;
        }
        resp.headers_mut().append(n, v);
    }
    resp
}
