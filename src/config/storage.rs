//! Where rooms are stored (`dev`, `node`): the storage options and the target they
//! resolve to.

use super::file::{FileConfig, StorageKind};
use super::layer::{layer, with_default};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

/// Directory of the embedded redb database.
pub const DEFAULT_DATA_DIR: &str = ".conclave";
/// FoundationDB cluster file.
pub const DEFAULT_FDB_CLUSTER_FILE: &str = "/etc/foundationdb/fdb.cluster";
/// FoundationDB directory of a Conclave cluster's rooms (under `conclave/`).
pub const DEFAULT_FDB_DIRECTORY: &str = "default";

/// Where rooms are stored (`dev`, `node`).
#[derive(Args, Debug, Default, Clone)]
pub struct StorageOpts {
    #[arg(long, env = "CONCLAVE_STORAGE", help = with_default(
        "Room storage backend: redb (embedded file), postgres or fdb (FoundationDB; needs a \
         build with the `fdb` cargo feature)",
        "postgres with --postgres-url, else redb",
    ))]
    pub storage: Option<StorageKind>,
    #[arg(long, env = "CONCLAVE_DATA_DIR", help = with_default(
        "Directory of the embedded database",
        DEFAULT_DATA_DIR,
    ))]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL for room storage: postgres://user@host:port/db (`?sslmode=require` to
    /// insist on TLS; the default, `prefer`, uses it when the server offers it)
    #[arg(long, env = "CONCLAVE_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// CA certificates (PEM) that PostgreSQL's server certificate must chain to, for the
    /// host it is reached at (libpq's verify-full); without it TLS is not verified
    #[arg(long, env = "CONCLAVE_POSTGRES_CA_FILE")]
    pub postgres_ca_file: Option<PathBuf>,
    #[arg(long, env = "CONCLAVE_POSTGRES_POOL_SIZE", help = with_default(
        "PostgreSQL connections this process keeps open, all opened at start (commits of \
         different rooms run on different connections)",
        conclave_node::storage::POSTGRES_POOL_SIZE,
    ))]
    pub postgres_pool_size: Option<usize>,
    #[arg(long, env = "FDB_CLUSTER_FILE", help = with_default(
        "FoundationDB cluster file, with --storage fdb",
        DEFAULT_FDB_CLUSTER_FILE,
    ))]
    pub fdb_cluster_file: Option<String>,
    #[arg(long, env = "CONCLAVE_FDB_DIRECTORY", help = with_default(
        "FoundationDB directory of this Conclave cluster's rooms: conclave/<name>",
        DEFAULT_FDB_DIRECTORY,
    ))]
    pub fdb_directory: Option<String>,
}

impl StorageOpts {
    /// Where rooms are stored: flags/env over the file over defaults.
    pub fn target(&self, file: &FileConfig) -> anyhow::Result<StorageTarget> {
        let postgres_url = self.postgres_url.clone().or(file.postgres_url.clone());
        let fallback = if postgres_url.is_some() {
            StorageKind::Postgres
        } else {
            StorageKind::Redb
        };
        Ok(match layer(self.storage, file.storage, fallback) {
            StorageKind::Redb => StorageTarget::Redb(layer(
                self.data_dir.clone(),
                file.data_dir.clone(),
                DEFAULT_DATA_DIR.into(),
            )),
            StorageKind::Postgres => StorageTarget::Postgres {
                url: postgres_url.context("--storage postgres needs --postgres-url")?,
                pool_size: layer(
                    self.postgres_pool_size,
                    file.postgres_pool_size,
                    conclave_node::storage::POSTGRES_POOL_SIZE,
                ),
                ca_file: self
                    .postgres_ca_file
                    .clone()
                    .or(file.cluster.postgres_ca_file.clone()),
            },
            StorageKind::Fdb => StorageTarget::Fdb {
                cluster_file: layer(
                    self.fdb_cluster_file.clone(),
                    file.cluster.fdb_cluster_file.clone(),
                    DEFAULT_FDB_CLUSTER_FILE.into(),
                ),
                directory: layer(
                    self.fdb_directory.clone(),
                    file.cluster.fdb_directory.clone(),
                    DEFAULT_FDB_DIRECTORY.into(),
                ),
            },
        })
    }
}

/// Where a node keeps its rooms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageTarget {
    /// The embedded redb file in this directory.
    Redb(PathBuf),
    /// A PostgreSQL URL, its connection pool's size, and the CA file its server's
    /// certificate is verified against.
    Postgres {
        url: String,
        pool_size: usize,
        ca_file: Option<PathBuf>,
    },
    /// FoundationDB, under the directory `conclave/<directory>`.
    Fdb {
        cluster_file: String,
        directory: String,
    },
}

impl std::fmt::Display for StorageTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageTarget::Redb(dir) => write!(f, "{}", dir.display()),
            StorageTarget::Postgres { .. } => f.write_str("PostgreSQL"),
            StorageTarget::Fdb {
                cluster_file,
                directory,
            } => write!(f, "FoundationDB ({cluster_file}, conclave/{directory})"),
        }
    }
}
