//! The embedded backend: one redb file, one table of tuple-encoded keys.
//!
//! Group commit: every room commit goes to one committer thread, which takes whatever is
//! queued (up to [`MAX_GROUP`] commits), applies it all in one write transaction and
//! fsyncs once. Rooms committing at the same time share the fsync instead of queueing for
//! one each.
//!
//! After a failed write (a full disk, an I/O error) redb refuses every later write until
//! the file is reopened, so the committer reopens it before the next write, and a probe
//! (see [`Store::probe`]) writes a page to find when writes go through again.

mod committer;

use committer::{run_committer, stored_usage};

use super::keys;
use super::store::{AlarmScan, Claim, ListOptions, Owner, RoomCommit, StorageError, Store, Usage};
use async_trait::async_trait;
use bytes::Bytes;
use conclave_proto::RoomKey;
use redb::{Database, ReadableDatabase, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
/// One row a probe rewrites: a write that needs a page of space.
const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe");
const PROBE_BYTES: usize = 4096;

/// Room commits applied in one write transaction at most.
pub const MAX_GROUP: usize = 1024;

/// A write for the committer thread.
enum Op {
    Commit(RoomCommit),
    Claim(Claim),
    Release(Owner),
    /// Fix the room's home region (this one, unless it has one): the owner record after.
    Home(String),
}

/// What the committer thread is asked to do.
enum Work {
    Room(RoomKey, Op),
    /// A write of no room, to learn whether writes go through.
    Probe,
}

/// What a write produced: the owner record for claims and region lookups, the room's usage
/// for commits.
enum Outcome {
    Owner(Option<Owner>),
    Usage(Option<Usage>),
}

type OpResult = Result<Outcome, StorageError>;

impl Outcome {
    fn owner(self) -> Option<Owner> {
        match self {
            Outcome::Owner(o) => o,
            Outcome::Usage(_) => None,
        }
    }
}

struct Pending {
    work: Work,
    reply: oneshot::Sender<OpResult>,
}

/// The open database file, and the way to open it again.
struct Handle {
    path: PathBuf,
    /// `None` while it is being reopened.
    db: RwLock<Option<Arc<Database>>>,
}

impl Handle {
    fn current(&self) -> Result<Arc<Database>, StorageError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StorageError::Backend("the database file is being reopened".into()))
    }

    /// Closes the database (once reads in flight let go of it) and opens the file again.
    fn reopen(&self) -> Result<(), StorageError> {
        let old = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(old) = old {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let db = open_database(&self.path)?;
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(db));
        metrics::counter!("conclave_storage_reopens_total").increment(1);
        tracing::info!(path = %self.path.display(), "reopened the database file");
        Ok(())
    }
}

/// Opens (or creates) the file and its tables.
fn open_database(path: &Path) -> Result<Database, StorageError> {
    let db = Database::create(path)
        .map_err(|e| StorageError::Backend(format!("cannot open {}: {e}", path.display())))?;
    let txn = db.begin_write().map_err(backend)?;
    txn.open_table(DATA).map_err(backend)?;
    txn.commit().map_err(backend)?;
    Ok(db)
}

pub struct RedbStore {
    handle: Arc<Handle>,
    committer: Option<std_mpsc::Sender<Pending>>,
    committer_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    /// Lets queued commits finish and releases the file, so it can be reopened at once.
    fn drop(&mut self) {
        self.committer.take();
        if let Some(t) = self.committer_thread.take() {
            let _ = t.join();
        }
    }
}

fn backend<E: std::fmt::Display>(e: E) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StorageError::Backend(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db = open_database(path)?;
        let handle = Arc::new(Handle {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
        });
        let (tx, rx) = std_mpsc::channel();
        let thread_handle = handle.clone();
        let thread = std::thread::Builder::new()
            .name("redb-committer".into())
            .spawn(move || run_committer(&thread_handle, rx))
            .map_err(backend)?;
        Ok(Self {
            handle,
            committer: Some(tx),
            committer_thread: Some(thread),
        })
    }

    /// Queues a write of `room` for the committer thread and waits until it is durable.
    async fn write(&self, room: &RoomKey, op: Op) -> OpResult {
        self.queue(Work::Room(room.clone(), op)).await
    }

    async fn queue(&self, work: Work) -> OpResult {
        let (reply, rx) = oneshot::channel();
        self.committer
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(Pending { work, reply })
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadOnlyTable<&'static [u8], &'static [u8]>) -> Result<T, StorageError>
            + Send
            + 'static,
    {
        let db = self.handle.current()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(DATA).map_err(backend)?;
            f(&table)
        })
        .await
        .map_err(backend)?
    }

    /// The value under `key`, decoded.
    async fn read_value<T: Send + 'static>(
        &self,
        key: Vec<u8>,
        decode: fn(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, StorageError> {
        self.read(move |t| {
            Ok(t.get(key.as_slice())
                .map_err(backend)?
                .and_then(|v| decode(v.value())))
        })
        .await
    }
}

/// One entry of a range read.
type Row<'a> = (
    redb::AccessGuard<'a, &'static [u8]>,
    redb::AccessGuard<'a, &'static [u8]>,
);

