//! The Party API: what a room's code implements.

use crate::message::{text_response, Message, Request, Response};
use crate::room::{Connection, Room};
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;

/// An error from party code. The runtime logs it with the room and connection ids and
/// discards the handler's writes and held messages.
pub type PartyError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A handler's error that also says the party instance must not be used again (its state
/// in memory is broken): the step is discarded as for any error, and the next event starts
/// a fresh instance, from `on_start` and storage.
#[derive(Debug, thiserror::Error)]
#[error("{0} (the party instance is dropped)")]
pub struct InstanceBroken(pub String);

/// What `before_connect` sees: the room, the would-be connection id and the upgrade request.
pub struct ConnectRequest<'a> {
    pub party: &'a str,
    pub room: &'a str,
    pub conn_id: &'a str,
    pub uri: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// A connection about to be admitted, as an asynchronous check sees it
/// ([`PartyFactory::check_connect`]); the check may rewrite its URI and headers.
#[derive(Debug, Clone)]
pub struct ConnectCheck {
    pub party: String,
    pub room: String,
    pub conn_id: String,
    pub uri: String,
    pub headers: http::HeaderMap,
}

/// Why a connection was refused before the upgrade: the HTTP status and body the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub body: String,
}

impl Rejection {
    pub fn unauthorized(body: impl Into<String>) -> Self {
        Self {
            status: 401,
            body: body.into(),
        }
    }
    pub fn forbidden(body: impl Into<String>) -> Self {
        Self {
            status: 403,
            body: body.into(),
        }
    }
}

/// A room's code. One instance per active room; its handlers never run concurrently.
///
/// Writes made through [`Room::storage`] in one handler commit atomically when the handler
/// returns, and everything the handler sends is held until that commit is durable (the
/// output gate). If a handler returns an error or the commit fails, the writes and the held
/// messages are discarded, and after a failed commit the instance is dropped and rebuilt
/// (`on_start` runs again).
///
/// ```
/// use conclave_node::{async_trait, Connection, Message, Party, PartyError, Room};
///
/// /// Echoes every message back to its sender and counts messages in storage.
/// #[derive(Default)]
/// struct Echo;
///
/// #[async_trait]
/// impl Party for Echo {
///     async fn on_message(&mut self, room: &mut Room, conn: &Connection, msg: Message) -> Result<(), PartyError> {
///         let seen: u64 = room.storage().get_json("seen").await?.unwrap_or(0);
///         room.storage().put_json("seen", &(seen + 1))?;
///         conn.send(msg);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Party: Send + 'static {
    /// Runs once before the first event after the room (re)activates.
    async fn on_start(&mut self, _room: &mut Room) -> Result<(), PartyError> {
        Ok(())
    }

    /// Tags for a new connection, queried before `on_connect` (at most 10, 256 bytes
    /// each). The connection id is always the first tag. Runs as part of the connection's
    /// admission: writes made here commit with `on_connect`'s.
    async fn connection_tags(&mut self, _room: &mut Room, _conn: &Connection) -> Vec<String> {
        Vec::new()
    }

    /// Whether the room may drop this instance when idle while it still has connections
    /// (hibernation). A party that keeps state only in memory says no: its instance then
    /// lives as long as the room has connections.
    fn hibernates(&self) -> bool {
        true
    }

    /// Whether the instance has work of its own under way that will come back to the room
    /// (a JavaScript fetch that a handler, which went on after its event, waits on): the
    /// room keeps the instance meanwhile rather than hibernate or retire.
    fn busy(&self) -> bool {
        false
    }

    /// Whether a new instance hears `on_connect` for the connections it inherits: sockets
    /// that were in the room before it started (they moved here from another node, or
    /// the previous instance was dropped after a failed commit, an error that broke it, or
    /// hibernation), as if each had just joined, so that what a party keeps per
    /// connection in memory is rebuilt. Asked once, after `on_start`. Such an instance
    /// hears `on_connect` once per connection, and `on_close` only for connections it
    /// heard `on_connect` for. [`Room::upgrade_headers`] is `None` in a greeting. An
    /// error closes the connection with 1011, as at admission. Without it (the default),
    /// a party reads what it needs of inherited connections from the room (their state,
    /// tags) when it needs it.
    fn greets_inherited_connections(&self) -> bool {
        false
    }

    /// Whether this instance is to be replaced: its code was since reloaded, or what runs
    /// it dropped it. The room drops it and starts a fresh one before its next event.
    fn outdated(&self) -> bool {
        false
    }

    /// A socket joined the room. An error closes it with 1011.
    async fn on_connect(&mut self, _room: &mut Room, _conn: &Connection) -> Result<(), PartyError> {
        Ok(())
    }

    /// A message from a connection.
    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError>;

    /// A connection closed (client close, newer socket with the same id, or server close).
    async fn on_close(
        &mut self,
        _room: &mut Room,
        _conn: &Connection,
        _code: u16,
        _reason: &str,
    ) -> Result<(), PartyError> {
        Ok(())
    }

    /// A connection failed.
    async fn on_error(
        &mut self,
        _room: &mut Room,
        _conn: &Connection,
        _error: &str,
    ) -> Result<(), PartyError> {
        Ok(())
    }

    /// An HTTP request to the room. The default answers 404.
    async fn on_request(
        &mut self,
        _room: &mut Room,
        _req: Request,
    ) -> Result<Response, PartyError> {
        Ok(text_response(
            404,
            "This party does not handle HTTP requests",
        ))
    }

    /// The room's alarm is due.
    async fn on_alarm(&mut self, _room: &mut Room) -> Result<(), PartyError> {
        Ok(())
    }

    /// The party's own work is due, such as a JavaScript timer that fired between events.
    /// Not called while the room is hibernated.
    async fn on_wake(&mut self, _room: &mut Room) -> Result<(), PartyError> {
        Ok(())
    }
}

