//! The FoundationDB cluster a test uses: the real one `FDB_CLUSTER_FILE` names (each test in
//! its own directory), else the FoundationDB test double (`conclave-fdbsim`) started in
//! this process on a free port, which needs the test binary linked against the double's
//! libfdb_c (scripts/test-fdb.sh).

use std::path::{Path, PathBuf};

pub struct Fdb {
    cluster_file: PathBuf,
    /// A directory of its own under `conclave/`, so runs on a real cluster never meet.
    directory: String,
    server: Option<conclave_fdbsim::SimServer>,
    _dir: Option<tempfile::TempDir>,
}

impl Fdb {
    pub async fn start() -> Self {
        let directory = format!("test-{}", uuid::Uuid::new_v4());
        if let Ok(file) = std::env::var("FDB_CLUSTER_FILE") {
            return Self {
                cluster_file: file.into(),
                directory,
                server: None,
                _dir: None,
            };
        }
        let server = conclave_fdbsim::SimServer::start(([127, 0, 0, 1], 0).into())
            .await
            .expect("start the FoundationDB test double");
        let dir = tempfile::tempdir().unwrap();
        let cluster_file = dir.path().join("fdb.cluster");
        server.write_cluster_file(&cluster_file).unwrap();
        Self {
            cluster_file,
            directory,
            server: Some(server),
            _dir: Some(dir),
        }
    }

    pub fn cluster_file(&self) -> &Path {
        &self.cluster_file
    }

    /// Transactions with writes committed so far, on the test double (`None` on a real
    /// cluster): proof that a test's data went through FoundationDB.
    pub fn simulated_commits(&self) -> Option<u64> {
        self.server.as_ref().map(|s| s.commits())
    }

    pub fn directory(&self) -> &str {
        &self.directory
    }
}
