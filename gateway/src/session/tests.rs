//! The session's unit tests: the replay buffer, carried state, and moves between links.

use super::*;
use conclave_proto::wire::GatewayEvent;
use conclave_proto::{in_process_link, NodeSide};

fn session(max_unacked_bytes: usize) -> Arc<Session> {
    let out = Outbound::new(Arc::new(crate::outbound::SocketLimits {
        send_frames: 16,
        send_bytes: 1 << 20,
        write_timeout: std::time::Duration::from_secs(1),
        replay_bytes: max_unacked_bytes,
    }));
    let room = Arc::new(RoomKey::new("main", "r").unwrap());
    Arc::new(Session::new(
        SocketId(7),
        room,
        "c".into(),
        "http://h/parties/main/r".into(),
        out,
    ))
}

fn link(node: &str) -> (Arc<NodeLink>, NodeSide) {
    let (link, node_side, _moves) = link_holding(node, 64);
    (link, node_side)
}

/// A link whose queue to the node holds `capacity` events, with where its moves go.
fn link_holding(
    node: &str,
    capacity: usize,
) -> (
    Arc<NodeLink>,
    NodeSide,
    tokio::sync::mpsc::UnboundedReceiver<crate::link::LinkWork>,
) {
    let (gateway, node_side) = in_process_link(capacity);
    let (mover, moves) = tokio::sync::mpsc::unbounded_channel();
    let timeout = std::time::Duration::from_secs(5);
    (
        NodeLink::start(node.into(), gateway, mover, timeout),
        node_side,
        moves,
    )
}

fn seq(ev: &GatewayEvent) -> u64 {
    match &ev.event {
        Some(gateway_event::Event::Frame(f)) => f.seq,
        other => panic!("not a frame: {other:?}"),
    }
}

#[test]
fn the_replay_buffer_gives_its_room_back_after_a_burst_and_when_quiet() {
    let s = session(1 << 20);
    let capacity = |s: &Session| s.attachment().unacked.capacity();
    for seq in 1..=3 {
        s.push_frame(Bytes::from_static(b"m"), false);
        s.ack(seq);
    }
    assert!(capacity(&s) > 0, "kept while the client talks");
    s.release_idle_buffers();
    assert_eq!(capacity(&s), 0, "given back once quiet");
    for _ in 0..100 {
        s.push_frame(Bytes::from_static(b"m"), false);
    }
    s.release_idle_buffers();
    assert!(capacity(&s) >= 100, "frames not acknowledged stay");
    s.ack(103);
    assert_eq!(capacity(&s), 0, "a burst's room is given back at once");
}

#[test]
fn tags_and_state_are_carried_for_a_move_and_nothing_is_kept_without_them() {
    let s = session(1 << 20);
    let carries = |s: &Session| s.attachment().carried.is_some();
    assert!(!carries(&s));
    s.set_tags(vec!["c".into(), "admin".into()]);
    s.set_state(Bytes::from_static(b"{\"n\":1}"));
    let resume = s.resume();
    assert_eq!(resume.tags, ["c", "admin"]);
    assert_eq!(&resume.state[..], b"{\"n\":1}");
    s.set_tags(Vec::new());
    assert!(carries(&s), "the state is still carried");
    s.set_state(Bytes::new());
    assert!(!carries(&s));
    assert!(s.resume().tags.is_empty() && s.resume().state.is_empty());
}

#[tokio::test]
async fn a_move_replays_unacknowledged_frames_in_order_before_newer_ones() {
    let s = session(1 << 20);
    let (first, _first_node) = link("a");
    first.register(s.clone());
    assert!(s.attach(first.clone()));
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        let (l, ev) = s
            .push_frame(Bytes::from_static(text.as_bytes()), false)
            .unwrap();
        assert!(Arc::ptr_eq(&l, &first));
        assert!(matches!(ev, gateway_event::Event::Frame(ref f) if f.seq == i as u64 + 1));
    }
    s.ack(2);
    assert_eq!(s.resume().acked_seq, 2);

    // The node goes away: frames wait for the next one.
    assert!(s.detach_from(&first));
    assert!(!s.detach_from(&first), "detaching twice moves twice");
    assert!(s.push_frame(Bytes::from_static(b"four"), false).is_none());

    let (second, mut second_node) = link("b");
    second.register(s.clone());
    assert!(s.switch_to(second.clone()).await);
    let replayed: Vec<u64> = [
        second_node.from_gateway.recv().await.unwrap(),
        second_node.from_gateway.recv().await.unwrap(),
    ]
    .iter()
    .map(seq)
    .collect();
    assert_eq!(replayed, [3, 4], "unacknowledged frames, in order");
    let (l, _) = s.push_frame(Bytes::from_static(b"five"), false).unwrap();
    assert!(
        Arc::ptr_eq(&l, &second),
        "newer frames follow on the new link"
    );
}

