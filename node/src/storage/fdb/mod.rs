//! FoundationDB room storage (cargo feature `fdb`): the production backend for large and
//! multi-region clusters.
//!
//! Keys are the tuple layout of [`super::keys`], under this cluster's directory-layer
//! prefix (`conclave/<cluster>`):
//!
//! - `("r", party, room, "k", key, n)` → chunk `n` of the value: values are split into
//!   [`CHUNK_BYTES`] pieces, well below FoundationDB's 100 kB value limit
//! - `("r", party, room, "a")` → the alarm; `("alarms", due_ms, party, room)` → the global
//!   index of alarms by due time, so owners find due alarms without scanning rooms
//! - `("r", party, room, "o")` → the owner record (fencing)
//! - `("r", party, room, "c")` → the id of the room's last commit: a retry after
//!   `commit_unknown_result` (1021) on any attempt finds it and does not apply the commit twice
//! - `("r", party, room, "x", record, n)` → the room's ledger (`Store::ledger`), chunked
//!   like values
//!
//! Every operation runs in the crate's retry loop. The transaction timeout
//! ([`TRANSACTION_TIMEOUT_MS`]) bounds the whole loop, retries included (FoundationDB does not
//! reset it between attempts): an operation that cannot finish within it fails, and a
//! commit that failed that way may have landed (the room's ledger tells the actor which).
//! Commits read the owner record (not a snapshot read), so a claim racing a stale owner's
//! commit conflicts with it and the retried commit fails as fenced.
//!
//! Range reads follow FoundationDB's `more` flag: a batch ends at a byte target (about
//! 80 kB in `WANT_ALL` mode), not only at the row limit, so a read goes on until the range
//! is exhausted or its limit reached. Large `list`s read in pages of separate transactions
//! (each well under FoundationDB's 5 s limit); a value's chunks may span pages.
//! `delete_all` is one range clear. A room commit must stay under [`MAX_COMMIT_BYTES`] as
//! FoundationDB counts it (`get_approximate_size`); a larger one fails whole.

mod client;
mod ranges;

use super::keys;
use super::store::{
    check_fence, home_region, AlarmScan, Claim, ListOptions, Owner, RoomCommit, StorageError,
    Store, Usage,
};
use async_trait::async_trait;
use bytes::Bytes;
pub use client::stop_network;
use client::{backend, boot_network, directory_error, from_binding, refuse};
use conclave_proto::RoomKey;
use foundationdb::directory::{Directory, DirectoryLayer};
use foundationdb::options::{DatabaseOption, StreamingMode};
use foundationdb::tuple::{pack, unpack};
use foundationdb::{Database, FdbBindingError, FdbError, RangeOption, RetryableTransaction};
use ranges::{read_all, write_value};
use std::time::Duration;

/// Largest piece of a value stored under one key.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Largest room commit (keys and values): FoundationDB's transaction limit is 10 MB.
pub const MAX_COMMIT_BYTES: usize = 8 * 1024 * 1024;
/// Every operation gives up after this long, retries included (FoundationDB does not reset
/// the timeout between attempts). Shorter than a node's self-fencing window, so a node's
/// storage calls resolve while it may still serve.
const TRANSACTION_TIMEOUT_MS: i32 = 4_000;
/// At most this many retries of conflicts and retryable errors, if the timeout leaves time
/// for them (it usually ends a long retry streak first).
const RETRY_LIMIT: i32 = 20;
/// Rows per transaction when listing a large room.
const LIST_PAGE_ROWS: usize = 1_000;

pub struct FdbStore {
    db: Database,
    /// This cluster's directory prefix.
    root: Vec<u8>,
}

