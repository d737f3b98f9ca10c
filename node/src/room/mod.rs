//! What party code works with: the [`Room`] and its [`Connection`]s.
//!
//! Everything sent from a handler goes into the room's outbox, which the actor releases
//! only after the handler's writes are durable (`crate::actor`).

mod connection;
mod conns;
mod fetch;
mod ledger;
mod shared;

pub(crate) use connection::{close_socket, refuse_broadcast};
pub use connection::{Connection, StateError, MAX_CONNECTION_STATE_BYTES, MAX_SEND_BYTES};
pub(crate) use conns::{ConnEntry, ConnNames, ConnTable, Peer};
pub(crate) use fetch::RoomRequests;
pub use fetch::{FetchError, PartyStub, RoomFetcher, RoomStub};
pub(crate) use ledger::{Ledger, SocketRef};
pub(crate) use shared::RoomShared;

use crate::links::{GatewayId, Links};
use crate::message::Message;
use crate::storage::{Savepoint, Storage, StorageError};
use conclave_proto::wire::{node_event, ConnState, Deliver, NodeEvent};
use conclave_proto::RoomKey;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// A room, as its party code sees it during one handler.
pub struct Room {
    key: RoomKey,
    storage: Storage,
    shared: Arc<RoomShared>,
    links: Arc<Links>,
    fetcher: RoomFetcher,
    /// The upgrade request of the connection being admitted.
    upgrade_headers: Option<Arc<http::HeaderMap>>,
    /// What makes each frame take effect once (loaded when the node claims the room).
    ledger: Ledger,
    /// `conclave_room_commit_seconds` for this room's backend, looked up once.
    commit_seconds: metrics::Histogram,
    /// Where the running step began, while steps before it are held for the same commit
    /// (a batch): a discard then takes back this step's effects only.
    step_mark: Option<StepMark>,
    /// How many commits have failed (a handler's `sync` among them).
    failed_commits: u64,
    /// The error of the last commit that failed, until the step it failed in takes it
    /// ([`Room::take_failed_commit`]). Boxed: it is rare, and the room is part of every
    /// room's task.
    failed_commit: Option<Box<StorageError>>,
    /// The answer of the request being handled, when its handler gives it after its step
    /// ([`Room::answer_later`]).
    later_answer: Option<futures::future::BoxFuture<'static, crate::message::Response>>,
}

/// The held writes, messages and connection state changes when a step began.
struct StepMark {
    storage: Savepoint,
    /// Held messages, and things to run on their release.
    outbox: (usize, usize),
    states: usize,
}

