//! yjs: one Yjs document per room, spoken to in the y-websocket protocol that the
//! `y-partykit` and `y-partyserver` providers use (binary frames: sync step 1 and 2,
//! updates, awareness, awareness queries; text frames: y-partyserver's `__YPS:` custom
//! messages and y-partykit's batch markers).
//!
//! - A new connection gets the server's sync step 1 and, if anyone is present, the
//!   awareness states; it answers with its own step 1, which gets step 2 back.
//! - Updates are applied, stored, then sent to every connection (the output gate holds
//!   them until they are durable, so no client sees an edit that could be lost). A
//!   read-only connection's updates are dropped, as y-partykit drops them.
//! - Awareness goes to every connection, the sender too; a connection's awareness states
//!   are cleared, for everyone, when it closes.
//! - Clients send messages over 1,000,000 bytes as y-partykit's batches (`batch`).
//!
//! Storage is [`stored`]'s; the HTTP callback is [`callback`]'s. Party code builds on the
//! document through [`YjsHooks`] and [`Document`].

mod batch;
mod bounds;
mod callback;
mod client_update;
mod fuzz;
mod integrate;
mod nesting;
mod options;
mod stored;

pub use options::{CallbackOptions, Persistence, SharedType, YjsOptions};
pub use yrs::Update;

use crate::message::{Message, Request, Response};
use crate::party::{InstanceBroken, Party, PartyError};
use crate::room::{Connection, Room};
use async_trait::async_trait;
use batch::Batches;
use callback::Callback;
pub(crate) use fuzz::fuzz_client_message;
use integrate::{from_client, integrate, Refused};
use nesting::Nesting;
use std::collections::{HashMap, HashSet};
use stored::Stored;
use yrs::sync::{Awareness, AwarenessUpdate, Message as YMessage, MessageReader, SyncMessage};
use yrs::updates::decoder::DecoderV1;
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{ClientID, Doc, ReadTxn, Transact, TransactionMut};

/// The tag of a read-only connection (tags outlive hand-offs and hibernation).
pub const READ_ONLY_TAG: &str = "yjs:read-only";
/// The prefix of y-partyserver's custom string messages.
pub const CUSTOM_PREFIX: &str = "__YPS:";

/// Party code built on a room's document; `Yjs::with_hooks(hooks, options)` serves it.
/// Every method has a default that does nothing special.
#[async_trait]
pub trait YjsHooks: Send + 'static {
    /// The room's document was loaded from storage (empty for a new room): seed it here
    /// with [`Document::change`].
    async fn on_load(&mut self, _room: &mut Room, _doc: &mut Document) -> Result<(), PartyError> {
        Ok(())
    }

    /// Whether a new connection may only read. Asked once, when it connects (the upgrade
    /// request's headers are in [`Room::upgrade_headers`]); the answer holds for the
    /// connection's life, across hand-offs.
    async fn read_only(&mut self, _room: &mut Room, _conn: &Connection) -> bool {
        false
    }

    /// A writable connection's update (`encoded_bytes` long as the client sent it),
    /// before it is applied: `false` drops it (the client's copy then differs from the
    /// room's until it reloads).
    fn accept_update(
        &mut self,
        _conn: &Connection,
        _doc: &Doc,
        _update: &Update,
        _encoded_bytes: usize,
    ) -> bool {
        true
    }

    /// A custom string message (y-partyserver's `provider.sendMessage`), without its
    /// `__YPS:` prefix.
    async fn on_custom_message(
        &mut self,
        _room: &mut Room,
        _doc: &mut Document,
        _conn: &Connection,
        _message: &str,
    ) -> Result<(), PartyError> {
        Ok(())
    }

    /// An HTTP request to the room. The default answers 404.
    async fn on_request(
        &mut self,
        _room: &mut Room,
        _doc: &mut Document,
        _req: Request,
    ) -> Result<Response, PartyError> {
        Ok(crate::message::text_response(
            404,
            "This party does not handle HTTP requests",
        ))
    }
}

/// No hooks: the built-in `yjs` kind.
impl YjsHooks for () {}

/// A room's document as party code sees it: read it, change it, send custom messages.
pub struct Document {
    awareness: Awareness,
    stored: Stored,
    /// How the document nests shared types, which yrs does not say.
    nesting: Nesting,
    options: YjsOptions,
    callback: Option<Callback>,
}

impl Document {
    fn new(options: YjsOptions) -> Self {
        let callback = options.callback.clone().map(Callback::new);
        Self {
            awareness: Awareness::new(Doc::new()),
            stored: Stored::new(options.max_updates, options.max_bytes),
            nesting: Nesting::default(),
            options,
            callback,
        }
    }

    /// The document.
    pub fn doc(&self) -> &Doc {
        self.awareness.doc()
    }

