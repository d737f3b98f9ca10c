//! One client connection of a room, as party code sees it.

use super::conns::{carries_tag, ConnEntry, ConnNames, ConnTable, Peer};
use super::ledger::SocketRef;
use super::shared::RoomShared;
use crate::gateway_bounds::{cut, MAX_CLOSE_REASON_BYTES};
use crate::links::GatewayId;
use crate::message::Message;
use conclave_proto::wire::{node_event, CloseSocket, Send};
use conclave_proto::SocketId;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::{Arc, OnceLock};

/// Largest connection state (`set_state`), serialized, in bytes.
pub const MAX_CONNECTION_STATE_BYTES: usize = 16 * 1024;

/// Largest message a party may send or broadcast. A larger one would not fit the relay's
/// gRPC messages (64 MiB) and would break the link every socket of its gateway shares, so
/// it is not sent: its receivers are closed with 1009 instead.
pub const MAX_SEND_BYTES: usize = 32 * 1024 * 1024;

/// One client connection of a room, as party code sees it. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    names: ConnNames,
    socket: SocketId,
    /// The gateway link the socket was on when this handle was made. A socket its gateway
    /// re-attached over a new link (the old one dropped) is found again by its id,
    /// `origin` and `socket`: a handle the party kept reaches it again once it is back.
    gateway: GatewayId,
    /// The socket's gateway process (with `socket`, its identity across links and nodes).
    origin: u64,
    /// The room's count of connections that moved link when this handle was made: while
    /// it stands, `gateway` is right without a look in the table.
    relinked: u64,
    /// Filled from the entry when it has tags besides the id; else built on first use.
    tags: OnceLock<Arc<[String]>>,
    shared: Arc<RoomShared>,
    /// The state of a connection that has left the room, for the handlers of its leaving
    /// (`on_close`, `on_error`): the room's table no longer has it.
    departed_state: Option<Arc<serde_json::Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("connection state is {len} bytes serialized; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("connection state could not be serialized: {0}")]
    Encode(String),
    #[error("connection is no longer in the room")]
    Gone,
}

impl Connection {
    pub(crate) fn from_entry(e: &ConnEntry, shared: &Arc<RoomShared>) -> Self {
        Self {
            names: e.names.clone(),
            socket: e.socket,
            gateway: e.gateway,
            origin: e.origin,
            relinked: shared.relinked(),
            tags: e
                .extra_tags()
                .cloned()
                .map(OnceLock::from)
                .unwrap_or_default(),
            shared: shared.clone(),
            departed_state: None,
        }
    }

    /// A connection that has just left the room (its entry, removed): it keeps its state
    /// for the handlers of its leaving.
    pub(crate) fn departed(e: &ConnEntry, shared: &Arc<RoomShared>) -> Self {
        let mut conn = Self::from_entry(e, shared);
        conn.departed_state = e.state().cloned().map(Arc::new);
        conn
    }

    /// The state the connection had when it left the room, as stored (`None` for one
    /// still in it, or one that had none).
    pub(crate) fn departed_state(&self) -> Option<&serde_json::Value> {
        self.departed_state.as_deref()
    }

    pub(crate) fn peer(&self) -> Peer {
        Peer {
            gateway: self.gateway,
            socket: self.socket,
        }
    }

    /// The socket's gateway process.
    pub(crate) fn origin(&self) -> u64 {
        self.origin
    }

    /// The socket's id at its gateway.
    pub(crate) fn socket_id(&self) -> SocketId {
        self.socket
    }

    /// The socket across its moves between links and nodes.
    pub(crate) fn socket_ref(&self) -> SocketRef {
        SocketRef {
            origin: self.origin,
            socket: self.socket.0,
        }
    }

