//! The simulator's database: an in-memory multi-version key-value store with
//! FoundationDB's transaction rules — snapshot reads at a read version, optimistic conflict
//! detection on commit (1020), a 5 s window for read versions (1007), the 10 MB
//! transaction limit (2101), and reads that see the transaction's own writes.
//!
//! Versions advance about 1,000,000 per second of wall-clock time, as FoundationDB's do, so
//! the 5 s window is a version distance.

use crate::proto::{KeyRange, KeySelector, Mutation};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::watch;

/// FoundationDB error codes the store answers with.
pub mod code {
    pub const TRANSACTION_TOO_OLD: i32 = 1007;
    pub const NOT_COMMITTED: i32 = 1020;
    pub const ACCESSED_UNREADABLE: i32 = 1036;
    pub const CLIENT_INVALID_OPERATION: i32 = 2000;
    pub const TRANSACTION_TOO_LARGE: i32 = 2101;
}

/// Mutation codes of the wire protocol that are not atomic operations.
pub mod op {
    pub const SET: i32 = -1;
    pub const CLEAR: i32 = -2;
    pub const CLEAR_RANGE: i32 = -3;
    pub const ADD: i32 = 2;
    pub const BIT_AND: i32 = 6;
    pub const BIT_OR: i32 = 7;
    pub const BIT_XOR: i32 = 8;
    pub const APPEND_IF_FITS: i32 = 9;
    pub const MAX: i32 = 12;
    pub const MIN: i32 = 13;
    pub const SET_VERSIONSTAMPED_KEY: i32 = 14;
    pub const SET_VERSIONSTAMPED_VALUE: i32 = 15;
    pub const BYTE_MIN: i32 = 16;
    pub const BYTE_MAX: i32 = 17;
    pub const COMPARE_AND_CLEAR: i32 = 20;

    /// Whether `op` is one the store applies.
    pub fn known(op: i32) -> bool {
        matches!(
            op,
            SET | CLEAR | CLEAR_RANGE | ADD | BIT_AND | BIT_OR | BIT_XOR
        ) || matches!(op, APPEND_IF_FITS | MAX | MIN | BYTE_MIN | BYTE_MAX)
            || matches!(op, SET_VERSIONSTAMPED_KEY | SET_VERSIONSTAMPED_VALUE)
            || op == COMPARE_AND_CLEAR
    }
}

/// How long a read version stays usable, in versions (5 s).
pub const MVCC_WINDOW: i64 = 5_000_000;
/// FoundationDB's transaction size limit, as `get_approximate_size` counts it.
pub const TRANSACTION_SIZE_LIMIT: usize = 10_000_000;
/// FoundationDB's largest value.
pub const VALUE_SIZE_LIMIT: usize = 100_000;
/// The end of the normal keyspace (system keys, from `\xff`, are not simulated).
pub const KEYSPACE_END: &[u8] = b"\xff";

type History = Vec<(i64, Option<Bytes>)>;

pub struct Store {
    state: Mutex<State>,
    /// The newest committed version, for watches.
    commits: watch::Sender<i64>,
    /// Transactions committed with writes.
    committed: AtomicU64,
}

struct State {
    start: Instant,
    /// The newest version handed out (read or committed): later commits get higher ones.
    version: i64,
    data: BTreeMap<Vec<u8>, History>,
    /// Write conflict ranges of the commits inside the window, oldest first.
    recent: VecDeque<(i64, Vec<KeyRange>)>,
    commits_since_gc: u32,
}

pub struct Committed {
    pub version: i64,
    pub versionstamp: [u8; 10],
}

impl Default for Store {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                start: Instant::now(),
                version: 1,
                data: BTreeMap::new(),
                recent: VecDeque::new(),
                commits_since_gc: 0,
            }),
            commits: watch::Sender::new(0),
            committed: AtomicU64::new(0),
        }
    }
}

