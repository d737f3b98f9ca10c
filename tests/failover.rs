//! A dynamic cluster of real processes: redis-server, PostgreSQL, a placement replica, two
//! nodes heartbeating into Redis and a gateway following placement. Nodes die, stall and
//! lose Redis; rooms keep a single owner and no acknowledged write is lost.

mod common;

use common::cluster::{room_on, Cluster};
use common::*;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn dynamic_cluster() -> Cluster {
    Cluster::builder()
        .nodes(["a", "b"])
        .placement()
        .heartbeat(Duration::from_millis(200), Duration::from_secs(1))
        .start()
        .await
}

/// A counter room the ring of both nodes places on `id`.
fn counter_room_on(id: &str) -> String {
    room_on("counter", &["a", "b"], id)
}

/// The counter room's value over HTTP through the gateway, if it answers.
async fn counter_value(cluster: &Cluster, room: &str) -> Option<i64> {
    let (_, body) = cluster.get(0, &format!("/parties/counter/{room}")).await;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["value"].as_i64()
}

/// Polls the counter room over HTTP until it answers `value`.
async fn wait_for_value(cluster: &Cluster, room: &str, value: i64) {
    let answered = eventually_within(Duration::from_secs(20), async || {
        counter_value(cluster, room).await == Some(value)
    })
    .await;
    assert!(
        answered,
        "room {room} never answered {value}; last answer: {:?}",
        counter_value(cluster, room).await
    );
}

/// Sends `incr` and reads the value the room acknowledges; `None` if the socket closed,
/// failed or stayed silent for `within`.
async fn try_incr(ws: &mut Ws, within: Duration) -> Option<i64> {
    futures::SinkExt::send(ws, tokio_tungstenite::tungstenite::Message::text("incr"))
        .await
        .ok()?;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, futures::StreamExt::next(ws)).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                return v["value"].as_i64();
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) => return None,
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Increments through a fresh socket, retrying while the room moves; the value the room
/// acknowledged.
async fn incr(cluster: &Cluster, room: &str) -> i64 {
    for _ in 0..200 {
        let path = format!("/parties/counter/{room}");
        let Ok(mut ws) = try_ws_connect(cluster.gateway(0), &path).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if let Some(v) = try_incr(&mut ws, Duration::from_secs(2)).await {
            return v;
        }
    }
    panic!("could not increment {room}");
}

/// The next counter value the socket hears, failing after `secs` or if the socket closes.
async fn next_value(ws: &mut Ws, secs: u64) -> i64 {
    let text = next_text_within(ws, Duration::from_secs(secs)).await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["value"].as_i64().unwrap()
}

/// A dynamic cluster, a counter room on node a that counted to 1, and a client socket in
/// that room.
async fn counted_once_on_a() -> (Cluster, String, Ws) {
    let cluster = dynamic_cluster().await;
    let room = counter_room_on("a");
    assert_eq!(incr(&cluster, &room).await, 1);
    let client = cluster.ws(0, &format!("/parties/counter/{room}")).await;
    (cluster, room, client)
}

/// The gateway's admin view of a counter room.
async fn admin_room(cluster: &Cluster, room: &str) -> serde_json::Value {
    cluster
        .admin(0, &format!("/admin/rooms/counter/{room}"))
        .await
}

#[tokio::test]
async fn killed_owner_rooms_serve_again_on_the_other_node_without_closing_sockets() {
    let (mut cluster, room, mut client) = counted_once_on_a().await;

    cluster.signal("a", "-KILL");
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
    cluster.restart("a").await;
    cluster.wait_until_placed().await;
    send(&mut client, "incr").await;
    assert_eq!(next_value(&mut client, 10).await, 3);
    assert_eq!(incr(&cluster, &room).await, 4);
    let info = admin_room(&cluster, &room).await;
    assert_eq!(info["node"]["owner"]["node"], "a", "{info}");
}

