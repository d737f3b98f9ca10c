//! Admin endpoints, behind a bearer token (`--admin-token` / `CONCLAVE_ADMIN_TOKEN`).
//! Without a token configured they answer 404: nothing is exposed by accident.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone)]
struct NodeAdmin {
    token: Option<Arc<str>>,
    drain: Arc<Notify>,
}

/// Whether the request carries the admin token (compared in constant time).
fn authorized(token: Option<&str>, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
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

/// `POST /admin/drain`: hand every room of this node to others, then exit (as on SIGTERM).
pub fn node_router(token: Option<String>, drain: Arc<Notify>) -> Router {
    let state = NodeAdmin {
        token: token.map(Arc::from),
        drain,
    };
    Router::new()
        .route("/admin/drain", post(drain_node))
        .with_state(state)
}

async fn drain_node(State(admin): State<NodeAdmin>, headers: HeaderMap) -> impl IntoResponse {
    if let Err(e) = authorized(admin.token.as_deref(), &headers) {
        return e;
    }
    admin.drain.notify_one();
    (StatusCode::ACCEPTED, "draining\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checks() {
        let mut h = HeaderMap::new();
        assert_eq!(authorized(None, &h).unwrap_err().0, StatusCode::NOT_FOUND);
        assert_eq!(
            authorized(Some("s3"), &h).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        h.insert(header::AUTHORIZATION, "Bearer s4".parse().unwrap());
        assert_eq!(
            authorized(Some("s3"), &h).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        h.insert(header::AUTHORIZATION, "Bearer s3".parse().unwrap());
        assert!(authorized(Some("s3"), &h).is_ok());
    }
}
