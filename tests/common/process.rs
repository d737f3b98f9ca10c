//! `conclave` role processes for cluster tests: started with real flags, their printed
//! addresses read back, killed when dropped.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct RoleProcess {
    pub child: Child,
    /// The addresses the process printed (`... on http://ADDR`), in order.
    pub addrs: Vec<String>,
}

impl RoleProcess {
    /// Sends a signal (`-KILL`, `-STOP`, `-CONT`, `-TERM`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }
}

/// Starts `conclave <args>` and waits until it printed `wait_lines` addresses.
pub async fn spawn_role<S: AsRef<OsStr>>(args: &[S], wait_lines: usize) -> RoleProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addrs = Vec::new();
    while addrs.len() < wait_lines {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("process did not start in time")
            .unwrap()
            .expect("process exited before printing its address");
        if let Some((_, addr)) = line.split_once("http://") {
            addrs.push(addr.trim().to_string());
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    RoleProcess { child, addrs }
}