#[tokio::test]
async fn a_stalled_owner_is_replaced_and_fenced_when_it_resumes() {
    // A client held on node a across the stall.
    let (mut cluster, room, mut client) = counted_once_on_a().await;

    cluster.signal("a", "-STOP");
    // This frame reaches the stopped node's socket buffer and waits there. Once placement
    // drops a (heartbeat TTL), the gateway moves the socket to b and replays the frame;
    // when a resumes, it must not apply the copy it holds.
    send(&mut client, "incr").await;
    assert_eq!(next_value(&mut client, 10).await, 2);
    assert_eq!(incr(&cluster, &room).await, 3);
    cluster.signal("a", "-CONT");
    // The resumed node has handled what it held (its held frame, refused by storage) and
    // fenced itself once it is back on the ring.
    cluster.wait_until_placed().await;

    // The resumed node fenced itself (and storage refuses its writes anyway): the count
    // goes on, and nothing the stalled node held landed.
    send(&mut client, "incr").await;
    assert_eq!(
        next_value(&mut client, 10).await,
        4,
        "the stale write did not land"
    );
    assert_eq!(incr(&cluster, &room).await, 5);

    // Redis restarts (empty) after an outage shorter than the nodes' fencing timeout:
    // nodes re-announce themselves and rooms keep being served.
    cluster.redis().stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.redis().restart().await;
    let mut seen = vec![5];
    for _ in 0..3 {
        seen.push(incr(&cluster, &room).await);
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
    let (mut cluster, _, mut client) = counted_once_on_a().await;
    assert_eq!(cluster.drain_with("a", "wrong").await, 401);
    cluster.drain("a").await;

    let status = cluster.exit_status("a", Duration::from_secs(15)).await;
    assert!(status.success(), "a drained node exits cleanly: {status}");
    send(&mut client, "incr").await;
    assert_eq!(
        next_value(&mut client, 10).await,
        2,
        "the room moved with its state, and the socket with it"
    );
}

/// A node that hands a room back and stays up forgets the room's sockets: the gateway
/// answers its `Moved` with a `Detach` for each (or the node would hold every socket that
/// ever left it, for as long as the gateway's link lasts).
#[tokio::test]
async fn a_node_that_hands_a_room_back_forgets_its_sockets() {
    let mut cluster = dynamic_cluster().await;
    let room = counter_room_on("a");
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut ws = cluster
            .ws(0, &format!("/parties/counter/{room}?_pk=c{i}"))
            .await;
        assert!(try_incr(&mut ws, Duration::from_secs(10)).await.is_some());
        clients.push(ws);
    }
    let sockets_on = async |cluster: &Cluster, node: &str, n: f64| {
        let there = cluster
            .node_metric_reaches(node, "conclave_node_sockets", n, Duration::from_secs(20))
            .await;
        let now = cluster.node_metric(node, "conclave_node_sockets").await;
        assert!(there, "node {node} holds {now:?} sockets, not {n}");
    };
    // The room goes to b while a is away, then back to a.
    cluster.drain("a").await;
    let status = cluster.exit_status("a", Duration::from_secs(15)).await;
    assert!(status.success(), "a drained node exits cleanly: {status}");
    sockets_on(&cluster, "b", 3.0).await;
    cluster.restart("a").await;
    cluster.wait_until_placed().await;
    sockets_on(&cluster, "a", 3.0).await;
    sockets_on(&cluster, "b", 0.0).await;
    for ws in &mut clients {
        assert!(
            try_incr(ws, Duration::from_secs(10)).await.is_some(),
            "a socket did not come back with the room"
        );
    }
}

