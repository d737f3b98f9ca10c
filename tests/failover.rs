//! A dynamic cluster of real processes: redis-server, PostgreSQL, a placement replica, two
//! nodes heartbeating into Redis and a gateway following placement. Nodes die, stall and
//! lose Redis; rooms keep a single owner and no acknowledged write is lost.

mod common;

use common::process::{spawn_role, RoleProcess};
use common::*;
use conclave_proto::{Ring, RingVersion, RoomKey};
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

#[tokio::test]
async fn killed_owner_rooms_serve_again_on_the_other_node_with_their_state() {
    let mut cluster = Cluster::start().await;
    let room = room_on("a");
    assert_eq!(cluster.incr(&room).await, 1);
    let mut client = cluster.connect(&room).await;

    cluster.nodes[0].signal("-KILL");
    // Its clients are told to reconnect, not left hanging.
    assert_eq!(close_code(&mut client).await, 1012);
    let took = cluster.wait_for_value(&room, 1).await;
    println!("room served again {took:?} after kill -9 of its owner");
    assert_eq!(
        cluster.incr(&room).await,
        2,
        "no acknowledged increment lost, none repeated"
    );

    // The node comes back: the ring places the room on it again, the other node hands it
    // over, and its count goes on from where it was.
    let mut on_b = cluster.connect(&room).await;
    let args = cluster.node_args[0].clone();
    cluster.nodes[0] = spawn_role(&args, 2).await;
    assert_eq!(close_code(&mut on_b).await, 1012, "the room left node b");
    assert_eq!(cluster.incr(&room).await, 3);
    assert_eq!(cluster.incr(&room).await, 4);
}

#[tokio::test]
async fn a_stalled_owner_is_replaced_and_fenced_when_it_resumes() {
    let mut cluster = Cluster::start().await;
    let room = room_on("a");
    assert_eq!(cluster.incr(&room).await, 1);
    // A client held on node a across the stall.
    let mut stale = tokio_tungstenite::connect_async(format!(
        "ws://{}/parties/counter/{room}?_pk=stale",
        cluster.gw()
    ))
    .await
    .unwrap()
    .0;

    cluster.nodes[0].signal("-STOP");
    // Longer than the heartbeat TTL: placement drops a, b takes the room over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(cluster.incr(&room).await, 2);
    cluster.nodes[0].signal("-CONT");

    // The resumed node must not serve the room: the stale client's increment is never
    // acknowledged (its node fenced itself, and storage would refuse the write anyway).
    send(&mut stale, "incr").await;
    let answer =
        tokio::time::timeout(Duration::from_secs(3), futures::StreamExt::next(&mut stale)).await;
    if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) = answer {
        panic!("a stalled node answered after being replaced: {t}");
    }
    assert_eq!(cluster.incr(&room).await, 3, "the stale write did not land");

    // Redis restarts (empty): nodes re-announce themselves and rooms keep being served.
    cluster.redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.redis.restart();
    let mut seen = vec![3];
    for _ in 0..3 {
        seen.push(cluster.incr(&room).await);
    }
    assert_eq!(seen, vec![3, 4, 5, 6], "values handed out twice or skipped");
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

    assert_eq!(
        close_code(&mut client).await,
        1012,
        "clients are sent to the new owner"
    );
    assert_eq!(
        cluster.incr(&room).await,
        2,
        "the room moved with its state"
    );
    let status = tokio::time::timeout(Duration::from_secs(15), cluster.nodes[0].child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "a drained node exits cleanly: {status}");
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
/// closes; returns every value the room acknowledged.
async fn increment_until(gw: String, room: String, until: Instant) -> Vec<i64> {
    let mut acked = Vec::new();
    while Instant::now() < until {
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
            match tokio::time::timeout(Duration::from_secs(3), futures::StreamExt::next(&mut ws))
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
    acked
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
        acked.extend(w.await.unwrap());
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
