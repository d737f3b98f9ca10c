//! Admin endpoints, behind a bearer token (`--admin-token` / `CONCLAVE_ADMIN_TOKEN`).
//! Without a token configured they answer 404: nothing is exposed by accident.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use conclave_gateway::check_admin_token;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone)]
struct NodeAdmin {
    token: Option<Arc<str>>,
    drain: Arc<Notify>,
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
    if let Err(e) = check_admin_token(admin.token.as_deref(), &headers) {
        return e;
    }
    admin.drain.notify_one();
    (StatusCode::ACCEPTED, "draining\n")
}
