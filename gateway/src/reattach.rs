//! Moving a socket to its room's next owner when its node dies, hands the room off or is
//! fenced — without closing the client socket.

use crate::admission::join_on;
use crate::link::{LinkWork, MoveRequest, NodeLink};
use crate::session::Session;
use crate::state::GatewayState;
use conclave_proto::{close, Refusal};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

const FIRST_RETRY: Duration = Duration::from_millis(25);
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Carries out the links' work (moves, nodes' requests to rooms elsewhere) until the
/// gateway is gone.
pub(crate) async fn run(gw: Weak<GatewayState>, mut work: mpsc::UnboundedReceiver<LinkWork>) {
    while let Some(w) = work.recv().await {
        let Some(gw) = gw.upgrade() else { return };
        match w {
            LinkWork::Move(m) => tokio::spawn(reattach(gw, m)),
            LinkWork::RoomFetch { link, request } => {
                tokio::spawn(crate::forward::for_node(gw, link, request))
            }
        };
    }
}

/// Re-attaches a socket to its room's owner, retrying (the dead node leaves the ring
/// within its liveness TTL) until `reattach_timeout`; only then is the client closed, with
/// 1012 so it reconnects.
async fn reattach(gw: Arc<GatewayState>, m: MoveRequest) {
    let MoveRequest {
        session,
        mut min_ring,
    } = m;
    metrics::counter!("conclave_gateway_socket_moves_total").increment(1);
    let started = Instant::now();
    let deadline = started + gw.config.reattach_timeout;
    let mut retry = FIRST_RETRY;
    let mut ring_seen = gw.routing.version();
    loop {
        if session.has_ended() {
            return;
        }
        // A new ring: the next owner may take the socket now (or in a moment, once it has
        // the same ring), so retry quickly again.
        if gw.routing.version() != ring_seen {
            ring_seen = gw.routing.version();
            retry = FIRST_RETRY;
        }
        if Instant::now() >= deadline {
            warn!(room = %session.room, socket = session.id.0, "no node took the socket over in time; closing it with 1012");
            metrics::counter!("conclave_gateway_socket_move_failures_total").increment(1);
            session
                .out
                .close()
                .trigger(close::SERVICE_RESTART, "The room is unavailable; reconnect");
            return;
        }
        gw.routing.wait_for_version(min_ring, deadline).await;
        match join_by(&gw, &session, deadline).await {
            Ok(link) => {
                if session.switch_to(link.clone()).await {
                    debug!(room = %session.room, socket = session.id.0, node = %link.node, elapsed_ms = started.elapsed().as_millis() as u64, "socket moved");
                    metrics::histogram!("conclave_gateway_socket_move_seconds")
                        .record(started.elapsed().as_secs_f64());
                    return;
                }
            }
            Err(r) => {
                debug!(room = %session.room, status = r.status, body = %r.body, "socket move refused; retrying");
                if r.is_misplaced() {
                    min_ring = min_ring.max(r.ring_version);
                }
            }
        }
        // Retry after the backoff, or at once when a new ring arrives (the dead node left).
        let seen = gw.routing.version();
        let until = Instant::now() + retry.min(deadline.saturating_duration_since(Instant::now()));
        gw.routing.wait_for_version(seen.next(), until).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Admits the moving socket on its room's owner, opening the owner's link first no later
/// than `deadline`: an attempt to open it may take the pool's whole bound (a partitioned
/// node), and a socket no node takes must still be closed on time.
async fn join_by(
    gw: &GatewayState,
    session: &Arc<Session>,
    deadline: Instant,
) -> Result<Arc<NodeLink>, Refusal> {
    match tokio::time::timeout_at(deadline, gw.link_for(&session.room)).await {
        Ok(Ok(link)) => join_on(gw, link, session, Vec::new(), Some(session.resume())).await,
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(Refusal::unavailable()),
    }
}