impl FdbStore {
    /// Connects with `cluster_file` and opens (or creates) the directory
    /// `conclave/<cluster>` that holds this Conclave cluster's rooms.
    pub async fn open(cluster_file: &str, cluster: &str) -> Result<Self, StorageError> {
        boot_network()?;
        let db = Database::from_path(cluster_file).map_err(backend)?;
        db.set_option(DatabaseOption::TransactionTimeout(TRANSACTION_TIMEOUT_MS))
            .map_err(backend)?;
        db.set_option(DatabaseOption::TransactionRetryLimit(RETRY_LIMIT))
            .map_err(backend)?;
        let path = vec!["conclave".to_string(), cluster.to_string()];
        let root = db
            .run(|trx, _| {
                let path = path.clone();
                async move {
                    let dir = DirectoryLayer::default()
                        .create_or_open(&trx, &path, None, None)
                        .await
                        .map_err(directory_error)?;
                    Ok(dir.bytes()?.to_vec())
                }
            })
            .await
            .map_err(from_binding)?;
        Ok(Self { db, root })
    }

    fn key(&self, k: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.root.len() + k.len());
        full.extend_from_slice(&self.root);
        full.extend_from_slice(k);
        full
    }

    fn kv_prefix(&self, room: &RoomKey) -> Vec<u8> {
        self.key(&keys::kv_prefix(room))
    }

    fn room_key(&self, room: &RoomKey, what: &str) -> Vec<u8> {
        self.key(&pack(&("r", room.party.as_str(), room.room.as_str(), what)))
    }

    /// Runs `f` in one (retried) transaction on the room's owner record: `f` gets the
    /// transaction, the record's key, and the record as read in the transaction (not a
    /// snapshot read: fencing depends on it).
    async fn on_owner<T>(
        &self,
        room: &RoomKey,
        f: impl Fn(&RetryableTransaction, &[u8], Option<Owner>) -> Result<T, FdbBindingError>,
    ) -> Result<T, StorageError> {
        let key = self.room_key(room, "o");
        self.db
            .run(|trx, _| {
                let (key, f) = (&key, &f);
                async move {
                    let current = Self::read_owner(&trx, key).await?;
                    f(&trx, key, current)
                }
            })
            .await
            .map_err(from_binding)
    }

    /// Reads the owner record inside `trx` (a conflicting read: fencing depends on it).
    async fn read_owner(
        trx: &RetryableTransaction,
        key: &[u8],
    ) -> Result<Option<Owner>, FdbBindingError> {
        Ok(trx
            .get(key, false)
            .await?
            .and_then(|v| keys::decode_owner(&v)))
    }
}

/// A lower bound of the size FoundationDB counts for a commit (keys and values written),
/// to refuse a hopeless commit before any round trip; the exact check is in the
/// transaction (`get_approximate_size`).
fn commit_bytes(c: &RoomCommit) -> usize {
    c.writes
        .iter()
        .chain(&c.ledger)
        .map(|(k, v)| k.len() + 64 + v.as_ref().map_or(0, |v| v.len()))
        .sum()
}

