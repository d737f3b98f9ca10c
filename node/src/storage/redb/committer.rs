//! The committer thread: it takes the queued writes (up to [`MAX_GROUP`]), applies them in
//! one write transaction and fsyncs once, reopening the file first after a failed write.

use super::super::keys;
use super::super::store::{check_fence, home_region, Owner, RoomCommit, StorageError, Usage};
use super::{Handle, Op, OpResult, Outcome, Pending, Work, DATA, MAX_GROUP, PROBE, PROBE_BYTES};
use bytes::Bytes;
use conclave_proto::RoomKey;
use redb::{Database, ReadableTable};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

pub(super) fn run_committer(handle: &Handle, rx: std_mpsc::Receiver<Pending>) {
    // Whether the last write failed: the file is reopened before the next one.
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let results = if failed {
            handle.reopen().map_err(|e| e.to_string())
        } else {
            Ok(())
        }
        .and_then(|()| handle.current().map_err(|e| e.to_string()))
        .and_then(|db| apply_group(&db, &group));
        failed = results.is_err();
        metrics::histogram!("conclave_storage_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("conclave_storage_commit_group_size").record(group.len() as f64);
        match results {
            Ok(results) => {
                for (p, r) in group.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
            }
            Err(e) => {
                for p in group {
                    let _ = p.reply.send(Err(StorageError::Backend(e.clone())));
                }
            }
        }
    }
}

/// Applies every op in one write transaction. An op refused on its own (fenced, held)
/// writes nothing and does not fail the others; an I/O error fails the whole group.
fn apply_group(db: &Database, group: &[Pending]) -> Result<Vec<OpResult>, String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let mut results = Vec::with_capacity(group.len());
    {
        let mut table = txn.open_table(DATA).map_err(|e| e.to_string())?;
        for p in group {
            let r = match &p.work {
                Work::Room(room, op) => {
                    apply_op(&mut table, room, op).map_err(|e| format!("room {room}: {e}"))?
                }
                Work::Probe => {
                    let mut probe = txn.open_table(PROBE).map_err(|e| e.to_string())?;
                    probe
                        .insert("probe", [0u8; PROBE_BYTES].as_slice())
                        .map_err(|e| format!("probe: {e}"))?;
                    Ok(Outcome::Owner(None))
                }
            };
            results.push(r);
        }
    }
    txn.commit().map_err(|e| e.to_string())?;
    Ok(results)
}

fn read_owner(
    table: &redb::Table<&[u8], &[u8]>,
    room: &RoomKey,
) -> Result<Option<Owner>, redb::StorageError> {
    Ok(table
        .get(keys::owner_key(room).as_slice())?
        .and_then(|v| keys::decode_owner(v.value())))
}

