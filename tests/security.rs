//! What a party to the cluster's internal protocols may not do, whoever it claims to be.

mod common;

use common::relay::RelayGateway;
use conclave::config::{default_parties, registry_for, PartyKinds};
use conclave_node::NodeConfig;

fn parties() -> conclave_node::PartyRegistry {
    registry_for(&default_parties(), &PartyKinds::builtin())
}

/// A room's home region is fixed once and for good: a gateway (or anything that speaks
/// the relay protocol) proposing a region that does not exist would leave the room homed
/// where no node ever serves it. The node refuses the proposal and the room stays usable.
#[tokio::test]
async fn a_room_cannot_be_homed_in_a_region_that_does_not_exist() {
    let mut gw = RelayGateway::start(NodeConfig::default(), parties());
    assert_eq!(
        gw.home("main", "r", "nowhere").await,
        Err("unknown region".to_string())
    );
    let huge = "x".repeat(100_000);
    assert_eq!(
        gw.home("main", "r", &huge).await,
        Err("unknown region".to_string())
    );
    assert_eq!(gw.home("main", "r", "default").await, Ok("default".into()));
    let socket = gw.open("main", "r", "a").await;
    let other = gw.open("main", "r", "b").await;
    gw.send(socket, "still served").await;
    assert_eq!(gw.next_text().await, "still served");
    let _ = other;
}
