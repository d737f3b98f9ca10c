//! Getting a socket or request to the node that serves its room: the room's home region
//! first, then admission on the owner, following the node's newer ring when it answers
//! that the room is placed elsewhere (421).

use crate::link::NodeLink;
use crate::session::Session;
use crate::state::GatewayState;
use conclave_proto::close;
use conclave_proto::trace;
use conclave_proto::wire::{Admit, Header, HomeRequest, Resume};
use conclave_proto::{Refusal, RoomKey};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Attempts for a new socket or request when nodes answer that the room is elsewhere.
const ADMIT_ATTEMPTS: usize = 3;
/// How long an attempt waits for a newer ring a node told it about.
const RING_WAIT: Duration = Duration::from_secs(1);

/// Asks the room's owner on this gateway's ring to admit the socket: new (`resume` none,
/// the party's hooks and `on_connect` run) or moving. The socket is registered on the
/// owner's link first, so nothing the room sends on admission is missed.
pub(crate) async fn join_room(
    gw: &GatewayState,
    session: &Arc<Session>,
    headers: Vec<Header>,
    resume: Option<Resume>,
) -> Result<Arc<NodeLink>, Refusal> {
    let link = gw.link_for(&session.room).await?;
    join_on(gw, link, session, headers, resume).await
}

/// Asks the node at the end of `link` (the room's owner) to admit the socket, as
/// [`join_room`] does.
pub(crate) async fn join_on(
    gw: &GatewayState,
    link: Arc<NodeLink>,
    session: &Arc<Session>,
    headers: Vec<Header>,
    resume: Option<Resume>,
) -> Result<Arc<NodeLink>, Refusal> {
    link.register(session.clone());
    let abandoned = Abandoned {
        link: &link,
        session,
        armed: true,
    };
    let span = trace::enabled().then(
        || tracing::info_span!(target: trace::TARGET, "client.connect", room = %session.room),
    );
    let trace_parent = span.as_ref().map(trace::traceparent).unwrap_or_default();
    let admit = Admit {
        request_id: 0,
        room: Some(session.room.to_wire()),
        conn_id: session.conn_id.to_string(),
        uri: session.uri.to_string(),
        headers,
        socket: session.id.0,
        origin: gw.sessions.origin,
        resume,
        trace_parent,
    };
    let answer = trace::within(span, link.request(admit)).await;
    abandoned.disarm();
    match answer {
        Ok(r) if r.status == 0 => Ok(link),
        Ok(r) => {
            link.unregister(session);
            // The room may have refused it after the node took note of the socket (a full
            // room, one moving away): the node forgets it.
            // Awaited: a retry of this socket's admission on this link must follow it.
            link.tell_detached(session).await;
            Err(Refusal {
                status: r.status as u16,
                body: r.body,
                ring_version: conclave_proto::RingVersion(r.ring_version),
            })
        }
        Err(crate::link::LinkError::TimedOut) => {
            // The node may still take it in later: tell it the socket is not coming.
            session
                .tell_closed(&link, close::ABNORMAL, "", "admission timed out")
                .await;
            Err(Refusal::timed_out())
        }
        Err(e) => {
            link.unregister(session);
            Err(e.into())
        }
    }
}

/// An admission dropped before the node answered: the HTTP server ends a connection whose
/// client went away, and drops the upgrade waiting here with it. The node may still take
/// the socket in: it hears the socket is gone, and the link stops routing to it.
struct Abandoned<'a> {
    link: &'a Arc<NodeLink>,
    session: &'a Arc<Session>,
    armed: bool,
}

impl Abandoned<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.armed {
            // `on_close` runs if the room took it in meanwhile.
            self.session
                .tell_closed_soon(self.link, "client left during admission");
        }
    }
}

/// Attempts at a room whose nodes may answer that it is placed elsewhere under a newer
/// ring (421): each such refusal waits for that ring and allows another attempt, up to
/// [`ADMIT_ATTEMPTS`] in all; a last 421 becomes 503.
#[derive(Default)]
pub(crate) struct RingFollower {
    attempts: usize,
}

impl RingFollower {
    /// After a refusal: `Ok` to try again, else the refusal the client gets.
    pub async fn retry(&mut self, gw: &GatewayState, refusal: Refusal) -> Result<(), Refusal> {
        self.attempts += 1;
        if self.attempts < ADMIT_ATTEMPTS && await_newer_ring(gw, &refusal, RING_WAIT).await {
            return Ok(());
        }
        if refusal.is_misplaced() {
            return Err(Refusal::new(503, "The room is moving between nodes; retry"));
        }
        Err(refusal)
    }
}

/// Makes sure the gateway knows the room's home region before routing it: asks storage
/// (through a node) unless there is only one region. A new room is homed in the client's
/// `?_region=` hint if given, else in this gateway's region.
pub(crate) async fn resolve_home(
    gw: &GatewayState,
    room: &RoomKey,
    hint: Option<&str>,
) -> Result<String, Refusal> {
    if let Some(hint) = hint {
        if !gw.routing.has_region(hint) {
            return Err(Refusal::new(
                400,
                format!("Unknown region {hint:?} (no live node is in it)"),
            ));
        }
    }
    if let Some(home) = gw.routing.known_home(room) {
        if hint.is_none_or(|h| h == home) {
            return Ok(home);
        }
    }
    let proposed = hint.map_or_else(|| gw.routing.default_home(), str::to_string);
    let node = gw
        .routing
        .home_oracle(room, &proposed)
        .ok_or_else(Refusal::unavailable)?;
    let link = gw
        .links
        .link_to(&node)
        .await
        .map_err(|_| Refusal::unavailable())?;
    let ask = HomeRequest {
        request_id: 0,
        room: Some(room.to_wire()),
        proposed,
    };
    match link.request(ask).await {
        Ok(r) if r.error.is_empty() => {
            gw.routing.learn_home(room, r.region.clone());
            Ok(r.region)
        }
        Ok(r) => Err(Refusal::new(
            503,
            format!("Cannot look up the room's home region: {}", r.error),
        )),
        Err(_) => Err(Refusal::unavailable()),
    }
}

/// Re-routes after a 421 (the node's ring places the room elsewhere): waits, up to `wait`,
/// for a ring newer than this gateway's and at least the node's. A node ahead of the
/// gateway named the ring to wait for; a node behind it (or one that named none) gets the
/// same time to catch up. Returns whether it is worth asking again.
async fn await_newer_ring(gw: &GatewayState, refusal: &Refusal, wait: Duration) -> bool {
    if !refusal.is_misplaced() {
        return false;
    }
    let target = refusal.ring_version.max(gw.routing.version().next());
    gw.routing
        .wait_for_version(target, Instant::now() + wait)
        .await;
    true
}