impl State {
    fn now(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX) + 1
    }

    fn check_age(&self, version: i64) -> Result<(), i32> {
        if self.now() - version > MVCC_WINDOW {
            return Err(code::TRANSACTION_TOO_OLD);
        }
        Ok(())
    }

    fn value_at(&self, key: &[u8], version: i64) -> Option<&Bytes> {
        let history = self.data.get(key)?;
        history
            .iter()
            .rev()
            .find(|(v, _)| *v <= version)
            .and_then(|(_, value)| value.as_ref())
    }

    /// Records `value` for `key` at `version` (the commit being applied).
    fn put(&mut self, key: &[u8], version: i64, value: Option<Bytes>) {
        let history = self.data.entry(key.to_vec()).or_default();
        match history.last_mut() {
            Some((v, slot)) if *v == version => *slot = value,
            _ => history.push((version, value)),
        }
    }

    /// Drops versions no read can ask for any more.
    fn collect_garbage(&mut self) {
        let horizon = self.now() - MVCC_WINDOW;
        self.data.retain(|_, history| {
            let keep_from = history
                .iter()
                .rposition(|(v, _)| *v <= horizon)
                .unwrap_or(0);
            history.drain(..keep_from);
            !(history.len() == 1 && history[0].0 <= horizon && history[0].1.is_none())
        });
    }
}

/// A transaction's own writes, as its reads see them.
enum Pending {
    Value(Option<Bytes>),
    /// Atomic operations on a value the transaction has not read.
    Atomic(Vec<(i32, Bytes)>),
    /// A versionstamped value: unknown until commit.
    Unreadable,
}

#[derive(Default)]
struct Overlay {
    points: BTreeMap<Vec<u8>, Pending>,
    clears: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Overlay {
    fn new(writes: &[Mutation]) -> Self {
        let mut overlay = Self::default();
        for m in writes {
            let key = m.key.to_vec();
            match m.op {
                op::SET => {
                    overlay
                        .points
                        .insert(key, Pending::Value(Some(m.param.clone())));
                }
                op::CLEAR => {
                    overlay.points.insert(key, Pending::Value(None));
                }
                op::CLEAR_RANGE => {
                    let end = m.param.to_vec();
                    let doomed: Vec<Vec<u8>> = overlay
                        .points
                        .range(key.clone()..end.clone())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        overlay.points.remove(&k);
                    }
                    overlay.clears.push((key, end));
                }
                op::SET_VERSIONSTAMPED_KEY => {}
                op::SET_VERSIONSTAMPED_VALUE => {
                    overlay.points.insert(key, Pending::Unreadable);
                }
                atomic => {
                    let cleared = overlay.cleared(&key);
                    let next = match overlay.points.remove(&key) {
                        Some(Pending::Value(v)) => {
                            Pending::Value(apply_atomic(atomic, v.as_deref(), &m.param))
                        }
                        Some(Pending::Atomic(mut ops)) => {
                            ops.push((atomic, m.param.clone()));
                            Pending::Atomic(ops)
                        }
                        Some(Pending::Unreadable) => Pending::Unreadable,
                        None if cleared => Pending::Value(apply_atomic(atomic, None, &m.param)),
                        None => Pending::Atomic(vec![(atomic, m.param.clone())]),
                    };
                    overlay.points.insert(key, next);
                }
            }
        }
        overlay
    }

    fn cleared(&self, key: &[u8]) -> bool {
        self.clears
            .iter()
            .any(|(lo, hi)| lo.as_slice() <= key && key < hi.as_slice())
    }
}

/// Keys in scan order.
type Keys<'a> = Box<dyn Iterator<Item = &'a Vec<u8>> + 'a>;

/// The database at one version with one transaction's writes on top.
struct View<'a> {
    state: &'a State,
    version: i64,
    overlay: Overlay,
}

