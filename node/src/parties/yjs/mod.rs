//! yjs: one Yjs document per room, spoken to in the y-websocket protocol that the
//! `y-partykit` and `y-partyserver` providers use (binary frames: sync step 1 and 2,
//! updates, awareness, awareness queries).
//!
//! - A new connection gets the server's sync step 1 and, if anyone is present, the
//!   awareness states; it answers with its own step 1, which gets step 2 back.
//! - Updates are applied, stored, then sent to every connection (the output gate holds
//!   them until they are durable, so no client sees an edit that could be lost).
//! - Awareness goes to every connection, the sender too; a connection's awareness states
//!   are cleared, for everyone, when it closes.
//!
//! Clients send messages over 1,000,000 bytes as y-partykit's batches (`batch`).
//!
//! Storage (history mode): updates are appended under `y/u/<n>`; past
//! [`COMPACT_AFTER_UPDATES`] updates or [`COMPACT_AFTER_BYTES`] bytes the document is
//! written as one snapshot (`y/s/<i>`, chunked within the per-value limit) and the updates
//! are deleted, so storage stays bounded by the document's size.

mod batch;

use crate::message::Message;
use crate::party::{Party, PartyError};
use crate::room::{Connection, Room};
use crate::storage::{ListOptions, MAX_BATCH_KEYS, MAX_VALUE_BYTES};
use async_trait::async_trait;
use batch::Batches;
use std::collections::{HashMap, HashSet};
use yrs::sync::{Awareness, AwarenessUpdate, Message as YMessage, MessageReader, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

/// Updates kept as such before the document is compacted into a snapshot.
pub const COMPACT_AFTER_UPDATES: usize = 500;
/// Bytes of updates kept as such before the document is compacted into a snapshot.
pub const COMPACT_AFTER_BYTES: usize = 1024 * 1024;
/// A snapshot chunk: under the per-value limit.
const CHUNK_BYTES: usize = MAX_VALUE_BYTES - 1024;

const SNAPSHOT_CHUNKS: &str = "y/chunks";
const SNAPSHOT_PREFIX: &str = "y/s/";
const UPDATE_PREFIX: &str = "y/u/";

/// The yjs party: the room's document, who is present, and what is stored.
pub struct Yjs {
    awareness: Awareness,
    /// Awareness client ids each connection announced, cleared when it closes.
    present: HashMap<String, HashSet<ClientID>>,
    /// Keys of the updates stored since the last snapshot, and their bytes.
    updates: Vec<String>,
    update_bytes: usize,
    /// The next update's number.
    next_update: u64,
    /// Chunks of the stored snapshot.
    snapshot_chunks: usize,
    /// y-partykit batches being received.
    batches: Batches,
}

impl Default for Yjs {
    fn default() -> Self {
        Self {
            awareness: Awareness::new(Doc::new()),
            present: HashMap::new(),
            updates: Vec::new(),
            update_bytes: 0,
            next_update: 0,
            snapshot_chunks: 0,
            batches: Batches::default(),
        }
    }
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

impl Yjs {
    /// The document as stored: the snapshot, then the updates after it, in order.
    async fn load(&mut self, room: &mut Room) -> Result<(), PartyError> {
        let storage = room.storage();
        self.snapshot_chunks = storage.get_json(SNAPSHOT_CHUNKS).await?.unwrap_or(0);
        let keys: Vec<String> = (0..self.snapshot_chunks).map(snapshot_key).collect();
        let mut snapshot = Vec::new();
        for batch in keys.chunks(MAX_BATCH_KEYS) {
            let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
            for chunk in storage.get_many(&batch).await? {
                snapshot
                    .extend_from_slice(&chunk.ok_or_else(|| bad("a snapshot chunk is missing"))?);
            }
        }
        let updates = storage
            .list(&ListOptions {
                prefix: Some(UPDATE_PREFIX.into()),
                ..Default::default()
            })
            .await?;
        let mut txn = self.awareness.doc().transact_mut();
        if !snapshot.is_empty() {
            let update = Update::decode_v1(&snapshot).map_err(bad)?;
            txn.apply_update(update).map_err(bad)?;
        }
        for (key, bytes) in &updates {
            let update = Update::decode_v1(bytes).map_err(bad)?;
            txn.apply_update(update).map_err(bad)?;
            self.update_bytes += bytes.len();
            self.updates.push(key.clone());
        }
        drop(txn);
        self.next_update = match updates.last() {
            Some((key, _)) => update_number(key)? + 1,
            None => 0,
        };
        Ok(())
    }

    /// Stores `update` (already applied to the document): appended, or the whole document
    /// as a new snapshot once the updates since the last one pass the bounds.
    fn store(&mut self, room: &mut Room, update: &[u8]) -> Result<(), PartyError> {
        let storage = room.storage();
        let fits = update.len() <= CHUNK_BYTES;
        if fits
            && self.updates.len() < COMPACT_AFTER_UPDATES
            && self.update_bytes + update.len() <= COMPACT_AFTER_BYTES
        {
            let key = format!("{UPDATE_PREFIX}{:020}", self.next_update);
            self.next_update += 1;
            storage.put(&key, update.to_vec())?;
            self.updates.push(key);
            self.update_bytes += update.len();
            return Ok(());
        }
        let state = self
            .awareness
            .doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let chunks: Vec<&[u8]> = state.chunks(CHUNK_BYTES).collect();
        for (i, batch) in chunks.chunks(MAX_BATCH_KEYS).enumerate() {
            let entries: Vec<(String, Vec<u8>)> = batch
                .iter()
                .enumerate()
                .map(|(j, c)| (snapshot_key(i * MAX_BATCH_KEYS + j), c.to_vec()))
                .collect();
            storage.put_many(entries)?;
        }
        let stale: Vec<String> = (chunks.len()..self.snapshot_chunks)
            .map(snapshot_key)
            .chain(self.updates.drain(..))
            .collect();
        for batch in stale.chunks(MAX_BATCH_KEYS) {
            let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
            storage.delete_many(&batch)?;
        }
        storage.put_json(SNAPSHOT_CHUNKS, &chunks.len())?;
        self.snapshot_chunks = chunks.len();
        self.update_bytes = 0;
        Ok(())
    }

    /// Applies a client's update to the document.
    fn apply(&mut self, update: &[u8]) -> Result<(), PartyError> {
        let decoded = Update::decode_v1(update).map_err(bad)?;
        let mut txn = self.awareness.doc().transact_mut();
        txn.apply_update(decoded).map_err(bad)
    }

    /// Handles one whole y-websocket message (possibly several packed together).
    fn handle(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        data: &[u8],
    ) -> Result<(), PartyError> {
        let mut decoder = DecoderV1::from(data);
        let mut replies = Vec::new();
        for message in MessageReader::new(&mut decoder) {
            match message.map_err(bad)? {
                YMessage::Sync(SyncMessage::SyncStep1(sv)) => {
                    let diff = self
                        .awareness
                        .doc()
                        .transact()
                        .encode_state_as_update_v1(&sv);
                    replies.push(YMessage::Sync(SyncMessage::SyncStep2(diff)));
                }
                YMessage::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
                    // Yjs encodes "nothing new" as two zero bytes (no structs, no deletes).
                    if update.as_slice() != [0, 0] {
                        self.apply(&update)?;
                        self.store(room, &update)?;
                        let out = encode(&[YMessage::Sync(SyncMessage::Update(update))]);
                        room.broadcast(&Message::binary(out), &[]);
                    }
                }
                YMessage::Awareness(update) => {
                    let out = encode(&[YMessage::Awareness(update.clone())]);
                    self.announce(conn, update)?;
                    room.broadcast(&Message::binary(out), &[]);
                }
                YMessage::AwarenessQuery => {
                    replies.push(YMessage::Awareness(self.awareness.update().map_err(bad)?));
                }
                YMessage::Auth(_) | YMessage::Custom(..) => {}
            }
        }
        if !replies.is_empty() {
            conn.send(Message::binary(encode(&replies)));
        }
        Ok(())
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
        self.awareness.apply_update(update).map_err(bad)
    }
}

fn snapshot_key(i: usize) -> String {
    format!("{SNAPSHOT_PREFIX}{i:06}")
}

fn update_number(key: &str) -> Result<u64, PartyError> {
    key.strip_prefix(UPDATE_PREFIX)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad(format!("unexpected key {key}")))
}

