//! A static cluster of real processes: two `conclave node`s sharing one real PostgreSQL
//! database and two `conclave gateway`s, given a fixed node list, talking gRPC; clients on
//! different gateways share rooms.

mod common;

use common::cluster::Cluster;
use common::*;
use std::time::Duration;

async fn static_cluster() -> Cluster {
    Cluster::builder()
        .nodes(["a", "b"])
        .gateways(2)
        .start()
        .await
}

#[tokio::test]
async fn clients_on_different_gateways_share_rooms() {
    let cluster = static_cluster().await;
    // relay
    let mut a = cluster.ws(0, "/parties/main/shared?_pk=alice").await;
    let mut b = cluster.ws(1, "/parties/main/shared?_pk=bob").await;
    send(&mut a, "hello from gateway 0").await;
    assert_eq!(next_text(&mut b).await, "hello from gateway 0");
    send(&mut b, "hello from gateway 1").await;
    assert_eq!(next_text(&mut a).await, "hello from gateway 1");
    assert!(
        silent_for(&mut a, 200).await,
        "the sender got its own message"
    );

    // chat: both see the message, with one id sequence
    let mut c1 = cluster.ws(0, "/parties/chat/lobby?_pk=c1").await;
    let mut c2 = cluster.ws(1, "/parties/chat/lobby?_pk=c2").await;
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
    let (_, body) = cluster.get(1, "/parties/main/shared").await;
    assert!(body.contains("\"connections\":2"), "{body}");
}

/// Rooms a node holds (active or hibernated), from its `/metrics`.
async fn rooms_on(cluster: &Cluster, node: &str) -> f64 {
    let active = cluster.node_metric(node, "conclave_rooms_active").await;
    let hibernated = cluster.node_metric(node, "conclave_rooms_hibernated").await;
    active.unwrap_or(0.0) + hibernated.unwrap_or(0.0)
}

/// A room that refuses a socket after its node took note of it (a full room) leaves the
/// node holding only the sockets it admitted: the gateway tells it the refused one is
/// gone, or every refused attempt would stay on the node for as long as the gateway's link.
#[tokio::test]
async fn sockets_a_full_room_refuses_are_not_held_by_its_node() {
    let cluster = Cluster::builder()
        .nodes(["a", "b"])
        .node_flags(&["--max-connections-per-room", "1"])
        .start()
        .await;
    let room = common::cluster::room_on("main", &["a", "b"], "a");
    let _member = cluster
        .ws(0, &format!("/parties/main/{room}?_pk=member"))
        .await;
    for i in 0..5 {
        let path = format!("/parties/main/{room}?_pk=late{i}");
        assert_eq!(upgrade_status(cluster.gateway(0), &path).await, 503);
    }
    let held = "conclave_node_sockets";
    assert!(
        cluster
            .node_metric_reaches("a", held, 1.0, Duration::from_secs(5))
            .await,
        "node a holds {:?} sockets for a room of one",
        cluster.node_metric("a", held).await
    );
}

