//! Two regions of one cluster (real redis-server, PostgreSQL, placement, nodes and
//! gateways): a room lives in the region it was created in, and clients arriving through
//! the other region's gateway are forwarded there.

mod common;

use common::cluster::Cluster;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn a_room_is_served_from_its_home_region_whichever_gateway_clients_use() {
    // Node a and gateway 0 in us, node b and gateway 1 in eu.
    let cluster = Cluster::builder()
        .node_in("a", "us")
        .node_in("b", "eu")
        .gateway_in("us")
        .gateway_in("eu")
        .placement()
        .heartbeat(Duration::from_millis(200), Duration::from_secs(1))
        .start()
        .await;
    const US: usize = 0;
    const EU: usize = 1;

    // Created through the us gateway: homed in us, run by node a.
    let mut alice = cluster
        .ws(US, "/parties/main/transatlantic?_pk=alice")
        .await;
    // Bob arrives through the eu gateway and is forwarded to us.
    let mut bob = cluster.ws(EU, "/parties/main/transatlantic?_pk=bob").await;
    send(&mut bob, "hello from eu").await;
    assert_eq!(next_text(&mut alice).await, "hello from eu");
    send(&mut alice, "hello from us").await;
    assert_eq!(next_text(&mut bob).await, "hello from us");
    for g in [US, EU] {
        let room = cluster.admin(g, "/admin/rooms/main/transatlantic").await;
        assert_eq!(room["home_region"], "us", "{room}");
        assert_eq!(room["ring_owner"], "a", "{room}");
        assert_eq!(room["node"]["owner"]["node"], "a", "{room}");
        assert_eq!(room["node"]["owner"]["region"], "us", "{room}");
    }

    // A client may ask for the region of a new room; later arrivals cannot move it.
    let mut c = cluster.ws(US, "/parties/counter/euro?_region=eu").await;
    send(&mut c, "incr").await;
    assert_eq!(next_json(&mut c).await["value"], 1);
    let mut d = cluster.ws(EU, "/parties/counter/euro?_region=us").await;
    send(&mut d, "incr").await;
    assert_eq!(next_json(&mut d).await["value"], 2);
    let room = cluster.admin(US, "/admin/rooms/counter/euro").await;
    assert_eq!(room["home_region"], "eu", "{room}");
    assert_eq!(room["node"]["owner"]["node"], "b", "{room}");

    // A region with no nodes is refused before the upgrade.
    let (status, body) = cluster.get(US, "/parties/main/x?_region=mars").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("mars"), "{body}");
}
