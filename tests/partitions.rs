//! Network partitions, not signals: a dynamic cluster (redis-server, PostgreSQL, placement,
//! nodes a and b, two gateways) whose node a reaches Redis, and is reached by the gateways,
//! through TCP proxies the test cuts and heals (`tests/common/partition.rs`; nothing is
//! killed, no connection is reset). Clients count on a room of a's throughout; after each
//! partition heals, every increment was applied once, every reply came once, and no
//! client socket closed. (The owner cut from PostgreSQL is `tests/failover.rs` and
//! `tests/chaos.rs`.)

mod common;

use common::cluster::{named_room_on, Cluster};
use common::counting::Counting;
use futures::StreamExt;
use std::time::{Duration, Instant};

const NODES: [&str; 2] = ["a", "b"];

async fn cluster_with_a_partitionable() -> (Cluster, String, Counting) {
    let cluster = Cluster::builder()
        .nodes(NODES)
        .placement()
        .gateways(2)
        .partitionable("a")
        .start()
        .await;
    let room = named_room_on("part", "counter", &NODES, "a");
    let mut sockets = Vec::new();
    for i in 0..4 {
        let path = format!("/parties/counter/{room}?_pk=client{i}");
        sockets.push(cluster.ws(i % 2, &path).await);
    }
    let counting = Counting::start(sockets);
    assert!(
        counting
            .all_replied_after(Instant::now(), Duration::from_secs(10))
            .await,
        "the room does not answer"
    );
    (cluster, room, counting)
}

/// The node that holds the room, as gateway 0's admin view reports it.
async fn owner(cluster: &Cluster, room: &str) -> Option<String> {
    let info = cluster
        .admin(0, &format!("/admin/rooms/counter/{room}"))
        .await;
    info["node"]["owner"]["node"].as_str().map(str::to_string)
}

