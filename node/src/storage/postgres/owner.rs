//! The owner record on PostgreSQL: a room's claim (a compare-and-set, with the new owner's
//! first reads sent behind it), its release, and the lock a commit's fence check takes.

use super::super::keys;
use super::super::store::{Claim, Claimed, ListOptions, Owner, StorageError};
use super::{commit, list_sql, list_under, pg, retryable, statements, TxnError, COMMIT_ATTEMPTS};
use conclave_proto::RoomKey;

/// Writes a record where there is none (where there is, nothing: a concurrent first claim
/// or home-region lookup got there first).
pub(super) const INSERT_IF_ABSENT: &str =
    "INSERT INTO conclave_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING";
/// A later claim: only over the record it read.
const CLAIM_UPDATE: &str = "UPDATE conclave_kv SET v = $2 WHERE k = $1 AND v = $3";

/// The owner record, locked as `lock` says (`FOR SHARE` / `FOR UPDATE`).
pub(super) async fn read_owner(
    txn: &deadpool_postgres::Transaction<'_>,
    room: &RoomKey,
    lock: &str,
) -> Result<Option<Owner>, tokio_postgres::Error> {
    let row = statements::query_opt(
        txn,
        &format!("SELECT v FROM conclave_kv WHERE k = $1 {lock}"),
        &[&keys::owner_key(room)],
    )
    .await?;
    Ok(row.and_then(|r| keys::decode_owner(r.get(0))))
}

/// A first claim: inserts the owner record where there is none, and otherwise returns the
/// stored one (`inserted`, `v`). No row at all: a record committed while the statement
/// ran, which its snapshot does not show (read it again).
pub(super) const CLAIM_NEW: &str = "WITH inserted AS (
        INSERT INTO conclave_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING RETURNING k
    )
    SELECT true, NULL::bytea FROM inserted
    UNION ALL
    SELECT false, v FROM conclave_kv WHERE k = $1 AND NOT EXISTS (SELECT 1 FROM inserted)";

/// The statements a claim runs, prepared together (or found in the connection's cache):
/// each then goes out on its first poll, in the order `try_join!` polls them. The pool
/// prepares them on every connection it opens at start, so a burst of new rooms parses
/// none.
pub(super) async fn prepare_claim(
    client: &deadpool_postgres::Object,
) -> Result<[tokio_postgres::Statement; 5], tokio_postgres::Error> {
    let (claim_new, insert, update, list, usage) = futures::try_join!(
        client.prepare_cached(CLAIM_NEW),
        client.prepare_cached(INSERT_IF_ABSENT),
        client.prepare_cached(CLAIM_UPDATE),
        client.prepare_cached(list_sql(false)),
        client.prepare_cached(commit::READ_USAGE),
    )?;
    Ok([claim_new, insert, update, list, usage])
}

/// Runs a claim's statements once on `client`, on a room no one uses, in a transaction
/// rolled back: a backend's first execution of a statement plans it and loads the table's
/// and index's catalog entries (about 0.4 ms of PostgreSQL's CPU per session here), which
/// would otherwise fall on the first rooms claimed over this connection (a storm of new
/// rooms on a fresh node).
/// `n` tells the pool's connections apart: each rehearses on its own key, so none waits
/// for another's insert to be rolled back.
pub(super) async fn rehearse_claim(
    client: &mut deadpool_postgres::Object,
    n: usize,
) -> Result<(), StorageError> {
    let [claim_new, insert, update, ..] = prepare_claim(client).await.map_err(pg)?;
    let name = format!("claim-rehearsal-{}-{n}", std::process::id());
    let room = RoomKey::new("conclave", &name).expect("a valid room name");
    let key = keys::owner_key(&room);
    let value = b"rehearsal".to_vec();
    let txn = client.transaction().await.map_err(pg)?;
    txn.query(&claim_new, &[&key, &value]).await.map_err(pg)?;
    txn.execute(&insert, &[&key, &value]).await.map_err(pg)?;
    txn.execute(&update, &[&key, &value, &value])
        .await
        .map_err(pg)?;
    list_under(&txn, &keys::ledger_prefix(&room), &ListOptions::default()).await?;
    commit::read_usage(&txn, &room, &[]).await.map_err(pg)?;
    txn.rollback().await.map_err(pg)
}

