//! A static cluster of real processes: two `conclave node`s sharing one real PostgreSQL
//! database and two `conclave gateway`s, on free ports, talking gRPC; clients on
//! different gateways share rooms.

mod common;

use common::process::{spawn_role, RoleProcess};
use common::*;
use std::time::Duration;

struct Cluster {
    nodes: Vec<RoleProcess>,
    gateways: Vec<RoleProcess>,
    node_args: Vec<Vec<String>>,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let postgres = common::postgres::fresh_database().await;
        let mut nodes = Vec::new();
        let mut node_args = Vec::new();
        for id in ["a", "b"] {
            // Fixed relay ports would collide between test runs: bind :0, read it back.
            let data = dir.path().join(id);
            let args: Vec<String> = [
                "node",
                "--id",
                id,
                "--relay-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--data-dir",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([
                data.display().to_string(),
                "--postgres-url".into(),
                postgres.clone(),
            ])
            .collect();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(spawn_role(&refs, 2).await);
            node_args.push(args);
        }
        let list = format!(
            "a=http://{},b=http://{}",
            nodes[0].addrs[0], nodes[1].addrs[0]
        );
        let mut gateways = Vec::new();
        for _ in 0..2 {
            gateways.push(spawn_role(&["gateway", "--port", "0", "--nodes", &list], 1).await);
        }
        Self {
            nodes,
            gateways,
            node_args,
            dir,
        }
    }

    fn gateway(&self, i: usize) -> &str {
        &self.gateways[i].addrs[0]
    }

    /// Restarts node `i` on the same relay port and data dir.
    async fn restart_node(&mut self, i: usize) {
        let relay = self.nodes[i].addrs[0].clone();
        let mut args = self.node_args[i].clone();
        args[4] = relay;
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes[i] = spawn_role(&refs, 2).await;
    }
}

async fn ws(gateway: &str, path: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{gateway}{path}"))
        .await
        .unwrap()
        .0
}

