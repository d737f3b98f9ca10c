//! A WebSocket upgrade to a room. The socket is admitted into the room (its `on_connect`
//! has run) before the 101 answer, so whatever the party sends on connect is already
//! queued when the client sees "open".

use crate::addresses::{AddressRate, ClientAddress, Slot};
use crate::admission::{join_room, resolve_home, RingFollower};
use crate::http::{refused, room_uri};
use crate::session::Session;
use crate::socket;
use crate::state::GatewayState;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use conclave_proto::wire_headers;
use conclave_proto::{query_param, Refusal, RingVersion, RoomKey};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Whether the request asks for a WebSocket.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// What a valid upgrade request asks for.
pub(crate) struct Handshake {
    accept_key: String,
    pub(crate) conn_id: String,
    /// The first offered subprotocol, echoed back (PartyKit does not, which breaks `ws`
    /// clients that offer one).
    protocol: Option<HeaderValue>,
}

pub(crate) fn handshake<B>(
    req: &http::Request<B>,
    max_conn_id_bytes: usize,
) -> Result<Handshake, Refusal> {
    if req.method() != http::Method::GET {
        return Err(Refusal::new(405, "WebSocket upgrades must use GET"));
    }
    let headers = req.headers();
    let accept_key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
        .ok_or_else(|| Refusal::new(400, "Missing Sec-WebSocket-Key"))?;
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err(Refusal::new(426, "Unsupported WebSocket version (need 13)"));
    }
    let conn_id = match req
        .uri()
        .query()
        .and_then(|q| query_param(q, "_pk"))
        .filter(|s| !s.is_empty())
    {
        Some(pk) if pk.len() > max_conn_id_bytes => {
            return Err(Refusal::new(
                400,
                format!("_pk is longer than {max_conn_id_bytes} bytes"),
            ));
        }
        // It reaches parties (a chat's `from`) and logs as it is.
        Some(pk) if pk.chars().any(char::is_control) => {
            return Err(Refusal::new(400, "_pk has control characters"));
        }
        Some(pk) => pk,
        None => uuid::Uuid::new_v4().to_string(),
    };
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()))
        .and_then(|p| HeaderValue::from_str(p).ok());
    Ok(Handshake {
        accept_key,
        conn_id,
        protocol,
    })
}

/// A socket its room's node has admitted, waiting for its connection to be handed over.
pub(crate) struct Admitted {
    pub(crate) session: Arc<Session>,
    pub(crate) handshake: Handshake,
    /// The rate its address's connections share.
    pub(crate) rate: AddressRate,
    /// Behind a trusted proxy, the slot of the client it names.
    pub(crate) forwarded_slot: Option<Slot>,
}

/// Admits the socket an upgrade request to `key` asks for, `client` being who the
/// connection comes from (none: a server that does not count addresses): once this
/// returns, the socket is in the room (its `on_connect` has run) and what the party sent
/// it is queued, to be written once the 101 answer is.
pub(crate) async fn admit(
    gw: &Arc<GatewayState>,
    key: RoomKey,
    req: &http::Request<()>,
    client: Option<&ClientAddress>,
) -> Result<Admitted, Refusal> {
    let handshake = handshake(req, gw.config.max_conn_id_bytes)?;
    // Behind a trusted proxy, the client it names holds its share of connections here.
    let Some((rate, forwarded_slot)) =
        client.map_or(Some(Default::default()), |c| c.admit_socket(req.headers()))
    else {
        metrics::counter!("conclave_gateway_address_limit_refusals_total").increment(1);
        return Err(Refusal::new(429, "Too many connections from this address"));
    };
    let hint = req.uri().query().and_then(|q| query_param(q, "_region"));
    resolve_home(gw, &key, hint.as_deref()).await?;
    let socket_id = gw.sessions.next_socket_id();
    let conn_id = handshake.conn_id.clone();
    let session = socket::new_session(gw, socket_id, key, conn_id, room_uri(req));
    // The node answers once the socket is in the room (on_connect has run) or refuses it;
    // a node with a newer ring that places the room elsewhere sends us there. (The headers
    // are written out for each attempt: a second one is rare.)
    let mut follower = RingFollower::default();
    let link = loop {
        match join_room(gw, &session, wire_headers(req.headers()), None).await {
            Ok(link) => break link,
            Err(r) => follower.retry(gw, r).await?,
        }
    };
    gw.sessions.add(session.clone());
    if !session.attach(link) {
        // The node died right after admitting the socket: it moves on like the others.
        gw.move_socket(session.clone(), RingVersion(0));
    }
    Ok(Admitted {
        session,
        handshake,
        rate,
        forwarded_slot,
    })
}

/// An upgrade through the HTTP server: the socket is served once hyper hands its
/// connection over, after writing the 101 answer returned here.
pub(crate) async fn upgrade(gw: Arc<GatewayState>, key: RoomKey, mut req: Request) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut req);
    // The body stays behind: it is not `Sync`, and nothing reads it.
    let (mut parts, _body) = req.into_parts();
    let client = parts.extensions.remove::<ClientAddress>();
    let req = http::Request::from_parts(parts, ());
    let admitted = match admit(&gw, key, &req, client.as_ref()).await {
        Ok(admitted) => admitted,
        Err(r) => return refused(r),
    };
    let response = switching_protocols(&admitted.handshake);
    let Admitted {
        session,
        rate,
        forwarded_slot,
        ..
    } = admitted;
    tokio::spawn(socket::run(gw, on_upgrade, session, rate, forwarded_slot));
    response
}

fn switching_protocols(hs: &Handshake) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&hs.accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = &hs.protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p.clone());
    }
    resp
}

/// The 101 answer as the bytes on the wire, for an upgrade taken off the connection
/// without the HTTP server (`accept.rs`).
pub(crate) fn switching_protocols_head(hs: &Handshake) -> Vec<u8> {
    let mut head = Vec::with_capacity(160);
    head.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
    );
    head.extend_from_slice(hs.accept_key.as_bytes());
    if let Some(p) = &hs.protocol {
        head.extend_from_slice(b"\r\nsec-websocket-protocol: ");
        head.extend_from_slice(p.as_bytes());
    }
    head.extend_from_slice(b"\r\n\r\n");
    head
}
