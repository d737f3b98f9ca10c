//! Joining a socket to its room's node, and moving it to the next node when the current
//! one dies, hands the room off or is fenced — without closing the client socket.

use crate::link::NodeLink;
use crate::server::Inner;
use crate::session::Session;
use conclave_proto::wire::{gateway_event, node_event, Admit, Header, HomeRequest, Resume};
use conclave_proto::RoomKey;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

/// A socket that must move: to the owner of its room under a ring of at least `min_ring`.
pub(crate) struct MoveRequest {
    pub session: Arc<Session>,
    pub min_ring: u64,
}

pub(crate) type Mover = mpsc::UnboundedSender<MoveRequest>;

/// Why a node did not take a socket.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: u16,
    pub body: String,
    /// The node's ring version (with 421: the room is placed elsewhere under it).
    pub ring_version: u64,
}

impl Refusal {
    fn unavailable() -> Self {
        Self {
            status: 503,
            body: "The room's node is unavailable".into(),
            ring_version: 0,
        }
    }
}

/// Asks the room's owner on this gateway's ring to admit the socket: new (`resume` none,
/// the party's hooks and `on_connect` run) or moving. The socket is registered on the
/// owner's link first, so nothing the room sends on admission is missed.
pub(crate) async fn join_room(
    gw: &Inner,
    session: &Arc<Session>,
    headers: Vec<Header>,
    resume: Option<Resume>,
) -> Result<Arc<NodeLink>, Refusal> {
    let link = gw
        .nodes
        .link_for(&session.room)
        .await
        .map_err(|_| Refusal::unavailable())?;
    link.register(session.clone());
    let request_id = link.next_id();
    let admit = Admit {
        request_id,
        room: Some(session.room.to_wire()),
        conn_id: session.conn_id.clone(),
        uri: session.uri.clone(),
        headers,
        socket: session.id.0,
        origin: gw.nodes.origin,
        resume,
    };
    let reply = tokio::time::timeout(
        gw.config.node_timeout,
        link.call(request_id, gateway_event::Event::Admit(admit)),
    )
    .await;
    match reply {
        Ok(Ok(node_event::Event::AdmitReply(r))) if r.status == 0 => Ok(link),
        Ok(Ok(node_event::Event::AdmitReply(r))) => {
            link.unregister(session.id);
            Err(Refusal {
                status: r.status as u16,
                body: r.body,
                ring_version: r.ring_version,
            })
        }
        Ok(_) => {
            link.unregister(session.id);
            Err(Refusal::unavailable())
        }
        Err(_) => {
            // The node may still take it in later: tell it the socket is not coming.
            session
                .tell_closed(&link, 1006, "", "admission timed out")
                .await;
            Err(Refusal {
                status: 504,
                body: "The room's node did not answer in time".into(),
                ring_version: 0,
            })
        }
    }
}

/// Makes sure the gateway knows the room's home region before routing it: asks storage
/// (through a node) unless there is only one region. A new room is homed in the client's
/// `?_region=` hint if given, else in this gateway's region.
pub(crate) async fn resolve_home(
    gw: &Inner,
    room: &RoomKey,
    hint: Option<&str>,
) -> Result<String, Refusal> {
    if let Some(hint) = hint {
        if !gw.nodes.has_region(hint) {
            return Err(Refusal {
                status: 400,
                body: format!("Unknown region {hint:?} (no live node is in it)"),
                ring_version: 0,
            });
        }
    }
    if let Some(home) = gw.nodes.known_home(room) {
        if hint.is_none_or(|h| h == home) {
            return Ok(home);
        }
    }
    let proposed = hint.map_or_else(|| gw.nodes.default_home(), str::to_string);
    let node = gw
        .nodes
        .home_oracle(room, &proposed)
        .ok_or_else(Refusal::unavailable)?;
    let link = gw
        .nodes
        .link_to(&node)
        .await
        .map_err(|_| Refusal::unavailable())?;
    let request_id = link.next_id();
    let ask = gateway_event::Event::Home(HomeRequest {
        request_id,
        room: Some(room.to_wire()),
        proposed,
    });
    match tokio::time::timeout(gw.config.node_timeout, link.call(request_id, ask)).await {
        Ok(Ok(node_event::Event::HomeReply(r))) if r.error.is_empty() => {
            gw.nodes.learn_home(room, r.region.clone());
            Ok(r.region)
        }
        Ok(Ok(node_event::Event::HomeReply(r))) => Err(Refusal {
            status: 503,
            body: format!("Cannot look up the room's home region: {}", r.error),
            ring_version: 0,
        }),
        _ => Err(Refusal::unavailable()),
    }
}

/// Re-routes after a 421 (the node's ring places the room elsewhere): waits, up to `wait`,
/// for the node's newer ring version, or briefly for a node that is behind ours to catch
/// up. Returns whether it is worth asking again.
pub(crate) async fn await_newer_ring(gw: &Inner, refusal: &Refusal, wait: Duration) -> bool {
    if refusal.status != 421 {
        return false;
    }
    if refusal.ring_version > gw.nodes.ring_version() {
        gw.nodes
            .wait_for_ring(refusal.ring_version, Instant::now() + wait)
            .await;
    } else {
        tokio::time::sleep(wait / 10).await;
    }
    true
}

/// Carries out moves until the gateway is gone.
pub(crate) async fn run(gw: Weak<Inner>, mut moves: mpsc::UnboundedReceiver<MoveRequest>) {
    while let Some(m) = moves.recv().await {
        let Some(gw) = gw.upgrade() else { return };
        tokio::spawn(reattach(gw, m));
    }
}

const FIRST_RETRY: Duration = Duration::from_millis(25);
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Re-attaches a socket to its room's owner, retrying (the dead node leaves the ring
/// within its liveness TTL) until `reattach_timeout`; only then is the client closed, with
/// 1012 so it reconnects.
async fn reattach(gw: Arc<Inner>, m: MoveRequest) {
    let MoveRequest {
        session,
        mut min_ring,
    } = m;
    metrics::counter!("conclave_gateway_socket_moves_total").increment(1);
    let started = Instant::now();
    let deadline = started + gw.config.reattach_timeout;
    let mut retry = FIRST_RETRY;
    let mut ring_seen = gw.nodes.ring_version();
    loop {
        if session.has_ended() {
            return;
        }
        // A new ring: the next owner may take the socket now (or in a moment, once it has
        // the same ring), so retry quickly again.
        if gw.nodes.ring_version() != ring_seen {
            ring_seen = gw.nodes.ring_version();
            retry = FIRST_RETRY;
        }
        if Instant::now() >= deadline {
            warn!(room = %session.room, socket = session.id.0, "no node took the socket over in time; closing it with 1012");
            metrics::counter!("conclave_gateway_socket_move_failures_total").increment(1);
            session
                .out
                .close
                .trigger(1012, "The room is unavailable; reconnect");
            return;
        }
        gw.nodes.wait_for_ring(min_ring, deadline).await;
        match join_room(&gw, &session, Vec::new(), Some(session.resume())).await {
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
                if r.status == 421 {
                    min_ring = min_ring.max(r.ring_version);
                }
            }
        }
        // Retry after the backoff, or at once when a new ring arrives (the dead node left).
        let seen = gw.nodes.ring_version();
        let until = Instant::now() + retry.min(deadline.saturating_duration_since(Instant::now()));
        gw.nodes.wait_for_ring(seen + 1, until).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}
