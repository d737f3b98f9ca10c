//! `--processes N`: the connection scenarios (connect-storm, idle-hold) split over N
//! loadtest processes, each under the per-process open-files limit, and one merged report.
//!
//! The parent re-runs its own command line as N children with `--shard I/N`; child I opens
//! connections I, I+N, I+2N, … and reports its handshake histogram. For idle-hold every
//! child prints `holding` once its connections are open and waits for a line on stdin, so
//! the parent reads the server's memory while all of them hold at once.

use crate::stats::add_latency;
use crate::Report;
use hdrhistogram::Histogram;
use serde_json::Value;
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// This process's shard, when it is a child: (index, count).
static SHARD: OnceLock<(usize, usize)> = OnceLock::new();

/// Parses `I/N` and remembers it for the scenario.
pub fn set_shard(spec: &str) -> anyhow::Result<()> {
    let (i, n) = spec
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        .filter(|(i, n)| i < n)
        .ok_or_else(|| anyhow::anyhow!("--shard takes I/N with I < N"))?;
    let _ = SHARD.set((i, n));
    Ok(())
}

/// (index, count) of this process's shard; (0, 1) when it runs alone.
pub fn shard() -> (usize, usize) {
    SHARD.get().copied().unwrap_or((0, 1))
}

/// Whether this process is a child of a multi-process run.
pub fn is_child() -> bool {
    SHARD.get().is_some()
}

/// How many of `total` items shard `i` of `n` takes (items i, i+n, …).
pub fn share(total: usize, i: usize, n: usize) -> usize {
    total / n + usize::from(i < total % n)
}

/// The global index of a shard's `local`-th item.
pub fn global(local: usize) -> usize {
    let (i, n) = shard();
    i + local * n
}

