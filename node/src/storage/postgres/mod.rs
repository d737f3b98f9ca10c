//! The PostgreSQL backend, for clusters whose nodes share state through a Postgres they
//! already run. One table of tuple-encoded keys (the same layout as redb; `bytea` sorts
//! bytewise, so key order is the same):
//!
//! ```sql
//! CREATE TABLE conclave_kv (k bytea PRIMARY KEY, v bytea NOT NULL)
//! ```
//!
//! Each room commit is one transaction. Commits of many rooms run concurrently on the
//! pool's connections, and PostgreSQL flushes their WAL together (its own group commit).
//! Transactions that fail with a serialization failure or deadlock are retried.

mod commit;
mod owner;
mod statements;

use super::keys;
use super::store::{
    check_fence, home_region, AlarmScan, Claim, Claimed, ListOptions, Owner, RoomCommit,
    StorageError, Store, Usage,
};
use async_trait::async_trait;
use bytes::Bytes;
use conclave_proto::RoomKey;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// Connections per node by default.
pub const DEFAULT_POOL_SIZE: usize = 16;
const COMMIT_ATTEMPTS: usize = 5;

pub struct PostgresStore {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The connection `ping` uses, apart from the pool.
    probe: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

fn backend<E: std::fmt::Display>(e: E) -> StorageError {
    StorageError::Backend(e.to_string())
}

fn pg(e: tokio_postgres::Error) -> StorageError {
    match e.as_db_error() {
        Some(db) => {
            StorageError::Backend(format!("postgres: {} ({})", db.message(), db.code().code()))
        }
        None => StorageError::Backend(format!("postgres: {e}")),
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
        || *c == SqlState::T_R_DEADLOCK_DETECTED
        || *c == SqlState::LOCK_NOT_AVAILABLE)
}

/// How long a session of ours may sit in a transaction waiting on its own node (a node
/// stopped, paused or cut off mid-commit): PostgreSQL then ends the session, and the locks
/// it held (the owner row, `FOR SHARE`) go with it, so the next owner's claim never waits
/// on a stalled one for longer. Below the liveness TTL (2 s by default).
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long one statement waits for a row lock before it fails and is retried.
const LOCK_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a connection may go without an answer from the server (a partition) before
/// the kernel gives up on it, instead of TCP's default of many minutes.
const UNANSWERED_TIMEOUT: Duration = Duration::from_secs(5);

/// How a session plans its prepared statements: once, generically. Every statement of ours
/// looks up the primary key by one value or one range, which the generic plan does as
/// well as any; PostgreSQL's default plans each of a session's first five runs of a
/// statement for its values, which was about half of PostgreSQL's CPU for a new room's
/// claim (a storm of new rooms spreads their claims over every pooled session). An
/// operator's own setting in the URL's `options` comes after this one and wins.
const PLAN_CACHE_MODE: &str = "-c plan_cache_mode=force_generic_plan";

/// The settings of every session a store opens: the URL's, plus how statements are
/// planned ([`PLAN_CACHE_MODE`]) and the bounds above (server side: idle-in-transaction
/// and lock timeouts; client side: connect timeout, TCP keepalives and user timeout).
pub fn session_config(url: &str) -> Result<tokio_postgres::Config, StorageError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StorageError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
    let bounds = format!(
        "-c idle_in_transaction_session_timeout={} -c lock_timeout={}",
        IDLE_IN_TRANSACTION_TIMEOUT.as_millis(),
        LOCK_TIMEOUT.as_millis()
    );
    let options = match config.get_options() {
        Some(own) if !own.trim().is_empty() => format!("{PLAN_CACHE_MODE} {own} {bounds}"),
        _ => format!("{PLAN_CACHE_MODE} {bounds}"),
    };
    config
        .options(options)
        .connect_timeout(UNANSWERED_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(2))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(3)
        .tcp_user_timeout(UNANSWERED_TIMEOUT);
    Ok(config)
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and creates the table if needed;
    /// TLS as the URL's `sslmode` says, unverified.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StorageError> {
        Self::connect_with(url, pool_size, None).await
    }

    /// Like [`connect`](Self::connect), verifying the server's certificate against the
    /// CA certificates in `ca_file` (PEM) when given (see `pg_tls`).
    pub async fn connect_with(
        url: &str,
        pool_size: usize,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, StorageError> {
        let config = session_config(url)?;
        let tls = super::pg_tls::connector(ca_file)?;
        if ca_file.is_none() && config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            tracing::warn!(
                "PostgreSQL: sslmode=require encrypts but does not verify the server; give a CA file to verify it"
            );
        }
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(backend)?;
        let mut client = pool.get().await.map_err(|e| {
            StorageError::Backend(format!(
                "cannot connect to PostgreSQL: {}",
                crate::error_chain(&e)
            ))
        })?;
        // Nodes may start together: create the table under an advisory lock.
        let txn = client.transaction().await.map_err(pg)?;
        txn.batch_execute(
            "SELECT pg_advisory_xact_lock(7364002161);
             CREATE TABLE IF NOT EXISTS conclave_kv (k bytea PRIMARY KEY, v bytea NOT NULL);",
        )
        .await
        .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        drop(client);
        warm(&pool, pool_size).await;
        Ok(Self {
            pool,
            config,
            tls,
            probe: tokio::sync::Mutex::default(),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool.get().await.map_err(backend)
    }

    /// The value under `key`, decoded.
    async fn read_value<T>(
        &self,
        key: &[u8],
        decode: fn(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, StorageError> {
        let client = self.client().await?;
        let row = statements::query_opt(&client, statements::READ_VALUE, &[&key])
            .await
            .map_err(pg)?;
        Ok(row.and_then(|r| decode(r.get(0))))
    }
}

/// Opens the pool's connections before the node serves anything, and runs a claim's
/// statements once on each (rolled back). PostgreSQL starts a backend process per
/// session, which takes milliseconds, and a backend's first run of a statement parses
/// and plans it; opened on demand, the first burst of rooms (a node starting under load,
/// a storm of new rooms) would queue behind those start-ups and first runs. A connection
/// that fails here is opened again (and its statements prepared) on first use.
async fn warm(pool: &Pool, size: usize) {
    let opened = futures::future::join_all((0..size).map(|n| async move {
        let mut client = pool.get().await.map_err(backend)?;
        owner::rehearse_claim(&mut client, n).await?;
        Ok::<_, StorageError>(client)
    }))
    .await;
    let failed = opened.iter().filter(|c| c.is_err()).count();
    if failed > 0 {
        tracing::warn!(
            failed,
            "PostgreSQL: some pool connections could not be opened (or their statements prepared) at start"
        );
    }
}

/// A transaction's failure: the database's, or a refusal decided inside it.
enum TxnError {
    Pg(tokio_postgres::Error),
    Refused(StorageError),
}

impl From<tokio_postgres::Error> for TxnError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxnError::Pg(e)
    }
}

impl From<StorageError> for TxnError {
    fn from(e: StorageError) -> Self {
        TxnError::Refused(e)
    }
}

impl TxnError {
    fn into_storage(self) -> StorageError {
        match self {
            TxnError::Pg(e) => pg(e),
            TxnError::Refused(e) => e,
        }
    }
}

/// The statement a listing runs, in key order or reversed.
fn list_sql(reverse: bool) -> &'static str {
    if reverse {
        "SELECT k, v FROM conclave_kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3"
    } else {
        "SELECT k, v FROM conclave_kv WHERE k >= $1 AND k < $2 ORDER BY k ASC LIMIT $3"
    }
}

