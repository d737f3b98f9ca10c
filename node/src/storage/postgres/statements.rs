//! Statements run by their text, each prepared once per pooled connection (deadpool's
//! statement cache) and reused after: a later run is one round trip (bind and execute)
//! instead of two (parse, then bind and execute), and PostgreSQL parses and plans it once.
//! Every statement here has a fixed text, so the cache holds a few dozen at most.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

/// Reads one key's value.
pub(super) const READ_VALUE: &str = "SELECT v FROM conclave_kv WHERE k = $1";

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, Error> {
    let statement = c.prepare_cached(sql).await?;
    c.query(&statement, params).await
}

pub(super) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, Error> {
    let statement = c.prepare_cached(sql).await?;
    c.query_opt(&statement, params).await
}

pub(super) async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, Error> {
    let statement = c.prepare_cached(sql).await?;
    c.execute(&statement, params).await
}