impl View<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, i32> {
        match self.overlay.points.get(key) {
            Some(Pending::Value(v)) => Ok(v.clone()),
            Some(Pending::Unreadable) => Err(code::ACCESSED_UNREADABLE),
            Some(Pending::Atomic(ops)) => {
                let base = self.state.value_at(key, self.version).cloned();
                Ok(ops
                    .iter()
                    .fold(base, |v, (op, p)| apply_atomic(*op, v.as_deref(), p)))
            }
            None if self.overlay.cleared(key) => Ok(None),
            None => Ok(self.state.value_at(key, self.version).cloned()),
        }
    }

    /// Calls `f` with each present row in `[lo, hi)`, in order (descending if `reverse`),
    /// until it returns false.
    fn scan(
        &self,
        lo: &[u8],
        hi: &[u8],
        reverse: bool,
        mut f: impl FnMut(&[u8], Bytes) -> bool,
    ) -> Result<(), i32> {
        if lo >= hi {
            return Ok(());
        }
        let range = (
            std::ops::Bound::Included(lo.to_vec()),
            std::ops::Bound::Excluded(hi.to_vec()),
        );
        let base = self.state.data.range(range.clone()).map(|(k, _)| k);
        let mine = self.overlay.points.range(range).map(|(k, _)| k);
        let (mut base, mut mine): (Keys, Keys) = if reverse {
            (Box::new(base.rev()), Box::new(mine.rev()))
        } else {
            (Box::new(base), Box::new(mine))
        };
        let (mut a, mut b) = (base.next(), mine.next());
        loop {
            // The next key in scan order from either side (once if on both).
            let key = match (a, b) {
                (None, None) => return Ok(()),
                (Some(x), None) => {
                    a = base.next();
                    x
                }
                (None, Some(y)) => {
                    b = mine.next();
                    y
                }
                (Some(x), Some(y)) => {
                    let first = if reverse { x.max(y) } else { x.min(y) };
                    if x == first {
                        a = base.next();
                    }
                    if y == first {
                        b = mine.next();
                    }
                    first
                }
            };
            if let Some(value) = self.get(key)? {
                if !f(key, value) {
                    return Ok(());
                }
            }
        }
    }

    /// The key `selector` names (clamped to the normal keyspace). Unless `exact`, the
    /// common selectors (first key ≥ or > a key) resolve to an equivalent range bound
    /// without a scan.
    fn resolve(&self, selector: &KeySelector, exact: bool) -> Result<Vec<u8>, i32> {
        let key = selector.key.as_ref();
        let pivot = if selector.or_equal {
            key_after(key)
        } else {
            key.to_vec()
        };
        if selector.offset == 1 && !exact {
            return Ok(clamp(pivot));
        }
        if selector.offset >= 1 {
            let found = self.nth(&pivot, KEYSPACE_END, false, selector.offset - 1)?;
            Ok(found.unwrap_or_else(|| KEYSPACE_END.to_vec()))
        } else {
            let found = self.nth(b"", &pivot, true, -selector.offset)?;
            Ok(found.unwrap_or_default())
        }
    }

    /// The key `n` places into `[lo, hi)` in scan order (0: the first), if there is one.
    fn nth(&self, lo: &[u8], hi: &[u8], reverse: bool, n: i32) -> Result<Option<Vec<u8>>, i32> {
        let (mut skip, mut found) = (n, None);
        self.scan(lo, hi, reverse, |k, _| {
            if skip == 0 {
                found = Some(k.to_vec());
                return false;
            }
            skip -= 1;
            true
        })?;
        Ok(found)
    }
}

fn clamp(key: Vec<u8>) -> Vec<u8> {
    if key.as_slice() > KEYSPACE_END {
        KEYSPACE_END.to_vec()
    } else {
        key
    }
}

/// The first key after `key`.
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// One batch of a range read.
pub struct RangeBatch {
    pub rows: Vec<(Vec<u8>, Bytes)>,
    pub more: bool,
    /// The keys the read depended on.
    pub read: (Vec<u8>, Vec<u8>),
}

pub struct RangeQuery<'a> {
    pub version: i64,
    pub begin: &'a KeySelector,
    pub end: &'a KeySelector,
    /// 0: no row limit.
    pub limit: usize,
    /// 0: no byte target.
    pub target_bytes: usize,
    pub reverse: bool,
    pub writes: &'a [Mutation],
}