#[async_trait]
impl Store for FdbStore {
    fn backend(&self) -> &'static str {
        "fdb"
    }

    async fn get(
        &self,
        room: &RoomKey,
        wanted: &[String],
    ) -> Result<Vec<Option<Bytes>>, StorageError> {
        let prefix = self.kv_prefix(room);
        let encoded: Vec<Vec<u8>> = wanted.iter().map(|k| keys::kv_key(&prefix, k)).collect();
        self.db
            .run(|trx, _| {
                let encoded = encoded.clone();
                async move {
                    // Every key's chunks at once, each read to the end of its range.
                    let reads = encoded.iter().map(|kv_key| {
                        let opt = RangeOption {
                            mode: StreamingMode::WantAll,
                            ..RangeOption::from(keys::chunk_range(kv_key))
                        };
                        read_all(&trx, opt, false)
                    });
                    let found = futures::future::try_join_all(reads).await?;
                    Ok(encoded
                        .iter()
                        .zip(found)
                        .map(|(kv_key, rows)| {
                            let chunks: Vec<(i64, Bytes)> = rows
                                .into_iter()
                                .filter_map(|(k, v)| {
                                    Some((unpack::<i64>(k.get(kv_key.len()..)?).ok()?, v))
                                })
                                .collect();
                            (!chunks.is_empty()).then(|| keys::join_chunks(chunks))
                        })
                        .collect())
                }
            })
            .await
            .map_err(from_binding)
    }

    async fn list(
        &self,
        room: &RoomKey,
        opts: &ListOptions,
    ) -> Result<Vec<(String, Bytes)>, StorageError> {
        self.list_under(&self.kv_prefix(room), opts).await
    }

    async fn ledger(&self, room: &RoomKey) -> Result<Vec<(String, Bytes)>, StorageError> {
        let prefix = self.key(&keys::ledger_prefix(room));
        self.list_under(&prefix, &ListOptions::default()).await
    }

    async fn get_alarm(&self, room: &RoomKey) -> Result<Option<i64>, StorageError> {
        let key = self.room_key(room, "a");
        self.db
            .run(|trx, _| {
                let key = key.clone();
                async move {
                    Ok(trx
                        .get(&key, false)
                        .await?
                        .and_then(|v| keys::decode_alarm(&v)))
                }
            })
            .await
            .map_err(from_binding)
    }

    async fn commit(
        &self,
        room: &RoomKey,
        commit: RoomCommit,
    ) -> Result<Option<Usage>, StorageError> {
        let size = commit_bytes(&commit);
        if size > MAX_COMMIT_BYTES {
            return Err(StorageError::Backend(format!(
                "a commit of about {size} bytes is over FoundationDB's transaction limit ({MAX_COMMIT_BYTES} bytes here); write less per handler"
            )));
        }
        let prefix = self.kv_prefix(room);
        let ledger_prefix = self.key(&keys::ledger_prefix(room));
        let owner_key = self.room_key(room, "o");
        let alarm_key = self.room_key(room, "a");
        let commit_id_key = self.room_key(room, "c");
        let usage_key = self.key(&keys::usage_key(room));
        let writes_keys = commit.delete_all || !commit.writes.is_empty();
        let commit_id = uuid::Uuid::new_v4().into_bytes();
        let commit = &commit;
        // Set once any attempt ended in `commit_unknown_result`: every later attempt checks
        // first whether that one landed (a retryable error after it must not hide it).
        let maybe_landed = std::sync::atomic::AtomicBool::new(false);
        let maybe_landed = &maybe_landed;
        self.db
            .run(|trx, maybe_committed| {
                let (prefix, ledger_prefix) = (prefix.clone(), ledger_prefix.clone());
                let (owner_key, alarm_key) = (owner_key.clone(), alarm_key.clone());
                let (commit_id_key, usage_key) = (commit_id_key.clone(), usage_key.clone());
                async move {
                    use std::sync::atomic::Ordering;
                    if bool::from(maybe_committed) {
                        maybe_landed.store(true, Ordering::Relaxed);
                    }
                    if maybe_landed.load(Ordering::Relaxed)
                        && trx.get(&commit_id_key, false).await?.as_deref() == Some(&commit_id[..])
                    {
                        // An earlier attempt did commit.
                        return Ok(match writes_keys {
                            true => Some(self.read_usage(&trx, room, &usage_key).await?),
                            false => None,
                        });
                    }
                    if let Some(fence) = &commit.fence {
                        let current = Self::read_owner(&trx, &owner_key).await?;
                        check_fence(current.as_ref(), fence).map_err(refuse)?;
                    }
                    let mut usage = if commit.delete_all {
                        trx.clear_range(&prefix, &keys::strinc(&prefix));
                        Some(Usage::default())
                    } else if writes_keys {
                        Some(self.read_usage(&trx, room, &usage_key).await?)
                    } else {
                        None
                    };
                    if let Some(usage) = usage.as_mut() {
                        // What each written key held before, from its chunks.
                        let olds = commit.writes.iter().map(|(k, _)| {
                            let (lo, hi) = keys::chunk_range(&keys::kv_key(&prefix, k));
                            let trx = &trx;
                            async move {
                                let rows = read_all(trx, RangeOption::from((lo, hi)), false).await?;
                                let len: usize = rows.iter().map(|(_, v)| v.len()).sum();
                                Ok::<_, FdbError>((!rows.is_empty()).then_some(len))
                            }
                        });
                        let olds = futures::future::try_join_all(olds).await?;
                        for ((k, v), old) in commit.writes.iter().zip(olds) {
                            usage.replace(k, old, v.as_ref().map(Bytes::len));
                        }
                        if usage.is_empty() {
                            trx.clear(&usage_key);
                        } else {
                            trx.set(&usage_key, &usage.encode());
                        }
                    }
                    let writes = commit.writes.iter().map(|w| (&prefix, w));
                    let ledger = commit.ledger.iter().map(|w| (&ledger_prefix, w));
                    for (prefix, (k, v)) in writes.chain(ledger) {
                        let kv_key = keys::kv_key(prefix, k);
                        match v {
                            Some(v) => write_value(&trx, &kv_key, v),
                            None => {
                                let (lo, hi) = keys::chunk_range(&kv_key);
                                trx.clear_range(&lo, &hi);
                            }
                        }
                    }
                    if let Some(alarm) = commit.alarm {
                        if let Some(old) = trx
                            .get(&alarm_key, false)
                            .await?
                            .and_then(|v| keys::decode_alarm(&v))
                        {
                            trx.clear(&self.key(&keys::alarm_index_key(old, room)));
                        }
                        match alarm {
                            Some(at) => {
                                trx.set(&alarm_key, &keys::encode_alarm(at));
                                trx.set(&self.key(&keys::alarm_index_key(at, room)), &[]);
                            }
                            None => trx.clear(&alarm_key),
                        }
                    }
                    trx.set(&commit_id_key, &commit_id);
                    // As FoundationDB counts it (clears, conflict ranges and all): a commit
                    // over the limit fails whole, before it is sent.
                    let size = trx.get_approximate_size().await?;
                    if usize::try_from(size).unwrap_or(usize::MAX) > MAX_COMMIT_BYTES {
                        return Err(refuse(StorageError::Backend(format!(
                            "a commit of about {size} bytes is over FoundationDB's transaction limit ({MAX_COMMIT_BYTES} bytes here); write less per handler"
                        ))));
                    }
                    Ok(usage)
                }
            })
            .await
            .map_err(from_binding)
    }

    async fn usage(&self, room: &RoomKey) -> Result<Usage, StorageError> {
        let usage_key = self.key(&keys::usage_key(room));
        self.db
            .run(|trx, _| {
                let usage_key = usage_key.clone();
                async move { Ok(self.read_usage(&trx, room, &usage_key).await?) }
            })
            .await
            .map_err(from_binding)
    }

    async fn party_rooms(
        &self,
        party: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Usage)>, StorageError> {
        let (lo, hi) = keys::party_usage_range(party, after);
        let (lo, hi) = (self.key(&lo), self.key(&hi));
        let root = self.root.len();
        self.db
            .run(|trx, _| {
                let (lo, hi) = (lo.clone(), hi.clone());
                async move {
                    let opt = RangeOption {
                        limit: Some(limit),
                        mode: StreamingMode::WantAll,
                        ..RangeOption::from((lo, hi))
                    };
                    let rows = read_all(&trx, opt, true).await?;
                    Ok(rows
                        .iter()
                        .filter_map(|(k, v)| {
                            Some((keys::parse_usage_key(k.get(root..)?)?, Usage::decode(v)?))
                        })
                        .collect())
                }
            })
            .await
            .map_err(from_binding)
    }

    async fn claim(&self, room: &RoomKey, claim: &Claim) -> Result<Owner, StorageError> {
        self.on_owner(room, |trx, key, current| {
            let next = claim.decide(current.as_ref()).map_err(refuse)?;
            if current.as_ref() != Some(&next) {
                trx.set(key, &keys::encode_owner(&next));
            }
            Ok(next)
        })
        .await
    }

    async fn release(&self, room: &RoomKey, owner: &Owner) -> Result<(), StorageError> {
        let key = self.room_key(room, "o");
        // The id of the room's last commit (kept to tell whether an attempt landed) is no
        // reason to keep the room.
        let commit_id_key = self.room_key(room, "c");
        let prefix = self.key(&keys::room_prefix(room));
        self.db
            .run(|trx, _| {
                let (key, prefix, commit_id_key) = (key.clone(), prefix.clone(), &commit_id_key);
                async move {
                    if Self::read_owner(&trx, &key).await?.as_ref() != Some(owner) {
                        return Ok(());
                    }
                    let opt = RangeOption {
                        limit: Some(3),
                        ..RangeOption::from((prefix.clone(), keys::strinc(&prefix)))
                    };
                    let rows = trx.get_range(&opt, 1, false).await?;
                    let holds_more = rows.iter().any(|kv| {
                        kv.key() != key.as_slice() && kv.key() != commit_id_key.as_slice()
                    });
                    if holds_more {
                        let released = Owner {
                            released: true,
                            ..owner.clone()
                        };
                        trx.set(&key, &keys::encode_owner(&released));
                    } else {
                        trx.clear(&key);
                        trx.clear(commit_id_key);
                    }
                    Ok(())
                }
            })
            .await
            .map_err(from_binding)
    }

    async fn owner(&self, room: &RoomKey) -> Result<Option<Owner>, StorageError> {
        self.on_owner(room, |_, _, current| Ok(current)).await
    }

    async fn home_region(&self, room: &RoomKey, proposed: &str) -> Result<String, StorageError> {
        self.on_owner(room, |trx, key, current| {
            let (home, placeholder) = home_region(current.as_ref(), proposed);
            if let Some(p) = placeholder {
                trx.set(key, &keys::encode_owner(&p));
            }
            Ok(home)
        })
        .await
    }

    async fn wait_owner_change(&self, room: &RoomKey, within: Duration) {
        // Watch the record unless it is claimable already; a watch fires once the record
        // changes after the transaction that set it up commits.
        let watch = self
            .on_owner(room, |trx, key, current| {
                if current.is_none_or(|o| o.released) {
                    return Ok(None);
                }
                Ok(Some(trx.watch(key)))
            })
            .await;
        // Bounded even with a watch: the caller claims again either way.
        let within = within.min(Duration::from_secs(1));
        let pause = within.min(Duration::from_millis(50));
        match watch {
            Ok(None) => {}
            Ok(Some(watch)) => {
                // A watch that fails at once (too many watches, a cancelled transaction)
                // must not make the caller's claim loop spin: pause as the polling does.
                if let Ok(Err(_)) = tokio::time::timeout(within, watch).await {
                    tokio::time::sleep(pause).await;
                }
            }
            Err(_) => tokio::time::sleep(pause).await,
        }
    }

    async fn scan_alarms(&self, scan: &AlarmScan) -> Result<Vec<(RoomKey, i64)>, StorageError> {
        if scan.limit == 0 {
            return Ok(Vec::new());
        }
        let (lo, hi) = keys::alarm_scan_range(scan);
        let (lo, hi) = (self.key(&lo), self.key(&hi));
        let root_len = self.root.len();
        self.db
            .run(|trx, _| {
                let opt = RangeOption {
                    limit: Some(scan.limit),
                    mode: StreamingMode::WantAll,
                    ..RangeOption::from((lo.clone(), hi.clone()))
                };
                async move {
                    // To the limit or the end of the range, not to the first batch's end.
                    let rows = read_all(&trx, opt, true).await?;
                    Ok(rows
                        .iter()
                        .filter_map(|(k, _)| keys::parse_alarm_index(k.get(root_len..)?))
                        .collect())
                }
            })
            .await
            .map_err(from_binding)
    }
}