fn apply_op(
    table: &mut redb::Table<&[u8], &[u8]>,
    room: &RoomKey,
    op: &Op,
) -> Result<OpResult, redb::StorageError> {
    match op {
        Op::Commit(c) => {
            if let Some(fence) = &c.fence {
                if let Err(e) = check_fence(read_owner(table, room)?.as_ref(), fence) {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(Outcome::Usage(apply_one(table, room, c)?)))
        }
        Op::Home(proposed) => {
            let current = read_owner(table, room)?;
            let (_, write) = home_region(current.as_ref(), proposed);
            if let Some(placeholder) = &write {
                table.insert(
                    keys::owner_key(room).as_slice(),
                    keys::encode_owner(placeholder).as_slice(),
                )?;
            }
            Ok(Ok(Outcome::Owner(write.or(current))))
        }
        Op::Claim(claim) => match claim.decide(read_owner(table, room)?.as_ref()) {
            Ok(owner) => {
                table.insert(
                    keys::owner_key(room).as_slice(),
                    keys::encode_owner(&owner).as_slice(),
                )?;
                Ok(Ok(Outcome::Owner(Some(owner))))
            }
            Err(e) => Ok(Err(e)),
        },
        Op::Release(owner) => {
            if read_owner(table, room)?.as_ref() == Some(owner) {
                let key = keys::owner_key(room);
                let prefix = keys::room_prefix(room);
                let end = keys::strinc(&prefix);
                let holds_more = table
                    .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
                    .take(2)
                    .count()
                    > 1;
                if holds_more {
                    let released = Owner {
                        released: true,
                        ..owner.clone()
                    };
                    table.insert(key.as_slice(), keys::encode_owner(&released).as_slice())?;
                } else {
                    table.remove(key.as_slice())?;
                }
            }
            Ok(Ok(Outcome::Owner(None)))
        }
    }
}

/// Applies a commit; what the room's keys take after it, if it wrote any.
fn apply_one(
    table: &mut redb::Table<&[u8], &[u8]>,
    room: &RoomKey,
    c: &RoomCommit,
) -> Result<Option<Usage>, redb::StorageError> {
    let usage = if c.delete_all || !c.writes.is_empty() {
        Some(apply_writes(table, room, c)?)
    } else {
        None
    };
    let ledger = keys::ledger_prefix(room);
    for (k, v) in &c.ledger {
        let key = keys::kv_key(&ledger, k);
        match v {
            Some(v) => {
                table.insert(key.as_slice(), v.as_ref())?;
            }
            None => {
                table.remove(key.as_slice())?;
            }
        }
    }
    if let Some(alarm) = c.alarm {
        let akey = keys::alarm_key(room);
        let old = table
            .remove(akey.as_slice())?
            .map(|v| keys::decode_alarm(v.value()));
        if let Some(old) = old.flatten() {
            table.remove(keys::alarm_index_key(old, room).as_slice())?;
        }
        if let Some(at) = alarm {
            table.insert(akey.as_slice(), keys::encode_alarm(at).as_slice())?;
            table.insert(keys::alarm_index_key(at, room).as_slice(), [].as_slice())?;
        }
    }
    Ok(usage)
}

/// Applies `delete_all` and the party's writes, and the room's usage record with them.
fn apply_writes(
    table: &mut redb::Table<&[u8], &[u8]>,
    room: &RoomKey,
    c: &RoomCommit,
) -> Result<Usage, redb::StorageError> {
    let prefix = keys::kv_prefix(room);
    let usage_key = keys::usage_key(room);
    let mut usage = if c.delete_all {
        let end = keys::strinc(&prefix);
        table.retain_in::<&[u8], _>(prefix.as_slice()..end.as_slice(), |_, _| false)?;
        Usage::default()
    } else {
        stored_usage(table, room, &usage_key)?
    };
    for (k, v) in &c.writes {
        let key = keys::kv_key(&prefix, k);
        let old = match v {
            Some(v) => table.insert(key.as_slice(), v.as_ref())?,
            None => table.remove(key.as_slice())?,
        };
        usage.replace(
            k,
            old.map(|old| old.value().len()),
            v.as_ref().map(Bytes::len),
        );
    }
    if usage.is_empty() {
        table.remove(usage_key.as_slice())?;
    } else {
        table.insert(usage_key.as_slice(), usage.encode().as_slice())?;
    }
    Ok(usage)
}

/// The room's usage record; for a room that holds keys but has none (written before usage
/// was recorded), what a scan of its keys counts.
pub(super) fn stored_usage(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    room: &RoomKey,
    usage_key: &[u8],
) -> Result<Usage, redb::StorageError> {
    if let Some(usage) = table.get(usage_key)?.and_then(|v| Usage::decode(v.value())) {
        return Ok(usage);
    }
    count_keys(table, room)
}

/// What a room's keys take, counted one by one.
fn count_keys(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    room: &RoomKey,
) -> Result<Usage, redb::StorageError> {
    let prefix = keys::kv_prefix(room);
    let end = keys::strinc(&prefix);
    let mut usage = Usage::default();
    for item in table.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
        let (k, v) = item?;
        let key = keys::user_key(&prefix, k.value()).unwrap_or_default();
        usage.replace(&key, None, Some(v.value().len()));
    }
    Ok(usage)
}