    /// Changes the document: `change` edits it in one transaction, whose update is stored
    /// and sent to every connection like a client's.
    pub fn change<R>(
        &mut self,
        room: &mut Room,
        change: impl FnOnce(&mut TransactionMut) -> R,
    ) -> Result<R, PartyError> {
        let before = self.awareness.doc().transact().state_vector();
        let mut txn = self.awareness.doc().transact_mut();
        let result = change(&mut txn);
        let update = txn.encode_update_v1();
        drop(txn);
        self.nesting.learn(&update, &before);
        self.committed(room, update)?;
        Ok(result)
    }

    /// Sends a custom string message (`__YPS:` is prepended) to one connection.
    pub fn send_custom(&self, conn: &Connection, message: &str) {
        conn.send(Message::text(format!("{CUSTOM_PREFIX}{message}")));
    }

    /// Sends a custom string message to every connection except those in `exclude`.
    pub fn broadcast_custom(&self, room: &Room, message: &str, exclude: &[&str]) {
        room.broadcast(&Message::text(format!("{CUSTOM_PREFIX}{message}")), exclude);
    }

    /// Stores an update already applied to the document and sends it to everyone.
    fn committed(&mut self, room: &mut Room, update: Vec<u8>) -> Result<(), PartyError> {
        if is_empty_update(&update) {
            return Ok(());
        }
        self.stored
            .append(room.storage(), self.awareness.doc(), &update)?;
        let out = encode(&[YMessage::Sync(SyncMessage::Update(update))]);
        room.broadcast(&Message::binary(out), &[]);
        if let Some(callback) = &mut self.callback {
            callback.edited(room);
        }
        Ok(())
    }
}

/// The yjs party: the room's document, who is present, and the hooks of the party code
/// built on it.
pub struct Yjs<H = ()> {
    document: Document,
    hooks: H,
    /// Awareness client ids each connection announced, cleared when it closes.
    present: HashMap<String, HashSet<ClientID>>,
    /// y-partykit batches being received.
    batches: Batches,
}

impl<H: YjsHooks + Default> Default for Yjs<H> {
    fn default() -> Self {
        Self::with_hooks(H::default(), YjsOptions::default())
    }
}

impl Yjs {
    /// The built-in kind with `options` (validate them first: [`YjsOptions::validate`]).
    pub fn new(options: YjsOptions) -> Self {
        Self::with_hooks((), options)
    }
}

impl<H: YjsHooks> Yjs<H> {
    /// A yjs party whose document `hooks` build on.
    pub fn with_hooks(hooks: H, options: YjsOptions) -> Self {
        Self {
            document: Document::new(options),
            hooks,
            present: HashMap::new(),
            batches: Batches::default(),
        }
    }

    /// Handles one whole y-websocket message (possibly several packed together).
    fn handle(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        data: &[u8],
    ) -> Result<(), PartyError> {
        bounds::check_declared_counts(data).map_err(bad)?;
        let mut decoder = DecoderV1::from(data);
        let mut replies = Vec::new();
        for message in MessageReader::new(&mut decoder) {
            match message.map_err(bad)? {
                YMessage::Sync(SyncMessage::SyncStep1(sv)) => {
                    let diff = self
                        .document
                        .doc()
                        .transact()
                        .encode_state_as_update_v1(&sv);
                    replies.push(YMessage::Sync(SyncMessage::SyncStep2(diff)));
                }
                YMessage::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
                    self.apply(room, conn, update)?;
                }
                YMessage::Awareness(update) => {
                    let out = encode(&[YMessage::Awareness(update.clone())]);
                    self.announce(conn, update)?;
                    room.broadcast(&Message::binary(out), &[]);
                }
                YMessage::AwarenessQuery => {
                    let present = self.document.awareness.update().map_err(bad)?;
                    replies.push(YMessage::Awareness(present));
                }
                YMessage::Auth(_) | YMessage::Custom(..) => {}
            }
        }
        if !replies.is_empty() {
            conn.send(Message::binary(encode(&replies)));
        }
        Ok(())
    }

    /// Applies a client's update (unless its connection only reads or the hooks refuse
    /// it), stores it and sends it to everyone.
    fn apply(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        update: Vec<u8>,
    ) -> Result<(), PartyError> {
        if is_empty_update(&update) || conn.has_tag(READ_ONLY_TAG) {
            return Ok(());
        }
        let document = &mut self.document;
        let (trimmed, checked) =
            from_client(&document.doc().transact(), &document.nesting, update).map_err(bad)?;
        if is_empty_update(&trimmed.bytes) {
            return Ok(());
        }
        if !self.hooks.accept_update(
            conn,
            self.document.doc(),
            &trimmed.update,
            trimmed.bytes.len(),
        ) {
            return Ok(());
        }
        match integrate(self.document.doc(), trimmed) {
            Ok(update) => {
                checked.applied(&mut self.document.nesting);
                self.document.committed(room, update)
            }
            Err(Refused::Invalid(e)) => Err(bad(e)),
            Err(Refused::Broken(why)) => Err(Box::new(InstanceBroken(format!("yjs: {why}")))),
        }
    }

    /// Applies a connection's awareness update and remembers which clients it speaks for.
    fn announce(&mut self, conn: &Connection, update: AwarenessUpdate) -> Result<(), PartyError> {
        let mine = self.present.entry(conn.id().to_string()).or_default();
        for (client, entry) in &update.clients {
            if &*entry.json == "null" {
                mine.remove(client);
            } else {
                mine.insert(*client);
            }
        }
        self.document.awareness.apply_update(update).map_err(bad)
    }
}

