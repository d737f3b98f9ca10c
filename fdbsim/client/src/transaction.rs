//! `FDBTransaction`: reads at one read version that see the transaction's own writes,
//! writes buffered until commit, conflict ranges, the retry loop's `on_error` with its
//! backoff, retry limit and timeout, watches and versionstamps.

use crate::database::{Database, TxOptions};
use crate::errors;
use crate::faults::{self, CommitFault};
use crate::future::{self, Future, Payload, Shared};
use crate::network;
use bytes::Bytes;
use conclave_fdbsim::proto::sim_client::SimClient;
use conclave_fdbsim::proto::*;
use conclave_fdbsim::store::{key_after, op, TRANSACTION_SIZE_LIMIT, VALUE_SIZE_LIMIT};
use std::ffi::c_int;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tonic::transport::Channel;

const KEY_SIZE_LIMIT: usize = 10_000;
const OPTION_NEXT_WRITE_NO_WRITE_CONFLICT_RANGE: c_int = 30;
const NO_COMMIT_VERSION: i32 = 2021;
/// libfdb_c's byte targets per streaming mode (EXACT, SMALL, MEDIUM, LARGE, SERIAL; 0 is
/// none), WANT_ALL being SERIAL, and ITERATOR's growing targets per iteration.
const MODE_BYTES: [usize; 5] = [0, 256, 1_000, 4_096, 80_000];
const ITERATOR_BYTES: [usize; 10] = [
    4_096, 6_144, 9_216, 13_824, 20_736, 31_104, 46_656, 69_984, 80_000, 120_000,
];

struct State {
    options: TxOptions,
    /// When the timeout clock started (creation or reset; `on_error` keeps it).
    started: Instant,
    retries: i64,
    /// Bumped by every reset, so a read that finishes after one adds no conflict range.
    generation: u64,
    read_version: Arc<OnceCell<i64>>,
    writes: Vec<Mutation>,
    read_conflicts: Vec<KeyRange>,
    write_conflicts: Vec<KeyRange>,
    no_write_conflict_next: bool,
    /// An error a write raised, reported by the commit (FoundationDB defers them too).
    deferred_error: Option<i32>,
    cancelled: bool,
    committing: bool,
    committed_version: i64,
    versionstamps: Vec<Arc<Shared>>,
    watches: Vec<(Bytes, Arc<Shared>)>,
}

impl State {
    fn new(options: TxOptions) -> Self {
        Self {
            options,
            started: Instant::now(),
            retries: 0,
            generation: 0,
            read_version: Arc::new(OnceCell::new()),
            writes: Vec::new(),
            read_conflicts: Vec::new(),
            write_conflicts: Vec::new(),
            no_write_conflict_next: false,
            deferred_error: None,
            cancelled: false,
            committing: false,
            committed_version: -1,
            versionstamps: Vec::new(),
            watches: Vec::new(),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        (self.options.timeout_ms > 0)
            .then(|| self.started + Duration::from_millis(self.options.timeout_ms as u64))
    }

    /// Clears what the transaction did, keeping its options, clock and retry count (what
    /// `on_error` does); unstarted watches and versionstamps end with `code`.
    fn clear(&mut self, code: i32) {
        self.generation += 1;
        self.read_version = Arc::new(OnceCell::new());
        self.writes.clear();
        self.read_conflicts.clear();
        self.write_conflicts.clear();
        self.no_write_conflict_next = false;
        self.deferred_error = None;
        self.cancelled = false;
        self.committing = false;
        self.committed_version = -1;
        for waiter in self.versionstamps.drain(..) {
            waiter.complete(Err(code));
        }
        for (_, watch) in self.watches.drain(..) {
            watch.complete(Err(code));
        }
    }

    fn approximate_size(&self) -> usize {
        let writes = self.writes.iter().map(|m| m.key.len() + m.param.len());
        let ranges = self.read_conflicts.iter().chain(&self.write_conflicts);
        writes
            .chain(ranges.map(|r| r.begin.len() + r.end.len()))
            .sum()
    }

    fn write_conflict(&mut self, range: KeyRange) {
        if std::mem::take(&mut self.no_write_conflict_next) {
            return;
        }
        self.write_conflicts.push(range);
    }
}

struct Tx {
    client: SimClient<Channel>,
    defaults: TxOptions,
    state: Mutex<State>,
}

impl Tx {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The object behind an `FDBTransaction*`.
pub struct Transaction {
    tx: Arc<Tx>,
}

fn point(key: &Bytes) -> KeyRange {
    KeyRange {
        begin: key.clone(),
        end: Bytes::from(key_after(key)),
    }
}

/// The bytes at `p` (`len` of them), copied.
unsafe fn bytes(p: *const u8, len: c_int) -> Bytes {
    if p.is_null() || len <= 0 {
        return Bytes::new();
    }
    // SAFETY: the caller passes `len` readable bytes.
    Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(p, len as usize) })
}

