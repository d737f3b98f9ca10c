//! The ledger's unit tests: numbering, confirmations, trimming, and what a socket gets back.

use super::regather::out_seq;
use super::*;
use crate::room::{ConnEntry, ConnNames, Peer};
use conclave_proto::wire::{Deliver, Send};
use std::sync::Arc;

const ORIGIN: u64 = 0xabc;

fn table(sockets: &[u64]) -> ConnTable {
    let members: Vec<(GatewayId, u64, u64)> = sockets.iter().map(|s| (0, ORIGIN, *s)).collect();
    table_of(&members)
}

/// A room whose members are (gateway link, its gateway process, socket).
fn table_of(members: &[(GatewayId, u64, u64)]) -> ConnTable {
    let mut t = ConnTable::new(Arc::default());
    for (gateway, origin, s) in members {
        let peer = Peer {
            gateway: *gateway,
            socket: SocketId(*s),
        };
        let names = ConnNames::new("", &format!("c{origin}-{s}"));
        t.insert(ConnEntry::new(names, peer, *origin, 0));
    }
    t
}

/// The connection id `table_of` gives a socket.
fn id_of(s: SocketRef) -> String {
    format!("c{}-{}", s.origin, s.socket)
}

fn send(socket: u64, text: &str) -> (GatewayId, NodeEvent) {
    let event = node_event::Event::Send(Send {
        socket,
        payload: Bytes::from(text.to_string()),
        ..Send::default()
    });
    (0, NodeEvent { event: Some(event) })
}

fn deliver(text: &str, exclude: Vec<u64>) -> (GatewayId, NodeEvent) {
    let event = node_event::Event::Deliver(Deliver {
        payload: Bytes::from(text.to_string()),
        exclude,
        ..Deliver::default()
    });
    (0, NodeEvent { event: Some(event) })
}

/// What `broadcast_to` queues: one delivery per link, sharing the payload.
fn broadcast(links: &[GatewayId], payload: &Bytes) -> Vec<(GatewayId, NodeEvent)> {
    links
        .iter()
        .map(|g| {
            let event = node_event::Event::Deliver(Deliver {
                payload: payload.clone(),
                ..Deliver::default()
            });
            (*g, NodeEvent { event: Some(event) })
        })
        .collect()
}

/// The (payload, number) of each event, which must all be sends to `socket`.
fn sends_to(socket: u64, events: &[node_event::Event]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| match e {
            node_event::Event::Send(s) if s.socket == socket => {
                (String::from_utf8(s.payload.to_vec()).unwrap(), s.out_seq)
            }
            other => panic!("not a send to {socket}: {other:?}"),
        })
        .collect()
}

/// Seals and commits one step; returns the ledger writes it made.
fn step(
    ledger: &mut Ledger,
    outbox: &mut [(GatewayId, NodeEvent)],
    conns: &ConnTable,
) -> Vec<(String, Option<Bytes>)> {
    let mut writes = Vec::new();
    let sealed = ledger.seal(&mut writes, outbox, conns);
    ledger.committed(sealed);
    writes
}

fn puts(writes: &[(String, Option<Bytes>)]) -> Vec<(String, Bytes)> {
    writes
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect()
}

#[test]
fn outputs_are_numbered_recorded_and_forgotten_once_confirmed() {
    let conns = table(&[1, 2]);
    let mut ledger = Ledger::default();
    let frame = SocketRef {
        origin: ORIGIN,
        socket: 1,
    };
    ledger.begin_frame(frame, 7);
    let mut outbox = vec![send(1, "reply"), deliver("news", vec![1]), send(99, "gone")];
    let writes = step(&mut ledger, &mut outbox, &conns);
    ledger.end_frames();
    let numbers: Vec<u64> = outbox
        .iter()
        .map(|(_, e)| out_seq(e.event.as_ref().unwrap()))
        .collect();
    assert_eq!(
        numbers,
        [1, 2, 0],
        "a socket not in the room is not numbered"
    );
    let keys: Vec<&str> = writes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["o/00000000000000000001", &applied_key(frame)]);
    assert_eq!(ledger.applied(frame), 7);

    // The record read back (as the next owner does) gives each socket its outputs.
    let mut next = Ledger::load(puts(&writes));
    assert_eq!(next.last_out(), 2);
    let (applied, resend) = next.resumed(frame, &id_of(frame), true);
    assert_eq!(applied, 7);
    assert_eq!(
        resend.len(),
        1,
        "the sender was excluded from the broadcast"
    );
    let second = SocketRef {
        origin: ORIGIN,
        socket: 2,
    };
    let (_, resend) = next.resumed(second, &id_of(second), true);
    assert!(matches!(&resend[..], [node_event::Event::Send(s)] if s.socket == 2 && s.out_seq == 2));

    // Not confirmed yet: kept. Confirmed by the link: deleted with the next commit, and
    // the last number then goes to `n`.
    assert!(step(&mut ledger, &mut [], &conns).is_empty());
    ledger.confirm(0, 2);
    let writes = step(&mut ledger, &mut [], &conns);
    assert_eq!(
        writes,
        [
            ("o/00000000000000000001".to_string(), None),
            (LAST_OUT_KEY.to_string(), Some(Bytes::from("2")))
        ]
    );
    assert_eq!(Ledger::load(puts(&writes)).last_out(), 2);
    let mut outbox = vec![send(2, "later")];
    step(&mut ledger, &mut outbox, &conns);
    assert_eq!(out_seq(outbox[0].1.event.as_ref().unwrap()), 3);
}

