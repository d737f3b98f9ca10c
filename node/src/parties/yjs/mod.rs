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
use std::collections::{HashMap, HashSet};
use stored::Stored;
use yrs::sync::{Awareness, AwarenessUpdate, Message as YMessage, MessageReader, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{ClientID, Doc, IdSet, ReadTxn, Transact, TransactionMut};

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
    options: YjsOptions,
    callback: Option<Callback>,
}

impl Document {
    fn new(options: YjsOptions) -> Self {
        let callback = options.callback.clone().map(Callback::new);
        Self {
            awareness: Awareness::new(Doc::new()),
            stored: Stored::new(options.max_updates, options.max_bytes),
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
        let mut txn = self.awareness.doc().transact_mut();
        let result = change(&mut txn);
        let update = txn.encode_update_v1();
        drop(txn);
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
        if is_empty_update(&update) || conn.tags().iter().any(|t| t == READ_ONLY_TAG) {
            return Ok(());
        }
        let (decoded, update) = trimmed(&self.document.doc().transact(), update).map_err(bad)?;
        if is_empty_update(&update) {
            return Ok(());
        }
        if !self
            .hooks
            .accept_update(conn, self.document.doc(), &decoded, update.len())
        {
            return Ok(());
        }
        match integrate(self.document.doc(), decoded) {
            Ok(()) => self.document.committed(room, update),
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

/// An update as the document can take it: without what the document already holds. yrs
/// trims an overlapping update itself by splitting its items, and the parts it then drops
/// are still pointed at: a heap use-after-free inside `apply_update` (found by the
/// `y_websocket` fuzz target; a client re-sending a block the room holds part of, as after
/// a reconnect race, takes the same path). An update that starts past what the document
/// holds, the usual case, is used as it is; another is first cut down to what is new by
/// yrs' own diff (`diff_updates_v1`), which encodes offsets instead of splitting items.
pub(crate) fn trimmed(
    txn: &impl ReadTxn,
    bytes: Vec<u8>,
) -> Result<(Update, Vec<u8>), yrs::encoding::read::Error> {
    let update = Update::decode_v1(&bytes)?;
    let known = txn.state_vector();
    let overlaps = update
        .state_vector_lower()
        .iter()
        .any(|(client, lowest)| *lowest < known.get(client));
    if !overlaps {
        return Ok((update, bytes));
    }
    let new = yrs::diff_updates_v1(&bytes, &known.encode_v1())?;
    Ok((Update::decode_v1(&new)?, new))
}

/// Why [`integrate`] did not take an update.
enum Refused {
    /// The update is not one the room takes; the document is as it was.
    Invalid(String),
    /// Applying it broke the document: it must not be used again.
    Broken(&'static str),
}

/// Applies a client's update to the document. A panic inside yrs (the fuzz target found
/// some on crafted updates) leaves the document [`Refused::Broken`], as does what
/// [`broken_by`] finds.
fn integrate(doc: &Doc, update: Update) -> Result<(), Refused> {
    if starts_past_the_document(&doc.transact(), &update) {
        return Err(Refused::Invalid(
            "an update starts past what the room holds of its client".into(),
        ));
    }
    let inserted = update.insertions(true);
    let apply = std::panic::AssertUnwindSafe(|| doc.transact_mut().apply_update(update));
    match std::panic::catch_unwind(apply) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Refused::Invalid(e.to_string())),
        Err(_) => return Err(Refused::Broken("yrs panicked applying an update")),
    }
    broken_by(doc, &inserted).map_or(Ok(()), |why| Err(Refused::Broken(why)))
}

/// What an update just applied broke in the document, if anything; then the instance is
/// dropped (the next event reloads the document from storage) and the update not kept.
///
/// - Content left pending, waiting on content the room does not have: yrs merges pending
///   updates into every later encoding with an `unwrap` (a crafted one made every new
///   client's sync step 1 panic the room once it was stored), and trimming a later update
///   against them freed memory still in use (a heap use-after-free). Both were found by the
///   `y_websocket` fuzz target. A room is every client's only peer, so a client's update
///   depends only on content the room sent it: nothing is pending but by a crafted update.
/// - A client's content past where its state vector ends: a range skipped inside it (skip
///   structs, which only merged updates carry, never a client's own), which leads a later
///   update that straddles the gap's end down the same use-after-free.
fn broken_by(doc: &Doc, inserted: &IdSet) -> Option<&'static str> {
    let txn = doc.transact();
    if txn.has_missing_updates() {
        return Some("an update waits on content the room does not have");
    }
    let known = txn.state_vector();
    let gap = inserted
        .iter()
        .any(|(client, ranges)| ranges.iter().any(|r| r.end > known.get(client)));
    gap.then_some("an update left a gap (skipped ranges) in the document")
}

/// Whether an update starts past what the document holds of one of its clients: it would
/// wait for the content between (see [`broken_by`]), so it is refused before it is applied.
fn starts_past_the_document(txn: &impl ReadTxn, update: &Update) -> bool {
    let known = txn.state_vector();
    update
        .state_vector_lower()
        .iter()
        .any(|(client, lowest)| *lowest > known.get(client))
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
            .load(room.storage(), document.awareness.doc())
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

/// For the fuzz targets (`conclave_node::fuzz`): what a room does with one client message,
/// up to the room — the y-partykit batch markers when it is text, else the y-websocket
/// messages decoded, updates decoded and applied, awareness applied, state vectors
/// answered — on a fresh document.
pub(crate) fn fuzz_client_message(data: &[u8]) {
    let mut document = Document::new(YjsOptions::default());
    if let Ok(text) = std::str::from_utf8(data) {
        if batch::is_marker(text) {
            let mut batches = Batches::default();
            for line in text.lines() {
                let _ = if batch::is_marker(line) {
                    batches.marker("conn", line).map(drop)
                } else {
                    batches.chunk("conn", line.as_bytes())
                };
            }
            return;
        }
    }
    if bounds::check_declared_counts(data).is_err() {
        return;
    }
    let mut decoder = DecoderV1::from(data);
    for message in MessageReader::new(&mut decoder) {
        let Ok(message) = message else { return };
        match message {
            YMessage::Sync(SyncMessage::SyncStep1(sv)) => {
                let _ = document.doc().transact().encode_state_as_update_v1(&sv);
            }
            YMessage::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
                let new = trimmed(&document.doc().transact(), update);
                if let Ok((update, _)) = new {
                    // libFuzzer aborts on any panic, even a caught one: quiet the hook.
                    let hook = std::panic::take_hook();
                    std::panic::set_hook(Box::new(|_| {}));
                    let integrated = integrate(document.doc(), update);
                    std::panic::set_hook(hook);
                    if let Err(Refused::Broken(_)) = integrated {
                        // As the room does: the instance is dropped, the step discarded.
                        document = Document::new(YjsOptions::default());
                    }
                }
            }
            YMessage::Awareness(update) => {
                let _ = document.awareness.apply_update(update);
            }
            YMessage::AwarenessQuery => {
                let _ = document.awareness.update();
            }
            YMessage::Auth(_) | YMessage::Custom(..) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, StateVector, Text};

    /// A client's merged update holding a block the document knows the first half of (its
    /// earlier update reached the room, then it re-sent the merged block).
    #[test]
    fn an_update_overlapping_the_document_is_cut_to_what_is_new() {
        let client = Doc::with_client_id(7);
        let text = client.get_or_insert_text("t");
        text.insert(&mut client.transact_mut(), 0, "hel");
        let first = client
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        text.insert(&mut client.transact_mut(), 3, "lo");
        let merged = client
            .transact()
            .encode_state_as_update_v1(&StateVector::default());

        let room = Doc::new();
        for bytes in [first, merged.clone()] {
            let (update, applied) = trimmed(&room.transact(), bytes.clone()).unwrap();
            assert_eq!(applied == bytes, bytes != merged, "trimmed iff it overlaps");
            room.transact_mut().apply_update(update).unwrap();
        }
        let room_text = room.get_or_insert_text("t");
        assert_eq!(room_text.get_string(&room.transact()), "hello");
    }
}