impl Store {
    /// How many transactions with writes have committed.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    pub fn read_version(&self) -> i64 {
        let mut st = self.lock();
        st.version = st.version.max(st.now());
        st.version
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn view<'a>(&self, st: &'a State, version: i64, writes: &[Mutation]) -> Result<View<'a>, i32> {
        st.check_age(version)?;
        Ok(View {
            state: st,
            version,
            overlay: Overlay::new(writes),
        })
    }

    pub fn get(&self, version: i64, key: &[u8], writes: &[Mutation]) -> Result<Option<Bytes>, i32> {
        let st = self.lock();
        self.view(&st, version, writes)?.get(key)
    }

    pub fn get_key(
        &self,
        version: i64,
        selector: &KeySelector,
        writes: &[Mutation],
    ) -> Result<Vec<u8>, i32> {
        let st = self.lock();
        self.view(&st, version, writes)?.resolve(selector, true)
    }

    pub fn get_range(&self, q: &RangeQuery) -> Result<RangeBatch, i32> {
        let st = self.lock();
        let view = self.view(&st, q.version, q.writes)?;
        let begin = view.resolve(q.begin, false)?;
        let end = view.resolve(q.end, false)?;
        let mut rows: Vec<(Vec<u8>, Bytes)> = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        view.scan(&begin, &end, q.reverse, |k, v| {
            let full = (q.limit > 0 && rows.len() >= q.limit)
                || (q.target_bytes > 0 && bytes >= q.target_bytes);
            if full {
                more = true;
                return false;
            }
            bytes += k.len() + v.len();
            rows.push((k.to_vec(), v));
            true
        })?;
        let read = match (more, rows.last()) {
            (true, Some((last, _))) if q.reverse => (last.clone(), end),
            (true, Some((last, _))) => (begin, key_after(last)),
            _ => (begin, end),
        };
        Ok(RangeBatch { rows, more, read })
    }

    /// Commits a transaction that read at `read_version` (0: it read nothing).
    pub fn commit(
        &self,
        read_version: i64,
        read_conflicts: &[KeyRange],
        write_conflicts: Vec<KeyRange>,
        mutations: &[Mutation],
    ) -> Result<Committed, i32> {
        let size: usize = mutations
            .iter()
            .map(|m| m.key.len() + m.param.len())
            .chain(write_conflicts.iter().map(|r| r.begin.len() + r.end.len()))
            .chain(read_conflicts.iter().map(|r| r.begin.len() + r.end.len()))
            .sum();
        if size > TRANSACTION_SIZE_LIMIT {
            return Err(code::TRANSACTION_TOO_LARGE);
        }
        if mutations.iter().any(|m| !op::known(m.op)) {
            return Err(code::CLIENT_INVALID_OPERATION);
        }
        let mut st = self.lock();
        if read_version > 0 {
            st.check_age(read_version)?;
            let conflict =
                st.recent
                    .iter()
                    .filter(|(v, _)| *v > read_version)
                    .any(|(_, writes)| {
                        writes
                            .iter()
                            .any(|w| read_conflicts.iter().any(|r| overlaps(r, w)))
                    });
            if conflict {
                return Err(code::NOT_COMMITTED);
            }
        }
        let version = (st.version + 1).max(st.now());
        st.version = version;
        let mut versionstamp = [0u8; 10];
        versionstamp[..8].copy_from_slice(&version.to_be_bytes());
        for m in mutations {
            apply(&mut st, version, &versionstamp, m);
        }
        let horizon = st.now() - MVCC_WINDOW;
        while st.recent.front().is_some_and(|(v, _)| *v < horizon) {
            st.recent.pop_front();
        }
        st.recent.push_back((version, write_conflicts));
        st.commits_since_gc += 1;
        if st.commits_since_gc >= 1024 {
            st.commits_since_gc = 0;
            st.collect_garbage();
        }
        drop(st);
        self.committed.fetch_add(1, Ordering::Relaxed);
        self.commits.send_replace(version);
        Ok(Committed {
            version,
            versionstamp,
        })
    }

    /// Waits until `key`'s value differs from its value at `version`.
    pub async fn watch(&self, key: &[u8], version: i64) {
        let mut commits = self.commits.subscribe();
        let expected = self.lock().value_at(key, version).cloned();
        loop {
            let now = {
                let st = self.lock();
                st.value_at(key, i64::MAX).cloned()
            };
            if now != expected {
                return;
            }
            if commits.changed().await.is_err() {
                return;
            }
        }
    }
}

fn overlaps(a: &KeyRange, b: &KeyRange) -> bool {
    a.begin < b.end && b.begin < a.end
}

fn apply(st: &mut State, version: i64, stamp: &[u8; 10], m: &Mutation) {
    match m.op {
        op::SET => st.put(&m.key, version, Some(m.param.clone())),
        op::CLEAR => st.put(&m.key, version, None),
        op::CLEAR_RANGE => {
            let doomed: Vec<Vec<u8>> = st
                .data
                .range(m.key.to_vec()..m.param.to_vec())
                .filter(|(_, h)| h.last().is_some_and(|(_, v)| v.is_some()))
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                st.put(&k, version, None);
            }
        }
        op::SET_VERSIONSTAMPED_KEY => {
            if let Some(key) = stamped(&m.key, stamp) {
                st.put(&key, version, Some(m.param.clone()));
            }
        }
        op::SET_VERSIONSTAMPED_VALUE => {
            if let Some(value) = stamped(&m.param, stamp) {
                st.put(&m.key, version, Some(Bytes::from(value)));
            }
        }
        atomic => {
            let current = st.value_at(&m.key, version).cloned();
            let next = apply_atomic(atomic, current.as_deref(), &m.param);
            st.put(&m.key, version, next);
        }
    }
}