#[test]
fn a_closed_socket_loses_its_record_with_the_next_commit() {
    let conns = table(&[1]);
    let mut ledger = Ledger::default();
    let socket = SocketRef {
        origin: ORIGIN,
        socket: 1,
    };
    ledger.begin_frame(socket, 3);
    step(&mut ledger, &mut [], &conns);
    ledger.end_frames();
    ledger.closed(socket);
    let writes = step(&mut ledger, &mut [], &conns);
    assert_eq!(writes, [(applied_key(socket), None)]);
    assert_eq!(ledger.applied(socket), 0);
}

#[test]
fn a_broadcast_made_while_a_gateway_had_no_member_reaches_its_socket_as_it_comes_back() {
    const OTHER: u64 = 0xdef;
    // Socket 1 of ORIGIN re-attached first; socket 1 of OTHER is still on its way.
    let conns = table(&[1]);
    let mut ledger = Ledger::default();
    let early = SocketRef {
        origin: ORIGIN,
        socket: 1,
    };
    let late = SocketRef {
        origin: OTHER,
        socket: 1,
    };
    assert!(ledger.resumed(early, &id_of(early), true).1.is_empty());
    let news = Bytes::from("news");
    let mut outbox = broadcast(&[0], &news);
    if let Some(node_event::Event::Deliver(d)) = &mut outbox[0].1.event {
        d.exclude = vec![1];
    }
    step(&mut ledger, &mut outbox, &conns);
    ledger.confirm(0, 1);
    assert!(
        step(&mut ledger, &mut [], &conns).is_empty(),
        "confirmed, but kept while sockets may still be re-attaching"
    );
    let (_, resend) = ledger.resumed(late, &id_of(late), true);
    assert_eq!(sends_to(1, &resend), [("news".to_string(), 1)]);
    let (_, resend) = ledger.resumed(early, &id_of(early), true);
    assert!(resend.is_empty(), "the sender was excluded: {resend:?}");
}

#[test]
fn each_broadcast_reaches_a_socket_of_a_gateway_it_missed_once() {
    const THIRD: u64 = 0x333;
    let conns = table_of(&[(0, 0xa, 1), (1, 0xb, 1)]);
    let mut ledger = Ledger::default();
    let same = Bytes::from("same");
    // The same message twice, then another: three broadcasts over two links.
    let mut outbox = broadcast(&[0, 1], &same);
    outbox.extend(broadcast(&[0, 1], &same));
    outbox.extend(broadcast(&[0, 1], &Bytes::from("other")));
    let writes = step(&mut ledger, &mut outbox, &conns);
    let mut next = Ledger::load(puts(&writes));
    let late = SocketRef {
        origin: THIRD,
        socket: 1,
    };
    let (_, resend) = next.resumed(late, &id_of(late), true);
    assert_eq!(
        sends_to(1, &resend),
        [
            ("same".to_string(), 1),
            ("same".to_string(), 3),
            ("other".to_string(), 5)
        ]
    );
    let member = SocketRef {
        origin: 0xb,
        socket: 1,
    };
    let (_, resend) = next.resumed(member, &id_of(member), true);
    assert_eq!(
        sends_to(1, &resend),
        [
            ("same".to_string(), 2),
            ("same".to_string(), 4),
            ("other".to_string(), 6)
        ],
        "a member's gateway had its own deliveries"
    );
}