    /// This connection's entry in `conns`, where it is now: on the link the handle was
    /// made on, or on the link its gateway re-attached it over since.
    pub(crate) fn entry_in<'a>(&self, conns: &'a ConnTable) -> Option<&'a ConnEntry> {
        conns
            .get(self.peer())
            .or_else(|| conns.by_identity(self.id(), self.origin, self.socket))
    }

    /// Where the connection is now; where it was, if it has left the room.
    fn current_peer(&self) -> Peer {
        if self.shared.relinked() == self.relinked {
            return self.peer();
        }
        self.entry_in(&self.shared.conns())
            .map_or(self.peer(), ConnEntry::peer)
    }

    /// The connection id: the client's `_pk`, else a generated UUID.
    pub fn id(&self) -> &str {
        self.names.id()
    }

    /// The URL the client connected to (`http://host/parties/...`, as PartyKit reports it).
    pub fn uri(&self) -> &str {
        self.names.uri()
    }

    /// Tags: the connection id first, then what `Party::connection_tags` returned.
    pub fn tags(&self) -> &[String] {
        self.tags.get_or_init(|| Arc::from([self.id().to_string()]))
    }

    /// Whether the connection carries `tag` (without building the tag list).
    pub fn has_tag(&self, tag: &str) -> bool {
        carries_tag(self.tags.get().map(|all| &all[..]), self.id(), tag)
    }

    /// The tags, owned.
    pub(crate) fn tag_list(&self) -> Vec<String> {
        match self.tags.get() {
            Some(all) => all.to_vec(),
            None => vec![self.id().to_string()],
        }
    }

    /// The state last stored with `set_state`, decoded. It survives hibernation, and is
    /// still there in the handlers of the connection's leaving (`on_close`, `on_error`).
    pub fn state<T: DeserializeOwned>(&self) -> Option<T> {
        let conns = self.shared.conns();
        let v = match self.entry_in(&conns) {
            Some(e) => e.state()?,
            None => self.departed_state.as_deref()?,
        };
        serde_json::from_value(v.clone()).ok()
    }

    /// Attaches state to the connection (at most 16 KiB serialized). It stays with the
    /// connection while the room hibernates; like storage writes, it is undone if the
    /// handler fails or its commit does.
    ///
    /// ```
    /// # use conclave_node::{Connection, StateError};
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Player { name: String, score: u32 }
    ///
    /// fn score(conn: &Connection) -> Result<u32, StateError> {
    ///     let mut p: Player = conn.state().unwrap_or(Player { name: conn.id().into(), score: 0 });
    ///     p.score += 1;
    ///     conn.set_state(&p)?;
    ///     Ok(p.score)
    /// }
    /// ```
    pub fn set_state<T: Serialize>(&self, state: &T) -> Result<(), StateError> {
        let v = serde_json::to_value(state).map_err(|e| StateError::Encode(e.to_string()))?;
        let len = serde_json::to_vec(&v)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if len > MAX_CONNECTION_STATE_BYTES {
            return Err(StateError::TooLarge {
                len,
                max: MAX_CONNECTION_STATE_BYTES,
            });
        }
        let mut conns = self.shared.conns();
        let peer = self.entry_in(&conns).ok_or(StateError::Gone)?.peer();
        let entry = conns.get_mut(peer).ok_or(StateError::Gone)?;
        let old = entry.replace_state(Some(v));
        self.shared.state_replaced(peer, old);
        Ok(())
    }

    /// Sends a message to this connection (held until the handler's writes commit). Over
    /// [`MAX_SEND_BYTES`] the connection is closed with 1009 instead.
    pub fn send(&self, msg: Message) {
        let to = self.current_peer();
        if msg.payload().len() > MAX_SEND_BYTES {
            tracing::warn!(conn = %self.id(), bytes = msg.payload().len(), "a party sent a message over MAX_SEND_BYTES: closing its receiver with 1009");
            self.shared.push(to.gateway, too_big_to_send(self.socket));
            return;
        }
        self.shared.push(
            to.gateway,
            node_event::Event::Send(Send {
                socket: self.socket.0,
                binary: msg.is_binary(),
                payload: msg.payload().clone(),
                out_seq: 0,
            }),
        );
    }

    /// Closes the connection with a WebSocket close code and reason (`on_close` follows).
    pub fn close(&self, code: u16, reason: &str) {
        let to = self.current_peer();
        self.shared
            .push(to.gateway, close_socket(self.socket, code, reason));
    }
}

/// The events that close every receiver of a broadcast over [`MAX_SEND_BYTES`] (all of
/// `shared`'s connections but `exclude`) with 1009, in place of the broadcast.
pub(crate) fn refuse_broadcast(shared: &RoomShared, bytes: usize, exclude: &[&str]) {
    tracing::warn!(
        bytes,
        "a party broadcast a message over MAX_SEND_BYTES: closing its receivers with 1009"
    );
    let receivers: Vec<(GatewayId, SocketId)> = shared
        .conns()
        .iter()
        .filter(|e| !exclude.contains(&e.id()))
        .map(|e| (e.gateway, e.socket))
        .collect();
    for (gateway, socket) in receivers {
        shared.push(gateway, too_big_to_send(socket));
    }
}

/// The close of a receiver of a message over [`MAX_SEND_BYTES`].
fn too_big_to_send(socket: SocketId) -> node_event::Event {
    close_socket(
        socket,
        conclave_proto::close::MESSAGE_TOO_BIG,
        "The server's message was too big to send",
    )
}

/// The event that closes `socket` with `code` and `reason` (cut to fit a close frame).
pub(crate) fn close_socket(socket: SocketId, code: u16, reason: &str) -> node_event::Event {
    node_event::Event::CloseSocket(CloseSocket {
        socket: socket.0,
        code: code.into(),
        reason: cut(reason, MAX_CLOSE_REASON_BYTES).to_string(),
        out_seq: 0,
    })
}
