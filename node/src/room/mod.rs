//! What party code works with: the [`Room`] and its [`Connection`]s.
//!
//! Everything sent from a handler goes into the room's outbox, which the actor releases
//! only after the handler's writes are durable (`actor.rs`).

mod actor;
mod conns;
mod fetch;

pub(crate) use actor::{spawn_room, AlarmOutcome, OpenRequest, RoomEvent};
pub(crate) use conns::{ConnEntry, ConnTable, Peer};
pub use fetch::{FetchError, PartyStub, RoomFetcher, RoomStub};

use crate::host::{GatewayId, Links};
use crate::party::Message;
use crate::storage::Storage;
use crate::StorageError;
use bytes::Bytes;
use conclave_proto::wire::{node_event, CloseSocket, ConnState, Deliver, NodeEvent, Send};
use conclave_proto::{ConnId, RoomKey, SocketId};

use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Largest connection state (`set_state`), serialized, in bytes.
pub const MAX_CONNECTION_STATE_BYTES: usize = 16 * 1024;

/// Connection table and outbox of one room, shared by the room and its connections.
#[derive(Default)]
pub(crate) struct RoomShared {
    conns: Mutex<ConnTable>,
    outbox: Mutex<Vec<(GatewayId, NodeEvent)>>,
    /// Connection states as they were before this step's `set_state` calls, newest last:
    /// a discarded step puts them back.
    state_undo: Mutex<Vec<(Peer, Option<serde_json::Value>)>>,
}

impl RoomShared {
    pub(crate) fn conns(&self) -> MutexGuard<'_, ConnTable> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outbox(&self) -> MutexGuard<'_, Vec<(GatewayId, NodeEvent)>> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, gateway: GatewayId, event: node_event::Event) {
        self.outbox()
            .push((gateway, NodeEvent { event: Some(event) }));
    }

    pub(crate) fn take_outbox(&self) -> Vec<(GatewayId, NodeEvent)> {
        std::mem::take(&mut *self.outbox())
    }

    pub(crate) fn clear_outbox(&self) {
        self.outbox().clear();
    }

    fn state_undo(&self) -> MutexGuard<'_, Vec<(Peer, Option<serde_json::Value>)>> {
        self.state_undo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The step's connection states are kept; returns the connections whose state changed.
    fn keep_states(&self) -> Vec<Peer> {
        let mut changed: Vec<Peer> = self.state_undo().drain(..).map(|(p, _)| p).collect();
        changed.sort_unstable_by_key(|p| (p.gateway, p.socket.0));
        changed.dedup();
        changed
    }

    /// The step's connection state changes are undone.
    fn revert_states(&self) {
        let undo = std::mem::take(&mut *self.state_undo());
        let mut conns = self.conns();
        for (peer, old) in undo.into_iter().rev() {
            if let Some(e) = conns.get_mut(peer) {
                e.state = old;
            }
        }
    }
}

/// One client connection of a room, as party code sees it. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    id: ConnId,
    socket: SocketId,
    gateway: GatewayId,
    uri: Arc<str>,
    tags: Arc<[String]>,
    shared: Arc<RoomShared>,
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
            id: e.id.clone(),
            socket: e.socket,
            gateway: e.gateway,
            uri: e.uri.clone(),
            tags: e.tags.clone(),
            shared: shared.clone(),
        }
    }

    fn peer(&self) -> Peer {
        Peer {
            gateway: self.gateway,
            socket: self.socket,
        }
    }

    /// The connection id: the client's `_pk`, else a generated UUID.
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// The URL the client connected to (`http://host/parties/...`, as PartyKit reports it).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Tags: the connection id first, then what `Party::connection_tags` returned.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// The state last stored with `set_state`, decoded. It survives hibernation.
    pub fn state<T: DeserializeOwned>(&self) -> Option<T> {
        let conns = self.shared.conns();
        let v = conns.get(self.peer())?.state.as_ref()?;
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
        let entry = conns.get_mut(self.peer()).ok_or(StateError::Gone)?;
        let old = entry.state.replace(v);
        self.shared.state_undo().push((self.peer(), old));
        Ok(())
    }

    /// Sends a message to this connection (held until the handler's writes commit).
    pub fn send(&self, msg: Message) {
        self.shared.push(
            self.gateway,
            node_event::Event::Send(Send {
                socket: self.socket.0,
                binary: msg.is_binary(),
                payload: msg.payload().clone(),
            }),
        );
    }

    /// Closes the connection with a WebSocket close code and reason (`on_close` follows).
    pub fn close(&self, code: u16, reason: &str) {
        self.shared.push(
            self.gateway,
            node_event::Event::CloseSocket(CloseSocket {
                socket: self.socket.0,
                code: code.into(),
                reason: truncate_reason(reason),
            }),
        );
    }
}