impl RedbStore {
    /// The entries under `prefix` (a room's keys or its ledger) that `opts` selects.
    async fn list_under(
        &self,
        prefix: Vec<u8>,
        opts: ListOptions,
    ) -> Result<Vec<(String, Bytes)>, StorageError> {
        if opts.limit == Some(0) {
            return Ok(Vec::new());
        }
        self.read(move |t| {
            let (lo, hi) = keys::list_range(&prefix, &opts);
            if lo >= hi {
                return Ok(Vec::new());
            }
            let range = t
                .range::<&[u8]>(lo.as_slice()..hi.as_slice())
                .map_err(backend)?;
            let limit = opts.limit.unwrap_or(usize::MAX);
            let mut out = Vec::new();
            let mut push = |item: Result<Row<'_>, redb::StorageError>| {
                let (k, v) = item.map_err(backend)?;
                let key = keys::user_key(&prefix, k.value()).ok_or_else(|| {
                    StorageError::Backend("undecodable key in room subspace".into())
                })?;
                if opts.contains(&key) {
                    out.push((key, Bytes::copy_from_slice(v.value())));
                }
                Ok::<_, StorageError>(out.len() >= limit)
            };
            if opts.reverse {
                for item in range.rev() {
                    if push(item)? {
                        break;
                    }
                }
            } else {
                for item in range {
                    if push(item)? {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl Store for RedbStore {
    fn backend(&self) -> &'static str {
        "redb"
    }

    async fn get(
        &self,
        room: &RoomKey,
        wanted: &[String],
    ) -> Result<Vec<Option<Bytes>>, StorageError> {
        let prefix = keys::kv_prefix(room);
        let wanted = wanted.to_vec();
        self.read(move |t| {
            wanted
                .iter()
                .map(|k| {
                    let v = t
                        .get(keys::kv_key(&prefix, k).as_slice())
                        .map_err(backend)?;
                    Ok(v.map(|v| Bytes::copy_from_slice(v.value())))
                })
                .collect()
        })
        .await
    }

    async fn list(
        &self,
        room: &RoomKey,
        opts: &ListOptions,
    ) -> Result<Vec<(String, Bytes)>, StorageError> {
        self.list_under(keys::kv_prefix(room), opts.clone()).await
    }

    async fn ledger(&self, room: &RoomKey) -> Result<Vec<(String, Bytes)>, StorageError> {
        self.list_under(keys::ledger_prefix(room), ListOptions::default())
            .await
    }

    async fn get_alarm(&self, room: &RoomKey) -> Result<Option<i64>, StorageError> {
        self.read_value(keys::alarm_key(room), keys::decode_alarm)
            .await
    }

    async fn commit(
        &self,
        room: &RoomKey,
        commit: RoomCommit,
    ) -> Result<Option<Usage>, StorageError> {
        match self.write(room, Op::Commit(commit)).await? {
            Outcome::Usage(usage) => Ok(usage),
            Outcome::Owner(_) => Err(StorageError::Backend("commit returned no usage".into())),
        }
    }

    async fn usage(&self, room: &RoomKey) -> Result<Usage, StorageError> {
        let room = room.clone();
        self.read(move |t| stored_usage(t, &room, &keys::usage_key(&room)).map_err(backend))
            .await
    }

    async fn party_rooms(
        &self,
        party: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Usage)>, StorageError> {
        let (lo, hi) = keys::party_usage_range(party, after);
        self.read(move |t| {
            let mut rooms = Vec::new();
            for item in t
                .range::<&[u8]>(lo.as_slice()..hi.as_slice())
                .map_err(backend)?
                .take(limit)
            {
                let (k, v) = item.map_err(backend)?;
                if let (Some(room), Some(usage)) =
                    (keys::parse_usage_key(k.value()), Usage::decode(v.value()))
                {
                    rooms.push((room, usage));
                }
            }
            Ok(rooms)
        })
        .await
    }

    async fn claim(&self, room: &RoomKey, claim: &Claim) -> Result<Owner, StorageError> {
        self.write(room, Op::Claim(claim.clone()))
            .await?
            .owner()
            .ok_or_else(|| StorageError::Backend("claim returned no owner".into()))
    }

    async fn release(&self, room: &RoomKey, owner: &Owner) -> Result<(), StorageError> {
        self.write(room, Op::Release(owner.clone()))
            .await
            .map(|_| ())
    }

    async fn home_region(&self, room: &RoomKey, proposed: &str) -> Result<String, StorageError> {
        let owner = self
            .write(room, Op::Home(proposed.to_string()))
            .await?
            .owner();
        Ok(owner.map_or_else(|| proposed.to_string(), |o| o.home().to_string()))
    }

    async fn owner(&self, room: &RoomKey) -> Result<Option<Owner>, StorageError> {
        self.read_value(keys::owner_key(room), keys::decode_owner)
            .await
    }

    async fn probe(&self) -> Result<(), StorageError> {
        self.queue(Work::Probe).await.map(|_| ())
    }

    async fn scan_alarms(&self, scan: &AlarmScan) -> Result<Vec<(RoomKey, i64)>, StorageError> {
        if scan.limit == 0 {
            return Ok(Vec::new());
        }
        let (lo, hi) = keys::alarm_scan_range(scan);
        let limit = scan.limit;
        self.read(move |t| {
            let mut out = Vec::new();
            for item in t
                .range::<&[u8]>(lo.as_slice()..hi.as_slice())
                .map_err(backend)?
            {
                let (k, _) = item.map_err(backend)?;
                out.extend(keys::parse_alarm_index(k.value()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }
}