/// The next chat message a socket hears: its text.
async fn next_chat_text(ws: &mut Ws, secs: u64) -> String {
    let text = next_text_within(ws, Duration::from_secs(secs)).await;
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["type"], "message", "{m}");
    m["text"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_socket_that_re_attaches_after_the_room_moved_and_broadcast_still_gets_the_broadcast() {
    let cluster = Cluster::builder()
        .nodes(["a", "b"])
        .gateways(2)
        .placement()
        .heartbeat(Duration::from_millis(200), Duration::from_secs(1))
        .start()
        .await;
    let path = format!("/parties/chat/{}", room_on("chat", &["a", "b"], "a"));
    let mut early = cluster.ws(0, &path).await;
    let mut late = cluster.ws(1, &path).await;
    for ws in [&mut early, &mut late] {
        assert_eq!(next_json(ws).await["type"], "history");
    }
    // The late socket's gateway sleeps through the move: the room comes back on b with only
    // the early socket, which says something the room broadcasts to everyone.
    cluster.signal_gateway(1, "-STOP");
    cluster.signal("a", "-KILL");
    send(
        &mut early,
        &serde_json::json!({"type": "message", "text": "while you were away"}).to_string(),
    )
    .await;
    assert_eq!(next_chat_text(&mut early, 10).await, "while you were away");
    cluster.signal_gateway(1, "-CONT");
    assert_eq!(
        next_chat_text(&mut late, 20).await,
        "while you were away",
        "the socket that came back later missed the broadcast"
    );
}

/// The same for a message no storage records (a relay room: the step writes nothing), when
/// the room's node drains: the sockets' gateways re-attach them to the next owner on their
/// own schedules, and one that comes back late still gets what was said meanwhile.
#[tokio::test]
async fn a_socket_back_late_from_a_drain_gets_what_the_room_relayed_meanwhile() {
    let mut cluster = Cluster::builder()
        .nodes(["a", "b"])
        .gateways(2)
        .placement()
        .start()
        .await;
    let path = format!("/parties/main/{}", room_on("main", &["a", "b"], "a"));
    let mut early = cluster.ws(0, &path).await;
    let mut late = cluster.ws(1, &path).await;
    send(&mut early, "before the drain").await;
    assert_eq!(next_text(&mut late).await, "before the drain");
    cluster.signal_gateway(1, "-STOP");
    cluster.drain("a").await;
    let status = cluster.exit_status("a", Duration::from_secs(15)).await;
    assert!(status.success(), "a drained: {status}");
    send(&mut early, "while you were away").await;
    // The early socket's gateway re-attaches it and replays the frame within moments;
    // the late one's gateway is still asleep.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.signal_gateway(1, "-CONT");
    assert_eq!(
        next_text_within(&mut late, Duration::from_secs(20)).await,
        "while you were away",
        "the socket that came back later missed the message"
    );
    send(&mut late, "back").await;
    assert_eq!(next_text(&mut early).await, "back");
}

/// Increments its own counter room over one socket until `stop`, publishing each value in
/// `last`; panics if the socket closes or a value is skipped or repeated.
async fn steady_client(
    gw: std::net::SocketAddr,
    room: String,
    last: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
) {
    let mut ws = ws_connect(gw, &format!("/parties/counter/{room}")).await;
    let mut expected = 1;
    while !stop.load(Ordering::Relaxed) {
        send(&mut ws, "incr").await;
        let v = next_value(&mut ws, 15).await;
        assert_eq!(v, expected, "room {room}: value skipped or repeated");
        last.store(v, Ordering::Relaxed);
        expected += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rolling_restart_of_every_node_disconnects_no_client() {
    let mut cluster = dynamic_cluster().await;
    let rooms: Vec<String> = (0..3)
        .map(|i| format!("roll-a{i}"))
        .chain((0..3).map(|i| format!("roll-b{i}")))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let lasts: Vec<Arc<AtomicI64>> = rooms.iter().map(|_| Arc::default()).collect();
    let clients: Vec<_> = rooms
        .iter()
        .zip(&lasts)
        .map(|(room, last)| {
            tokio::spawn(steady_client(
                cluster.gateway(0),
                room.clone(),
                last.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Every client is counting before the first node goes.
    let counting = async || lasts.iter().all(|l| l.load(Ordering::Relaxed) >= 3);
    assert!(
        eventually(counting).await,
        "the clients did not start counting"
    );
    for id in ["a", "b"] {
        cluster.drain(id).await;
        let status = cluster.exit_status(id, Duration::from_secs(15)).await;
        assert!(status.success(), "node {id} drained: {status}");
        cluster.restart(id).await;
        // Back on every ring before the next node goes.
        cluster.wait_until_placed().await;
    }
    stop.store(true, Ordering::Relaxed);
    for ((room, c), last) in rooms.iter().zip(clients).zip(&lasts) {
        c.await.expect("a client failed (see its panic)");
        let count = last.load(Ordering::Relaxed);
        assert!(count > 10, "room {room}: only {count} increments");
        wait_for_value(&cluster, room, count).await;
    }
}

#[tokio::test]
async fn admin_endpoints_show_the_ring_and_room_owners() {
    let cluster = dynamic_cluster().await;
    let room = counter_room_on("b");
    assert_eq!(incr(&cluster, &room).await, 1);
    assert_eq!(cluster.admin_with(0, "/admin/cluster", "nope").await.0, 401);

    let v = cluster.admin(0, "/admin/cluster").await;
    assert!(v["ring_version"].as_u64().unwrap() >= 1);
    assert_eq!(strings_of(&v["nodes"], "id"), ["a", "b"], "{v}");

    let v = admin_room(&cluster, &room).await;
    assert_eq!(v["ring_owner"], "b");
    assert_eq!(v["node"]["node"], "b");
    assert_eq!(v["node"]["owner"]["node"], "b");
    assert!(v["node"]["owner"]["epoch"].as_u64().unwrap() >= 1);
    assert_eq!(v["node"]["owner"]["released"], false);
}

/// Increments the counter room in a loop until `until` (at most one `incr` per
/// [`common::counting::PACE`]), reconnecting whenever the socket closes; returns every
/// value the room acknowledged and how often it had to reconnect.
async fn increment_until(
    gw: std::net::SocketAddr,
    room: String,
    until: Instant,
) -> (Vec<i64>, usize) {
    let mut acked = Vec::new();
    let mut connects = 0;
    while Instant::now() < until {
        connects += 1;
        let Ok(mut ws) = try_ws_connect(gw, &format!("/parties/counter/{room}")).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while Instant::now() < until {
            let paced = tokio::time::sleep(common::counting::PACE);
            match try_incr(&mut ws, Duration::from_secs(10)).await {
                Some(v) => acked.push(v),
                None => break, // closed or stuck: reconnect
            }
            paced.await;
        }
    }
    (acked, connects - 1)
}

#[tokio::test]
async fn concurrent_counter_checker_through_a_kill_finds_no_duplicate_and_no_lost_increment() {
    counter_through_a_kill_of_its_owner(dynamic_cluster().await).await;
}

/// The same through FoundationDB (`--storage fdb`): scripts/test-fdb.sh runs it on the
/// FoundationDB test double, or on the cluster `FDB_CLUSTER_FILE` names.
#[cfg(feature = "fdb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_through_a_kill_on_foundationdb() {
    let fdb = common::fdb::Fdb::start().await;
    let cluster = Cluster::builder()
        .nodes(["a", "b"])
        .placement()
        .heartbeat(Duration::from_millis(200), Duration::from_secs(1))
        .foundationdb(fdb.cluster_file(), fdb.directory())
        .start()
        .await;
    let increments = counter_through_a_kill_of_its_owner(cluster).await;
    if let Some(commits) = fdb.simulated_commits() {
        // Frames queued behind a commit share the next one: fewer commits than increments.
        assert!(
            commits > 0 && increments > 0,
            "{increments} increments, {commits} commits through the FoundationDB double"
        );
    }
}

/// Four clients increment a counter room on node a while it is killed with -9: no socket
/// closes, no value is handed out twice, and the counter ends at exactly the number of
/// increments acknowledged (each client message takes effect once). Returns that number.
async fn counter_through_a_kill_of_its_owner(cluster: Cluster) -> u64 {
    let room = counter_room_on("a");
    let until = Instant::now() + Duration::from_secs(4);
    let workers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(increment_until(cluster.gateway(0), room.clone(), until)))
        .collect();
    // The workers are counting on node a before it dies.
    let counting = async || counter_value(&cluster, &room).await >= Some(20);
    assert!(
        eventually(counting).await,
        "the workers did not start counting"
    );
    cluster.signal("a", "-KILL");
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
    // No socket closed, so every increment sent was acknowledged, and applied once.
    let final_value = counter_value(&cluster, &room)
        .await
        .expect("the room answers");
    assert_eq!(
        final_value, total as i64,
        "{total} increments acknowledged, counter at {final_value}"
    );
    total as u64
}

/// Finding 4 of issue 11: an owner whose traffic to PostgreSQL is blackholed (its Redis
/// heartbeat fine) held its rooms for as long as the partition lasted. Alive must mean
/// able to serve: the node stops renewing its heartbeat when its store does not answer,
/// fences itself, and the other node takes the room over while the partition lasts.
#[tokio::test]
async fn an_owner_cut_off_from_its_store_gives_its_rooms_up() {
    let database = common::postgres::fresh_database().await;
    let server = common::postgres::server_addr(&database);
    let partition = common::partition::Partition::start(server).await;
    let via_partition = database.replace(&server.to_string(), &partition.addr.to_string());
    let cluster = Cluster::builder()
        .nodes(["a", "b"])
        .placement()
        .heartbeat(Duration::from_millis(200), Duration::from_secs(1))
        .database(&database)
        .node_database("a", &via_partition)
        .start()
        .await;
    let room = counter_room_on("a");
    assert_eq!(incr(&cluster, &room).await, 1);
    let mut client = cluster.ws(0, &format!("/parties/counter/{room}")).await;
    assert_eq!(try_incr(&mut client, Duration::from_secs(5)).await, Some(2));

    partition.cut();
    let cut = Instant::now();
    // Node a cannot commit this; once a fences itself and leaves the ring, the gateway
    // moves the socket to b and replays the frame there. The partition never heals
    // during the wait.
    assert_eq!(
        try_incr(&mut client, Duration::from_secs(15)).await,
        Some(3)
    );
    let gap = cut.elapsed();
    let info = admin_room(&cluster, &room).await;
    assert_eq!(info["node"]["owner"]["node"], "b", "{info}");
    assert!(
        gap < Duration::from_secs(10),
        "the room was silent for {gap:?}"
    );
    partition.heal();
}

/// Redis restarts empty, so the ring it held is gone: placement goes on from the version
/// it had published (a ring that started over at version 1 was ignored by every follower
/// until the count caught up), keeps the nodes for a TTL while they re-announce
/// themselves, and a node that dies afterwards still leaves the ring.
#[tokio::test]
async fn after_redis_restarts_empty_the_ring_goes_on_and_a_dead_node_still_leaves() {
    let mut cluster = dynamic_cluster().await;
    let room = counter_room_on("b");
    assert_eq!(incr(&cluster, &room).await, 1);
    cluster.redis().stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.redis().restart().await;
    assert_eq!(incr(&cluster, &room).await, 2);

    cluster.signal("b", "-KILL");
    let moved = tokio::time::timeout(Duration::from_secs(20), incr(&cluster, &room)).await;
    assert_eq!(
        moved.ok(),
        Some(3),
        "the dead node's room was not taken over"
    );
    let info = admin_room(&cluster, &room).await;
    assert_eq!(info["node"]["owner"]["node"], "a", "{info}");
}

/// Right after Redis restarted empty placement keeps the last ring's nodes for a TTL while
/// they re-announce themselves, but not a node that is draining: it leaves a mark that it
/// left on purpose, and the ring drops it at placement's next poll.
#[tokio::test]
async fn a_drain_right_after_redis_restarts_empty_leaves_the_ring_at_once() {
    let mut cluster = dynamic_cluster().await;
    cluster.redis().stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.redis().restart().await;
    let asked = std::time::Instant::now();
    cluster.drain("a").await;
    let gone = eventually_within(Duration::from_secs(5), async || {
        let v = cluster.admin(0, "/admin/cluster").await;
        strings_of(&v["nodes"], "id") == ["b"]
    })
    .await;
    assert!(gone, "the drained node stayed on the ring");
    eprintln!("drained node off the ring after {:?}", asked.elapsed());
    // Placement keeps absent nodes for a TTL (2 s) from noticing the restart: well inside.
    assert!(
        asked.elapsed() < Duration::from_millis(1200),
        "left the ring only after {:?}",
        asked.elapsed()
    );
}

/// Placement replicas and node heartbeats run as library tasks against a real
/// redis-server: which nodes announce themselves, and when, is the test's to say.
mod liveness {
    use super::common::redis::RedisServer;
    use conclave_placement::publisher::{self, ReplicaHealth};
    use conclave_placement::{LivenessTiming, RedisTarget, RingView};
    use std::time::Duration;
    use tokio::sync::watch;

    fn timing() -> LivenessTiming {
        LivenessTiming::from_heartbeat_and_ttl(Duration::from_millis(200), Duration::from_secs(2))
    }

    /// A placement replica publishing into a channel of its own.
    fn replica(redis: &RedisServer) -> (watch::Receiver<RingView>, tokio::task::JoinHandle<()>) {
        let (rx, _, task) = replica_at(&redis.url());
        (rx, task)
    }

    /// A placement replica reading the Redis at `url`; its rings, and whether they are
    /// current.
    fn replica_at(
        url: &str,
    ) -> (
        watch::Receiver<RingView>,
        watch::Receiver<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = watch::channel(RingView::default());
        let health = ReplicaHealth::default();
        let current = health.current();
        let task = tokio::spawn(publisher::run(
            RedisTarget::new(url),
            timing(),
            tx,
            None,
            health,
        ));
        (rx, current, task)
    }

    /// A replica reading the Redis at `url`, serving its rings over gRPC once they are
    /// current: its URL.
    async fn serving_replica(url: &str) -> String {
        let (rx, mut current, _) = replica_at(url);
        let addr = super::common::net::free_addr();
        let service = conclave_placement::grpc::placement_service(rx, current.clone(), None);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve(addr),
        );
        let read = tokio::time::timeout(Duration::from_secs(10), current.wait_for(|c| *c)).await;
        assert!(read.is_ok(), "the replica did not read Redis");
        format!("http://{addr}")
    }

    /// Heartbeats for `ids`, living longer than any test.
    async fn announce(redis: &RedisServer, ids: &[&str]) {
        let client = ::redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for id in ids {
            let beat = serde_json::json!({ "relay_url": format!("http://{id}.invalid:1") });
            let _: () = ::redis::cmd("SET")
                .arg(conclave_placement::node_key(id))
                .arg(beat.to_string())
                .arg("PX")
                .arg(60_000)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }

    async fn ring_stored(redis: &RedisServer) -> bool {
        let client = ::redis::Client::open(redis.url()).unwrap();
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        ::redis::cmd("EXISTS")
            .arg(conclave_placement::RING_KEY)
            .query_async(&mut conn)
            .await
            .unwrap_or(false)
    }

    async fn ring_with(rx: &mut watch::Receiver<RingView>, n: usize) -> RingView {
        let view = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|v| v.members.len() == n),
        )
        .await
        .expect("no ring of the nodes")
        .unwrap();
        view.clone()
    }

    /// Redis restarts empty and a node's heartbeat is slow to come back. One replica finds
    /// the ring gone and keeps its nodes for a TTL; another replica (here one starting
    /// just then) finds the ring already stored again. It must keep them too, or it
    /// publishes a ring without the node, which then stops serving its rooms.
    #[tokio::test]
    async fn every_replica_keeps_the_nodes_while_they_announce_themselves_again() {
        let mut redis = RedisServer::start().await;
        announce(&redis, &["a", "b", "c"]).await;
        let (mut first, _first) = replica(&redis);
        let before = ring_with(&mut first, 3).await;

        redis.stop();
        redis.restart().await;
        announce(&redis, &["a", "b"]).await;
        assert!(
            super::eventually_within(Duration::from_secs(5), async || ring_stored(&redis).await)
                .await,
            "the ring was not stored again"
        );
        let (second, _second) = replica(&redis);
        // Well inside the TTL (2 s, from the restore) during which c may come back.
        let watched = std::time::Instant::now();
        while watched.elapsed() < Duration::from_millis(1000) {
            for (name, rx) in [("first", &first), ("second", &second)] {
                let view = rx.borrow().clone();
                assert!(
                    view.version.0 == 0 || view.members.contains_key("c"),
                    "the {name} replica published a ring without c: {view:?} (before: {before:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Redis restarts empty and every placement replica with it: none knows the ring's
    /// version any more. Gateways and nodes do, and ignore rings not newer than theirs, so
    /// the versions must not start over.
    #[tokio::test]
    async fn a_ring_published_after_redis_and_placement_restarted_is_newer() {
        let mut redis = RedisServer::start().await;
        announce(&redis, &["a", "b"]).await;
        let (mut first, first_task) = replica(&redis);
        let before = ring_with(&mut first, 2).await;
        first_task.abort();

        redis.stop();
        redis.restart().await;
        announce(&redis, &["a", "b"]).await;
        let (mut second, _second) = replica(&redis);
        let after = ring_with(&mut second, 2).await;
        assert!(
            after.version > before.version,
            "the ring's version went back from {} to {}",
            before.version,
            after.version
        );
    }

    /// The replica gateways and nodes follow first loses Redis while the other still reads
    /// it. A node that dies meanwhile must still leave their ring: the cut-off replica
    /// turns its followers away, and they follow the other one.
    #[tokio::test]
    async fn followers_leave_a_replica_that_cannot_read_redis() {
        let redis = RedisServer::start().await;
        announce(&redis, &["a", "b"]).await;
        let cut_off =
            super::common::partition::Partition::start(([127, 0, 0, 1], redis.port).into()).await;
        let first = serving_replica(&format!("redis://{}", cut_off.addr)).await;
        let second = serving_replica(&redis.url()).await;
        let mut rings = conclave_placement::grpc::follow_placement(
            vec![first, second],
            Default::default(),
            |_| {},
        );
        let followed = tokio::time::timeout(
            Duration::from_secs(10),
            rings.wait_for(|v| v.as_ref().is_some_and(|v| v.members.len() == 2)),
        )
        .await
        .is_ok();
        assert!(followed, "no ring of both nodes");

        cut_off.cut();
        let client = ::redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = ::redis::cmd("DEL")
            .arg(conclave_placement::node_key("b"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let left = tokio::time::timeout(
            Duration::from_secs(10),
            rings.wait_for(|v| v.as_ref().is_some_and(|v| !v.members.contains_key("b"))),
        )
        .await
        .is_ok();
        assert!(
            left,
            "the dead node stayed on the followers' ring: {:?}",
            rings.borrow()
        );
    }

    /// Node `a`'s heartbeat into the Redis at `url` (500 ms, TTL 2 s), asking `fit` whether
    /// its store answers: whether it is fenced (it starts fenced), and its leave switch.
    fn heartbeat(
        url: String,
        fit: impl Fn(Duration) -> futures::future::BoxFuture<'static, bool> + Send + Sync + 'static,
    ) -> (watch::Receiver<bool>, watch::Sender<bool>) {
        let (fences, fenced) = watch::channel(true);
        let (leave_tx, leave) = watch::channel(false);
        let beat = conclave_placement::heartbeat::Beat {
            id: "a".into(),
            relay_url: "http://a.invalid:1".into(),
            incarnation: 1,
            region: conclave_proto::DEFAULT_REGION.into(),
            auth: Default::default(),
        };
        tokio::spawn(conclave_placement::heartbeat::run(
            RedisTarget::new(url),
            beat,
            LivenessTiming::from_heartbeat_and_ttl(
                Duration::from_millis(500),
                Duration::from_secs(2),
            ),
            fit,
            move |f| {
                fences.send_replace(f);
            },
            leave,
        ));
        (fenced, leave_tx)
    }

    /// Whether the node comes to be `fenced` (or not) within 5 s. A heartbeat task that
    /// ended without saying so has not changed it.
    async fn comes_to_be(fenced: &mut watch::Receiver<bool>, want: bool) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(5), fenced.wait_for(|f| *f == want)).await,
            Ok(Ok(_))
        )
    }

    /// A node whose store answers slowly loses Redis (a partition that drops packets).
    /// Each renewal then takes the store's time and the renewal's own timeout: the node
    /// must stop serving when its time since the last renewal is up (1.5 s of a 2 s TTL),
    /// not when the attempt running then ends, after its key expired.
    #[tokio::test]
    async fn a_node_fences_itself_in_time_while_a_renewal_hangs() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let redis = RedisServer::start().await;
        let cut_off =
            super::common::partition::Partition::start(([127, 0, 0, 1], redis.port).into()).await;
        let slow_store = Arc::new(AtomicBool::new(false));
        let slow = slow_store.clone();
        let fit = move |_budget: Duration| -> futures::future::BoxFuture<'static, bool> {
            let slow = slow.load(Ordering::SeqCst);
            Box::pin(async move {
                if slow {
                    tokio::time::sleep(Duration::from_millis(490)).await;
                }
                true
            })
        };
        let (mut fenced, _leave) = heartbeat(format!("redis://{}", cut_off.addr), fit);
        let serving = comes_to_be(&mut fenced, false).await;
        assert!(serving, "the node never renewed its heartbeat");
        // Renewals every 500 ms: the last one before the cut began within 500 ms of it.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        slow_store.store(true, Ordering::SeqCst);
        cut_off.cut();
        let cut = std::time::Instant::now();
        assert!(
            comes_to_be(&mut fenced, true).await,
            "the node went on serving"
        );
        // At most 1.5 s after the last renewal began, which was before the cut.
        assert!(
            cut.elapsed() < Duration::from_millis(1900),
            "the node stopped serving {:?} after the cut, past its 1.5 s",
            cut.elapsed()
        );
    }

    /// A node that leaves the cluster (a drain) stops renewing its heartbeat. It must stop
    /// serving when its time since the last renewal is up even if no ring without it
    /// ever comes (placement cut off, the key's deletion lost with Redis down), as a node
    /// whose renewals fail does.
    #[tokio::test]
    async fn a_node_that_left_stops_serving_when_its_time_is_up() {
        let redis = RedisServer::start().await;
        let (mut fenced, leave_tx) = heartbeat(redis.url(), |_| Box::pin(async { true }));
        let serving = comes_to_be(&mut fenced, false).await;
        assert!(serving, "the node never renewed its heartbeat");
        leave_tx.send_replace(true);
        let left = std::time::Instant::now();
        assert!(
            comes_to_be(&mut fenced, true).await,
            "the node that left went on serving"
        );
        assert!(
            left.elapsed() < Duration::from_millis(1900),
            "it stopped {:?} after leaving, past its 1.5 s",
            left.elapsed()
        );
    }
}
