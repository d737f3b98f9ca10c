//! Sockets joining the room. The room answers the gateway's admission itself, once the
//! socket is in its connection table: admitted (with its tags), refused (503: this node
//! cannot serve the room now, the gateway tries again), or admitted and closed with 1011
//! (the room failed, as PartyKit does when `onConnect` throws).

use super::handler::Handler;
use super::RoomActor;
use crate::mailbox::{admitted, refused, OpenRequest};
use crate::room::{close_socket, ConnEntry, ConnNames, Connection, Peer, SocketRef};
use crate::rooms::gauge;
use conclave_proto::close;
use conclave_proto::wire::Resume;
use conclave_proto::Refusal;
use tracing::warn;

use crate::gateway_bounds::{MAX_EXTRA_TAGS, MAX_TAG_BYTES};

impl RoomActor {
    pub(super) async fn admit(&mut self, mut o: OpenRequest) {
        // The rare paths (a socket moving here, a socket replacing another, refusals) are
        // boxed where they branch off: inline, each would add its future to every
        // admission's (allocated and copied once per connect).
        self.admitting = Some(SocketRef {
            origin: o.origin,
            socket: o.peer.socket.0,
        });
        match o.resume.take() {
            Some(resume) => Box::pin(self.resume(o, resume)).await,
            None => self.open(o).await,
        }
        self.admitting = None;
    }

    /// Adds a connection. Newest wins: an older socket with the same id is closed and leaves
    /// first, unless it is this very socket seen over an earlier link. Returns whether it
    /// was (the socket was in the room here already).
    async fn insert_conn(&mut self, mut entry: ConnEntry) -> bool {
        let (origin, socket) = (entry.origin, entry.socket);
        let (seen_before, replaced) = {
            let mut conns = self.room.shared().conns();
            // The same socket seen again (over a new link): frames it had handled here
            // stay handled. A socket keeps its connection id for life, so if it is here
            // it is the entry under that id.
            let same = conns
                .by_id(entry.id())
                .filter(|e| e.origin == origin && e.socket == socket)
                .map(|e| (e.peer(), e.last_seq));
            if let Some((peer, last_seq)) = same {
                entry.last_seq = entry.last_seq.max(last_seq);
                if peer != entry.peer() {
                    conns.remove(peer);
                    self.room.shared().note_relink();
                }
            }
            (same.is_some(), conns.insert(entry))
        };
        match replaced {
            None => {}
            Some(old) if old.origin == origin && old.socket == socket => {}
            Some(old) => {
                let reason = "Replaced by a newer connection with the same id";
                self.room
                    .shared()
                    .push(old.gateway, close_socket(old.socket, close::NORMAL, reason));
                // Out now, not with the close's step: a step that fails discards what it
                // holds, and the old socket would stay open with no room to serve it.
                self.room.flush().await;
                let old_conn = Connection::from_entry(&old, self.room.shared());
                Box::pin(self.closed(old_conn, close::NORMAL, "replaced", None)).await;
            }
        }
        seen_before
    }

    /// A socket moving here from another node: it joins as it was, without `on_connect`.
    async fn resume(&mut self, o: OpenRequest, resume: Resume) {
        let peer = o.peer;
        let socket = SocketRef {
            origin: o.origin,
            socket: peer.socket.0,
        };
        let names = o.names.clone();
        let mut entry = ConnEntry::new(o.names, peer, o.origin, resume.acked_seq);
        entry.set_tags(resume.tags);
        let tags = entry.extra_tags().cloned();
        if !resume.state.is_empty() {
            entry.replace_state(serde_json::from_slice(&resume.state).ok());
        }
        // Seen here before (over a link since lost), it had this room's broadcasts until
        // then; else it was away for every one made since the room came here.
        let first_time = !self.insert_conn(entry).await;
        if let Err(e) = self.ensure_started().await {
            self.refuse_open(peer, o.request_id, &e.to_string()).await;
            return;
        }
        // Frames whose step committed are not handled again, and the outputs of committed
        // steps that may not have reached the socket are sent again (the gateway drops
        // those it has), with the broadcasts it missed while coming back, before the
        // acknowledgement that covers them.
        let (applied, resend) = self.room.ledger().resumed(socket, names.id(), first_time);
        let last_out = self.room.ledger().last_out();
        // Acknowledged: the frames whose step committed, and those this socket had handled
        // here over a link since lost (whose acknowledgement may have been lost with it;
        // the gateway would otherwise keep them, and replay them to the room's next owner).
        let handled = match self.room.shared().conns().get_mut(peer) {
            Some(e) => {
                e.last_seq = e.last_seq.max(applied);
                e.last_seq
            }
            None => applied,
        };
        let shared = self.room.shared();
        shared.push(
            peer.gateway,
            admitted(o.request_id, peer.socket, tags.as_deref(), last_out),
        );
        for event in resend {
            shared.push(peer.gateway, event);
        }
        if handled > resume.acked_seq {
            self.ack(peer, handled);
        }
        self.room.flush().await;
        // An instance that asks hears of a socket new to it now, once it is admitted.
        if let Err(e) = self.greet(peer).await {
            warn!(conn = %names.id(), error = %e, "on_connect for a socket that moved here did not take effect");
        }
    }

