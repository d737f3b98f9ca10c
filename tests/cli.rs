//! The `conclave` binary as an operator runs it.

mod common;

use common::process::{Readiness, Role};
use common::*;
use std::process::Command;
use std::time::Duration;

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

/// `--check-config` prints what a role would run with, secrets redacted, and fails on what
/// it would refuse; nothing starts.
#[test]
fn check_config_prints_the_resolved_settings_without_secrets_or_fails() {
    let out = conclave()
        .args(["node", "--id", "a", "--check-config"])
        .args(["--postgres-url", "postgres://conclave:hunter2@db/conclave"])
        .args([
            "--admin-token",
            "t0ken-value",
            "--relay-listen",
            "0.0.0.0:7100",
        ])
        .env("CONCLAVE_CLUSTER_SECRET", "the-secret-of-this-cluster")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("relay_listen: 0.0.0.0:7100"), "{text}");
    for secret in ["hunter2", "t0ken-value", "the-secret-of-this-cluster"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    let refused = conclave()
        .args([
            "node",
            "--id",
            "a",
            "--relay-listen",
            "0.0.0.0:7100",
            "--check-config",
        ])
        .env_remove("CONCLAVE_CLUSTER_SECRET")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("no cluster secret is set"), "{err}");
    let placement = conclave()
        .args([
            "placement",
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--check-config",
        ])
        .output()
        .unwrap();
    assert!(placement.status.success());
    assert!(String::from_utf8_lossy(&placement.stdout).contains("http_listen"));
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
    let addr = common::net::free_addr();
    let port = addr.port().to_string();
    let data = dir.path().to_str().unwrap();
    let flags = ["dev", "--port", &port, "--data-dir", data].map(String::from);
    let mut server = Role::start("conclave dev", flags.to_vec(), Readiness::Readyz(addr)).await;
    let mut ws = ws_connect(addr, "/parties/main/r?_pk=a").await;
    server.signal("-TERM");
    assert_eq!(close_code(&mut ws).await, 1001);
    let status = server.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

/// `conclave probe` is the image's healthcheck: 0 when the role is ready, non-zero when it
/// does not answer (or answers anything but 200).
#[tokio::test]
async fn probe_succeeds_on_a_ready_server_and_fails_on_a_missing_one() {
    let server = common::start(|_| {}, |p| p).await;
    // The server runs on this test's runtime: wait for the probe without blocking it.
    let probe = |url: String| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
            .args(["probe", &url])
            .status()
            .await
            .unwrap()
            .success()
    };
    assert!(probe(format!("http://{}/readyz", server.addr)).await);
    assert!(!probe(format!("http://{}/nothing-here", server.addr)).await);
    assert!(!probe(format!("http://{}/readyz", common::net::free_addr())).await);
}
