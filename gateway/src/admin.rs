//! `/admin/*` on a gateway, behind a bearer token: the cluster as this gateway sees it,
//! and where a room lives.

use crate::admission::resolve_home;
use crate::link::NodeLink;
use crate::route::{parse_room_path, RouteError};
use crate::state::GatewayState;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use conclave_proto::wire::{RoomAdmin, RoomInfoRequest};
use conclave_proto::RoomKey;
use http::{header, HeaderMap, StatusCode};
use serde_json::json;
use std::sync::Arc;

/// Checks `Authorization: Bearer <token>` in constant time. Without a configured token the
/// admin routes do not exist (404).
pub fn check_admin_token(
    token: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, &'static str)> {
    let Some(token) = token else {
        return Err((
            StatusCode::NOT_FOUND,
            "admin endpoints are disabled: set --admin-token",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "missing or wrong admin token"))
    }
}

pub(crate) fn router() -> Router<Arc<GatewayState>> {
    Router::new()
        .route("/admin/cluster", get(cluster))
        .route("/admin/rooms/{party}", get(list_rooms))
        .route("/admin/rooms/{party}/{room}", get(room).delete(delete_room))
}

/// The room `party`/`room` names, or the answer to a bad name.
fn room_key(party: &str, room: &str) -> Result<RoomKey, Refused> {
    match parse_room_path(&format!("/parties/{party}/{room}")) {
        Ok(k) => Ok(k),
        Err(RouteError::BadName(e)) => Err((StatusCode::BAD_REQUEST, e.to_string())),
        Err(RouteError::NotARoom) => Err((StatusCode::BAD_REQUEST, "not a room".into())),
    }
}

/// An admin request not served: its status and why.
type Refused = (StatusCode, String);

/// The room an admin request names, once its token is checked.
fn admin_room(
    gw: &GatewayState,
    headers: &HeaderMap,
    party: &str,
    room: &str,
) -> Result<RoomKey, Refused> {
    check_admin_token(gw.config.admin_token.as_deref(), headers)
        .map_err(|(status, why)| (status, why.to_string()))?;
    room_key(party, room)
}

/// Asks the node that owns `key` by the ring an admin question: its JSON answer, or
/// 503/502 when the node cannot be reached or does not answer.
async fn ask_node(
    gw: &GatewayState,
    key: &RoomKey,
    action: RoomAdmin,
    page: &ListPage,
) -> Result<serde_json::Value, Refused> {
    let unavailable = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the room's node is unavailable".into(),
        )
    };
    let link = gw.link_for(key).await.map_err(|_| unavailable())?;
    let ask = RoomInfoRequest {
        request_id: 0,
        room: Some(key.to_wire()),
        action: action.into(),
        after: page.after.clone().unwrap_or_default(),
        limit: page.limit.unwrap_or(0),
    };
    let silent = || {
        (
            StatusCode::BAD_GATEWAY,
            "the room's node did not answer".into(),
        )
    };
    let reply = link.request(ask).await.map_err(|_| silent())?;
    Ok(serde_json::from_str(&reply.json).unwrap_or(serde_json::Value::Null))
}

/// `?after=ROOM&limit=N` of a room listing.
#[derive(serde::Deserialize, Default)]
struct ListPage {
    after: Option<String>,
    limit: Option<u32>,
}

/// The answer to a node's JSON: 500 when it reports an error.
fn node_answer(v: serde_json::Value) -> Response {
    let status = if v.get("error").is_some() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    (status, Json(v)).into_response()
}