/// A histogram as `[[value, count], …]`, for the parent to merge.
pub fn histogram_json(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| Value::from(vec![v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

fn merge_histogram(into: &mut Histogram<u64>, json: &Value) {
    for pair in json.as_array().into_iter().flatten() {
        if let (Some(v), Some(c)) = (pair[0].as_u64(), pair[1].as_u64()) {
            let _ = into.record_n(v.max(1), c);
        }
    }
}

/// In a child: says the connections are open and waits for the parent's go.
pub async fn hold_barrier() -> anyhow::Result<()> {
    if !is_child() {
        return Ok(());
    }
    println!("holding");
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await??;
    Ok(())
}

/// Runs the command line again as `processes` children and merges their reports.
/// `server_pids` (idle-hold) are read while every child holds its connections.
pub async fn run_parent(
    scenario: &'static str,
    processes: usize,
    server_pids: &[u32],
) -> anyhow::Result<Report> {
    let dir = tempfile_dir()?;
    let args: Vec<String> = child_args(std::env::args().skip(1).collect());
    let exe = std::env::current_exe()?;
    let rss_before = crate::proc_stats::rss_bytes(server_pids);
    let mut children = Vec::new();
    for i in 0..processes {
        let json = dir.join(format!("shard-{i}.json"));
        let child = tokio::process::Command::new(&exe)
            .args(&args)
            .arg("--shard")
            .arg(format!("{i}/{processes}"))
            .arg("--json")
            .arg(&json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        children.push((child, json));
    }
    let mut rss_holding = None;
    if scenario == "idle-hold" {
        // Wait for every child to hold, read the server's memory, then let them go on.
        for (child, _) in children.iter_mut() {
            let stdout = child.stdout.as_mut().expect("piped");
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await? {
                if line == "holding" {
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        rss_holding = crate::proc_stats::rss_bytes(server_pids);
        for (child, _) in children.iter_mut() {
            if let Some(stdin) = child.stdin.as_mut() {
                stdin.write_all(b"go\n").await?;
            }
        }
    }
    let mut reports = Vec::new();
    for (mut child, json) in children {
        let status = child.wait().await?;
        anyhow::ensure!(
            status.success(),
            "a loadtest child process failed ({status})"
        );
        reports.push(serde_json::from_slice::<Value>(&std::fs::read(&json)?)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(merge(
        scenario,
        processes,
        &reports,
        rss_before.zip(rss_holding),
    ))
}

/// Merges the children's reports: counts add up, rates add up (the children ran at the
/// same time), histograms merge.
fn merge(
    scenario: &'static str,
    processes: usize,
    reports: &[Value],
    rss: Option<(u64, u64)>,
) -> Report {
    let sum = |key: &str| -> f64 { reports.iter().filter_map(|r| r[key].as_f64()).sum() };
    let max = |key: &str| -> f64 {
        reports
            .iter()
            .filter_map(|r| r[key].as_f64())
            .fold(0.0, f64::max)
    };
    let mut handshake = crate::stats::latency_histogram();
    for r in reports {
        merge_histogram(&mut handshake, &r["handshake_hist"]);
    }
    let first_error = reports
        .iter()
        .find_map(|r| r["first_error"].as_str().map(str::to_string));
    let mut report = Report::new(scenario);
    report.add("processes", processes);
    match scenario {
        "connect-storm" => {
            report.add("connections", sum("connections"));
            report.add("concurrency", sum("concurrency"));
            report.add("connected", sum("connected"));
            report.add("failures", sum("failures"));
            if let Some(e) = first_error {
                report.add("first_error", e);
            }
            report.add("seconds", max("seconds"));
            report.add(
                "connects_per_sec",
                sum("connected") / max("seconds").max(1e-9),
            );
        }
        _ => {
            report.add("connections_requested", sum("connections_requested"));
            report.add(
                "connections_open_after_hold",
                sum("connections_open_after_hold"),
            );
            report.add("connect_failures", sum("connect_failures"));
            if let Some(e) = first_error {
                report.add("first_error", e);
            }
            report.add("connects_per_sec", sum("connects_per_sec"));
        }
    }
    add_latency(&mut report, "handshake", &handshake);
    if let Some((before, holding)) = rss {
        let open = sum("connections_open_after_hold");
        report.add("server_rss_before_mib", before as f64 / 1048576.0);
        report.add("server_rss_holding_mib", holding as f64 / 1048576.0);
        if open > 0.0 {
            report.add(
                "server_rss_per_connection_bytes",
                holding.saturating_sub(before) as f64 / open,
            );
        }
    }
    report
}

/// The parent's arguments minus `--processes`, `--json` and their values.
fn child_args(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        if a == "--processes" || a == "--json" {
            skip_value = true;
            continue;
        }
        if a.starts_with("--processes=") || a.starts_with("--json=") {
            continue;
        }
        out.push(a);
    }
    out
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("conclave-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_item_once() {
        for (total, n) in [(10, 3), (3, 5), (20_000, 4), (0, 2)] {
            let shares: Vec<usize> = (0..n).map(|i| share(total, i, n)).collect();
            assert_eq!(shares.iter().sum::<usize>(), total, "{total} over {n}");
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn child_arguments_drop_processes_and_json() {
        let args = [
            "loadtest",
            "idle-hold",
            "--processes",
            "3",
            "--connections",
            "9",
            "--json",
            "x.json",
            "--processes=2",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            child_args(args),
            ["loadtest", "idle-hold", "--connections", "9"]
        );
    }

    #[test]
    fn merged_reports_add_counts_and_merge_histograms() {
        let mut a = crate::stats::latency_histogram();
        let mut b = crate::stats::latency_histogram();
        for us in 1..=100u64 {
            a.record(us * 1000).unwrap(); // 1..100 ms
            b.record(us * 1000 + 100_000).unwrap(); // 101..200 ms
        }
        let child = |connected: u64, secs: f64, h: &Histogram<u64>| {
            serde_json::json!({
                "connections": connected, "concurrency": 10, "connected": connected,
                "failures": 0, "seconds": secs, "handshake_hist": histogram_json(h),
            })
        };
        let r = merge(
            "connect-storm",
            2,
            &[child(100, 1.0, &a), child(100, 2.0, &b)],
            None,
        );
        let get = |k: &str| r.get(k).and_then(Value::as_f64).unwrap();
        assert_eq!(get("connected"), 200.0);
        assert_eq!(
            get("connects_per_sec"),
            100.0,
            "over the slowest child's time"
        );
        assert!((get("handshake_p50_ms") - 100.0).abs() < 1.0);
        assert!((get("handshake_max_ms") - 200.0).abs() < 1.0);
    }
}
