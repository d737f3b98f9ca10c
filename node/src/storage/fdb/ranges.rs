//! Reading and writing ranges: every row of a range in one transaction, a value's chunks,
//! a room's keys in pages of transactions, and its usage counted from its chunks.

use super::super::keys;
use super::super::store::{ListOptions, StorageError, Usage};
use super::{from_binding, FdbStore, CHUNK_BYTES, LIST_PAGE_ROWS};
use bytes::Bytes;
use conclave_proto::RoomKey;
use foundationdb::options::StreamingMode;
use foundationdb::{FdbError, RangeOption, RetryableTransaction};

/// Every row `opt` selects, in one transaction: batch after batch while FoundationDB says
/// there is `more` (a batch ends at a byte target as well as at the row limit).
pub(super) async fn read_all(
    trx: &RetryableTransaction,
    mut opt: RangeOption<'static>,
    snapshot: bool,
) -> Result<Vec<(Vec<u8>, Bytes)>, FdbError> {
    let mut rows = Vec::new();
    let mut iteration = 1;
    loop {
        let batch = trx.get_range(&opt, iteration, snapshot).await?;
        rows.extend(
            batch
                .iter()
                .map(|kv| (kv.key().to_vec(), Bytes::copy_from_slice(kv.value()))),
        );
        match opt.next_range(&batch) {
            Some(next) => {
                opt = next;
                iteration += 1;
            }
            None => return Ok(rows),
        }
    }
}

impl FdbStore {
    /// The room's usage record, read in `trx`; for a room that holds keys but has none
    /// (written before usage was recorded), what a scan of its keys counts.
    pub(super) async fn read_usage(
        &self,
        trx: &RetryableTransaction,
        room: &RoomKey,
        usage_key: &[u8],
    ) -> Result<Usage, FdbError> {
        if let Some(usage) = trx
            .get(usage_key, false)
            .await?
            .and_then(|v| Usage::decode(&v))
        {
            return Ok(usage);
        }
        let prefix = self.kv_prefix(room);
        let end = keys::strinc(&prefix);
        let rows = read_all(trx, RangeOption::from((prefix.clone(), end)), false).await?;
        let mut usage = Usage::default();
        let mut current: Option<(String, usize)> = None;
        for (k, v) in rows {
            let Some((key, _)) = keys::parse_chunk_key(&prefix, &k) else {
                continue;
            };
            match &mut current {
                Some((cur, len)) if *cur == key => *len += v.len(),
                _ => {
                    if let Some((done, len)) = current.replace((key, v.len())) {
                        usage.replace(&done, None, Some(len));
                    }
                }
            }
        }
        if let Some((done, len)) = current {
            usage.replace(&done, None, Some(len));
        }
        Ok(usage)
    }
}

/// Writes `value` as chunks under `kv_key` (an empty value is one empty chunk).
pub(super) fn write_value(trx: &RetryableTransaction, kv_key: &[u8], value: &[u8]) {
    let (lo, hi) = keys::chunk_range(kv_key);
    trx.clear_range(&lo, &hi);
    if value.is_empty() {
        trx.set(&keys::chunk_key(kv_key, 0), &[]);
    }
    for (n, chunk) in value.chunks(CHUNK_BYTES).enumerate() {
        trx.set(&keys::chunk_key(kv_key, n), chunk);
    }
}

impl FdbStore {
    /// The entries under `prefix` (a room's keys or its ledger) that `opts` selects.
    pub(super) async fn list_under(
        &self,
        prefix: &[u8],
        opts: &ListOptions,
    ) -> Result<Vec<(String, Bytes)>, StorageError> {
        let limit = opts.limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (mut lo, mut hi) = keys::list_range(prefix, opts);
        let mut out: Vec<(String, Bytes)> = Vec::new();
        // The key whose chunks are being gathered (they may span pages).
        let mut current: Option<(String, Vec<(i64, Bytes)>)> = None;
        let finish = |entry: Option<(String, Vec<(i64, Bytes)>)>, out: &mut Vec<_>| {
            if let Some((key, chunks)) = entry {
                if opts.contains(&key) && out.len() < limit {
                    out.push((key, keys::join_chunks(chunks)));
                }
            }
        };
        while lo < hi && out.len() < limit {
            let (page_lo, page_hi) = (lo.clone(), hi.clone());
            let reverse = opts.reverse;
            // One transaction per page; a page is one batch, which ends at the row limit or
            // at FoundationDB's byte target: only `more` says whether the range goes on.
            let (rows, more): (Vec<(Vec<u8>, Bytes)>, bool) = self
                .db
                .run(|trx, _| {
                    let (page_lo, page_hi) = (page_lo.clone(), page_hi.clone());
                    async move {
                        let opt = RangeOption {
                            limit: Some(LIST_PAGE_ROWS),
                            reverse,
                            mode: StreamingMode::WantAll,
                            ..RangeOption::from((page_lo, page_hi))
                        };
                        let batch = trx.get_range(&opt, 1, true).await?;
                        let rows = batch
                            .iter()
                            .map(|kv| (kv.key().to_vec(), Bytes::copy_from_slice(kv.value())))
                            .collect();
                        Ok((rows, batch.more()))
                    }
                })
                .await
                .map_err(from_binding)?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            // Next page: past the last row read, in the direction of the scan.
            if reverse {
                hi = last.clone();
            } else {
                lo = last.clone();
                lo.push(0);
            }
            for (k, v) in rows {
                let (key, n) = keys::parse_chunk_key(prefix, &k).ok_or_else(|| {
                    StorageError::Backend("undecodable key in room subspace".into())
                })?;
                match &mut current {
                    Some((cur, chunks)) if *cur == key => chunks.push((n, v)),
                    _ => {
                        finish(current.take(), &mut out);
                        current = Some((key, vec![(n, v)]));
                    }
                }
            }
            if !more {
                break;
            }
        }
        finish(current.take(), &mut out);
        Ok(out)
    }
}