/// `bytes` without its 4-byte little-endian offset suffix, with the versionstamp written
/// at that offset (`None` if the offset does not fit).
fn stamped(bytes: &[u8], stamp: &[u8; 10]) -> Option<Vec<u8>> {
    let split = bytes.len().checked_sub(4)?;
    let offset = u32::from_le_bytes(bytes[split..].try_into().ok()?) as usize;
    let mut out = bytes[..split].to_vec();
    out.get_mut(offset..offset + 10)?.copy_from_slice(stamp);
    Some(out)
}

/// `existing` resized to `len` bytes (zero-extended or truncated), as the integer and
/// bitwise operations see it.
fn resized(existing: &[u8], len: usize) -> Vec<u8> {
    let mut v = existing[..existing.len().min(len)].to_vec();
    v.resize(len, 0);
    v
}

fn little_endian_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.iter().rev().cmp(b.iter().rev())
}

/// An atomic operation on a value (`None`: absent), as FoundationDB defines it.
pub fn apply_atomic(op: i32, existing: Option<&[u8]>, param: &Bytes) -> Option<Bytes> {
    // On an absent value every operation stores its operand, except compare-and-clear.
    let Some(old) = existing else {
        return (op != op::COMPARE_AND_CLEAR).then(|| param.clone());
    };
    let n = param.len();
    let out = match op {
        op::ADD => {
            let a = resized(old, n);
            let mut carry = 0u16;
            let mut sum = Vec::with_capacity(n);
            for (x, y) in a.iter().zip(param.iter()) {
                let s = u16::from(*x) + u16::from(*y) + carry;
                sum.push((s & 0xff) as u8);
                carry = s >> 8;
            }
            sum
        }
        op::BIT_AND => resized(old, n)
            .iter()
            .zip(param.iter())
            .map(|(x, y)| x & y)
            .collect(),
        op::BIT_OR => resized(old, n)
            .iter()
            .zip(param.iter())
            .map(|(x, y)| x | y)
            .collect(),
        op::BIT_XOR => resized(old, n)
            .iter()
            .zip(param.iter())
            .map(|(x, y)| x ^ y)
            .collect(),
        op::APPEND_IF_FITS => {
            if old.len() + n > VALUE_SIZE_LIMIT {
                old.to_vec()
            } else {
                [old, param.as_ref()].concat()
            }
        }
        op::MAX | op::MIN => {
            let a = resized(old, n);
            let param_wins = match little_endian_cmp(param, &a) {
                std::cmp::Ordering::Greater => op == op::MAX,
                std::cmp::Ordering::Less => op == op::MIN,
                std::cmp::Ordering::Equal => false,
            };
            if param_wins {
                param.to_vec()
            } else {
                a
            }
        }
        op::BYTE_MIN => old.min(param.as_ref()).to_vec(),
        op::BYTE_MAX => old.max(param.as_ref()).to_vec(),
        op::COMPARE_AND_CLEAR => {
            if old == param.as_ref() {
                return None;
            }
            old.to_vec()
        }
        _ => old.to_vec(),
    };
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(k: &[u8], v: &[u8]) -> Mutation {
        Mutation {
            op: op::SET,
            key: Bytes::copy_from_slice(k),
            param: Bytes::copy_from_slice(v),
        }
    }

    fn ge(k: &[u8]) -> KeySelector {
        KeySelector {
            key: Bytes::copy_from_slice(k),
            or_equal: false,
            offset: 1,
        }
    }

    fn point(k: &[u8]) -> KeyRange {
        KeyRange {
            begin: Bytes::copy_from_slice(k),
            end: Bytes::from(key_after(k)),
        }
    }

    #[test]
    fn a_write_after_the_read_version_conflicts_and_one_before_does_not() {
        let store = Store::default();
        let rv = store.read_version();
        store
            .commit(0, &[], vec![point(b"a")], &[set(b"a", b"1")])
            .unwrap();
        let err = store
            .commit(rv, &[point(b"a")], vec![point(b"b")], &[set(b"b", b"1")])
            .err();
        assert_eq!(err, Some(code::NOT_COMMITTED));
        let rv = store.read_version();
        store
            .commit(rv, &[point(b"a")], vec![point(b"b")], &[set(b"b", b"1")])
            .unwrap();
        assert_eq!(
            store.get(rv, b"a", &[]).unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn reads_see_the_transactions_own_writes_and_clears() {
        let store = Store::default();
        let writes: Vec<Mutation> = (0..5u8).map(|i| set(&[b'k', i], b"v")).collect();
        store.commit(0, &[], vec![], &writes).unwrap();
        let rv = store.read_version();
        let mine = vec![
            Mutation {
                op: op::CLEAR_RANGE,
                key: Bytes::from_static(&[b'k', 1]),
                param: Bytes::from_static(&[b'k', 3]),
            },
            set(&[b'k', 2], b"new"),
            Mutation {
                op: op::ADD,
                key: Bytes::from_static(b"n"),
                param: Bytes::from_static(&[1, 0]),
            },
        ];
        let batch = store
            .get_range(&RangeQuery {
                version: rv,
                begin: &ge(b"k"),
                end: &ge(b"l"),
                limit: 0,
                target_bytes: 0,
                reverse: false,
                writes: &mine,
            })
            .unwrap();
        let keys: Vec<u8> = batch.rows.iter().map(|(k, _)| k[1]).collect();
        assert_eq!(keys, vec![0, 2, 3, 4]);
        assert_eq!(batch.rows[1].1.as_ref(), b"new");
        assert_eq!(
            store.get(rv, b"n", &mine).unwrap().as_deref(),
            Some(&[1u8, 0][..])
        );
    }

    #[test]
    fn a_batch_ends_at_the_byte_target_and_says_more() {
        let store = Store::default();
        let writes: Vec<Mutation> = (0..10u8).map(|i| set(&[i], &[0; 100])).collect();
        store.commit(0, &[], vec![], &writes).unwrap();
        let q = RangeQuery {
            version: store.read_version(),
            begin: &ge(b""),
            end: &ge(b"\xff"),
            limit: 0,
            target_bytes: 250,
            reverse: true,
            writes: &[],
        };
        let batch = store.get_range(&q).unwrap();
        assert_eq!(batch.rows.len(), 3);
        assert!(batch.more);
        assert_eq!(batch.read, (vec![7], vec![0xff]));
    }

    #[test]
    fn a_read_version_older_than_five_seconds_is_too_old() {
        let store = Store::default();
        let rv = store.read_version();
        assert!(store.get(rv, b"k", &[]).is_ok());
        // Six seconds pass.
        store.lock().start -= std::time::Duration::from_secs(6);
        assert_eq!(
            store.get(rv, b"k", &[]).err(),
            Some(code::TRANSACTION_TOO_OLD)
        );
        let err = store.commit(rv, &[point(b"k")], vec![point(b"k")], &[set(b"k", b"v")]);
        assert_eq!(err.err(), Some(code::TRANSACTION_TOO_OLD));
        assert!(store.get(store.read_version(), b"k", &[]).is_ok());
    }

    #[test]
    fn atomic_add_is_little_endian_with_the_operand_length() {
        let p = Bytes::from_static(&[1, 0, 0, 0]);
        assert_eq!(
            apply_atomic(op::ADD, Some(&[255, 0]), &p).unwrap().as_ref(),
            &[0, 1, 0, 0]
        );
        assert_eq!(
            apply_atomic(op::ADD, None, &p).unwrap().as_ref(),
            &[1, 0, 0, 0]
        );
    }

    #[test]
    fn selectors_step_over_keys() {
        let store = Store::default();
        let writes: Vec<Mutation> = [b"a", b"c", b"e"].iter().map(|k| set(*k, b"")).collect();
        store.commit(0, &[], vec![], &writes).unwrap();
        let rv = store.read_version();
        let sel = |k: &[u8], or_equal, offset| KeySelector {
            key: Bytes::copy_from_slice(k),
            or_equal,
            offset,
        };
        // last_less_than("c"), last_less_or_equal("c"), first_greater_than("c"), +2.
        assert_eq!(store.get_key(rv, &sel(b"c", false, 0), &[]).unwrap(), b"a");
        assert_eq!(store.get_key(rv, &sel(b"c", true, 0), &[]).unwrap(), b"c");
        assert_eq!(store.get_key(rv, &sel(b"c", true, 1), &[]).unwrap(), b"e");
        assert_eq!(store.get_key(rv, &sel(b"a", false, 3), &[]).unwrap(), b"e");
        assert_eq!(
            store.get_key(rv, &sel(b"e", true, 1), &[]).unwrap(),
            b"\xff"
        );
    }
}
