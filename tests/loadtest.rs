//! Every `conclave loadtest` scenario, briefly, against a `conclave dev` server: each run
//! must finish and report sane figures in its JSON report.

mod common;

use std::time::Duration;

/// Runs `conclave loadtest <args>` against `server` and returns its JSON report.
async fn loadtest(server: &common::TestServer, args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let url = format!("ws://{}/parties/main/{{room}}", server.addr);
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

fn num(report: &serde_json::Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {key} in {report}"))
}

const BRIEF: &[&str] = &["--secs", "1", "--warmup-secs", "0", "--sources", "1"];

#[tokio::test]
async fn every_scenario_runs_against_conclave_dev() {
    let server = common::start(|_| {}, |r| r).await;

    let r = loadtest(
        &server,
        &[
            "connect-storm",
            "--connections",
            "300",
            "--concurrency",
            "50",
            "--sources",
            "1",
        ],
    )
    .await;
    assert_eq!(r["scenario"], "connect-storm");
    assert_eq!(num(&r, "connected"), 300.0);
    assert_eq!(num(&r, "failures"), 0.0);
    assert!(num(&r, "connects_per_sec") > 0.0);
    assert!(num(&r, "handshake_p50_ms") <= num(&r, "handshake_p99_ms"));

    let r = loadtest(
        &server,
        &[
            "idle-hold",
            "--connections",
            "100",
            "--hold-secs",
            "1",
            "--sources",
            "1",
        ],
    )
    .await;
    assert_eq!(num(&r, "connections_open_after_hold"), 100.0);

    let pid = std::process::id().to_string();
    let mut args = vec![
        "hot-room",
        "--members",
        "20",
        "--rate",
        "20,40",
        "--server-pid",
        &pid,
    ];
    args.extend(BRIEF);
    let r = loadtest(&server, &args).await;
    assert!(num(&r, "delivered_ratio") > 0.99, "{r}");
    assert!(num(&r, "latency@20_p50_ms") > 0.0, "{r}");
    assert!(num(&r, "latency@40_p99_ms") >= num(&r, "latency@40_p50_ms"));
    assert!(num(&r, "deliveries_per_sec@40") > num(&r, "deliveries_per_sec@20"));
    assert!(num(&r, "server_cpu_us_per_delivery@20") > 0.0);

    let mut args = vec![
        "many-rooms",
        "--rooms",
        "10",
        "--members",
        "5",
        "--rate",
        "10",
    ];
    args.extend(BRIEF);
    let r = loadtest(&server, &args).await;
    assert!(num(&r, "delivered_ratio") > 0.99, "{r}");
    assert_eq!(num(&r, "publishers"), 10.0);

    let mut args = vec!["all-to-all", "--members", "8", "--rate", "10"];
    args.extend(BRIEF);
    let r = loadtest(&server, &args).await;
    assert!(num(&r, "delivered_ratio") > 0.99, "{r}");
    assert_eq!(num(&r, "publishers"), 8.0);

    let mut args = vec![
        "churn",
        "--rooms",
        "2",
        "--members",
        "10",
        "--reconnect-share",
        "0.5",
    ];
    args.extend(BRIEF);
    let r = loadtest(&server, &args).await;
    assert!(num(&r, "reconnects") > 0.0, "{r}");
    assert_eq!(num(&r, "reconnect_failures"), 0.0, "{r}");

    let mut args = vec![
        "slow-consumer",
        "--members",
        "10",
        "--slow",
        "1",
        "--rate",
        "20",
    ];
    args.extend(BRIEF);
    let r = loadtest(&server, &args).await;
    assert!(
        num(&r, "delivered_ratio") > 0.99,
        "the other members are served: {r}"
    );
    assert!(r.get("slow_consumer_close_code").is_some(), "{r}");

    let mut args = vec![
        "failover",
        "--members",
        "5",
        "--rate",
        "20",
        "--command",
        "true",
        "--at-secs",
        "0",
    ];
    args.extend(BRIEF);
    let r = loadtest(&server, &args).await;
    assert_eq!(r["failover_command_ok"], true);
    assert_eq!(num(&r, "duplicates"), 0.0, "{r}");
    assert_eq!(num(&r, "lost"), 0.0, "{r}");
    assert!(num(&r, "failover_recovery_ms") < 1000.0, "{r}");
}
