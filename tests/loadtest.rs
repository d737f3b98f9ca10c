//! Every `conclave loadtest` scenario, briefly, against a `conclave dev` server — and the
//! failover scenario against a real cluster whose room owner it drains: each run must
//! finish and report sane figures in its JSON report.

mod common;

use common::cluster::{owner_of, Cluster};
use std::net::SocketAddr;
use std::time::Duration;

/// Runs `conclave loadtest <args>` against the server at `addr` and returns its JSON
/// report.
async fn loadtest(addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let url = format!("ws://{addr}/parties/main/{{room}}");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
            .arg("loadtest")
            .args(args)
            .args(["--url", &url, "--json"])
            .arg(&json)
            .output(),
    )
    .await
    .expect("the scenario finished in time")
    .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("scenario: "), "{table}");
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

/// A messaging scenario for one second, without warm-up.
async fn brief(addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    let brief = ["--secs", "1", "--warmup-secs", "0", "--sources", "1"];
    loadtest(addr, &[args, &brief].concat()).await
}

fn num(report: &serde_json::Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {key} in {report}"))
}

#[tokio::test]
async fn every_scenario_runs_against_conclave_dev() {
    let server = common::start(|_| {}, |r| r).await;
    let addr = server.addr;

    let storm = [
        "--connections",
        "300",
        "--concurrency",
        "50",
        "--sources",
        "1",
    ];
    let r = loadtest(addr, &[&["connect-storm"], &storm[..]].concat()).await;
    assert_eq!(r["scenario"], "connect-storm");
    assert_eq!(num(&r, "connected"), 300.0);
    assert_eq!(num(&r, "failures"), 0.0);
    assert!(num(&r, "connects_per_sec") > 0.0);
    assert!(num(&r, "handshake_p50_ms") <= num(&r, "handshake_p99_ms"));

    let hold = ["--connections", "100", "--hold-secs", "1", "--sources", "1"];
    let r = loadtest(addr, &[&["idle-hold"], &hold[..]].concat()).await;
    assert_eq!(num(&r, "connections_open_after_hold"), 100.0);

    let pid = std::process::id().to_string();
    // Enough deliveries that the server's CPU time, read from /proc in 10 ms ticks, is
    // more than a tick in a 1 s step (with 20 members it was sometimes 0).
    let hot = ["--members", "100", "--rate", "20,40", "--server-pid", &pid];
    let r = brief(addr, &[&["hot-room"], &hot[..]].concat()).await;
    assert!(num(&r, "delivered_ratio") > 0.99, "{r}");
    assert!(num(&r, "latency@20_p50_ms") > 0.0, "{r}");
    assert!(num(&r, "latency@40_p99_ms") >= num(&r, "latency@40_p50_ms"));
    assert!(num(&r, "deliveries_per_sec@40") > num(&r, "deliveries_per_sec@20"));
    assert!(num(&r, "server_cpu_us_per_delivery@20") > 0.0);

    let many = ["--rooms", "10", "--members", "5", "--rate", "10"];
    let r = brief(addr, &[&["many-rooms"], &many[..]].concat()).await;
    assert!(num(&r, "delivered_ratio") > 0.99, "{r}");
    assert_eq!(num(&r, "publishers"), 10.0);

    let r = brief(addr, &["all-to-all", "--members", "8", "--rate", "10"]).await;
    assert!(num(&r, "delivered_ratio") > 0.99, "{r}");
    assert_eq!(num(&r, "publishers"), 8.0);

    let churn = [
        "--rooms",
        "2",
        "--members",
        "10",
        "--reconnect-share",
        "0.5",
    ];
    let r = brief(addr, &[&["churn"], &churn[..]].concat()).await;
    assert!(num(&r, "reconnects") > 0.0, "{r}");
    assert_eq!(num(&r, "reconnect_failures"), 0.0, "{r}");

    let slow = ["--members", "10", "--slow", "1", "--rate", "20"];
    let r = brief(addr, &[&["slow-consumer"], &slow[..]].concat()).await;
    assert!(
        num(&r, "delivered_ratio") > 0.99,
        "the other members are served: {r}"
    );
    assert!(r.get("slow_consumer_close_code").is_some(), "{r}");
}

#[tokio::test]
async fn failover_drains_the_rooms_owner_and_loses_and_repeats_nothing() {
    let mut cluster = Cluster::builder()
        .nodes(["a", "b"])
        .placement()
        .heartbeat(Duration::from_millis(200), Duration::from_secs(1))
        .start()
        .await;
    // The scenario's one room is `load-0`; SIGTERM drains its owner (hands its rooms over,
    // then exits).
    let owner = owner_of("main", "load-0", &cluster.node_ids());
    let command = format!("kill -TERM {}", cluster.pid(&owner));
    let args = ["failover", "--members", "5", "--rate", "20"];
    let run = ["--command", &command, "--at-secs", "1", "--secs", "4"];
    let r = loadtest(
        cluster.gateway(0),
        &[&args[..], &run, &["--warmup-secs", "0", "--sources", "1"]].concat(),
    )
    .await;
    let status = cluster.exit_status(&owner, Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "node {owner} drained and exited: {status}"
    );
    assert_eq!(r["failover_command_ok"], true, "{r}");
    assert_eq!(num(&r, "duplicates"), 0.0, "{r}");
    assert_eq!(num(&r, "lost"), 0.0, "{r}");
    assert_eq!(num(&r, "member_disconnects"), 0.0, "{r}");
    assert!(num(&r, "deliveries") > 0.0, "{r}");
    let recovery = num(&r, "failover_recovery_ms");
    assert!(recovery > 0.0 && recovery < 1000.0, "{r}");
    println!("failover recovery after draining the owner: {recovery} ms");
}
