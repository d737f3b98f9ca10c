//! A room commit on PostgreSQL: what it reads first (the room's usage record and the sizes
//! of the keys it writes, in one query sent together with the fence check), then its
//! writes in one statement.

use super::super::keys;
use super::super::store::{RoomCommit, Usage};
use super::statements;
use bytes::Bytes;
use conclave_proto::RoomKey;
use deadpool_postgres::GenericClient;

/// What a commit needs to know before it writes: what the room's keys took before it, and
/// how many bytes each key it writes held (`None`: absent). Read in one query, sent
/// together with the fence check, so that counting costs no round trip of its own.
pub(super) struct Before {
    pub(super) usage: Usage,
    sizes: std::collections::HashMap<Vec<u8>, usize>,
}

/// Reads [`Before`] for a commit that writes the room's keys (`None` for one that does
/// not). `delete_all` deletes the room's keys here, first.
pub(super) async fn read_before(
    txn: &deadpool_postgres::Transaction<'_>,
    room: &RoomKey,
    c: &RoomCommit,
) -> Result<Option<Before>, tokio_postgres::Error> {
    let prefix = keys::kv_prefix(room);
    if c.delete_all {
        let end = keys::strinc(&prefix);
        statements::execute(
            txn,
            "DELETE FROM conclave_kv WHERE k >= $1 AND k < $2",
            &[&prefix, &end],
        )
        .await?;
        return Ok(Some(Before {
            usage: Usage::default(),
            sizes: Default::default(),
        }));
    }
    if c.writes.is_empty() {
        return Ok(None);
    }
    let written: Vec<Vec<u8>> = c
        .writes
        .iter()
        .map(|(k, _)| keys::kv_key(&prefix, k))
        .collect();
    Ok(Some(read_usage(txn, room, &written).await?))
}

/// The statement [`read_usage`] runs.
pub(super) const READ_USAGE: &str = "SELECT k, octet_length(v), CASE WHEN k = $2 THEN v END
    FROM conclave_kv WHERE k = ANY($1) OR k = $2
        OR (k >= $3 AND k < $4 AND NOT EXISTS (SELECT 1 FROM conclave_kv WHERE k = $2))";

/// The room's usage record and the sizes of the `written` keys (encoded), in one query; a
/// room without a record (written before usage was recorded) has its keys counted in the
/// same query.
pub(super) async fn read_usage(
    client: &impl GenericClient,
    room: &RoomKey,
    written: &[Vec<u8>],
) -> Result<Before, tokio_postgres::Error> {
    let prefix = keys::kv_prefix(room);
    let end = keys::strinc(&prefix);
    let usage_key = keys::usage_key(room);
    let rows =
        statements::query(client, READ_USAGE, &[&written, &usage_key, &prefix, &end]).await?;
    let mut record = None;
    let mut counted = Usage::default();
    let mut sizes = std::collections::HashMap::new();
    for row in &rows {
        let k: &[u8] = row.get(0);
        let len = row.get::<_, i32>(1) as usize;
        if k == usage_key.as_slice() {
            record = row.get::<_, Option<&[u8]>>(2).and_then(Usage::decode);
        } else {
            let key = keys::user_key(&prefix, k).unwrap_or_default();
            counted.replace(&key, None, Some(len));
            sizes.insert(k.to_vec(), len);
        }
    }
    Ok(Before {
        // Without a record, every key of the room was read: their count is the usage.
        usage: record.unwrap_or(counted),
        sizes,
    })
}

/// Applies a commit after [`read_before`]; what the room's keys take after it, if it wrote
/// any. The party's and the ledger's writes, and the usage record, are one statement.
pub(super) async fn apply(
    txn: &deadpool_postgres::Transaction<'_>,
    room: &RoomKey,
    c: &RoomCommit,
    before: Option<Before>,
) -> Result<Option<Usage>, tokio_postgres::Error> {
    let prefix = keys::kv_prefix(room);
    let usage_record: [u8; 16];
    let mut put_k: Vec<Vec<u8>> = Vec::new();
    let mut put_v: Vec<&[u8]> = Vec::new();
    let mut del_k: Vec<Vec<u8>> = Vec::new();
    let usage = before.map(|before| {
        let mut usage = before.usage;
        for (k, v) in &c.writes {
            let key = keys::kv_key(&prefix, k);
            usage.replace(
                k,
                before.sizes.get(&key).copied(),
                v.as_ref().map(Bytes::len),
            );
            match v {
                Some(v) => {
                    put_k.push(key);
                    put_v.push(v.as_ref());
                }
                None => del_k.push(key),
            }
        }
        usage
    });
    if let Some(usage) = &usage {
        if usage.is_empty() {
            del_k.push(keys::usage_key(room));
        } else {
            usage_record = usage.encode();
            put_k.push(keys::usage_key(room));
            put_v.push(&usage_record);
        }
    }
    let ledger = keys::ledger_prefix(room);
    for (k, v) in &c.ledger {
        let key = keys::kv_key(&ledger, k);
        match v {
            Some(v) => {
                put_k.push(key);
                put_v.push(v.as_ref());
            }
            None => del_k.push(key),
        }
    }
    if !del_k.is_empty() || !put_k.is_empty() {
        // No key is both deleted and put: the writes are per key, the rest apart.
        statements::execute(
            txn,
            "WITH deleted AS (DELETE FROM conclave_kv WHERE k = ANY($1))
             INSERT INTO conclave_kv (k, v) SELECT * FROM unnest($2::bytea[], $3::bytea[])
             ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            &[&del_k, &put_k, &put_v],
        )
        .await?;
    }
    if let Some(alarm) = c.alarm {
        let akey = keys::alarm_key(room);
        let old = statements::query_opt(
            txn,
            "DELETE FROM conclave_kv WHERE k = $1 RETURNING v",
            &[&akey],
        )
        .await?;
        if let Some(at) = old.and_then(|r| keys::decode_alarm(r.get(0))) {
            statements::execute(
                txn,
                "DELETE FROM conclave_kv WHERE k = $1",
                &[&keys::alarm_index_key(at, room)],
            )
            .await?;
        }
        if let Some(at) = alarm {
            statements::execute(
                txn,
                "INSERT INTO conclave_kv (k, v) VALUES ($1, $2), ($3, ''::bytea)",
                &[
                    &akey,
                    &keys::encode_alarm(at).as_slice(),
                    &keys::alarm_index_key(at, room),
                ],
            )
            .await?;
        }
    }
    Ok(usage)
}