/// A compare-and-set on the owner record: read it, decide, and write the new record
/// only if the stored one is still what was read (else read again). The write runs on
/// its own (committed when it returns) with the ledger and usage reads sent behind it
/// on the same connection: PostgreSQL runs them after the write has committed, so they
/// see every commit of an earlier owner that got in before the claim, and any later one
/// is fenced. A commit in flight holds the record `FOR SHARE`, so the write waits for
/// it, as a `FOR UPDATE` would.
///
/// The first attempt does not read: it inserts the record a room without one gets
/// ([`CLAIM_NEW`]), the reads behind it, so a new room (or one let go with nothing
/// stored) is claimed in one round trip. Where a record exists, that statement returns
/// it, and the update follows: two round trips, where a transaction holding the record's
/// lock took five. (The reads sent behind a first claim that found a record are read
/// again behind the update.)
pub(super) async fn claim_and_load(
    client: &deadpool_postgres::Object,
    room: &RoomKey,
    claim: &Claim,
) -> Result<Claimed, StorageError> {
    let key = keys::owner_key(room);
    let ledger = keys::ledger_prefix(room);
    let [claim_new, insert, update, ..] = prepare_claim(client).await.map_err(pg)?;
    let load = || async {
        futures::try_join!(
            async {
                list_under(client, &ledger, &ListOptions::default())
                    .await
                    .map_err(TxnError::Refused)
            },
            async { Ok(commit::read_usage(client, room, &[]).await?.usage) },
        )
    };
    // The stored record, when the first claim's statement returned it.
    let mut found: Option<Vec<u8>> = None;
    if let Ok(owner) = claim.decide(None) {
        let next = keys::encode_owner(&owner);
        let first = futures::try_join!(
            async {
                client
                    .query(&claim_new, &[&key, &next])
                    .await
                    .map_err(TxnError::Pg)
            },
            load(),
        );
        match first {
            Ok((rows, (ledger, usage))) => match rows.first() {
                Some(row) if row.get::<_, bool>(0) => {
                    return Ok(Claimed {
                        owner,
                        ledger,
                        usage,
                    })
                }
                Some(row) => found = row.get(1),
                None => {}
            },
            Err(TxnError::Pg(e)) if retryable(&e) => {}
            Err(e) => return Err(e.into_storage()),
        }
    }
    for attempt in 1.. {
        let stored: Option<Vec<u8>> = match found.take() {
            Some(record) => Some(record),
            None => statements::query_opt(client, statements::READ_VALUE, &[&key])
                .await
                .map_err(pg)?
                .map(|row| row.get(0)),
        };
        let current = match stored.as_deref() {
            Some(raw) => Some(
                keys::decode_owner(raw)
                    .ok_or_else(|| StorageError::Backend("undecodable owner record".into()))?,
            ),
            None => None,
        };
        let owner = claim.decide(current.as_ref())?;
        let next = keys::encode_owner(&owner);
        let write = async {
            match &stored {
                None => client.execute(&insert, &[&key, &next]).await,
                Some(old) => client.execute(&update, &[&key, &next, old]).await,
            }
        };
        let loaded = futures::try_join!(async { write.await.map_err(TxnError::Pg) }, load());
        match loaded {
            Ok((1, (ledger, usage))) => {
                return Ok(Claimed {
                    owner,
                    ledger,
                    usage,
                })
            }
            // Another claim or a release changed the record since it was read.
            Ok(_) if attempt < COMMIT_ATTEMPTS => continue,
            Ok(_) => {
                return Err(StorageError::Backend(
                    "claim kept racing with other claims".into(),
                ))
            }
            Err(TxnError::Pg(e)) if retryable(&e) && attempt < COMMIT_ATTEMPTS => continue,
            Err(e) => return Err(e.into_storage()),
        }
    }
    unreachable!("the loop returns")
}

/// Lets go of the room if `owner` still holds it (see [`Store::release`](super::super::store::Store::release)).
pub(super) async fn release(
    client: &mut deadpool_postgres::Object,
    room: &RoomKey,
    owner: &Owner,
) -> Result<(), StorageError> {
    let result: Result<(), TxnError> = async {
        let txn = client.transaction().await?;
        if read_owner(&txn, room, "FOR UPDATE").await?.as_ref() == Some(owner) {
            let prefix = keys::room_prefix(room);
            let rows = statements::query(
                &txn,
                "SELECT 1 FROM conclave_kv WHERE k >= $1 AND k < $2 LIMIT 2",
                &[&prefix, &keys::strinc(&prefix)],
            )
            .await?;
            if rows.len() > 1 {
                let released = Owner {
                    released: true,
                    ..owner.clone()
                };
                statements::execute(
                    &txn,
                    "UPDATE conclave_kv SET v = $2 WHERE k = $1",
                    &[&keys::owner_key(room), &keys::encode_owner(&released)],
                )
                .await?;
            } else {
                statements::execute(
                    &txn,
                    "DELETE FROM conclave_kv WHERE k = $1",
                    &[&keys::owner_key(room)],
                )
                .await?;
            }
        }
        Ok(txn.commit().await?)
    }
    .await;
    result.map_err(TxnError::into_storage)
}
