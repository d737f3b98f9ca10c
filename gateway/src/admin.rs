//! `/admin/*` on a gateway, behind a bearer token: the cluster as this gateway sees it,
//! and where a room lives.

use crate::admission::resolve_home;
use crate::link::NodeLink;
use crate::route::{parse_room_path, RouteError};
use crate::state::GatewayState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use conclave_proto::wire::RoomInfoRequest;
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
