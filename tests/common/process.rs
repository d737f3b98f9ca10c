//! `conclave` role processes for tests: started with real flags on addresses the harness
//! chose, counted as started once they say they are ready, killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a role may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How a role shows it is ready.
#[derive(Clone, Copy, Debug)]
pub enum Readiness {
    /// `GET /readyz` at this address answers 200.
    Readyz(SocketAddr),
}

impl Readiness {
    async fn is_ready(self) -> bool {
        match self {
            Readiness::Readyz(addr) => {
                let request = "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
                matches!(super::try_raw_http(addr, request).await, Ok((200, _)))
            }
        }
    }
}

/// A running `conclave <args>`, which can be signalled, killed and started again with the
/// same flags (and so on the same addresses).
pub struct Role {
    name: String,
    /// The binary: `conclave`, or a server of its own built on `conclave::Conclave`.
    program: PathBuf,
    args: Vec<String>,
    readiness: Readiness,
    child: Child,
}

impl Role {
    /// Starts `conclave <args>` and waits until it is ready.
    pub async fn start(name: impl Into<String>, args: Vec<String>, readiness: Readiness) -> Self {
        Self::start_program(conclave(), name, args, readiness).await
    }

    /// Starts `<program> <args>` and waits until it is ready.
    pub async fn start_program(
        program: PathBuf,
        name: impl Into<String>,
        args: Vec<String>,
        readiness: Readiness,
    ) -> Self {
        let child = spawn(&program, &args);
        let mut role = Self {
            name: name.into(),
            program,
            args,
            readiness,
            child,
        };
        role.wait_until_ready().await;
        role
    }

    async fn wait_until_ready(&mut self) {
        let Self {
            name,
            readiness,
            child,
            ..
        } = self;
        let ready = super::eventually_within(START_TIMEOUT, async || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name} exited before it was ready: {status}");
            }
            readiness.is_ready().await
        })
        .await;
        assert!(ready, "{name} was not ready within {START_TIMEOUT:?}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Sends a signal (`-KILL`, `-STOP`, `-CONT`, `-TERM`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Kills the process (if it still runs) and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Starts the process again with the same flags, after killing it if it still runs.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.child = spawn(&self.program, &self.args);
        self.wait_until_ready().await;
    }

    /// How the process exited; panics if it still runs after `within`.
    pub async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} still runs after {within:?}", self.name))
            .unwrap()
    }
}

/// The `conclave` binary under test.
pub fn conclave() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_conclave"))
}

/// The cluster secret every role the tests start shares, so every cluster test runs with
/// internal authentication on.
pub const CLUSTER_SECRET: &str = "secret-of-the-test-clusters";

fn spawn(program: &Path, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .env("CONCLAVE_CLUSTER_SECRET", CLUSTER_SECRET)
        // CONCLAVE_TEST_LOG: the roles' RUST_LOG, to see what a test's cluster does.
        .env(
            "RUST_LOG",
            std::env::var("CONCLAVE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}