#[async_trait]
impl Party for Yjs {
    async fn on_start(&mut self, room: &mut Room) -> Result<(), PartyError> {
        self.load(room).await
    }

    /// Awareness lives in memory only: the document stays loaded while anyone is here.
    fn hibernates(&self) -> bool {
        false
    }

    async fn on_connect(&mut self, _room: &mut Room, conn: &Connection) -> Result<(), PartyError> {
        let sv = self.awareness.doc().transact().state_vector();
        let mut first = vec![YMessage::Sync(SyncMessage::SyncStep1(sv))];
        let present = self.awareness.update().map_err(bad)?;
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
            // y-partyserver's custom string messages (`__YPS:`): not yet.
            Some(_) => Ok(()),
        }
    }

    async fn on_close(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        _code: u16,
        _reason: &str,
    ) -> Result<(), PartyError> {
        self.batches.forget(conn.id());
        let Some(clients) = self.present.remove(conn.id()) else {
            return Ok(());
        };
        for client in &clients {
            self.awareness.remove_state(*client);
        }
        let gone = self.awareness.update_with_clients(clients).map_err(bad)?;
        if !gone.clients.is_empty() {
            let out = encode(&[YMessage::Awareness(gone)]);
            room.broadcast(&Message::binary(out), &[conn.id()]);
        }
        Ok(())
    }
}
