//! `/admin/*` on a gateway, behind a bearer token: the cluster as this gateway sees it,
//! and where a room lives.

use crate::link::NodeLink;
use crate::route::{parse_room_path, RouteError};
use crate::server::Inner;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use conclave_proto::wire::{gateway_event, node_event, RoomInfoRequest};
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

pub(crate) fn router() -> Router<Arc<Inner>> {
    Router::new()
        .route("/admin/cluster", get(cluster))
        .route("/admin/rooms/{party}/{room}", get(room))
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

async fn cluster(State(gw): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_admin_token(gw.config.admin_token.as_deref(), &headers) {
        return e.into_response();
    }
    let (version, nodes) = gw.nodes.describe();
    let nodes: Vec<_> = nodes
        .iter()
        .map(|(id, region, link)| {
            let mut v = link_json(link.as_ref());
            v["id"] = id.clone().into();
            v["region"] = region.clone().into();
            v
        })
        .collect();
    Json(json!({"ring_version": version, "nodes": nodes, "scope": "connections and rooms at this gateway"})).into_response()
}

async fn room(
    State(gw): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((party, room)): Path<(String, String)>,
) -> Response {
    if let Err(e) = check_admin_token(gw.config.admin_token.as_deref(), &headers) {
        return e.into_response();
    }
    let key = match parse_room_path(&format!("/parties/{party}/{room}")) {
        Ok(k) => k,
        Err(RouteError::BadName(e)) => {
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(RouteError::NotARoom) => {
            return (StatusCode::BAD_REQUEST, "not a room").into_response()
        }
    };
    let home = crate::moves::resolve_home(&gw, &key, None).await.ok();
    let ring_owner = gw.nodes.owner_of(&key);
    let mut out = json!({
        "party": key.party.as_str(),
        "room": key.room.as_str(),
        "home_region": home,
        "ring_owner": ring_owner,
    });
    match gw.nodes.link_for(&key).await {
        Ok(link) => {
            out["connections_at_this_gateway"] = link.sockets_in(&key).into();
            let request_id = link.next_id();
            let ask = gateway_event::Event::RoomInfo(RoomInfoRequest {
                request_id,
                room: Some(key.to_wire()),
            });
            match tokio::time::timeout(gw.config.node_timeout, link.call(request_id, ask)).await {
                Ok(Ok(node_event::Event::RoomInfoReply(r))) => {
                    out["node"] = serde_json::from_str(&r.json).unwrap_or(serde_json::Value::Null);
                }
                _ => out["node"] = json!({"error": "the room's node did not answer"}),
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
