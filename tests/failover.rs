//! A dynamic cluster of real processes: redis-server, PostgreSQL, a placement replica, two
//! nodes heartbeating into Redis and a gateway following placement. Nodes die, stall and
//! lose Redis; rooms keep a single owner and no acknowledged write is lost.

mod common;

use common::process::{spawn_role, RoleProcess};
use common::*;
use conclave_proto::{Ring, RingVersion, RoomKey};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEARTBEAT: &[&str] = &["--heartbeat-ms", "200", "--heartbeat-ttl-ms", "1000"];

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

struct Cluster {
    redis: redis::RedisServer,
    nodes: Vec<RoleProcess>,
    node_args: Vec<Vec<String>>,
    gateway: RoleProcess,
    _placement: RoleProcess,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let redis = redis::RedisServer::start();
        let postgres = postgres::fresh_database().await;
        let dir = tempfile::tempdir().unwrap();
        let mut p = args(&[
            "placement",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            &redis.url(),
        ]);
        p.extend(args(HEARTBEAT));
        let placement = spawn_role(&p, 1).await;
        let placement_url = format!("http://{}", placement.addrs[0]);
        let mut nodes = Vec::new();
        let mut node_args = Vec::new();
        for id in ["a", "b"] {
            let mut n = args(&[
                "node",
                "--id",
                id,
                "--relay-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ]);
            n.extend(args(&[
                "--redis-url",
                &redis.url(),
                "--placement",
                &placement_url,
                "--postgres-url",
                &postgres,
            ]));
            n.extend(args(&["--data-dir", dir.path().join(id).to_str().unwrap()]));
            n.extend(args(HEARTBEAT));
            n.extend(args(&["--admin-token", "test-admin-token"]));
            nodes.push(spawn_role(&n, 2).await);
            node_args.push(n);
        }
        let gateway = spawn_role(
            &args(&[
                "gateway",
                "--port",
                "0",
                "--placement",
                &placement_url,
                "--admin-token",
                "test-admin-token",
            ]),
            1,
        )
        .await;
        let cluster = Self {
            redis,
            nodes,
            node_args,
            gateway,
            _placement: placement,
            _dir: dir,
        };
        // Both nodes placed and serving: every one of a few rooms answers.
        for i in 0..8 {
            cluster.wait_for_value(&format!("warm{i}"), 0).await;
        }
        cluster
    }

    /// A socket on a counter room through the gateway.
    async fn connect(&self, room: &str) -> Ws {
        tokio_tungstenite::connect_async(format!("ws://{}/parties/counter/{room}", self.gw()))
            .await
            .unwrap()
            .0
    }

    fn gw(&self) -> &str {
        &self.gateway.addrs[0]
    }

    /// Polls the counter room over HTTP until it answers `value`; returns how long it took.
    async fn wait_for_value(&self, room: &str, value: i64) -> Duration {
        let started = Instant::now();
        let want = format!(r#"{{"value":{value}}}"#);
        let mut last = String::new();
        while started.elapsed() < Duration::from_secs(20) {
            last = raw_http(
                self.gw().parse().unwrap(),
                &format!(
                    "GET /parties/counter/{room} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                ),
            )
            .await
            .1;
            if last == want {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("room {room} never answered {want}; last answer: {last:?}");
    }

    /// Increments through a fresh socket, retrying while the room moves; the value the
    /// room acknowledged.
    async fn incr(&self, room: &str) -> i64 {
        for _ in 0..200 {
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!(
                "ws://{}/parties/counter/{room}",
                self.gw()
            ))
            .await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            send(&mut ws, "incr").await;
            if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) =
                tokio::time::timeout(Duration::from_secs(2), futures::StreamExt::next(&mut ws))
                    .await
            {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                return v["value"].as_i64().unwrap();
            }
        }
        panic!("could not increment {room}");
    }
}

/// A room the ring places on node `id` while both nodes live.
fn room_on(id: &str) -> String {
    let ring = Ring::new(RingVersion(1), ["a".to_string(), "b".to_string()]);
    (0..)
        .map(|i| format!("r{i}"))
        .find(|r| ring.owner(&RoomKey::new("counter", r).unwrap()) == Some(id))
        .unwrap()
}

/// The next counter value the socket hears, failing after `secs`.
async fn next_value(ws: &mut Ws, secs: u64) -> i64 {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(secs), futures::StreamExt::next(ws))
            .await
            .expect("no answer in time");
        match msg {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                return v["value"].as_i64().unwrap();
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                panic!("the socket was closed: {f:?}")
            }
            Some(Ok(_)) => continue,
            other => panic!("the socket failed: {other:?}"),
        }
    }
}