/// `GET /admin/rooms/:party?after=&limit=`: the party's rooms that store keys, with what
/// they store, in name order, a page at a time (`next` is the next page's `after`).
async fn list_rooms(
    State(gw): State<Arc<GatewayState>>,
    headers: HeaderMap,
    Path(party): Path<String>,
    Query(page): Query<ListPage>,
) -> Response {
    if let Err(e) = check_admin_token(gw.config.admin_token.as_deref(), &headers) {
        return e.into_response();
    }
    // Any node of this region reads the store; the ring owner of the page's first name.
    let key = match room_key(&party, page.after.as_deref().unwrap_or("0")) {
        Ok(k) => k,
        Err(refused) => return refused.into_response(),
    };
    match ask_node(&gw, &key, RoomAdmin::ListParty, &page).await {
        Ok(v) => node_answer(v),
        Err(refused) => refused.into_response(),
    }
}

/// `DELETE /admin/rooms/:party/:room`: the room's connections are closed (1000, "Room
/// deleted"), its keys and alarm deleted, its party instance dropped.
async fn delete_room(
    State(gw): State<Arc<GatewayState>>,
    headers: HeaderMap,
    Path((party, room)): Path<(String, String)>,
) -> Response {
    let key = match admin_room(&gw, &headers, &party, &room) {
        Ok(k) => k,
        Err(refused) => return refused.into_response(),
    };
    // Where the room lives: its home region's ring.
    let _ = resolve_home(&gw, &key, None).await;
    match ask_node(&gw, &key, RoomAdmin::Delete, &ListPage::default()).await {
        Ok(v) => node_answer(v),
        Err(refused) => refused.into_response(),
    }
}

fn link_json(link: Option<&Arc<NodeLink>>) -> serde_json::Value {
    match link {
        None => json!({"link": "none"}),
        Some(l) => json!({
            "link": if l.is_alive() { "up" } else { "down" },
            "connections": l.socket_count(),
            "rooms": l.room_count(),
        }),
    }
}

async fn cluster(State(gw): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_admin_token(gw.config.admin_token.as_deref(), &headers) {
        return e.into_response();
    }
    let (version, nodes) = gw.routing.nodes();
    let nodes: Vec<_> = nodes
        .into_iter()
        .map(|(id, region)| {
            let mut v = link_json(gw.links.link(&id).as_ref());
            v["id"] = id.into();
            v["region"] = region.into();
            v
        })
        .collect();
    Json(json!({"ring_version": version.0, "nodes": nodes, "scope": "connections and rooms at this gateway"})).into_response()
}

async fn room(
    State(gw): State<Arc<GatewayState>>,
    headers: HeaderMap,
    Path((party, room)): Path<(String, String)>,
) -> Response {
    let key = match admin_room(&gw, &headers, &party, &room) {
        Ok(k) => k,
        Err(refused) => return refused.into_response(),
    };
    let home = resolve_home(&gw, &key, None).await.ok();
    let ring_owner = gw.routing.owner_of(&key);
    let mut out = json!({
        "party": key.party.as_str(),
        "room": key.room.as_str(),
        "home_region": home,
        "ring_owner": ring_owner,
    });
    match gw.link_for(&key).await {
        Ok(link) => {
            out["connections_at_this_gateway"] = link.sockets_in(&key).into();
            let ask = RoomInfoRequest {
                request_id: 0,
                room: Some(key.to_wire()),
                ..Default::default()
            };
            match link.request(ask).await {
                Ok(r) => {
                    out["node"] = serde_json::from_str(&r.json).unwrap_or(serde_json::Value::Null);
                }
                Err(_) => out["node"] = json!({"error": "the room's node did not answer"}),
            }
        }
        Err(_) => out["node"] = json!({"error": "the room's node is unavailable"}),
    }
    Json(out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checks() {
        let mut h = HeaderMap::new();
        assert_eq!(
            check_admin_token(None, &h).unwrap_err().0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            check_admin_token(Some("s3"), &h).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        h.insert(header::AUTHORIZATION, "Bearer s4".parse().unwrap());
        assert_eq!(
            check_admin_token(Some("s3"), &h).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        h.insert(header::AUTHORIZATION, "Bearer s3".parse().unwrap());
        assert!(check_admin_token(Some("s3"), &h).is_ok());
    }
}