    /// A new socket: it gets its tags, is admitted, then `on_connect` runs.
    async fn open(&mut self, o: OpenRequest) {
        let OpenRequest {
            peer,
            names,
            headers,
            request_id,
            origin,
            resume: _,
            trace_parent: _,
        } = o;
        let max = self.ctx.max_connections;
        let full = {
            let conns = self.room.shared().conns();
            conns.len() >= max && conns.by_id(names.id()).is_none()
        };
        if full {
            let refusal = Refusal::new(503, format!("Room is full ({max} connections)"));
            Box::pin(self.refuse(peer, request_id, refusal)).await;
            return;
        }
        self.room.set_upgrade_headers(headers);
        self.admit_new(peer, names, request_id, origin).await;
        self.room.set_upgrade_headers(None);
    }

    async fn admit_new(&mut self, peer: Peer, names: ConnNames, request_id: u64, origin: u64) {
        let conn_id = names.id().to_string();
        self.insert_conn(ConnEntry::new(names, peer, origin, 0))
            .await;
        let Some(extra) = self
            .tags_from_started_instance(peer, &conn_id, request_id)
            .await
        else {
            return;
        };
        let mut tags = vec![conn_id.clone()];
        tags.extend(
            extra
                .into_iter()
                .filter(|t| !t.is_empty() && t.len() <= MAX_TAG_BYTES)
                .take(MAX_EXTRA_TAGS),
        );
        let tags = {
            let mut conns = self.room.shared().conns();
            let Some(e) = conns.get_mut(peer) else {
                return;
            };
            e.set_tags(tags);
            e.extra_tags().cloned()
        };
        let last_out = self.room.ledger().last_out();
        self.room.shared().push(
            peer.gateway,
            admitted(request_id, peer.socket, tags.as_deref(), last_out),
        );
        let Some(conn) = self.conn(peer) else {
            return;
        };
        if self.greets {
            self.greeted.insert(conn.socket_ref());
        }
        if let Err(e) = self.step(Handler::Connect(&conn)).await {
            self.greeted.remove(&conn.socket_ref());
            warn!(conn = %conn_id, error = %e, "on_connect failed; closing with 1011");
            Box::pin(self.reject_open(peer, request_id, &e.to_string())).await;
        }
    }

    /// Starts the room's instance if need be and asks it for the joining socket's tags.
    /// A handler that cost the instance (a JavaScript reset) leaves no tags: a fresh
    /// instance is asked again, once, and is the one whose `on_connect` the socket hears.
    /// `None`: the socket was refused or rejected.
    async fn tags_from_started_instance(
        &mut self,
        peer: Peer,
        conn_id: &str,
        request_id: u64,
    ) -> Option<Vec<String>> {
        for _ in 0..2 {
            if let Err(e) = self.ensure_started().await {
                if self.fenced {
                    Box::pin(self.refuse_open(peer, request_id, &e.to_string())).await;
                } else {
                    let why = format!("Room failed to start: {e}");
                    Box::pin(self.reject_open(peer, request_id, &why)).await;
                }
                return None;
            }
            let conn = self.conn(peer)?;
            let tags = match self.party.as_mut() {
                Some(party) => {
                    let tags = party.connection_tags(&mut self.room, &conn);
                    match crate::panics::guarded_future(tags).await {
                        Ok(tags) => tags,
                        Err(what) => {
                            // The instance is not used again; the socket is not admitted.
                            // What it did meanwhile (work of earlier events run within
                            // this one) goes with it.
                            self.room.discard_all();
                            self.party = None;
                            gauge::party_dropped();
                            let why = format!("the party panicked in connection_tags: {what}");
                            warn!(conn = %conn_id, "{why}");
                            Box::pin(self.reject_open(peer, request_id, &why)).await;
                            return None;
                        }
                    }
                }
                None => Vec::new(),
            };
            if self.instance_ready() {
                return Some(tags);
            }
            // Reset while it tagged: what it did meanwhile is not committed by the next
            // instance's steps.
            self.room.discard_all();
        }
        let why = "the party's instance was reset while it tagged the connection";
        warn!(conn = %conn_id, "{why}");
        Box::pin(self.reject_open(peer, request_id, why)).await;
        None
    }

    /// This node cannot take the socket now (it may not own the room): 503, and the
    /// gateway tries again.
    pub(super) async fn refuse_open(&mut self, peer: Peer, request_id: u64, why: &str) {
        let refusal = Refusal {
            ring_version: self.ctx.cluster.ring_version(),
            ..Refusal::new(
                503,
                format!("The room cannot be served here right now: {why}"),
            )
        };
        self.refuse(peer, request_id, refusal).await;
    }

    /// Answers the socket's admission with `refusal`; it leaves the room if it was in.
    async fn refuse(&mut self, peer: Peer, request_id: u64, refusal: Refusal) {
        self.room.shared().conns().remove(peer);
        self.room
            .shared()
            .push(peer.gateway, refused(request_id, peer.socket, refusal));
        self.room.flush().await;
    }

    /// Accept-then-close with 1011, as PartyKit does when `onConnect` throws.
    async fn reject_open(&mut self, peer: Peer, request_id: u64, why: &str) {
        self.room.shared().conns().remove(peer);
        let last_out = self.room.ledger().last_out();
        let shared = self.room.shared();
        shared.push(
            peer.gateway,
            admitted(request_id, peer.socket, None, last_out),
        );
        shared.push(
            peer.gateway,
            close_socket(peer.socket, close::INTERNAL_ERROR, why),
        );
        self.room.flush().await;
    }
}
