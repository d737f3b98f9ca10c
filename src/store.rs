//! Opens the room store a role's config names (`dev`, `node`).

use crate::config::StorageTarget;
use conclave_node::storage::{PostgresStore, RedbStore, Store};
use std::sync::Arc;

/// Opens the room store.
pub async fn open_store(target: &StorageTarget) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match target {
        StorageTarget::Redb(dir) => Arc::new(RedbStore::open(&dir.join("conclave.redb"))?),
        StorageTarget::Postgres {
            url,
            pool_size,
            ca_file,
        } => Arc::new(PostgresStore::connect_with(url, *pool_size, ca_file.as_deref()).await?),
        #[cfg(feature = "fdb")]
        StorageTarget::Fdb {
            cluster_file,
            directory,
        } => Arc::new(conclave_node::storage::FdbStore::open(cluster_file, directory).await?),
        #[cfg(not(feature = "fdb"))]
        StorageTarget::Fdb { .. } => anyhow::bail!(
            "this conclave was built without FoundationDB support: rebuild with `--features fdb`"
        ),
    })
}