#[tokio::test]
async fn rooms_spread_over_nodes_and_survive_a_node_restart() {
    let mut cluster = static_cluster().await;
    for i in 0..20 {
        let mut c = cluster
            .ws(i % 2, &format!("/parties/counter/c{i}?_pk=x"))
            .await;
        send(&mut c, "incr").await;
        assert_eq!(next_json(&mut c).await["value"], 1);
    }
    let on_a = rooms_on(&cluster, "a").await;
    let on_b = rooms_on(&cluster, "b").await;
    assert_eq!(on_a + on_b, 20.0);
    assert!(
        on_a > 0.0 && on_b > 0.0,
        "all rooms on one node: a={on_a} b={on_b}"
    );

    // kill -9 node a. This static cluster has no placement, so a's rooms have nowhere else
    // to go: their sockets stay open, waiting for a to come back.
    let mut sockets = Vec::new();
    for i in 0..20 {
        sockets.push(cluster.ws(0, &format!("/parties/counter/c{i}?_pk=y")).await);
    }
    cluster.signal("a", "-KILL");
    for (i, s) in sockets.iter_mut().enumerate() {
        assert!(silent_for(s, 20).await, "socket c{i} heard something");
    }

    // Restarted, every room answers with its durable state (kept in PostgreSQL), and the
    // sockets that waited are in their rooms again.
    cluster.restart("a").await;
    assert!(
        eventually(async || cluster.get(0, "/parties/counter/c0").await.1 == r#"{"value":1}"#)
            .await,
        "room did not come back after the node restart"
    );
    for (i, s) in sockets.iter_mut().enumerate() {
        send(s, "incr").await;
        assert_eq!(next_json(s).await["value"], 2, "room c{i}");
    }
    assert!(
        !cluster.data_dir("a").join("conclave.redb").exists(),
        "node a should store rooms in PostgreSQL"
    );
    for i in 0..20 {
        let (_, body) = cluster.get(1, &format!("/parties/counter/c{i}")).await;
        assert_eq!(body, r#"{"value":2}"#, "room c{i}");
    }
}

#[tokio::test]
async fn a_stale_process_is_fenced_and_its_late_writes_rejected() {
    // Two processes claiming to be node "a" (say, a stalled one and its replacement), each
    // behind its own gateway, over one database.
    let old = Cluster::builder().nodes(["a"]).start().await;
    let mut stale = old.ws(0, "/parties/counter/x?_pk=stale").await;
    send(&mut stale, "incr").await;
    assert_eq!(next_json(&mut stale).await["value"], 1);

    let new = Cluster::builder()
        .nodes(["a"])
        .database(old.database())
        .start()
        .await;
    let mut fresh = new.ws(0, "/parties/counter/x?_pk=fresh").await;
    send(&mut fresh, "incr").await;
    assert_eq!(
        next_json(&mut fresh).await["value"],
        2,
        "the new process reads the durable value"
    );

    // The old process still thinks it holds the room: its commit of this increment is
    // refused (the new process claimed the room since), so it drops the room and the step,
    // and tells its gateway the socket must move. The socket stays open; the gateway
    // re-attaches it to the owner on its ring — the old process again, which takes the
    // room back from the other process of the same node — and replays the unacknowledged
    // frame, which is applied once, on top of the durable value.
    send(&mut stale, "incr").await;
    assert_eq!(
        next_json(&mut stale).await["value"],
        3,
        "the replayed increment is applied once, on top of the durable value"
    );
    assert_eq!(old.get(0, "/parties/counter/x").await.1, r#"{"value":3}"#);
}

/// Whether `body` (Prometheus text) has a series `name` carrying every one of `labels`.
fn has_series(body: &str, name: &str, labels: &[&str]) -> bool {
    body.lines().any(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('{'))
            .is_some_and(|rest| {
                let set = rest.split('}').next().unwrap_or_default();
                labels.iter().all(|l| set.split(',').any(|have| have == *l))
            })
    })
}

/// Metrics a Prometheus server can aggregate across processes: histograms with buckets,
/// every series labelled with its process's role, node and region, the commit latency of
/// every backend labelled with it, build info, relay link states, and the gateway's
/// metrics on its ops address, not on the public port.
#[tokio::test]
async fn metrics_are_histograms_labelled_by_backend_and_off_the_public_port() {
    let cluster = static_cluster().await;
    let mut c = cluster.ws(0, "/parties/counter/metrics?_pk=x").await;
    send(&mut c, "incr").await;
    next_text(&mut c).await;
    let node_metrics = |cluster: &Cluster| {
        let addrs: Vec<_> = cluster
            .node_ids()
            .iter()
            .map(|id| cluster.node(id).http)
            .collect();
        async move {
            let mut all = String::new();
            for addr in addrs {
                all.push_str(&get(addr, "/metrics").await.1);
            }
            all
        }
    };
    let body = node_metrics(&cluster).await;
    let commit = "conclave_room_commit_seconds_bucket";
    assert!(
        has_series(&body, commit, &[r#"backend="postgres""#]),
        "{body}"
    );
    let node_labels = [r#"role="node""#, r#"region="default""#];
    assert!(
        has_series(&body, "conclave_build_info", &node_labels),
        "{body}"
    );
    for id in ["a", "b"] {
        let node = format!(r#"node="{id}""#);
        assert!(has_series(&body, "conclave_build_info", &[&node]), "{body}");
    }
    // A close frame without a status: counted as 1005.
    futures::SinkExt::close(&mut c).await.unwrap();
    let closed = eventually(async || {
        let (_, gateway) = get(cluster.gateway_ops(0), "/metrics").await;
        has_series(
            &gateway,
            "conclave_gateway_closes_total",
            &[r#"code="1005""#],
        )
    })
    .await;
    assert!(closed, "no close counted by its code");
    let link_up = eventually(async || {
        let (_, gateway) = get(cluster.gateway_ops(0), "/metrics").await;
        gateway.lines().any(|l| {
            l.starts_with("conclave_gateway_relay_link_up{")
                && l.contains(r#"node=""#)
                && l.ends_with(" 1")
        })
    })
    .await;
    assert!(link_up, "no relay link reported up");
    let (status, gateway) = get(cluster.gateway_ops(0), "/metrics").await;
    assert_eq!(status, 200);
    let gateway_labels = [r#"role="gateway""#, r#"region="default""#];
    assert!(
        has_series(
            &gateway,
            "conclave_gateway_messages_in_total",
            &gateway_labels
        ),
        "{gateway}"
    );
    assert_eq!(
        cluster.get(0, "/metrics").await.0,
        404,
        "metrics on the public port"
    );
}

/// A gateway opens its relay link to every node on its ring when it starts, before any
/// client needs one: the first clients of a node do not wait for the connection and the
/// relay stream to be set up (a cold gateway's first wave of handshakes did).
#[tokio::test]
async fn a_gateway_links_to_every_node_before_its_first_client() {
    let cluster = Cluster::builder()
        .nodes(["a", "b"])
        .gateways(1)
        .start()
        .await;
    let linked = eventually(async || {
        link_up(&cluster, "a").await == Some(true) && link_up(&cluster, "b").await == Some(true)
    })
    .await;
    assert!(linked, "the gateway has not linked to both nodes");
}

/// A node killed and started again on the same address gets its link back from the
/// gateway on its own, before any client needs it (and the link's gauge says so): its
/// next clients do not wait for the link, and an operator's alert on the gauge clears.
#[tokio::test]
async fn a_gateway_links_again_to_a_node_that_restarted_without_waiting_for_a_client() {
    let mut cluster = Cluster::builder()
        .nodes(["a", "b"])
        .gateways(1)
        .start()
        .await;
    assert!(
        eventually(async || link_up(&cluster, "a").await == Some(true)).await,
        "the gateway never linked to node a"
    );
    cluster.signal("a", "-KILL");
    assert!(
        eventually(async || link_up(&cluster, "a").await == Some(false)).await,
        "the gateway's link to the killed node still counts as up"
    );
    cluster.restart("a").await;
    // The first try after the drop may have come while the node was down; the next
    // comes at most 4 s later.
    let relinked = eventually_within(Duration::from_secs(15), async || {
        link_up(&cluster, "a").await == Some(true)
    })
    .await;
    assert!(relinked, "no link to the restarted node without a client");
}

/// `conclave_gateway_relay_link_up{node}` on gateway 0: whether its link to `node` is up,
/// `None` before a link to it was ever opened.
async fn link_up(cluster: &Cluster, node: &str) -> Option<bool> {
    let (_, metrics) = get(cluster.gateway_ops(0), "/metrics").await;
    let line = metrics.lines().find(|l| {
        l.starts_with("conclave_gateway_relay_link_up{") && l.contains(&format!(r#"node="{node}""#))
    })?;
    Some(line.ends_with(" 1"))
}

/// A stopping gateway first fails `/readyz` for its drain delay — so a load balancer's health
/// check sends new clients elsewhere — while its open sockets keep working; only then does
/// it close them with 1001 (going away), and exit.
#[tokio::test]
async fn a_stopping_gateway_fails_readyz_for_its_drain_delay_then_closes_sockets_with_1001() {
    let mut cluster = Cluster::builder()
        .nodes(["a"])
        .gateways(1)
        .gateway_flags(&["--drain-delay-ms", "1500"])
        .start()
        .await;
    let mut a = cluster.ws(0, "/parties/main/drain?_pk=a").await;
    let mut b = cluster.ws(0, "/parties/main/drain?_pk=b").await;
    assert_eq!(cluster.get(0, "/readyz").await.0, 200);

    cluster.signal_gateway(0, "-TERM");
    assert!(
        eventually(async || cluster.get(0, "/readyz").await.0 == 503).await,
        "/readyz kept answering 200 after SIGTERM"
    );
    // Within the delay the sockets still carry messages.
    send(&mut a, "still here").await;
    assert_eq!(next_text(&mut b).await, "still here");
    assert_eq!(close_code(&mut a).await, 1001);
    assert_eq!(close_code(&mut b).await, 1001);
    assert!(cluster
        .gateway_exit_status(0, Duration::from_secs(10))
        .await
        .success());
}