/// Finding 3 of issue 11 (the sockets of a room stopped hearing it): a socket that was
/// admitted on a link, then swept off it by an evacuation before it attached, must not
/// attach there, or its replies are dropped while its frames still reach the node.
#[tokio::test]
async fn a_socket_swept_off_a_link_before_it_attached_moves_again() {
    let s = session(1 << 20);
    let (l, _node) = link("a");
    l.register(s.clone());
    assert_eq!(
        l.evacuate(conclave_proto::RingVersion(0), false),
        0,
        "not attached yet"
    );
    assert!(
        !s.switch_to(l.clone()).await,
        "attached to a link that no longer routes the node's events to it"
    );
    assert!(!s.detach_from(&l), "left attached");
    let (fresh, _) = link("b");
    assert!(!s.attach(fresh), "attached without being registered");
}

/// A node that hands a room on while the gateway's queue to it is full still hears
/// `Detach` (or it keeps the socket for the life of the link), and the socket moves
/// only after it: should it go back to the same node, it is admitted after the `Detach`.
#[tokio::test]
async fn a_socket_moved_off_a_full_link_is_detached_before_it_moves() {
    use conclave_proto::wire::{node_event, Moved, NodeEvent};
    use std::time::Duration;
    let s = session(1 << 20);
    let (l, mut node, mut moves) = link_holding("a", 1);
    l.register(s.clone());
    assert!(s.attach(l.clone()));
    let (_, frame) = s.push_frame(Bytes::from_static(b"fills"), false).unwrap();
    assert!(l.try_send(frame).is_none(), "the queue had room for one");

    let moved = node_event::Event::Moved(Moved {
        sockets: vec![s.id.0],
        ring_version: 3,
    });
    node.to_gateway
        .send(NodeEvent { event: Some(moved) })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        moves.try_recv().is_err(),
        "moved before the node could be told"
    );

    let second = Duration::from_secs(1);
    let first = tokio::time::timeout(second, node.from_gateway.recv()).await;
    assert_eq!(
        seq(&first.unwrap().unwrap()),
        1,
        "the frame that filled the queue"
    );
    let next = tokio::time::timeout(second, node.from_gateway.recv())
        .await
        .expect("the Detach was dropped")
        .unwrap();
    assert!(
        matches!(next.event, Some(gateway_event::Event::Detach(ref d)) if d.socket == s.id.0),
        "not the socket's Detach: {next:?}"
    );
    let work = tokio::time::timeout(Duration::from_secs(1), moves.recv())
        .await
        .expect("the socket never moved")
        .unwrap();
    let crate::link::LinkWork::Move(request) = work else {
        panic!("not a move");
    };
    assert!(Arc::ptr_eq(&request.session, &s));
    assert_eq!(request.min_ring, conclave_proto::RingVersion(3));
}

#[tokio::test]
async fn a_full_replay_buffer_waits_for_acknowledgements() {
    let s = session(8);
    let (l, _node) = link("a");
    l.register(s.clone());
    assert!(s.attach(l));
    s.push_frame(Bytes::from_static(b"0123456789"), false);
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move { s.wait_for_buffer_space().await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(
        !waiting.is_finished(),
        "over the limit, the reader must wait"
    );
    s.ack(1);
    tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
        .await
        .expect("an acknowledgement frees the reader")
        .unwrap();
}

#[tokio::test]
async fn a_socket_that_ended_while_moving_is_reported_closed_to_the_next_node() {
    let s = session(1 << 20);
    s.push_frame(Bytes::from_static(b"x"), false);
    assert!(s.end().is_none(), "not attached: no node to tell");
    let (l, mut node) = link("b");
    l.register(s.clone());
    assert!(s.switch_to(l.clone()).await);
    let ev = node.from_gateway.recv().await.unwrap();
    assert!(matches!(ev.event, Some(gateway_event::Event::Closed(_))));
    assert_eq!(l.socket_count(), 0);
}
