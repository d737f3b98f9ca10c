//! The link's unit tests: replies waited for, and members found by their room on the wire.

use super::*;

/// An admission's future is dropped when its client leaves, and the node may never
/// answer it (a connect check cancelled by the `Closed` that follows): its wait for
/// the reply must not stay for the life of the link.
#[tokio::test]
async fn a_request_dropped_before_its_reply_leaves_nothing_waiting() {
    let (gateway, mut node) = conclave_proto::in_process_link(8);
    let (mover, _moves) = mpsc::unbounded_channel();
    let link = NodeLink::start("a".into(), gateway, mover, Duration::from_secs(10));
    let request = conclave_proto::wire::RoomInfoRequest::default();
    let waiting = tokio::time::timeout(Duration::from_millis(50), link.request(request));
    assert!(waiting.await.is_err(), "the node answered nothing");
    assert!(
        node.from_gateway.recv().await.is_some(),
        "the request went out"
    );
    assert_eq!(
        link.pending().len(),
        0,
        "the dropped request is still waiting"
    );
}

#[test]
fn a_room_named_on_the_wire_finds_its_members() {
    let mut rooms: hashbrown::HashMap<Arc<RoomKey>, u32, RandomState> = Default::default();
    for (i, (party, room)) in [("main", "lobby"), ("main", "lobb"), ("mai", "nlobby")]
        .into_iter()
        .enumerate()
    {
        rooms.insert(Arc::new(RoomKey::new(party, room).unwrap()), i as u32);
    }
    let find = |party: &str, room: &str| {
        let wire = RoomRef {
            party: party.into(),
            room: room.into(),
        };
        rooms.get(&WireRoom::of(&wire)).copied()
    };
    assert_eq!(find("main", "lobby"), Some(0));
    assert_eq!(find("main", "lobb"), Some(1));
    assert_eq!(find("mai", "nlobby"), Some(2));
    assert_eq!(find("main", "other"), None);
    assert_eq!(find("", "mainlobby"), None);
}