/// # Safety
/// `tr` must be a live transaction from this library.
unsafe fn tx<'a>(tr: *mut Transaction) -> &'a Arc<Tx> {
    // SAFETY: per the contract above.
    unsafe { &(*tr).tx }
}

/// Pause before sending again after a transport failure.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Sends `request` through `call` until it gets through: on a transport failure the real
/// client retries until the transaction's timeout, and so does this one.
async fn until_through<Req: Clone, T, Fut>(
    client: &SimClient<Channel>,
    request: Req,
    call: impl Fn(SimClient<Channel>, Req) -> Fut,
) -> T
where
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    loop {
        match call(client.clone(), request.clone()).await {
            Ok(reply) => return reply.into_inner(),
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// The transaction's read version, fetched by its first read. An injected `process_behind`
/// fails that first read (and so the attempt), not every read of a large transaction.
async fn read_version(client: &SimClient<Channel>, cell: &OnceCell<i64>) -> Result<i64, i32> {
    cell.get_or_try_init(|| async {
        if faults::on_read() {
            return Err(errors::PROCESS_BEHIND);
        }
        let reply = until_through(client, ReadVersionRequest {}, |mut c, r| async move {
            c.read_version(r).await
        })
        .await;
        match reply.error {
            0 => Ok(reply.version),
            error => Err(error),
        }
    })
    .await
    .copied()
}

/// Starts an operation of `tr`: fails at once if the transaction is cancelled, timed out
/// or has a deferred error (`check_deferred`), else runs `work` on the network thread with
/// the transaction's timeout.
fn operation<F>(
    tx: &Arc<Tx>,
    check_deferred: bool,
    work: impl FnOnce(&mut State) -> Result<F, i32>,
) -> *mut Future
where
    F: std::future::Future<Output = Result<Payload, i32>> + Send + 'static,
{
    let (deadline, work) = {
        let mut st = tx.lock();
        if st.cancelled {
            return future::ready(Err(errors::TRANSACTION_CANCELLED));
        }
        let deadline = st.deadline();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return future::ready(Err(errors::TRANSACTION_TIMED_OUT));
        }
        if let Some(code) = st.deferred_error.filter(|_| check_deferred) {
            return future::ready(Err(code));
        }
        match work(&mut st) {
            Ok(work) => (deadline, work),
            Err(code) => return future::ready(Err(code)),
        }
    };
    let (out, shared) = future::pending();
    let tx = tx.clone();
    network::spawn(shared, async move {
        let result = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), work)
                .await
                .unwrap_or(Err(errors::TRANSACTION_TIMED_OUT)),
            None => work.await,
        };
        if tx.lock().cancelled {
            return Err(errors::TRANSACTION_CANCELLED);
        }
        result
    });
    out
}