async fn get(addr: &str, path: &str) -> String {
    raw_http(
        addr.parse().unwrap(),
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .await
    .1
}

#[tokio::test]
async fn clients_on_different_gateways_share_rooms() {
    let cluster = Cluster::start().await;
    // relay
    let mut a = ws(cluster.gateway(0), "/parties/main/shared?_pk=alice").await;
    let mut b = ws(cluster.gateway(1), "/parties/main/shared?_pk=bob").await;
    send(&mut a, "hello from gateway 0").await;
    assert_eq!(next_text(&mut b).await, "hello from gateway 0");
    send(&mut b, "hello from gateway 1").await;
    assert_eq!(next_text(&mut a).await, "hello from gateway 1");
    assert!(
        silent_for(&mut a, 200).await,
        "the sender got its own message"
    );

    // chat: both see the message, with one id sequence
    let mut c1 = ws(cluster.gateway(0), "/parties/chat/lobby?_pk=c1").await;
    let mut c2 = ws(cluster.gateway(1), "/parties/chat/lobby?_pk=c2").await;
    next_json(&mut c1).await;
    next_json(&mut c2).await;
    send(&mut c2, r#"{"type":"message","text":"hi all"}"#).await;
    let m1 = next_json(&mut c1).await;
    let m2 = next_json(&mut c2).await;
    assert_eq!(m1, m2);
    assert_eq!(
        (m1["from"].as_str(), m1["id"].as_u64()),
        (Some("c2"), Some(1))
    );

    // HTTP through either gateway reaches the same room
    let body = get(cluster.gateway(1), "/parties/main/shared").await;
    assert!(body.contains("\"connections\":2"), "{body}");
}

#[tokio::test]
async fn rooms_spread_over_nodes_and_survive_a_node_restart() {
    let mut cluster = Cluster::start().await;
    for i in 0..20 {
        let mut c = ws(
            cluster.gateway(i % 2),
            &format!("/parties/counter/c{i}?_pk=x"),
        )
        .await;
        send(&mut c, "incr").await;
        assert_eq!(next_json(&mut c).await["value"], 1);
    }
    let rooms_on = |body: String| -> f64 {
        ["conclave_rooms_active", "conclave_rooms_hibernated"]
            .iter()
            .filter_map(|m| {
                body.lines().find_map(|l| {
                    l.strip_prefix(m)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
            })
            .sum()
    };
    let on_a = rooms_on(get(&cluster.nodes[0].addrs[1], "/metrics").await);
    let on_b = rooms_on(get(&cluster.nodes[1].addrs[1], "/metrics").await);
    assert_eq!(on_a + on_b, 20.0);
    assert!(
        on_a > 0.0 && on_b > 0.0,
        "all rooms on one node: a={on_a} b={on_b}"
    );

    // kill -9 node a. This static cluster has no placement, so a's rooms have nowhere else
    // to go: their sockets stay open, waiting for a to come back.
    let mut sockets = Vec::new();
    for i in 0..20 {
        sockets.push(ws(cluster.gateway(0), &format!("/parties/counter/c{i}?_pk=y")).await);
    }
    cluster.nodes[0].child.kill().await.unwrap();
    for (i, s) in sockets.iter_mut().enumerate() {
        assert!(silent_for(s, 20).await, "socket c{i} heard something");
    }

    // Restarted, every room answers with its durable state (kept in PostgreSQL), and the
    // sockets that waited are in their rooms again.
    cluster.restart_node(0).await;
    let mut ok = false;
    for _ in 0..50 {
        let body = get(cluster.gateway(0), "/parties/counter/c0").await;
        if body == r#"{"value":1}"# {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "room did not come back after the node restart");
    for (i, s) in sockets.iter_mut().enumerate() {
        send(s, "incr").await;
        assert_eq!(next_json(s).await["value"], 2, "room c{i}");
    }
    assert!(
        !cluster.dir.path().join("a/conclave.redb").exists(),
        "node a should store rooms in PostgreSQL"
    );
    for i in 0..20 {
        let body = get(cluster.gateway(1), &format!("/parties/counter/c{i}")).await;
        assert_eq!(body, r#"{"value":2}"#, "room c{i}");
    }
}

#[tokio::test]
async fn a_stale_process_is_fenced_and_its_late_writes_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = common::postgres::fresh_database().await;
    let node = |data: &str| {
        let data = dir.path().join(data).display().to_string();
        let pg = postgres.clone();
        async move {
            let args = [
                "node",
                "--id",
                "a",
                "--relay-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ];
            let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            args.extend(["--data-dir".into(), data, "--postgres-url".into(), pg]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            spawn_role(&refs, 2).await
        }
    };
    // Two processes claiming to be node "a" (say, a stalled one and its replacement),
    // each behind its own gateway, over one database.
    let old = node("old").await;
    let old_gw = spawn_role(
        &[
            "gateway",
            "--port",
            "0",
            "--nodes",
            &format!("a=http://{}", old.addrs[0]),
        ],
        1,
    )
    .await;
    let mut stale = ws(&old_gw.addrs[0], "/parties/counter/x?_pk=stale").await;
    send(&mut stale, "incr").await;
    assert_eq!(next_json(&mut stale).await["value"], 1);

    let new = node("new").await;
    let new_gw = spawn_role(
        &[
            "gateway",
            "--port",
            "0",
            "--nodes",
            &format!("a=http://{}", new.addrs[0]),
        ],
        1,
    )
    .await;
    let mut fresh = ws(&new_gw.addrs[0], "/parties/counter/x?_pk=fresh").await;
    send(&mut fresh, "incr").await;
    assert_eq!(
        next_json(&mut fresh).await["value"],
        2,
        "the new process reads the durable value"
    );

    // The old process still thinks it owns the room: its commit is refused by fencing, so
    // its client never hears a count from it. The client's socket stays open and the frame
    // is not lost: it is replayed to the room's owner and applied exactly once.
    send(&mut stale, "incr").await;
    assert_eq!(
        next_json(&mut stale).await["value"],
        3,
        "the replayed increment is applied once, on top of the durable value"
    );
    assert_eq!(
        get(&old_gw.addrs[0], "/parties/counter/x").await,
        r#"{"value":3}"#
    );
}