/// The entries under `prefix` (a room's keys or its ledger) that `opts` selects.
async fn list_under(
    client: &impl GenericClient,
    prefix: &[u8],
    opts: &ListOptions,
) -> Result<Vec<(String, Bytes)>, StorageError> {
    let (lo, hi) = keys::list_range(prefix, opts);
    if lo >= hi {
        return Ok(Vec::new());
    }
    let limit = opts.limit.unwrap_or(usize::MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    // `start_after` is inclusive in the byte range; fetch one more to make up for it.
    let sql_limit = i64::try_from(limit.saturating_add(opts.start_after.is_some() as usize))
        .unwrap_or(i64::MAX);
    let rows = statements::query(client, list_sql(opts.reverse), &[&lo, &hi, &sql_limit])
        .await
        .map_err(pg)?;
    let mut out = Vec::new();
    for r in &rows {
        let key = keys::user_key(prefix, r.get(0))
            .ok_or_else(|| StorageError::Backend("undecodable key in room subspace".into()))?;
        if opts.contains(&key) {
            out.push((key, Bytes::copy_from_slice(r.get(1))));
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn get(
        &self,
        room: &RoomKey,
        wanted: &[String],
    ) -> Result<Vec<Option<Bytes>>, StorageError> {
        let prefix = keys::kv_prefix(room);
        let encoded: Vec<Vec<u8>> = wanted.iter().map(|k| keys::kv_key(&prefix, k)).collect();
        let client = self.client().await?;
        let rows = statements::query(
            &client,
            "SELECT k, v FROM conclave_kv WHERE k = ANY($1)",
            &[&encoded],
        )
        .await
        .map_err(pg)?;
        let found: std::collections::HashMap<&[u8], &[u8]> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(encoded
            .iter()
            .map(|k| found.get(k.as_slice()).map(|v| Bytes::copy_from_slice(v)))
            .collect())
    }

    async fn list(
        &self,
        room: &RoomKey,
        opts: &ListOptions,
    ) -> Result<Vec<(String, Bytes)>, StorageError> {
        list_under(&self.client().await?, &keys::kv_prefix(room), opts).await
    }

    async fn ledger(&self, room: &RoomKey) -> Result<Vec<(String, Bytes)>, StorageError> {
        let client = self.client().await?;
        list_under(&client, &keys::ledger_prefix(room), &ListOptions::default()).await
    }

    /// On a connection of its own, so a busy pool does not make the store look away.
    async fn ping(&self) -> Result<(), StorageError> {
        let mut probe = self.probe.lock().await;
        if probe.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, conn) = self.config.connect(self.tls.clone()).await.map_err(pg)?;
            tokio::spawn(conn);
            *probe = Some(client);
        }
        let Some(client) = probe.as_ref() else {
            return Err(StorageError::Backend("postgres: no connection".into()));
        };
        match client.simple_query("SELECT 1").await {
            Ok(_) => Ok(()),
            Err(e) => {
                *probe = None;
                Err(pg(e))
            }
        }
    }

    async fn get_alarm(&self, room: &RoomKey) -> Result<Option<i64>, StorageError> {
        self.read_value(&keys::alarm_key(room), keys::decode_alarm)
            .await
    }

    async fn commit(
        &self,
        room: &RoomKey,
        commit: RoomCommit,
    ) -> Result<Option<Usage>, StorageError> {
        let mut client = self.client().await?;
        for attempt in 1.. {
            let result: Result<Option<Usage>, TxnError> = async {
                let txn = client.transaction().await?;
                let fenced = async {
                    if let Some(fence) = &commit.fence {
                        // FOR SHARE: a concurrent claim (FOR UPDATE) waits for us, or we see
                        // it.
                        let owner = owner::read_owner(&txn, room, "FOR SHARE").await?;
                        check_fence(owner.as_ref(), fence)?;
                    }
                    Ok::<_, TxnError>(())
                };
                let before =
                    async { Ok::<_, TxnError>(commit::read_before(&txn, room, &commit).await?) };
                // Sent together: one round trip for both.
                let ((), before) = futures::try_join!(fenced, before)?;
                let usage = commit::apply(&txn, room, &commit, before).await?;
                txn.commit().await?;
                Ok(usage)
            }
            .await;
            match result {
                Err(TxnError::Pg(e)) if retryable(&e) && attempt < COMMIT_ATTEMPTS => continue,
                other => return other.map_err(TxnError::into_storage),
            }
        }
        unreachable!("the loop returns")
    }

    async fn usage(&self, room: &RoomKey) -> Result<Usage, StorageError> {
        let client = self.client().await?;
        let before = commit::read_usage(&client, room, &[]).await.map_err(pg)?;
        Ok(before.usage)
    }

    async fn party_rooms(
        &self,
        party: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Usage)>, StorageError> {
        let (lo, hi) = keys::party_usage_range(party, after);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        // A listing's statement: one prepared statement serves both.
        let rows = statements::query(&client, list_sql(false), &[&lo, &hi, &limit])
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((keys::parse_usage_key(r.get(0))?, Usage::decode(r.get(1))?)))
            .collect())
    }

    async fn claim(&self, room: &RoomKey, claim: &Claim) -> Result<Owner, StorageError> {
        Ok(self.claim_and_load(room, claim).await?.owner)
    }

    async fn claim_and_load(&self, room: &RoomKey, claim: &Claim) -> Result<Claimed, StorageError> {
        owner::claim_and_load(&self.client().await?, room, claim).await
    }

    async fn release(&self, room: &RoomKey, owner: &Owner) -> Result<(), StorageError> {
        owner::release(&mut self.client().await?, room, owner).await
    }

    async fn home_region(&self, room: &RoomKey, proposed: &str) -> Result<String, StorageError> {
        let client = self.client().await?;
        let key = keys::owner_key(room);
        // Insert-if-absent then read: whoever inserted first fixed the home region.
        let (_, placeholder) = home_region(None, proposed);
        if let Some(p) = placeholder {
            statements::execute(
                &client,
                owner::INSERT_IF_ABSENT,
                &[&key, &keys::encode_owner(&p)],
            )
            .await
            .map_err(pg)?;
        }
        let owner = self.owner(room).await?;
        Ok(owner.map_or_else(|| proposed.to_string(), |o| o.home().to_string()))
    }

    async fn owner(&self, room: &RoomKey) -> Result<Option<Owner>, StorageError> {
        self.read_value(&keys::owner_key(room), keys::decode_owner)
            .await
    }

    async fn scan_alarms(&self, scan: &AlarmScan) -> Result<Vec<(RoomKey, i64)>, StorageError> {
        if scan.limit == 0 {
            return Ok(Vec::new());
        }
        let (lo, hi) = keys::alarm_scan_range(scan);
        let limit = i64::try_from(scan.limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = statements::query(
            &client,
            "SELECT k FROM conclave_kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3",
            &[&lo, &hi, &limit],
        )
        .await
        .map_err(pg)?;
        Ok(rows
            .iter()
            .filter_map(|r| keys::parse_alarm_index(r.get::<_, &[u8]>(0)))
            .collect())
    }
}