/// Yjs encodes "nothing new" as two zero bytes (no structs, no deletes).
fn is_empty_update(update: &[u8]) -> bool {
    update == [0, 0]
}

fn encode(messages: &[YMessage]) -> Vec<u8> {
    let mut encoder = EncoderV1::new();
    for m in messages {
        m.encode(&mut encoder);
    }
    encoder.to_vec()
}

fn bad(what: impl std::fmt::Display) -> PartyError {
    format!("yjs: {what}").into()
}

#[async_trait]
impl<H: YjsHooks> Party for Yjs<H> {
    async fn on_start(&mut self, room: &mut Room) -> Result<(), PartyError> {
        let document = &mut self.document;
        document
            .stored
            .load(
                room.storage(),
                document.awareness.doc(),
                &mut document.nesting,
            )
            .await?;
        self.hooks.on_load(room, &mut self.document).await
    }

    /// The document may be dropped while connections stay (and is reloaded from storage
    /// on the next event) unless a callback waits to report it or a batch is half
    /// received. Clients that share awareness renew it every 15 s, which keeps a room
    /// awake under the default 30 s `hibernate_after`; awareness is not kept.
    fn hibernates(&self) -> bool {
        self.batches.is_empty()
            && !self
                .document
                .callback
                .as_ref()
                .is_some_and(Callback::pending)
    }

    async fn connection_tags(&mut self, room: &mut Room, conn: &Connection) -> Vec<String> {
        if self.document.options.read_only || self.hooks.read_only(room, conn).await {
            vec![READ_ONLY_TAG.to_string()]
        } else {
            Vec::new()
        }
    }

    async fn on_connect(&mut self, _room: &mut Room, conn: &Connection) -> Result<(), PartyError> {
        let sv = self.document.doc().transact().state_vector();
        let mut first = vec![YMessage::Sync(SyncMessage::SyncStep1(sv))];
        let present = self.document.awareness.update().map_err(bad)?;
        if !present.clients.is_empty() {
            first.push(YMessage::Awareness(present));
        }
        conn.send(Message::binary(encode(&first)));
        Ok(())
    }

    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        match msg.as_text() {
            // A whole message, handled where it lies (no copy).
            None if !self.batches.receiving(conn.id()) => self.handle(room, conn, msg.payload()),
            None => self.batches.chunk(conn.id(), msg.payload()).map_err(bad),
            Some(text) if batch::is_marker(text) => {
                match self.batches.marker(conn.id(), text).map_err(bad)? {
                    Some(data) => self.handle(room, conn, &data),
                    None => Ok(()),
                }
            }
            Some(text) => match text.strip_prefix(CUSTOM_PREFIX) {
                Some(custom) => {
                    self.hooks
                        .on_custom_message(room, &mut self.document, conn, custom)
                        .await
                }
                // y-partyserver ignores other strings too.
                None => Ok(()),
            },
        }
    }

    async fn on_close(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        _code: u16,
        _reason: &str,
    ) -> Result<(), PartyError> {
        self.left(room, conn)
    }

    async fn on_error(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        _error: &str,
    ) -> Result<(), PartyError> {
        self.left(room, conn)
    }

    async fn on_request(&mut self, room: &mut Room, req: Request) -> Result<Response, PartyError> {
        self.hooks.on_request(room, &mut self.document, req).await
    }

    async fn on_wake(&mut self, room: &mut Room) -> Result<(), PartyError> {
        if let Some(callback) = &mut self.document.callback {
            callback.woke(room, self.document.awareness.doc());
        }
        Ok(())
    }
}

impl<H: YjsHooks> Yjs<H> {
    /// A connection left: its awareness states are cleared for everyone; in snapshot
    /// mode, the last one out compacts the document.
    fn left(&mut self, room: &mut Room, conn: &Connection) -> Result<(), PartyError> {
        self.batches.forget(conn.id());
        if let Some(clients) = self.present.remove(conn.id()) {
            let awareness = &mut self.document.awareness;
            for client in &clients {
                awareness.remove_state(*client);
            }
            let gone = awareness.update_with_clients(clients).map_err(bad)?;
            if !gone.clients.is_empty() {
                let out = encode(&[YMessage::Awareness(gone)]);
                room.broadcast(&Message::binary(out), &[conn.id()]);
            }
        }
        // The room no longer counts the connection that left.
        if room.connection_count() == 0
            && self.document.options.persist == Persistence::Snapshot
            && self.document.stored.has_updates()
        {
            let document = &mut self.document;
            document
                .stored
                .compact(room.storage(), document.awareness.doc())?;
        }
        Ok(())
    }
}
