//! The `conclave` binary as an operator runs it.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

fn conclave() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conclave"))
}

#[test]
fn help_documents_every_setting_with_its_default() {
    let out = conclave().args(["dev", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--port",
        "[default: 1999]",
        "CONCLAVE_PORT",
        "--data-dir",
        "[default: .conclave]",
        "--config",
        "--max-frame-bytes",
        "[default: 1048576]",
        "--send-queue-frames",
        "--messages-per-second",
        "--message-burst",
        "--max-connections-per-room",
        "--ping-interval-ms",
        "--hibernate-after-ms",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn a_bad_config_file_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[parties.x]\nkind = \"nonsense\"\n").unwrap();
    let out = conclave()
        .args(["dev", "--port", "0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown kind \"nonsense\""), "{err}");
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["dev", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("server printed its address");
        if let Some(a) = line.strip_prefix("conclave dev listening on http://") {
            break a.to_string();
        }
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/parties/main/r?_pk=a"))
        .await
        .unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(close_code(&mut ws).await, 1001);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