impl Room {
    /// A room whose connection table keeps `conn_count` equal to its size.
    pub(crate) fn new(
        key: RoomKey,
        storage: Storage,
        links: Arc<Links>,
        fetcher: RoomFetcher,
        conn_count: Arc<AtomicUsize>,
    ) -> Self {
        let backend = storage.store().backend();
        Self {
            commit_seconds: metrics::histogram!("conclave_room_commit_seconds", "backend" => backend),
            key,
            storage,
            shared: Arc::new(RoomShared::new(conn_count)),
            links,
            fetcher,
            upgrade_headers: None,
            ledger: Ledger::default(),
            step_mark: None,
            failed_commits: 0,
            failed_commit: None,
            later_answer: None,
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

    /// The headers of the WebSocket upgrade request, while a new connection is admitted
    /// (in `connection_tags` and `on_connect`); `None` otherwise.
    pub fn upgrade_headers(&self) -> Option<&http::HeaderMap> {
        self.upgrade_headers.as_deref()
    }

    pub(crate) fn set_upgrade_headers(&mut self, headers: Option<Arc<http::HeaderMap>>) {
        self.upgrade_headers = headers;
    }

    pub(crate) fn take_upgrade_headers(&mut self) -> Option<Arc<http::HeaderMap>> {
        self.upgrade_headers.take()
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
        broadcast_to(&self.shared, &self.key, msg, exclude);
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
            .filter(|e| tag.is_none_or(|t| e.has_tag(t)))
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

    /// Runs the party's `on_wake` after `delay`, if the room is still loaded here then
    /// (not while it hibernates, nor after it moved to another node). In memory only.
    pub fn wake_after(&self, delay: std::time::Duration) {
        let (fetcher, key) = (self.fetcher.clone(), self.key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            fetcher.wake(key);
        });
    }

    /// Lends the room's storage, with its buffered writes, to party code running on
    /// another thread; [`Room::give_back_storage`] returns it.
    pub(crate) fn lend_storage(&mut self) -> Storage {
        self.storage.lend()
    }

    pub(crate) fn give_back_storage(&mut self, storage: Storage) {
        self.storage.give_back(storage);
    }

    pub(crate) fn ledger(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    pub(crate) fn fetcher(&self) -> &RoomFetcher {
        &self.fetcher
    }

    /// Commits buffered writes; on failure the held messages are dropped.
    pub(crate) async fn commit(&mut self) -> Result<bool, StorageError> {
        // Whatever commits, or fails to, is no longer behind a step's mark.
        self.step_mark = None;
        if !self.storage.has_pending_writes() {
            return Ok(false);
        }
        let mut commit = self.storage.take_commit();
        let alarm_changed = commit.alarm.is_some();
        let sealed = {
            let mut outbox = self.shared.take_outbox();
            let sealed = self
                .ledger
                .seal(&mut commit.ledger, &mut outbox, &self.shared.conns());
            self.shared.restore_outbox(outbox);
            sealed
        };
        let store = self.storage.store().clone();
        let commit_span = conclave_proto::trace::enabled()
            .then(|| tracing::info_span!(target: conclave_proto::trace::TARGET, "storage.commit"));
        let started = std::time::Instant::now();
        let committing = store.commit(&self.key, commit);
        let result = match commit_span {
            Some(span) => tracing::Instrument::instrument(committing, span).await,
            None => committing.await,
        };
        self.commit_seconds.record(started.elapsed().as_secs_f64());
        match result {
            Ok(usage) => {
                self.storage.committed(usage);
                self.ledger.committed(sealed);
                Ok(alarm_changed)
            }
            Err(e) => {
                self.storage.not_committed();
                self.ledger.not_committed(sealed);
                self.shared.clear_outbox();
                self.failed_commits += 1;
                self.failed_commit = Some(Box::new(e.clone()));
                Err(e)
            }
        }
    }

    /// Releases held messages to the gateways, in order. Changed connection states go
    /// first, so a gateway holds them before it sees the acknowledgement of the step.
    /// While sockets are coming back after a move, the ledger sees the broadcasts.
    pub(crate) async fn flush(&mut self) {
        let changed = self.shared.keep_states();
        let states: Vec<(GatewayId, NodeEvent)> = {
            let conns = self.shared.conns();
            changed
                .into_iter()
                .filter_map(|peer| conns.get(peer))
                .map(|e| {
                    let state = e
                        .state()
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
        let (released, then) = self.shared.take_released();
        self.ledger.released(&released);
        for (gateway, event) in states.into_iter().chain(released) {
            self.links.send(gateway, event).await;
        }
        for action in then {
            action();
        }
    }

    /// Discards what the running step wrote, sent and changed; with no step mark (the
    /// step is alone), everything held.
    pub(crate) fn discard(&mut self) {
        match &self.step_mark {
            Some(mark) => {
                self.storage.rollback(mark.storage.clone());
                self.shared.truncate_outbox(mark.outbox);
                self.shared.revert_states_after(mark.states);
            }
            None => self.discard_all(),
        }
    }

    /// Discards every held write, message and connection state change.
    pub(crate) fn discard_all(&mut self) {
        self.step_mark = None;
        self.storage.discard();
        self.shared.clear_outbox();
        self.shared.revert_states_after(0);
    }

    /// The request being handled is answered by `answer` rather than by what its handler
    /// returns: the handler goes on after its step, and the room takes other events
    /// meanwhile.
    pub(crate) fn answer_later(
        &mut self,
        answer: futures::future::BoxFuture<'static, crate::message::Response>,
    ) {
        self.later_answer = Some(answer);
    }

    pub(crate) fn take_later_answer(
        &mut self,
    ) -> Option<futures::future::BoxFuture<'static, crate::message::Response>> {
        self.later_answer.take()
    }

    /// How many of the room's commits have failed so far.
    pub(crate) fn failed_commits(&self) -> u64 {
        self.failed_commits
    }

    /// The error of the last commit that failed since this was last called, if one did.
    pub(crate) fn take_failed_commit(&mut self) -> Option<StorageError> {
        self.failed_commit.take().map(|e| *e)
    }

    /// The next step runs behind steps still held for the same commit: remembers where it
    /// begins, for [`Room::discard`].
    pub(crate) fn mark_step(&mut self) {
        self.step_mark = Some(StepMark {
            storage: self.storage.savepoint(),
            outbox: self.shared.outbox_len(),
            states: self.shared.state_changes(),
        });
    }
}

/// The sockets `gateway` excludes from a broadcast, its entry made if it has none.
fn excluded_on(per_gateway: &mut Vec<(GatewayId, Vec<u64>)>, gateway: GatewayId) -> &mut Vec<u64> {
    let at = match per_gateway.iter().position(|(g, _)| *g == gateway) {
        Some(at) => at,
        None => {
            per_gateway.push((gateway, Vec::new()));
            per_gateway.len() - 1
        }
    };
    &mut per_gateway[at].1
}

/// Queues `msg` for every connection of the room except those whose id is in `exclude`:
/// one delivery per gateway that holds members.
pub(crate) fn broadcast_to(shared: &RoomShared, key: &RoomKey, msg: &Message, exclude: &[&str]) {
    if msg.payload().len() > MAX_SEND_BYTES {
        refuse_broadcast(shared, msg.payload().len(), exclude);
        return;
    }
    // The gateways that hold members, each with the sockets it excludes: a few gateways,
    // so a list searched in place (most rooms are on one).
    let mut per_gateway: Vec<(GatewayId, Vec<u64>)> = Vec::new();
    let mut exclude_absent = Vec::new();
    {
        let conns = shared.conns();
        let mut last = None;
        for e in conns.iter() {
            // Members of one gateway are mostly next to each other.
            if last != Some(e.gateway) {
                excluded_on(&mut per_gateway, e.gateway);
                last = Some(e.gateway);
            }
        }
        // An excluded connection here is excluded by its socket. One may be away, coming
        // back after a move: the room's records keep its id, so that what is sent again
        // on its return skips it.
        for id in exclude {
            match conns.by_id(id) {
                Some(e) => {
                    let excluded = excluded_on(&mut per_gateway, e.gateway);
                    if !excluded.contains(&e.socket.0) {
                        excluded.push(e.socket.0);
                    }
                }
                None if !exclude_absent.iter().any(|a| a == id) => {
                    exclude_absent.push(id.to_string())
                }
                None => {}
            }
        }
    }
    // In ascending link order: that is how the ledger tells one broadcast's deliveries
    // from the next broadcast of the same payload (`continues_delivery`). The table's own
    // order is its hashing's.
    per_gateway.sort_unstable_by_key(|(gateway, _)| *gateway);
    for (gateway, exclude) in per_gateway {
        shared.push(
            gateway,
            node_event::Event::Deliver(Deliver {
                room: Some(key.to_wire()),
                payload: msg.payload().clone(),
                binary: msg.is_binary(),
                exclude,
                out_seq: 0,
                trace_parent: conclave_proto::trace::current(),
                exclude_absent: exclude_absent.clone(),
            }),
        );
    }
}