async fn counter_value(cluster: &Cluster, room: &str) -> i64 {
    let (status, body) = cluster.get(0, &format!("/parties/counter/{room}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["value"]
        .as_i64()
        .unwrap()
}

/// The owner loses Redis (placement does not): it cannot renew its liveness, fences itself,
/// and its rooms move to b without a socket closing. Healed, it rejoins.
#[tokio::test]
async fn an_owner_cut_off_from_redis_gives_its_rooms_up_and_rejoins_when_healed() {
    let (cluster, room, counting) = cluster_with_a_partitionable().await;
    counting.reset_worst_wait();
    cluster.redis_link("a").cut();
    let cut_at = Instant::now();
    // Placement drops a once its key expires; the room moves to b, while a is still cut off.
    let moved = common::eventually_within(Duration::from_secs(10), async || {
        owner(&cluster, &room).await.as_deref() == Some("b")
    })
    .await;
    assert!(moved, "the room stayed with an owner cut off from Redis");
    // a stays up: it forgets the sockets that moved away (or it would hold every socket
    // that ever left it).
    let forgotten = cluster
        .node_metric_reaches("a", "conclave_node_sockets", 0.0, Duration::from_secs(5))
        .await;
    assert!(
        forgotten,
        "a still holds sockets that moved to b: {:?}",
        cluster.node_metric("a", "conclave_node_sockets").await
    );
    assert!(
        counting
            .all_replied_after(Instant::now(), Duration::from_secs(8))
            .await,
        "the room was not served while its owner was cut off from Redis"
    );
    let gap = counting.worst_wait();
    eprintln!("owner cut from Redis: longest wait for a reply {gap:?}");
    // A fenced node says so to load balancers and probes.
    let readyz = |c: &Cluster| common::get(c.node("a").http, "/readyz");
    assert_eq!(
        readyz(&cluster).await.0,
        503,
        "a fenced node answered ready"
    );
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(cut_at.elapsed())).await;
    cluster.redis_link("a").heal();
    cluster.wait_until_placed().await;
    let ready = common::eventually_within(Duration::from_secs(5), async || {
        readyz(&cluster).await.0 == 200
    });
    assert!(ready.await, "the rejoined node never said it was ready");
    assert!(
        counting
            .all_replied_after(Instant::now(), Duration::from_secs(10))
            .await,
        "the room did not answer after a rejoined"
    );
    let tally = counting.finish().await;
    tally.assert_exactly_once(counter_value(&cluster, &room).await);
    assert!(gap < Duration::from_secs(5), "a {gap:?} gap");
}

/// The gateways lose their links to the owner while it stays alive in the ring (its Redis
/// and PostgreSQL are fine): no other node may run its rooms, so their clients wait, with
/// their sockets open and their messages held, and go on when the partition heals. 12 s
/// is past the relay stream's keepalive (5 s + 5 s): the gateways give the links up and
/// re-attach the sockets to the same owner once it is reachable again.
#[tokio::test]
async fn clients_cut_off_from_a_live_owner_wait_and_go_on_when_healed() {
    let (cluster, room, counting) = cluster_with_a_partitionable().await;
    counting.reset_worst_wait();
    cluster.relay_link("a").cut();
    tokio::time::sleep(Duration::from_secs(12)).await;
    cluster.relay_link("a").heal();
    let healed = Instant::now();
    assert!(
        counting
            .all_replied_after(healed, Duration::from_secs(20))
            .await,
        "the room did not answer after the partition healed"
    );
    eprintln!(
        "gateways cut from the owner for 12 s: answered again {:?} after healing",
        healed.elapsed()
    );
    let tally = counting.finish().await;
    tally.assert_exactly_once(counter_value(&cluster, &room).await);
}

/// The gateway loses its link to a live owner for longer than `reattach_timeout`: the
/// owner's sockets are all closed with 1012 (reconnect) once that time has passed after
/// the link was given up, though every attempt to open a new link meanwhile hangs in the
/// partition (the TCP proxy accepts, then forwards nothing): the sockets share one attempt
/// at a time, each bounded, instead of queueing behind each other's. A new socket for the
/// room meanwhile is refused, not left waiting.
#[tokio::test]
async fn sockets_cut_off_from_a_live_owner_past_the_reattach_timeout_are_closed_with_1012() {
    let cluster = Cluster::builder()
        .nodes(NODES)
        .placement()
        .gateway_flags(&["--reattach-timeout-ms", "3000"])
        .partitionable("a")
        .start()
        .await;
    let room = named_room_on("part", "counter", &NODES, "a");
    let path = format!("/parties/counter/{room}");
    let mut sockets = Vec::new();
    for _ in 0..8 {
        let mut ws = cluster.ws(0, &path).await;
        common::send(&mut ws, "inc").await;
        common::next_text(&mut ws).await;
        sockets.push(ws);
    }
    cluster.relay_link("a").cut();
    let cut_at = Instant::now();
    // The relay's keepalive gives the link up after about 10 s; the moves then have 3 s.
    let closes = futures::future::join_all(sockets.iter_mut().map(|ws| async {
        tokio::time::timeout(Duration::from_secs(25), async {
            loop {
                match ws.next().await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                        return (u16::from(f.code), cut_at.elapsed());
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("the socket ended without a close frame: {other:?}"),
                }
            }
        })
        .await
        .expect("a socket was not closed within 25 s of the cut")
    }))
    .await;
    eprintln!("closes after the cut: {closes:?}");
    assert!(closes.iter().all(|&(code, _)| code == 1012), "{closes:?}");
    let started = Instant::now();
    let status = common::upgrade_status(cluster.gateway(0), &path).await;
    let waited = started.elapsed();
    eprintln!("a new socket meanwhile: {status} after {waited:?}");
    assert_eq!(status, 503);
    assert!(
        waited < Duration::from_secs(8),
        "a new socket waited {waited:?}"
    );
    cluster.relay_link("a").heal();
    let mut ws = cluster.ws(0, &path).await;
    common::send(&mut ws, "inc").await;
    common::next_text(&mut ws).await;
}