/// Builds party instances for one party name, and optionally vets connections before the
/// upgrade (the room is not activated for that).
pub trait PartyFactory: Send + Sync + 'static {
    fn create(&self) -> Box<dyn Party>;

    /// Accept or refuse a WebSocket before it is upgraded. Refusals become HTTP 401/403.
    fn before_connect(&self, _req: &ConnectRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    /// An asynchronous check of a new WebSocket before it is upgraded, run outside the
    /// room (the room is not activated for it): `None` when the party has none. It may
    /// refuse the socket (the client gets the response) or rewrite the request the room's
    /// handlers see (`Room::upgrade_headers`).
    fn check_connect(
        &self,
        _req: ConnectCheck,
    ) -> Option<BoxFuture<'static, Result<ConnectCheck, Response>>> {
        None
    }

    /// Whether [`check_connect`](Self::check_connect) may check this party's sockets: when
    /// false the node builds no [`ConnectCheck`] for them, which is work on every connect.
    /// True unless a party says otherwise.
    fn checks_connections(&self) -> bool {
        true
    }

    /// An asynchronous check of an HTTP request from a client before it reaches the room,
    /// run outside the room: `None` when the party has none. It may answer in the room's
    /// place, or rewrite the request.
    fn check_request(
        &self,
        _room: &str,
        _req: Request,
    ) -> Option<BoxFuture<'static, Result<Request, Response>>> {
        None
    }

    /// An HTTP request outside any room's URL (PartyKit's static `onFetch` of the main
    /// party), answered outside any room: `None` when the party does not answer those.
    fn fetch(&self, _req: Request) -> Option<BoxFuture<'static, Response>> {
        None
    }

    /// Called once by the node that serves the party, with how code outside any room (the
    /// static checks, `fetch`) reaches the node's rooms.
    fn attach(&self, _fetcher: &crate::room::RoomFetcher) {}

    /// The main party's cron triggers (PartyKit's `crons`), read again before each look at
    /// the schedule: a reload may change them. None by default.
    fn crons(&self) -> Arc<[crate::Cron]> {
        Arc::from([])
    }

    /// One tick of a cron, run outside any room (PartyKit's static `onCron`): `None` when
    /// the party has no such handler.
    fn run_cron(&self, _tick: crate::CronTick) -> Option<BoxFuture<'static, Result<(), String>>> {
        None
    }
}

impl<F> PartyFactory for F
where
    F: Fn() -> Box<dyn Party> + Send + Sync + 'static,
{
    fn create(&self) -> Box<dyn Party> {
        self()
    }

    /// A party built by a function checks no connections.
    fn checks_connections(&self) -> bool {
        false
    }
}

/// Party names and what serves them.
#[derive(Clone, Default)]
pub struct PartyRegistry {
    parties: HashMap<String, Arc<dyn PartyFactory>>,
}

impl PartyRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `name` with `P::default()` instances.
    pub fn with<P: Party + Default>(self, name: &str) -> Self {
        self.with_factory(name, || Box::new(P::default()) as Box<dyn Party>)
    }

    /// Serves `name` with a custom factory (for `before_connect` or configured instances).
    pub fn with_factory(mut self, name: &str, factory: impl PartyFactory) -> Self {
        self.parties.insert(name.to_string(), Arc::new(factory));
        self
    }

    /// Serves `name` with an already boxed factory (see [`crate::parties::builtin`]).
    pub fn with_boxed_factory(mut self, name: &str, factory: Box<dyn PartyFactory>) -> Self {
        self.parties.insert(name.to_string(), Arc::from(factory));
        self
    }

    /// Serves `name` with a factory that may serve other names too (one kind, several
    /// party names).
    pub fn with_shared_factory(mut self, name: &str, factory: Arc<dyn PartyFactory>) -> Self {
        self.parties.insert(name.to_string(), factory);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn PartyFactory>> {
        self.parties.get(name)
    }

    /// Party names, sorted.
    pub(crate) fn factories(&self) -> impl Iterator<Item = &Arc<dyn PartyFactory>> {
        self.parties.values()
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.parties.keys().cloned().collect();
        v.sort();
        v
    }
}