#[test]
fn broadcasts_of_steps_that_wrote_nothing_reach_sockets_back_after_them_in_order() {
    const OTHER: u64 = 0xdef;
    let conns = table(&[1]);
    let mut ledger = Ledger::default();
    assert!(!ledger.holds_broadcasts(), "the room did not come here");
    ledger.room_came();
    assert!(ledger.holds_broadcasts());
    // Before any socket is back (a new client, an HTTP request).
    ledger.released(&broadcast(&[0], &Bytes::from("first")));
    let early = SocketRef {
        origin: ORIGIN,
        socket: 1,
    };
    let (_, resend) = ledger.resumed(early, &id_of(early), true);
    assert_eq!(sends_to(1, &resend), [("first".to_string(), 0)]);
    // A step that wrote nothing broadcasts over two links (one broadcast), a step that
    // committed broadcasts (numbered: the ledger's records keep it), then the first
    // message again.
    let hello = Bytes::from("hello");
    ledger.released(&broadcast(&[0, 1], &hello));
    let mut stored = broadcast(&[0], &Bytes::from("stored"));
    step(&mut ledger, &mut stored, &conns);
    ledger.released(&stored);
    ledger.released(&broadcast(&[0], &hello));
    let late = SocketRef {
        origin: OTHER,
        socket: 1,
    };
    let (_, resend) = ledger.resumed(late, &id_of(late), true);
    assert_eq!(
        sends_to(1, &resend),
        [
            ("first".to_string(), 0),
            ("hello".to_string(), 0),
            ("stored".to_string(), 1),
            ("hello".to_string(), 0)
        ]
    );
    let again = SocketRef {
        origin: OTHER,
        socket: 2,
    };
    let (_, resend) = ledger.resumed(again, &id_of(again), false);
    assert_eq!(
        sends_to(2, &resend),
        [("stored".to_string(), 1)],
        "a socket that was here before had the broadcasts no record keeps"
    );
}

/// A broadcast that excluded a connection while it was away (coming back after a move).
fn excluding_away(links: &[GatewayId], payload: &Bytes, away: &str) -> Vec<(GatewayId, NodeEvent)> {
    let mut events = broadcast(links, payload);
    for (_, e) in &mut events {
        if let Some(node_event::Event::Deliver(d)) = &mut e.event {
            d.exclude_absent = vec![away.to_string()];
        }
    }
    events
}

#[test]
fn a_broadcast_that_excluded_a_connection_while_it_was_away_skips_it_when_it_comes_back() {
    const OTHER: u64 = 0xdef;
    let conns = table(&[1]);
    let (excluded, other) = (
        SocketRef {
            origin: OTHER,
            socket: 1,
        },
        SocketRef {
            origin: OTHER,
            socket: 2,
        },
    );
    // Numbered: the ledger's records keep what the broadcast excluded.
    let mut ledger = Ledger::default();
    let mut outbox = excluding_away(&[0], &Bytes::from("stored"), &id_of(excluded));
    let writes = step(&mut ledger, &mut outbox, &conns);
    let mut next = Ledger::load(puts(&writes));
    assert!(next.resumed(excluded, &id_of(excluded), true).1.is_empty());
    let (_, resend) = next.resumed(other, &id_of(other), true);
    assert_eq!(sends_to(2, &resend), [("stored".to_string(), 1)]);

    // Held (the step wrote nothing): so does the hold.
    let mut ledger = Ledger::default();
    ledger.room_came();
    ledger.released(&excluding_away(
        &[0],
        &Bytes::from("held"),
        &id_of(excluded),
    ));
    assert!(ledger
        .resumed(excluded, &id_of(excluded), true)
        .1
        .is_empty());
    let (_, resend) = ledger.resumed(other, &id_of(other), true);
    assert_eq!(sends_to(2, &resend), [("held".to_string(), 0)]);
}

#[test]
fn a_broadcast_names_the_excluded_connections_that_are_away() {
    let shared = crate::room::RoomShared::new(Arc::default());
    for s in [1, 2] {
        let peer = Peer {
            gateway: 0,
            socket: SocketId(s),
        };
        let names = ConnNames::new("", &format!("c{s}"));
        shared
            .conns()
            .insert(ConnEntry::new(names, peer, ORIGIN, 0));
    }
    let key = conclave_proto::RoomKey::new("main", "r").unwrap();
    let msg = crate::Message::text("hi");
    // Each named once, however often the party lists it.
    crate::room::broadcast_to(&shared, &key, &msg, &["c1", "away", "c1", "away"]);
    let out = shared.take_outbox();
    let [(
        0,
        NodeEvent {
            event: Some(node_event::Event::Deliver(d)),
        },
    )] = &out[..]
    else {
        panic!("one delivery expected: {out:?}");
    };
    assert_eq!(d.exclude, [1], "the present excluded connection, by socket");
    assert_eq!(d.exclude_absent, ["away"], "the away one, by id");
}

