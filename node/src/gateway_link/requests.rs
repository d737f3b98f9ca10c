//! What a gateway asks of the node over the link besides sockets: HTTP requests to rooms
//! (`on_request`) and the admin endpoint's room info, listings and deletions.

use super::headers::header_map;
use crate::gateway_bounds::check_headers;
use crate::host::Host;
use crate::mailbox::RoomEvent;
use crate::message::Response;
use crate::room::FetchError;
use bytes::Bytes;
use conclave_proto::wire::{HttpReply, HttpRequest, RoomInfoRequest, RoomRef};
use conclave_proto::wire_headers;
use conclave_proto::{Refusal, RoomKey};
use std::sync::Arc;

/// The answer to a request outside /parties/ when the main party has no `onFetch`.
pub const NOT_A_ROOM: &str = "Not found: use /parties/:party/:room";

/// The room a request names; 400 if it names none or an invalid one.
pub(super) fn room_key(room: Option<&RoomRef>) -> Result<RoomKey, Refusal> {
    room.map(RoomKey::from_wire)
        .ok_or_else(|| Refusal::new(400, "missing room"))?
        .map_err(|e| Refusal::new(400, e.to_string()))
}

/// An HTTP request to a room on this node, answered by the room's `on_request`.
pub(super) async fn http_request(
    host: &Arc<Host>,
    mut r: HttpRequest,
) -> Result<Response, Refusal> {
    check_headers(&r.headers)?;
    if r.body.len() > host.config.max_http_body_bytes {
        return Err(Refusal::new(413, "Request body too large"));
    }
    let mut builder = http::Request::builder()
        .method(r.method.as_str())
        .uri(r.uri.as_str());
    if let Some(h) = builder.headers_mut() {
        *h = header_map(std::mem::take(&mut r.headers));
    }
    let mut req = builder
        .body(std::mem::take(&mut r.body))
        .map_err(|e| Refusal::new(400, e.to_string()))?;
    if r.outside_rooms {
        // Any node answers these: no room, so no placement to check.
        return match host.fetch_outside_rooms(req) {
            Some(answer) => Ok(answer.await),
            None => Err(Refusal::new(404, NOT_A_ROOM)),
        };
    }
    let key = room_key(r.room.as_ref())?;
    host.cluster.check_placed_here(&key)?;
    // A room's own request from another node passes as it would on its own node.
    let check = (!r.from_room)
        .then(|| host.check_request(&key, req.clone()))
        .flatten();
    if let Some(check) = check {
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

pub(super) fn http_reply(request_id: u64, result: Result<Response, Refusal>) -> HttpReply {
    match result {
        Ok(resp) => HttpReply {
            request_id,
            status: resp.status().as_u16().into(),
            headers: wire_headers(resp.headers()),
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
pub(super) async fn room_info(host: &Host, room: Option<&RoomRef>) -> serde_json::Value {
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
pub(super) async fn list_party(host: &Host, q: &RoomInfoRequest) -> serde_json::Value {
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
pub(super) async fn delete_room(host: &Arc<Host>, room: Option<&RoomRef>) -> serde_json::Value {
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
