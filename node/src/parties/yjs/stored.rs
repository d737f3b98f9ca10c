//! A document in room storage: a snapshot (`y/s/<i>`, chunked within the per-value limit,
//! `y/chunks` of them) and the updates since it (`y/u/<n>`, in order). Updates are
//! appended as they come; past the bounds, or when asked (snapshot mode, once the room
//! empties), the whole document is written as the snapshot and the updates deleted, so
//! what is stored stays bounded by the document's size.

use super::bad;
use super::nesting::Nesting;
use crate::party::PartyError;
use crate::storage::{ListOptions, Storage, MAX_BATCH_KEYS, MAX_VALUE_BYTES};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

/// A snapshot chunk: under the per-value limit.
const CHUNK_BYTES: usize = MAX_VALUE_BYTES - 1024;

const SNAPSHOT_CHUNKS: &str = "y/chunks";
const SNAPSHOT_PREFIX: &str = "y/s/";
const UPDATE_PREFIX: &str = "y/u/";

/// What is stored of one document, as far as this instance wrote or read it.
pub struct Stored {
    /// Updates, and their bytes, kept beside the snapshot before it is rewritten.
    max_updates: usize,
    max_bytes: usize,
    /// Keys of the updates stored since the last snapshot, and their bytes.
    updates: Vec<String>,
    update_bytes: usize,
    /// The next update's number.
    next_update: u64,
    /// Chunks of the stored snapshot.
    snapshot_chunks: usize,
}

impl Stored {
    pub fn new(max_updates: usize, max_bytes: usize) -> Self {
        Self {
            max_updates,
            max_bytes,
            updates: Vec::new(),
            update_bytes: 0,
            next_update: 0,
            snapshot_chunks: 0,
        }
    }

    /// Applies the stored document to `doc`: the snapshot, then the updates after it.
    /// Loads the document into `doc`, and how it nests into `nesting`.
    pub async fn load(
        &mut self,
        storage: &Storage,
        doc: &Doc,
        nesting: &mut Nesting,
    ) -> Result<(), PartyError> {
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
        let mut txn = doc.transact_mut();
        *nesting = Nesting::default();
        if !snapshot.is_empty() {
            nesting.learn(&snapshot, &txn.state_vector());
            let update = Update::decode_v1(&snapshot).map_err(bad)?;
            txn.apply_update(update).map_err(bad)?;
        }
        self.updates.clear();
        self.update_bytes = 0;
        for (key, bytes) in &updates {
            // Trimmed: updates stored before they were trimmed on arrival may overlap.
            let known = txn.state_vector();
            nesting.learn(bytes, &known);
            let update = super::integrate::trimmed(&known, bytes.to_vec()).map_err(bad)?;
            txn.apply_update(update.update).map_err(bad)?;
            self.update_bytes += bytes.len();
            self.updates.push(key.clone());
        }
        self.next_update = match updates.last() {
            Some((key, _)) => update_number(key)? + 1,
            None => 0,
        };
        Ok(())
    }

    /// Whether updates are stored beside the snapshot.
    pub fn has_updates(&self) -> bool {
        !self.updates.is_empty()
    }

    /// Stores `update` (already applied to `doc`): appended, or the whole document as the
    /// new snapshot once the updates since the last one would pass the bounds.
    pub fn append(
        &mut self,
        storage: &mut Storage,
        doc: &Doc,
        update: &[u8],
    ) -> Result<(), PartyError> {
        if update.len() <= CHUNK_BYTES
            && self.updates.len() < self.max_updates
            && self.update_bytes + update.len() <= self.max_bytes
        {
            let key = format!("{UPDATE_PREFIX}{:020}", self.next_update);
            self.next_update += 1;
            storage.put(&key, update.to_vec())?;
            self.updates.push(key);
            self.update_bytes += update.len();
            return Ok(());
        }
        self.compact(storage, doc)
    }

    /// Writes the whole document as the snapshot and deletes the updates.
    pub fn compact(&mut self, storage: &mut Storage, doc: &Doc) -> Result<(), PartyError> {
        let state = doc
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
}

fn snapshot_key(i: usize) -> String {
    format!("{SNAPSHOT_PREFIX}{i:06}")
}

fn update_number(key: &str) -> Result<u64, PartyError> {
    key.strip_prefix(UPDATE_PREFIX)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad(format!("unexpected key {key}")))
}