#[test]
fn a_broadcast_to_members_on_many_links_is_numbered_as_one() {
    let links: [GatewayId; 8] = [5, 3, 7, 1, 0, 6, 2, 4];
    let members: Vec<(GatewayId, u64, u64)> = (0..3u64)
        .flat_map(|s| {
            links
                .iter()
                .map(move |g| (*g, 100 + *g as u64, s * 10 + *g as u64))
        })
        .collect();
    let conns = table_of(&members);
    let shared = crate::room::RoomShared::new(Arc::default());
    for (gateway, origin, s) in &members {
        let peer = Peer {
            gateway: *gateway,
            socket: SocketId(*s),
        };
        let names = ConnNames::new("", &format!("c{origin}-{s}"));
        shared
            .conns()
            .insert(ConnEntry::new(names, peer, *origin, 0));
    }
    let key = conclave_proto::RoomKey::new("main", "r").unwrap();
    crate::room::broadcast_to(&shared, &key, &crate::Message::text("news"), &[]);
    let mut outbox = shared.take_outbox();
    let order: Vec<GatewayId> = outbox.iter().map(|(g, _)| *g).collect();
    assert_eq!(
        order,
        (0..8).collect::<Vec<_>>(),
        "one delivery per link, in order"
    );
    let mut ledger = Ledger::default();
    step(&mut ledger, &mut outbox, &conns);
    // One broadcast: a socket of any link that misses its delivery gets it back once,
    // not once more for each other link's delivery.
    let broadcasts: Vec<u64> = ledger.kept[0].outputs.iter().map(|o| o.broadcast).collect();
    assert_eq!(broadcasts, [1; 8]);
    // A member that missed it, re-attaching to the room's next owner, gets it once.
    let member = SocketRef {
        origin: 103,
        socket: 13,
    };
    let (_, resend) = ledger.resumed(member, &id_of(member), false);
    assert_eq!(sends_to(13, &resend), [("news".to_string(), 4)]);
}

#[test]
fn a_broadcast_over_two_links_of_one_gateway_comes_back_once() {
    // The gateway is re-attaching its sockets over a new link (1): socket 1 is still on
    // the old one (0) and sent the frame whose broadcast excludes it; socket 2 is back.
    let conns = table_of(&[(0, ORIGIN, 1), (1, ORIGIN, 2)]);
    let mut ledger = Ledger::default();
    let mut outbox = broadcast(&[0, 1], &Bytes::from("news"));
    if let Some(node_event::Event::Deliver(d)) = outbox[0].1.event.as_mut() {
        d.exclude = vec![1];
    }
    step(&mut ledger, &mut outbox, &conns);
    let back = |socket| SocketRef {
        origin: ORIGIN,
        socket,
    };
    let (_, resend) = ledger.resumed(back(2), &id_of(back(2)), false);
    assert_eq!(sends_to(2, &resend), [("news".to_string(), 1)]);
    let (_, resend) = ledger.resumed(back(1), &id_of(back(1)), false);
    assert_eq!(sends_to(1, &resend), [], "its own message came back to it");
}

#[test]
fn a_socket_lost_with_its_link_keeps_its_frames_applied_and_a_closed_one_does_not() {
    let conns = table(&[1, 2]);
    let mut ledger = Ledger::default();
    let [lost, closed] = [1, 2].map(|socket| SocketRef {
        origin: ORIGIN,
        socket,
    });
    for socket in [lost, closed] {
        ledger.begin_frame(socket, 7);
        step(&mut ledger, &mut [send(socket.socket, "ok")], &conns);
        ledger.end_frames();
    }
    ledger.gone_quiet(lost);
    ledger.closed(closed);
    // Back over a new link after the node's grace: frame 7 is not handled again.
    assert_eq!(ledger.resumed(lost, &id_of(lost), true).0, 7);
    assert_eq!(ledger.resumed(closed, &id_of(closed), true).0, 0);
}

#[test]
fn a_close_that_did_not_commit_keeps_the_sockets_record() {
    let conns = table(&[1]);
    let mut ledger = Ledger::default();
    let socket = SocketRef {
        origin: ORIGIN,
        socket: 1,
    };
    ledger.begin_frame(socket, 7);
    step(&mut ledger, &mut [send(1, "ok")], &conns);
    ledger.end_frames();
    ledger.closed(socket);
    ledger.not_closed(socket, 7);
    let writes = step(&mut ledger, &mut [send(1, "next")], &conns);
    assert!(
        !writes.contains(&(applied_key(socket), None)),
        "its record was deleted: {writes:?}"
    );
    assert_eq!(ledger.resumed(socket, &id_of(socket), true).0, 7);
}

#[test]
fn links_that_left_the_room_leave_no_origin_behind() {
    let mut ledger = Ledger::default();
    let first = table_of(&[(0, ORIGIN, 1)]);
    step(&mut ledger, &mut broadcast(&[0], &Bytes::from("a")), &first);
    assert_eq!(ledger.origins.keys().collect::<Vec<_>>(), [&0]);
    // The socket's gateway reconnected, on a new link.
    let second = table_of(&[(1, ORIGIN, 1)]);
    ledger.last_sweep = None;
    step(
        &mut ledger,
        &mut broadcast(&[1], &Bytes::from("b")),
        &second,
    );
    assert_eq!(ledger.origins.keys().collect::<Vec<_>>(), [&1]);
}