#[tokio::test]
async fn killed_owner_rooms_serve_again_on_the_other_node_without_closing_sockets() {
    let mut cluster = Cluster::start().await;
    let room = room_on("a");
    assert_eq!(cluster.incr(&room).await, 1);
    let mut client = cluster.connect(&room).await;

    cluster.nodes[0].signal("-KILL");
    let killed = Instant::now();
    // The socket stays open; its frame reaches the room on its new node.
    send(&mut client, "incr").await;
    assert_eq!(
        next_value(&mut client, 10).await,
        2,
        "no acknowledged increment lost, none repeated"
    );
    println!(
        "room served again {:?} after kill -9 of its owner",
        killed.elapsed()
    );

    // The node comes back: the ring places the room on it again, node b hands it over,
    // the socket follows, and the count goes on from where it was.
    let args = cluster.node_args[0].clone();
    cluster.nodes[0] = spawn_role(&args, 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&mut client, "incr").await;
    assert_eq!(next_value(&mut client, 10).await, 3);
    assert_eq!(cluster.incr(&room).await, 4);
    let info = admin_room(&cluster, &room).await;
    assert_eq!(info["node"]["owner"]["node"], "a", "{info}");
}

/// The gateway's admin view of a counter room.
async fn admin_room(cluster: &Cluster, room: &str) -> serde_json::Value {
    let (status, body) = raw_http(
        cluster.gw().parse().unwrap(),
        &format!("GET /admin/rooms/counter/{room} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer test-admin-token\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn a_stalled_owner_is_replaced_and_fenced_when_it_resumes() {
    let mut cluster = Cluster::start().await;
    let room = room_on("a");
    assert_eq!(cluster.incr(&room).await, 1);
    // A client held on node a across the stall.
    let mut client = cluster.connect(&room).await;

    cluster.nodes[0].signal("-STOP");
    // This frame reaches the stopped node's socket buffer and waits there. Once placement
    // drops a (heartbeat TTL), the gateway moves the socket to b and replays the frame;
    // when a resumes, it must not apply the copy it holds.
    send(&mut client, "incr").await;
    assert_eq!(next_value(&mut client, 10).await, 2);
    assert_eq!(cluster.incr(&room).await, 3);
    cluster.nodes[0].signal("-CONT");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The resumed node fenced itself (and storage refuses its writes anyway): the count
    // goes on at b, and nothing the stalled node held landed.
    send(&mut client, "incr").await;
    assert_eq!(
        next_value(&mut client, 10).await,
        4,
        "the stale write did not land"
    );
    assert_eq!(cluster.incr(&room).await, 5);

    // Redis restarts (empty): nodes re-announce themselves and rooms keep being served.
    cluster.redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.redis.restart();
    let mut seen = vec![5];
    for _ in 0..3 {
        seen.push(cluster.incr(&room).await);
    }
    assert_eq!(seen, vec![5, 6, 7, 8], "values handed out twice or skipped");
    send(&mut client, "incr").await;
    assert_eq!(
        next_value(&mut client, 10).await,
        9,
        "the held socket still works"
    );
}

#[tokio::test]
async fn draining_a_node_hands_its_rooms_over_and_exits() {
    let mut cluster = Cluster::start().await;
    let room = room_on("a");
    assert_eq!(cluster.incr(&room).await, 1);
    let mut client = cluster.connect(&room).await;
    let admin: std::net::SocketAddr = cluster.nodes[0].addrs[1].parse().unwrap();
    let drain = |token: &str| {
        format!("POST /admin/drain HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    };
    assert_eq!(raw_http(admin, &drain("wrong")).await.0, 401);
    assert_eq!(raw_http(admin, &drain("test-admin-token")).await.0, 202);

    let status = tokio::time::timeout(Duration::from_secs(15), cluster.nodes[0].child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "a drained node exits cleanly: {status}");
    send(&mut client, "incr").await;
    assert_eq!(
        next_value(&mut client, 10).await,
        2,
        "the room moved with its state, and the socket with it"
    );
}

/// Increments its own counter room every few milliseconds over one socket until `stop`;
/// panics if the socket closes or a value is skipped or repeated. Returns the last value.
async fn steady_client(gw: String, room: String, stop: Arc<AtomicBool>) -> i64 {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{gw}/parties/counter/{room}"))
        .await
        .unwrap();
    let mut expected = 1;
    while !stop.load(Ordering::Relaxed) {
        send(&mut ws, "incr").await;
        let v = next_value(&mut ws, 15).await;
        assert_eq!(v, expected, "room {room}: value skipped or repeated");
        expected += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expected - 1
}

#[tokio::test]
async fn rolling_restart_of_every_node_disconnects_no_client() {
    let mut cluster = Cluster::start().await;
    let rooms: Vec<String> = (0..3)
        .map(|i| format!("roll-a{i}"))
        .chain((0..3).map(|i| format!("roll-b{i}")))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = rooms
        .iter()
        .map(|room| {
            tokio::spawn(steady_client(
                cluster.gw().to_string(),
                room.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..cluster.nodes.len() {
        let admin: std::net::SocketAddr = cluster.nodes[i].addrs[1].parse().unwrap();
        let drain = "POST /admin/drain HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer test-admin-token\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        assert_eq!(raw_http(admin, drain).await.0, 202);
        let status = tokio::time::timeout(Duration::from_secs(15), cluster.nodes[i].child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "node {i} drained: {status}");
        let args = cluster.node_args[i].clone();
        cluster.nodes[i] = spawn_role(&args, 2).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for (room, c) in rooms.iter().zip(clients) {
        let count = c.await.expect("a client failed (see its panic)");
        assert!(count > 10, "room {room}: only {count} increments");
        cluster.wait_for_value(room, count).await;
    }
}

#[tokio::test]
async fn admin_endpoints_show_the_ring_and_room_owners() {
    let cluster = Cluster::start().await;
    let room = room_on("b");
    assert_eq!(cluster.incr(&room).await, 1);
    let gw: std::net::SocketAddr = cluster.gw().parse().unwrap();
    let get = |path: &str, token: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
    };
    assert_eq!(raw_http(gw, &get("/admin/cluster", "nope")).await.0, 401);

    let (status, body) = raw_http(gw, &get("/admin/cluster", "test-admin-token")).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["ring_version"].as_u64().unwrap() >= 1);
    let ids: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);

    let (status, body) = raw_http(
        gw,
        &get(&format!("/admin/rooms/counter/{room}"), "test-admin-token"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ring_owner"], "b");
    assert_eq!(v["node"]["node"], "b");
    assert_eq!(v["node"]["owner"]["node"], "b");
    assert!(v["node"]["owner"]["epoch"].as_u64().unwrap() >= 1);
    assert_eq!(v["node"]["owner"]["released"], false);
}

/// Increments the counter room in a loop until `until`, reconnecting whenever the socket
/// closes; returns every value the room acknowledged and how often it had to reconnect.
async fn increment_until(gw: String, room: String, until: Instant) -> (Vec<i64>, usize) {
    let mut acked = Vec::new();
    let mut connects = 0;
    while Instant::now() < until {
        connects += 1;
        let Ok((mut ws, _)) =
            tokio_tungstenite::connect_async(format!("ws://{gw}/parties/counter/{room}")).await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while Instant::now() < until {
            if futures::SinkExt::send(
                &mut ws,
                tokio_tungstenite::tungstenite::Message::text("incr"),
            )
            .await
            .is_err()
            {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut ws))
                .await
            {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    acked.push(v["value"].as_i64().unwrap());
                }
                Ok(Some(Ok(_))) => {}
                _ => break, // closed or stuck: reconnect
            }
        }
    }
    (acked, connects - 1)
}

#[tokio::test]
async fn concurrent_counter_checker_through_a_kill_finds_no_duplicate_and_no_lost_increment() {
    let cluster = Cluster::start().await;
    let room = room_on("a");
    let until = Instant::now() + Duration::from_secs(4);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(increment_until(
                cluster.gw().to_string(),
                room.clone(),
                until,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.nodes[0].signal("-KILL");
    let mut acked = Vec::new();
    for w in workers {
        let (values, reconnects) = w.await.unwrap();
        assert_eq!(reconnects, 0, "a client socket was closed by the failover");
        acked.extend(values);
    }
    let total = acked.len();
    acked.sort();
    acked.dedup();
    assert_eq!(acked.len(), total, "a value was handed out twice");
    assert!(
        total > 20,
        "too few increments acknowledged to mean anything: {total}"
    );
    // Every acknowledged increment is in the final value (unacknowledged ones may be too).
    let body = raw_http(
        cluster.gw().parse().unwrap(),
        &format!("GET /parties/counter/{room} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .await
    .1;
    let final_value = serde_json::from_str::<serde_json::Value>(&body).unwrap()["value"]
        .as_i64()
        .unwrap();
    assert!(
        final_value >= total as i64,
        "{total} increments acknowledged, counter at {final_value}"
    );
    assert!(final_value >= *acked.last().unwrap());
}