#[no_mangle]
pub unsafe extern "C" fn fdb_database_create_transaction(
    d: *mut Database,
    out: *mut *mut Transaction,
) -> c_int {
    // SAFETY: the caller passes a live database and a writable `out`.
    let db = unsafe { &*d };
    let defaults = *db.defaults.lock().unwrap_or_else(|e| e.into_inner());
    let tx = Arc::new(Tx {
        client: db.client.clone(),
        defaults,
        state: Mutex::new(State::new(defaults)),
    });
    // SAFETY: as above.
    unsafe { *out = Box::into_raw(Box::new(Transaction { tx })) };
    0
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_destroy(tr: *mut Transaction) {
    if tr.is_null() {
        return;
    }
    // SAFETY: the caller gives up its transaction, made by `Box::into_raw`.
    let t = unsafe { Box::from_raw(tr) };
    t.tx.lock().clear(errors::TRANSACTION_CANCELLED);
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_cancel(tr: *mut Transaction) {
    // SAFETY: the caller passes a live transaction.
    let mut st = unsafe { tx(tr) }.lock();
    st.cancelled = true;
    for (_, watch) in st.watches.drain(..) {
        watch.complete(Err(errors::TRANSACTION_CANCELLED));
    }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_reset(tr: *mut Transaction) {
    // SAFETY: the caller passes a live transaction.
    let tx = unsafe { tx(tr) };
    let mut st = tx.lock();
    st.clear(errors::TRANSACTION_CANCELLED);
    st.options = tx.defaults;
    st.started = Instant::now();
    st.retries = 0;
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_set_option(
    tr: *mut Transaction,
    option: c_int,
    value: *const u8,
    len: c_int,
) -> c_int {
    // SAFETY: the caller passes a live transaction.
    let mut st = unsafe { tx(tr) }.lock();
    if option == OPTION_NEXT_WRITE_NO_WRITE_CONFLICT_RANGE {
        st.no_write_conflict_next = true;
    } else {
        st.options.apply(option, value, len);
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_set_read_version(tr: *mut Transaction, version: i64) {
    // SAFETY: the caller passes a live transaction.
    unsafe { tx(tr) }.lock().read_version = Arc::new(OnceCell::new_with(Some(version)));
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_get_read_version(tr: *mut Transaction) -> *mut Future {
    // SAFETY: the caller passes a live transaction.
    let tx = unsafe { tx(tr) };
    let client = tx.client.clone();
    operation(tx, false, |st| {
        let cell = st.read_version.clone();
        Ok(async move { read_version(&client, &cell).await.map(Payload::Int64) })
    })
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_get(
    tr: *mut Transaction,
    key: *const u8,
    key_len: c_int,
    snapshot: c_int,
) -> *mut Future {
    // SAFETY: the caller passes a live transaction and `key_len` readable bytes.
    let (tx, key) = unsafe { (tx(tr), bytes(key, key_len)) };
    let client = tx.client.clone();
    operation(tx, false, |st| {
        if snapshot == 0 {
            st.read_conflicts.push(point(&key));
        }
        let (cell, writes) = (st.read_version.clone(), st.writes.clone());
        Ok(async move {
            let version = read_version(&client, &cell).await?;
            let request = GetRequest {
                version,
                key,
                writes,
            };
            let r = until_through(&client, request, |mut c, r| async move { c.get(r).await }).await;
            match r.error {
                0 => Ok(Payload::Value(r.present.then_some(r.value))),
                error => Err(error),
            }
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_get_key(
    tr: *mut Transaction,
    key: *const u8,
    key_len: c_int,
    or_equal: c_int,
    offset: c_int,
    snapshot: c_int,
) -> *mut Future {
    // SAFETY: the caller passes a live transaction and `key_len` readable bytes.
    let (tx, key) = unsafe { (tx(tr), bytes(key, key_len)) };
    let (client, task_tx) = (tx.client.clone(), tx.clone());
    operation(tx, false, |st| {
        let (cell, writes, generation) =
            (st.read_version.clone(), st.writes.clone(), st.generation);
        Ok(async move {
            let version = read_version(&client, &cell).await?;
            let selector = KeySelector {
                key: key.clone(),
                or_equal: or_equal != 0,
                offset,
            };
            let request = GetKeyRequest {
                version,
                selector: Some(selector),
                writes,
            };
            let r = until_through(
                &client,
                request,
                |mut c, r| async move { c.get_key(r).await },
            )
            .await;
            if r.error != 0 {
                return Err(r.error);
            }
            let found = r.key;
            // The keys between the selector's and the answer decided it.
            let mut st = task_tx.lock();
            if snapshot == 0 && st.generation == generation {
                let (lo, hi) = if found < key {
                    (&found, &key)
                } else {
                    (&key, &found)
                };
                st.read_conflicts.push(KeyRange {
                    begin: lo.clone(),
                    end: Bytes::from(key_after(hi)),
                });
            }
            Ok(Payload::Key(found))
        })
    })
}

/// The byte target of a range read (0: none), or the error libfdb_c gives.
fn target_bytes(mode: c_int, iteration: c_int, limit: c_int, target: c_int) -> Result<usize, i32> {
    const WANT_ALL: c_int = -2;
    const ITERATOR: c_int = -1;
    const EXACT: c_int = 0;
    const SERIAL: c_int = 4;
    let mode = if mode == WANT_ALL { SERIAL } else { mode };
    if mode == EXACT && limit <= 0 && target <= 0 {
        return Err(errors::EXACT_MODE_WITHOUT_LIMITS);
    }
    let mode_bytes = match mode {
        ITERATOR if iteration <= 0 => return Err(errors::CLIENT_INVALID_OPERATION),
        ITERATOR => ITERATOR_BYTES[(iteration as usize).min(ITERATOR_BYTES.len()) - 1],
        0..=4 => MODE_BYTES[mode as usize],
        _ => return Err(errors::CLIENT_INVALID_OPERATION),
    };
    let target = usize::try_from(target).unwrap_or(0);
    Ok(match (target, mode_bytes) {
        (0, m) => m,
        (t, 0) => t,
        (t, m) => t.min(m),
    })
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_get_range(
    tr: *mut Transaction,
    begin_key: *const u8,
    begin_len: c_int,
    begin_or_equal: c_int,
    begin_offset: c_int,
    end_key: *const u8,
    end_len: c_int,
    end_or_equal: c_int,
    end_offset: c_int,
    limit: c_int,
    target: c_int,
    mode: c_int,
    iteration: c_int,
    snapshot: c_int,
    reverse: c_int,
) -> *mut Future {
    // SAFETY: the caller passes a live transaction and readable keys.
    let (tx, begin, end) =
        unsafe { (tx(tr), bytes(begin_key, begin_len), bytes(end_key, end_len)) };
    let (client, task_tx) = (tx.client.clone(), tx.clone());
    operation(tx, false, |st| {
        let target_bytes = target_bytes(mode, iteration, limit, target)?;
        let (cell, generation) = (st.read_version.clone(), st.generation);
        let request = GetRangeRequest {
            version: 0,
            begin: Some(KeySelector {
                key: begin,
                or_equal: begin_or_equal != 0,
                offset: begin_offset,
            }),
            end: Some(KeySelector {
                key: end,
                or_equal: end_or_equal != 0,
                offset: end_offset,
            }),
            limit: limit.max(0),
            target_bytes: target_bytes as i32,
            reverse: reverse != 0,
            writes: st.writes.clone(),
        };
        Ok(async move {
            let version = read_version(&client, &cell).await?;
            let request = GetRangeRequest { version, ..request };
            let r = until_through(
                &client,
                request,
                |mut c, r| async move { c.get_range(r).await },
            )
            .await;
            if r.error != 0 {
                return Err(r.error);
            }
            let mut st = task_tx.lock();
            if snapshot == 0 && st.generation == generation {
                st.read_conflicts.extend(r.read);
            }
            Ok(Payload::KeyValues {
                rows: r.rows.into_iter().map(|kv| (kv.key, kv.value)).collect(),
                more: r.more,
            })
        })
    })
}

/// Buffers a write, deferring the errors FoundationDB defers to the commit.
fn write(tx: &Arc<Tx>, mutation: Mutation, conflict: Option<KeyRange>) {
    let mut st = tx.lock();
    // A versionstamped key or value carries a 4-byte offset that is not stored.
    let key_slack = if mutation.op == op::SET_VERSIONSTAMPED_KEY {
        4
    } else {
        0
    };
    let value_slack = if mutation.op == op::SET_VERSIONSTAMPED_VALUE {
        4
    } else {
        0
    };
    let too_large = if mutation.key.len() > KEY_SIZE_LIMIT + key_slack {
        Some(errors::KEY_TOO_LARGE)
    } else if mutation.op != op::CLEAR_RANGE
        && mutation.param.len() > VALUE_SIZE_LIMIT + value_slack
    {
        Some(errors::VALUE_TOO_LARGE)
    } else if mutation.key.first() == Some(&0xff) {
        Some(errors::KEY_OUTSIDE_LEGAL_RANGE)
    } else {
        None
    };
    if let Some(code) = too_large {
        st.deferred_error.get_or_insert(code);
        return;
    }
    if let Some(range) = conflict {
        st.write_conflict(range);
    }
    st.writes.push(mutation);
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_set(
    tr: *mut Transaction,
    key: *const u8,
    key_len: c_int,
    value: *const u8,
    value_len: c_int,
) {
    // SAFETY: the caller passes a live transaction and readable bytes.
    let (tx, key, value) = unsafe { (tx(tr), bytes(key, key_len), bytes(value, value_len)) };
    let conflict = point(&key);
    write(
        tx,
        Mutation {
            op: op::SET,
            key,
            param: value,
        },
        Some(conflict),
    );
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_clear(
    tr: *mut Transaction,
    key: *const u8,
    key_len: c_int,
) {
    // SAFETY: the caller passes a live transaction and readable bytes.
    let (tx, key) = unsafe { (tx(tr), bytes(key, key_len)) };
    let conflict = point(&key);
    write(
        tx,
        Mutation {
            op: op::CLEAR,
            key,
            param: Bytes::new(),
        },
        Some(conflict),
    );
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_clear_range(
    tr: *mut Transaction,
    begin: *const u8,
    begin_len: c_int,
    end: *const u8,
    end_len: c_int,
) {
    // SAFETY: the caller passes a live transaction and readable bytes.
    let (tx, begin, end) = unsafe { (tx(tr), bytes(begin, begin_len), bytes(end, end_len)) };
    if begin > end {
        tx.lock()
            .deferred_error
            .get_or_insert(errors::INVERTED_RANGE);
        return;
    }
    // Up to the end of the normal keyspace (clearing `\xff` itself is not possible here).
    let end = if end.as_ref() > b"\xff".as_slice() {
        Bytes::from_static(b"\xff")
    } else {
        end
    };
    let conflict = KeyRange {
        begin: begin.clone(),
        end: end.clone(),
    };
    write(
        tx,
        Mutation {
            op: op::CLEAR_RANGE,
            key: begin,
            param: end,
        },
        Some(conflict),
    );
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_atomic_op(
    tr: *mut Transaction,
    key: *const u8,
    key_len: c_int,
    param: *const u8,
    param_len: c_int,
    operation_type: c_int,
) {
    // SAFETY: the caller passes a live transaction and readable bytes.
    let (tx, key, param) = unsafe { (tx(tr), bytes(key, key_len), bytes(param, param_len)) };
    if !op::known(operation_type) || operation_type < 0 {
        tx.lock()
            .deferred_error
            .get_or_insert(errors::CLIENT_INVALID_OPERATION);
        return;
    }
    // A versionstamped key is unknown until commit: no conflict range for it.
    let conflict = (operation_type != op::SET_VERSIONSTAMPED_KEY).then(|| point(&key));
    write(
        tx,
        Mutation {
            op: operation_type,
            key,
            param,
        },
        conflict,
    );
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_add_conflict_range(
    tr: *mut Transaction,
    begin: *const u8,
    begin_len: c_int,
    end: *const u8,
    end_len: c_int,
    kind: c_int,
) -> c_int {
    // SAFETY: the caller passes a live transaction and readable bytes.
    let (tx, begin, end) = unsafe { (tx(tr), bytes(begin, begin_len), bytes(end, end_len)) };
    if begin > end {
        return errors::INVERTED_RANGE;
    }
    let range = KeyRange { begin, end };
    let mut st = tx.lock();
    match kind {
        0 => st.read_conflicts.push(range),
        1 => st.write_conflicts.push(range),
        _ => return errors::CLIENT_INVALID_OPERATION,
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_watch(
    tr: *mut Transaction,
    key: *const u8,
    key_len: c_int,
) -> *mut Future {
    // SAFETY: the caller passes a live transaction and readable bytes.
    let (tx, key) = unsafe { (tx(tr), bytes(key, key_len)) };
    let mut st = tx.lock();
    if st.cancelled {
        return future::ready(Err(errors::TRANSACTION_CANCELLED));
    }
    // Set up when the transaction commits.
    let (out, shared) = future::pending();
    st.watches.push((key, shared));
    out
}

/// Starts a committed transaction's watches: each answers once its key's value differs
/// from the value at `version`.
fn start_watches(client: &SimClient<Channel>, watches: Vec<(Bytes, Arc<Shared>)>, version: i64) {
    for (key, shared) in watches {
        let client = client.clone();
        network::spawn(shared, async move {
            let request = WatchRequest { key, version };
            let r =
                until_through(&client, request, |mut c, r| async move { c.watch(r).await }).await;
            match r.error {
                0 => Ok(Payload::Unit),
                error => Err(error),
            }
        });
    }
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_commit(tr: *mut Transaction) -> *mut Future {
    // SAFETY: the caller passes a live transaction.
    let tx = unsafe { tx(tr) };
    let (client, task_tx) = (tx.client.clone(), tx.clone());
    operation(tx, true, |st| {
        if st.committing {
            return Err(errors::USED_DURING_COMMIT);
        }
        if st.approximate_size() > TRANSACTION_SIZE_LIMIT {
            return Err(errors::TRANSACTION_TOO_LARGE);
        }
        st.committing = true;
        let read_only = st.writes.is_empty() && st.write_conflicts.is_empty();
        let cell = st.read_version.clone();
        let request = CommitRequest {
            read_version: 0,
            read_conflicts: st.read_conflicts.clone(),
            write_conflicts: st.write_conflicts.clone(),
            mutations: st.writes.clone(),
        };
        Ok(async move {
            let outcome = if read_only {
                // Nothing to send: FoundationDB answers at once (committed version -1).
                read_version(&client, &cell).await.map(|v| (v, None))
            } else {
                commit(&client, &cell, request)
                    .await
                    .map(|(v, stamp)| (v, Some(stamp)))
            };
            let mut st = task_tx.lock();
            st.committing = false;
            let watches = std::mem::take(&mut st.watches);
            let stamps = std::mem::take(&mut st.versionstamps);
            match outcome {
                Ok((version, stamp)) => {
                    if stamp.is_some() {
                        st.committed_version = version;
                    }
                    drop(st);
                    for waiter in stamps {
                        waiter.complete(match &stamp {
                            Some(s) => Ok(Payload::Key(s.clone())),
                            None => Err(NO_COMMIT_VERSION),
                        });
                    }
                    start_watches(&client, watches, version);
                    Ok(Payload::Unit)
                }
                Err(code) => {
                    drop(st);
                    for waiter in stamps.into_iter().chain(watches.into_iter().map(|w| w.1)) {
                        waiter.complete(Err(code));
                    }
                    Err(code)
                }
            }
        })
    })
}

/// Sends a commit (with the injected faults): its version and versionstamp.
async fn commit(
    client: &SimClient<Channel>,
    cell: &OnceCell<i64>,
    mut request: CommitRequest,
) -> Result<(i64, Bytes), i32> {
    if !request.read_conflicts.is_empty() {
        request.read_version = read_version(client, cell).await?;
    }
    let fault = faults::on_commit();
    match fault {
        Some(CommitFault::LostButUnknown) => return Err(errors::COMMIT_UNKNOWN_RESULT),
        Some(CommitFault::SpuriousConflict) => return Err(errors::NOT_COMMITTED),
        _ => {}
    }
    let reply = match client.clone().commit(request).await {
        Ok(reply) => reply.into_inner(),
        // Sent or not: the real client cannot tell either.
        Err(_) => return Err(errors::COMMIT_UNKNOWN_RESULT),
    };
    if reply.error != 0 {
        return Err(reply.error);
    }
    if matches!(fault, Some(CommitFault::LandedButUnknown)) {
        return Err(errors::COMMIT_UNKNOWN_RESULT);
    }
    Ok((reply.version, reply.versionstamp))
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_get_committed_version(
    tr: *mut Transaction,
    out: *mut i64,
) -> c_int {
    // SAFETY: the caller passes a live transaction and a writable `out`.
    unsafe { *out = tx(tr).lock().committed_version };
    0
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_get_approximate_size(tr: *mut Transaction) -> *mut Future {
    // SAFETY: the caller passes a live transaction.
    let size = unsafe { tx(tr) }.lock().approximate_size();
    future::ready(Ok(Payload::Int64(size as i64)))
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_get_versionstamp(tr: *mut Transaction) -> *mut Future {
    // SAFETY: the caller passes a live transaction.
    let mut st = unsafe { tx(tr) }.lock();
    let (out, shared) = future::pending();
    st.versionstamps.push(shared);
    out
}

#[no_mangle]
pub unsafe extern "C" fn fdb_transaction_on_error(
    tr: *mut Transaction,
    error: c_int,
) -> *mut Future {
    // SAFETY: the caller passes a live transaction.
    let tx = unsafe { tx(tr) };
    let mut st = tx.lock();
    if !errors::retryable(error) {
        return future::ready(Err(error));
    }
    let deadline = st.deadline();
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return future::ready(Err(errors::TRANSACTION_TIMED_OUT));
    }
    if st.options.retry_limit >= 0 && st.retries >= st.options.retry_limit {
        return future::ready(Err(error));
    }
    st.retries += 1;
    let exponent = (st.retries - 1).min(16) as u32;
    let delay_ms = (10i64 << exponent).min(st.options.max_retry_delay_ms.max(0));
    st.clear(error);
    drop(st);
    let (out, shared) = future::pending();
    network::spawn(shared, async move {
        let wake = Instant::now() + Duration::from_millis(delay_ms as u64);
        match deadline {
            Some(d) if d < wake => {
                tokio::time::sleep_until(d.into()).await;
                Err(errors::TRANSACTION_TIMED_OUT)
            }
            _ => {
                tokio::time::sleep_until(wake.into()).await;
                Ok(Payload::Unit)
            }
        }
    });
    out
}

/// Calls the simulator does not serve: they fail with `client_invalid_operation`.
macro_rules! unsupported {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> *mut Future {
            $(let _ = $arg;)*
            future::ready(Err(errors::CLIENT_INVALID_OPERATION))
        }
    )*};
}

unsupported! {
    fdb_transaction_get_addresses_for_key(tr: *mut Transaction, key: *const u8, len: c_int);
    fdb_transaction_get_estimated_range_size_bytes(tr: *mut Transaction, b: *const u8, bl: c_int, e: *const u8, el: c_int);
    fdb_transaction_get_range_split_points(tr: *mut Transaction, b: *const u8, bl: c_int, e: *const u8, el: c_int, chunk: i64);
    fdb_transaction_get_mapped_range(tr: *mut Transaction, b: *const u8, bl: c_int, bo: c_int, boff: c_int, e: *const u8, el: c_int, eo: c_int, eoff: c_int, m: *const u8, ml: c_int, limit: c_int, target: c_int, mode: c_int, iteration: c_int, snapshot: c_int, reverse: c_int);
}
