//! The gateway's public face: building one, feeding it rings, shutting it down, and the
//! HTTP entry point that sends room URLs to a WebSocket upgrade or to HTTP forwarding.

use crate::connector::{InProcessNode, NodeConnector};
use crate::forward::forward_http;
use crate::http::{bearer, plain};
use crate::pool::LinkPool;
use crate::reattach;
use crate::route::{parse_room_path, RouteError};
use crate::routing::Routing;
use crate::state::GatewayState;
use crate::upgrade::{is_upgrade, upgrade};
use crate::{AuthError, GatewayConfig};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use conclave_proto::DEFAULT_REGION;
use conclave_proto::{
    close, query_param, GatewaySide, Ring, RingVersion, RingView, Rings, RoomKey,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// The WebSocket/HTTP edge. Each room is served by the node that owns it on the gateway's
/// rings; a socket follows its room from node to node for its lifetime.
#[derive(Clone)]
pub struct Gateway {
    state: Arc<GatewayState>,
}

impl Gateway {
    /// A gateway in front of one node in the same process (`conclave dev`).
    pub fn new(config: GatewayConfig, node: GatewaySide) -> Self {
        let rings = Rings::new(
            RingVersion(1),
            [(InProcessNode::ID.to_string(), DEFAULT_REGION.to_string())],
        );
        let routing = Routing::new(rings, DEFAULT_REGION.to_string());
        Self::build(config, routing, Box::new(InProcessNode::new(node)))
    }

    /// A gateway in front of the nodes of `ring` (in the gateway's region until placement
    /// says otherwise), reached through `connector`.
    pub fn with_nodes(config: GatewayConfig, ring: Ring, connector: impl NodeConnector) -> Self {
        let region = config.region.clone();
        let rings = Rings::new(
            ring.version(),
            ring.nodes().iter().map(|n| (n.clone(), region.clone())),
        );
        Self::build(config, Routing::new(rings, region), Box::new(connector))
    }

    /// The gateway's settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.state.config
    }

    pub(crate) fn state(&self) -> &Arc<GatewayState> {
        &self.state
    }

    /// Whether the gateway can route rooms: it knows at least one node (a gateway that
    /// follows placement knows none until the first ring arrives).
    pub fn readiness(&self) -> Result<(), String> {
        if self
            .state
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err("not ready: draining (shutting down)".into());
        }
        let (_, nodes) = self.state.routing.nodes();
        if nodes.is_empty() {
            return Err("not ready: no node known yet (waiting for a ring from placement)".into());
        }
        Ok(())
    }

    fn build(config: GatewayConfig, routing: Routing, connector: Box<dyn NodeConnector>) -> Self {
        let (mover, moves) = tokio::sync::mpsc::unbounded_channel();
        let timeout = config.node_timeout;
        let links = LinkPool::new(connector, mover.clone(), timeout);
        let state = Arc::new(GatewayState::new(config, routing, links, mover));
        tokio::spawn(reattach::run(Arc::downgrade(&state), moves));
        tokio::spawn(keep_links(Arc::downgrade(&state)));
        tokio::spawn(crate::keepalive::run(Arc::downgrade(&state)));
        Self { state }
    }

    /// Routes by a new ring version from placement (node id → relay URL).
    pub fn set_ring(&self, view: &RingView) {
        metrics::gauge!("conclave_ring_version").set(view.version.0 as f64);
        self.state
            .set_rings(view.rings(), view.members.clone().into_iter().collect());
    }

    /// Fails `/readyz` from now on, so load balancers send new clients elsewhere; open
    /// sockets are untouched until [`Gateway::shutdown`].
    pub fn start_draining(&self) {
        self.state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes every client socket with 1001 (going away) and waits up to `grace` for them
    /// to finish closing, so clients reconnect at once instead of timing out. First, for up
    /// to half of `grace`, the frames clients sent before get their answers: a node
    /// acknowledges a frame after the messages its step sent, so once every frame sent
    /// so far is acknowledged, their replies are queued ahead of the close frames.
    pub async fn shutdown(&self, grace: Duration) {
        let sessions = self.state.sessions.all();
        if sessions.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut answering: Vec<_> = sessions
            .iter()
            .map(|s| (s, s.sent_seq()))
            .filter(|(s, sent)| !s.acked_through(*sent))
            .collect();
        let settled_by = tokio::time::Instant::now() + grace / 2;
        while !answering.is_empty() && tokio::time::Instant::now() < settled_by {
            tokio::time::sleep(Duration::from_millis(10)).await;
            answering.retain(|(s, sent)| !s.has_ended() && !s.acked_through(*sent));
        }
        if !answering.is_empty() {
            tracing::warn!(
                sockets = answering.len(),
                "closing sockets whose last frames were not acknowledged yet"
            );
        }
        // Sockets opened while the frames were answered are closed too.
        for s in &self.state.sessions.all() {
            s.out
                .close()
                .trigger(close::GOING_AWAY, "Server shutting down");
        }
        while !self.state.sessions.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Serves room URLs and `/admin/*` (with an admin token) on one listener (`conclave
    /// dev`); everything else is 404. Serve it with [`serve_http1`](crate::serve_http1):
    /// a WebSocket takes its TCP connection over from the HTTP server, which only that
    /// server's connections allow (any other refuses the socket after the upgrade).
    pub fn router(&self) -> Router {
        self.client_router().merge(self.admin_router())
    }

    /// Serves room URLs only; everything else is 404 (a gateway's public port).
    pub fn client_router(&self) -> Router {
        Router::new()
            .fallback(handle)
            .with_state(self.state.clone())
    }

    /// Serves `/admin/*` (with an admin token), for the ops listener.
    pub fn admin_router(&self) -> Router {
        crate::admin::router().with_state(self.state.clone())
    }
}

async fn handle(State(gw): State<Arc<GatewayState>>, req: Request) -> Response {
    let key = match parse_room_path(req.uri().path()) {
        Ok(k) => k,
        // The main party's static onFetch may answer it (an upgrade too, as on PartyKit,
        // though not with a WebSocket); else the node's 404.
        Err(RouteError::NotARoom) => return crate::forward::forward_outside_rooms(gw, req).await,
        Err(RouteError::BadName(e)) => return plain(400, format!("Invalid room URL: {e}")),
    };
    if let Err(e) = authorize(&gw, &key, &req) {
        let party = key.party.as_str();
        debug!(room = %key, error = ?e, "rejected by auth");
        metrics::counter!(
            "conclave_gateway_auth_refusals_total",
            "party" => party.to_string(),
            "status" => e.status().to_string()
        )
        .increment(1);
        return plain(e.status(), e.to_string());
    }
    if is_upgrade(req.headers()) {
        upgrade(gw, key, req).await
    } else {
        forward_http(gw, key, req).await
    }
}

/// Checks the token a request to `key` carries, when the room's party requires one.
pub(crate) fn authorize<B>(
    gw: &GatewayState,
    key: &RoomKey,
    req: &http::Request<B>,
) -> Result<(), AuthError> {
    let Some(auth) = gw.config.auth.get(key.party.as_str()) else {
        return Ok(());
    };
    let query = req.uri().query();
    let token = query.and_then(|q| query_param(q, "token"));
    let token = token.as_deref().or_else(|| bearer(req.headers()));
    // A socket's connection id, which a party may bind to a claim.
    let conn_id = is_upgrade(req.headers())
        .then(|| query.and_then(|q| query_param(q, "_pk")))
        .flatten()
        .filter(|id| !id.is_empty());
    auth.check(
        token,
        key.party.as_str(),
        key.room.as_str(),
        conn_id.as_deref(),
    )
}

/// How often the relay links' states are published as metrics, and how soon a node on
/// the rings without a live link is first tried again.
const LINK_STATE_EVERY: Duration = Duration::from_secs(2);

/// The longest wait between two tries of a node that stays unreachable.
const LINK_RETRY_MAX: Duration = Duration::from_secs(10);

/// Keeps a live link to each node on the rings, so a node's clients do not wait for the
/// connection and the relay stream to be set up: at start, when placement adds a node,
/// and after a link drops (a node restarted on the same address comes back linked within
/// seconds, not at its first client). A node that cannot be reached is tried again after
/// 2, 4, 8, then every 10 seconds; sockets that need it meanwhile share the pool's
/// attempt under way or start one, as before. Also publishes the links' states while the
/// gateway lives.
async fn keep_links(state: std::sync::Weak<GatewayState>) {
    let Some(mut rings) = state.upgrade().map(|s| s.routing.subscribe()) else {
        return;
    };
    // Per node without a live link: when to try it next, and the wait after that.
    let mut retries: HashMap<String, (tokio::time::Instant, Duration)> = HashMap::new();
    let mut tick = tokio::time::interval(LINK_STATE_EVERY);
    loop {
        let Some(gw) = state.upgrade() else { return };
        let (_, nodes) = gw.routing.nodes();
        let now = tokio::time::Instant::now();
        retries.retain(|n, _| nodes.iter().any(|(node, _)| node == n));
        gw.links.forget_dead_links_outside(&nodes);
        for (node, _) in nodes {
            if gw.links.live(&node).is_some() {
                retries.remove(&node);
                continue;
            }
            let (next, wait) = retries
                .entry(node.clone())
                .or_insert((now, LINK_STATE_EVERY));
            if now < *next {
                continue;
            }
            *next = now + *wait;
            *wait = (*wait * 2).min(LINK_RETRY_MAX);
            let gw = gw.clone();
            tokio::spawn(async move {
                if gw.links.link_to(&node).await.is_ok() {
                    gw.links.record_link_states();
                }
            });
        }
        gw.links.record_link_states();
        drop(gw);
        tokio::select! {
            _ = tick.tick() => {}
            changed = rings.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