/// Close reasons must fit a control frame: 123 bytes, cut on a char boundary.
pub(crate) fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// A 200-style plain-text response.
pub(crate) fn text_response(status: u16, body: &str) -> crate::Response {
    let mut r = http::Response::new(Bytes::from(body.to_string()));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A room, as its party code sees it during one handler.
pub struct Room {
    key: RoomKey,
    storage: Storage,
    shared: Arc<RoomShared>,
    links: Arc<Links>,
    fetcher: RoomFetcher,
}

impl Room {
    pub(crate) fn new(
        key: RoomKey,
        storage: Storage,
        links: Arc<Links>,
        fetcher: RoomFetcher,
    ) -> Self {
        Self {
            key,
            storage,
            shared: Arc::new(RoomShared::default()),
            links,
            fetcher,
        }
    }

    /// The room name.
    pub fn id(&self) -> &str {
        self.key.room.as_str()
    }

    /// The party name.
    pub fn party(&self) -> &str {
        self.key.party.as_str()
    }

    pub(crate) fn key(&self) -> &RoomKey {
        &self.key
    }

    pub(crate) fn shared(&self) -> &Arc<RoomShared> {
        &self.shared
    }

    /// The room's storage (writes commit when the handler returns).
    pub fn storage(&mut self) -> &mut Storage {
        &mut self.storage
    }

    /// Sends `msg` to every connection except those whose id is in `exclude`. Fans out at
    /// the gateways: one delivery per gateway that holds members.
    ///
    /// ```
    /// # use conclave_node::{Connection, Message, Room};
    /// fn relay(room: &Room, sender: &Connection, msg: &Message) {
    ///     room.broadcast(msg, &[sender.id()]);
    /// }
    /// ```
    pub fn broadcast(&self, msg: &Message, exclude: &[&str]) {
        let mut per_gateway: BTreeMap<GatewayId, Vec<u64>> = BTreeMap::new();
        {
            let conns = self.shared.conns();
            for e in conns.iter() {
                let excluded = per_gateway.entry(e.gateway).or_default();
                if exclude.contains(&e.id.as_str()) {
                    excluded.push(e.socket.0);
                }
            }
        }
        for (gateway, exclude) in per_gateway {
            self.shared.push(
                gateway,
                node_event::Event::Deliver(Deliver {
                    room: Some(self.key.to_wire()),
                    payload: msg.payload().clone(),
                    binary: msg.is_binary(),
                    exclude,
                }),
            );
        }
    }

    /// The connection with this id, if it is in the room.
    pub fn connection(&self, id: &str) -> Option<Connection> {
        let conns = self.shared.conns();
        conns
            .by_id(id)
            .map(|e| Connection::from_entry(e, &self.shared))
    }

    /// Connections that carry `tag`, or all connections for `None`.
    ///
    /// ```
    /// # use conclave_node::{Message, Room};
    /// fn notify_admins(room: &Room, text: &str) {
    ///     for conn in room.connections(Some("admin")) {
    ///         conn.send(Message::text(text));
    ///     }
    /// }
    /// ```
    pub fn connections(&self, tag: Option<&str>) -> Vec<Connection> {
        let conns = self.shared.conns();
        conns
            .iter()
            .filter(|e| tag.is_none_or(|t| e.tags.iter().any(|x| x == t)))
            .map(|e| Connection::from_entry(e, &self.shared))
            .collect()
    }

    pub fn connection_count(&self) -> usize {
        self.shared.conns().len()
    }

    /// Another party's rooms, for room-to-room requests.
    ///
    /// ```
    /// # use conclave_node::{PartyError, Room};
    /// async fn lobby_history(room: &Room) -> Result<bytes::Bytes, PartyError> {
    ///     let req = http::Request::get("/parties/chat/lobby").body(bytes::Bytes::new())?;
    ///     let resp = room.parties("chat").get("lobby").fetch(req).await?;
    ///     Ok(resp.into_body())
    /// }
    /// ```
    pub fn parties(&self, party: &str) -> PartyStub<'_> {
        self.fetcher.party(party)
    }

    /// Commits the writes made so far and releases the messages held behind them, without
    /// waiting for the handler to return.
    pub async fn sync(&mut self) -> Result<(), StorageError> {
        self.commit().await?;
        self.flush().await;
        Ok(())
    }

    /// Commits buffered writes; on failure the held messages are dropped.
    pub(crate) async fn commit(&mut self) -> Result<bool, StorageError> {
        if !self.storage.has_pending_writes() {
            return Ok(false);
        }
        let commit = self.storage.take_commit();
        let alarm_changed = commit.alarm.is_some();
        let store = self.storage.store().clone();
        match store.commit(&self.key, commit).await {
            Ok(()) => Ok(alarm_changed),
            Err(e) => {
                self.shared.clear_outbox();
                Err(e)
            }
        }
    }

    /// Releases held messages to the gateways, in order. Changed connection states go
    /// first, so a gateway holds them before it sees the acknowledgement of the step.
    pub(crate) async fn flush(&self) {
        let changed = self.shared.keep_states();
        let states: Vec<(GatewayId, NodeEvent)> = {
            let conns = self.shared.conns();
            changed
                .into_iter()
                .filter_map(|peer| conns.get(peer))
                .map(|e| {
                    let state = e
                        .state
                        .as_ref()
                        .and_then(|v| serde_json::to_vec(v).ok())
                        .unwrap_or_default();
                    let event = node_event::Event::ConnState(ConnState {
                        socket: e.socket.0,
                        state: state.into(),
                    });
                    (e.gateway, NodeEvent { event: Some(event) })
                })
                .collect()
        };
        for (gateway, event) in states.into_iter().chain(self.shared.take_outbox()) {
            if let Some(tx) = self.links.get(gateway) {
                // A gateway that went away has no sockets left to deliver to.
                let _ = tx.send(event).await;
            }
        }
    }

    pub(crate) fn discard(&mut self) {
        self.storage.discard();
        self.shared.clear_outbox();
        self.shared.revert_states();
    }
}
