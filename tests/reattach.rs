//! Sockets outlive their node, deterministically: an in-process cluster (two nodes on one
//! store, one gateway, real client sockets) whose relay links the test cuts, stalls and
//! loses acknowledgements on, and whose rings the test publishes (placement's part); and
//! the next owner's side of a move, driven event by event through a relay link.

mod common;

use common::local::LocalCluster;
use common::relay::{RelayGateway, To};
use common::*;
use conclave_node::{parties::Relay, NodeConfig, PartyRegistry};
use conclave_proto::wire::{node_event, CloseSocket, Send};
use std::time::Duration;

/// The next counter value the socket hears.
async fn next_value(ws: &mut Ws) -> i64 {
    next_json(ws).await["value"].as_i64().unwrap()
}

/// A cluster of nodes a and b, and a client in a room of `party` on a.
async fn client_on_a(party: &str) -> (LocalCluster, String, Ws) {
    let cluster = LocalCluster::start(&["a", "b"]).await;
    let room = cluster.room_on(party, "a");
    let client = cluster
        .connect(&format!("/parties/{party}/{room}?_pk=c"))
        .await;
    (cluster, room, client)
}

/// A client of a counter room on a that counted to 1, acknowledged.
async fn counted_once_on_a() -> (LocalCluster, String, Ws) {
    let (cluster, room, mut client) = client_on_a("counter").await;
    send(&mut client, "incr").await;
    assert_eq!(next_value(&mut client).await, 1);
    cluster.link("a").acks_passed(1).await;
    (cluster, room, client)
}

/// Sends chat message `text`.
async fn say(ws: &mut Ws, text: &str) {
    send(
        ws,
        &serde_json::json!({"type": "message", "text": text}).to_string(),
    )
    .await;
}

/// The next chat message the socket hears: (id, text).
async fn next_message(ws: &mut Ws) -> (u64, String) {
    let m = next_json(ws).await;
    assert_eq!(m["type"], "message", "{m}");
    (
        m["id"].as_u64().unwrap(),
        m["text"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn a_socket_whose_node_died_waits_open_then_resumes_on_the_next_owner_with_the_durable_state()
{
    let (cluster, room, mut client) = counted_once_on_a().await;
    cluster.kill("a");
    // No node serves the room until the ring changes: the frame waits at the gateway and
    // the socket stays open (silent_for fails on a closed socket).
    send(&mut client, "incr").await;
    assert!(silent_for(&mut client, 300).await, "answered with no node");
    cluster.place_on(&["b"]);
    assert_eq!(
        next_value(&mut client).await,
        2,
        "b answers the waiting frame from the durable count; the acknowledged one is not replayed"
    );
    send(&mut client, "get").await;
    assert_eq!(next_value(&mut client).await, 2);
    let path = format!("/parties/counter/{room}");
    assert_eq!(cluster.get(&path).await, (200, r#"{"value":2}"#.into()));
}

#[tokio::test]
async fn frames_held_by_a_stalled_node_are_replayed_in_order_to_the_next_owner() {
    let (cluster, room, mut client) = client_on_a("chat").await;
    assert_eq!(next_json(&mut client).await["type"], "history");
    say(&mut client, "m1").await;
    assert_eq!(next_message(&mut client).await, (1, "m1".into()));
    let link = cluster.link("a");
    link.acks_passed(1).await;
    link.stall();
    for text in ["m2", "m3", "m4"] {
        say(&mut client, text).await;
    }
    assert!(
        silent_for(&mut client, 300).await,
        "a stalled node answered"
    );
    // Placement drops the stalled node (which does not hear of it); the gateway moves the
    // socket to b and replays the three frames: in order, each applied once.
    cluster.place_on(&["b"]);
    for (id, text) in [(2, "m2"), (3, "m3"), (4, "m4")] {
        assert_eq!(next_message(&mut client).await, (id, text.into()));
    }
    // The node wakes up with its own copies of those frames: storage refuses its writes,
    // and it lets go of the room.
    link.resume();
    assert!(
        eventually(async || cluster.node("a").room_count() == 0).await,
        "the resumed node kept the room"
    );
    say(&mut client, "m5").await;
    assert_eq!(
        next_message(&mut client).await,
        (5, "m5".into()),
        "a stale write landed"
    );
    let (status, body) = cluster.get(&format!("/parties/chat/{room}")).await;
    assert_eq!(status, 200, "{body}");
    let history: serde_json::Value = serde_json::from_str(&body).unwrap();
    let texts = strings_of(&history["messages"], "text");
    assert_eq!(texts, ["m1", "m2", "m3", "m4", "m5"], "{history}");
}

#[tokio::test]
async fn after_a_crash_frames_handled_but_not_acknowledged_are_not_handled_again() {
    let (cluster, room, mut client) = counted_once_on_a().await;
    // a handles two more frames, but its acknowledgements never reach the gateway.
    cluster.link("a").drop_acks(true);
    for want in 2..=3 {
        send(&mut client, "incr").await;
        assert_eq!(next_value(&mut client).await, want);
    }
    cluster.kill("a");
    cluster.place_on(&["b"]);
    // The gateway replays both frames to b, which finds them applied in the room's
    // ledger: nothing is counted twice and nothing is said twice.
    assert!(
        silent_for(&mut client, 500).await,
        "a replayed frame was handled again"
    );
    send(&mut client, "incr").await;
    assert_eq!(next_value(&mut client).await, 4);
    let path = format!("/parties/counter/{room}");
    assert_eq!(cluster.get(&path).await, (200, r#"{"value":4}"#.into()));
}

#[tokio::test]
async fn after_a_crash_the_replies_of_committed_frames_still_arrive_once() {
    let (cluster, room, mut client) = counted_once_on_a().await;
    let mut watcher = cluster
        .connect(&format!("/parties/counter/{room}?_pk=w"))
        .await;
    // a commits two increments, but nothing it sends arrives: not the replies, not the
    // acknowledgements.
    cluster.link("a").lose_outputs(true);
    send(&mut client, "incr").await;
    send(&mut client, "incr").await;
    assert!(
        eventually(
            async || cluster.get(&format!("/parties/counter/{room}")).await.1 == r#"{"value":3}"#
        )
        .await,
        "a did not commit the increments"
    );
    assert!(silent_for(&mut client, 200).await, "a reply got through");
    cluster.kill("a");
    cluster.place_on(&["b"]);
    // b sends the committed replies again from the room's ledger, once each, and does
    // not apply the replayed frames again.
    assert_eq!(next_value(&mut client).await, 2);
    assert_eq!(next_value(&mut client).await, 3);
    assert!(
        silent_for(&mut client, 500).await,
        "a reply came twice, or a frame was handled again"
    );
    assert!(
        silent_for(&mut watcher, 100).await,
        "the watcher got another's reply"
    );
    send(&mut client, "incr").await;
    assert_eq!(next_value(&mut client).await, 4);
}

/// A node that no longer holds a socket cannot close it: once the socket moved on (here a
/// stalled node's, moved to the next owner), whatever its old node says about it later —
/// a close, a message — is not the client's concern, and the socket stays open.
#[tokio::test]
async fn a_close_from_a_node_the_socket_has_left_does_not_reach_the_client() {
    let (cluster, _room, mut client) = counted_once_on_a().await;
    let link = cluster.link("a");
    let socket = link.last_acked_socket();
    link.stall();
    cluster.place_on(&["b"]);
    send(&mut client, "incr").await;
    assert_eq!(
        next_value(&mut client).await,
        2,
        "b did not take the socket"
    );
    link.resume();
    let stale_close = CloseSocket {
        socket,
        code: 1011,
        reason: "stale".into(),
        out_seq: 0,
    };
    link.inject(node_event::Event::CloseSocket(stale_close))
        .await;
    let stale_send = Send {
        socket,
        payload: r#"{"type":"count","value":-1}"#.into(),
        ..Send::default()
    };
    link.inject(node_event::Event::Send(stale_send)).await;
    send(&mut client, "incr").await;
    assert_eq!(
        next_value(&mut client).await,
        3,
        "the socket heard its old node, or closed"
    );
}

/// Each gateway re-attaches its sockets on its own schedule, so after a move a socket that
/// came back first can talk before the others are back, and a new client can reach the
/// room before any of them. What the room broadcast meanwhile must still reach them, once,
/// although the step wrote nothing (no record of it is stored): a relay room, whose
/// sockets come back to this node one after the other.
#[tokio::test]
async fn a_socket_back_after_a_move_gets_what_the_room_broadcast_before_it_was_back() {
    let parties = PartyRegistry::new().with::<Relay>("relay");
    let mut gw = RelayGateway::start(NodeConfig::default(), parties);
    let ann = gw.open("relay", "moved", "ann").await;
    gw.send(ann, "from a client new to the room").await;
    assert_eq!(
        gw.next_message().await,
        (
            To::MembersBut(vec![ann]),
            "from a client new to the room".into()
        ),
        "the broadcast went to the members there were: none but its sender"
    );
    let erin = gw.resume("relay", "moved", "erin").await;
    assert_eq!(
        gw.next_message().await,
        (To::Socket(erin), "from a client new to the room".into()),
        "erin, back after it, did not get it"
    );
    gw.send(erin, "sent while frank was on his way").await;
    assert_eq!(
        gw.next_message().await,
        (
            To::MembersBut(vec![erin]),
            "sent while frank was on his way".into()
        )
    );
    let frank = gw.resume("relay", "moved", "frank").await;
    for text in [
        "from a client new to the room",
        "sent while frank was on his way",
    ] {
        assert_eq!(
            gw.next_message().await,
            (To::Socket(frank), text.into()),
            "frank, back after both, did not get them in order"
        );
    }
    // A socket new to the room does not get what was said before it joined.
    let _newcomer = gw.open("relay", "moved", "newcomer").await;
    assert!(gw.silent_for(Duration::from_millis(300)).await);
    gw.send(frank, "frank is back").await;
    assert_eq!(
        gw.next_message().await,
        (To::MembersBut(vec![frank]), "frank is back".into())
    );
    assert!(
        gw.silent_for(Duration::from_millis(300)).await,
        "a member got a message twice"
    );
}

/// A gateway's link to a live node drops just after the node handled a frame that wrote
/// nothing, its acknowledgement lost with the link. The socket re-attaches to the same
/// node, which has handled the frame and must say so: a frame left unacknowledged stays
/// at the gateway and is replayed to the room's next owner, which handles it again.
#[tokio::test]
async fn a_frame_whose_ack_a_dropped_link_lost_is_acknowledged_on_re_attach() {
    let cluster = LocalCluster::start(&["a", "b"]).await;
    let room = cluster.room_on("main", "a");
    let mut sender = cluster
        .connect(&format!("/parties/main/{room}?_pk=s"))
        .await;
    let mut listener = cluster
        .connect(&format!("/parties/main/{room}?_pk=l"))
        .await;
    cluster.link("a").drop_acks(true);
    send(&mut sender, "once").await;
    assert_eq!(next_text(&mut listener).await, "once");
    cluster.link("a").end();
    // Both sockets are back on a (over a new link) once one hears the other; what the room
    // sends before the sender is back is lost (it wrote nothing), so the listener asks
    // again until the sender hears it.
    let mut heard = false;
    for _ in 0..50 {
        send(&mut listener, "back").await;
        if tokio::time::timeout(Duration::from_millis(100), next_text(&mut sender))
            .await
            .is_ok_and(|t| t == "back")
        {
            heard = true;
            break;
        }
    }
    assert!(heard, "the sender never came back");
    cluster.hand_off_to(&["b"]);
    send(&mut sender, "on b").await;
    assert_eq!(
        next_text(&mut listener).await,
        "on b",
        "a frame handled on a was handled again on b"
    );
}

/// Keeps a handle of every connection, as a party that tracks its players does; `all:X`
/// sends X to each through the handle kept since its connect.
#[derive(Default)]
struct Roster {
    kept: Vec<conclave_node::Connection>,
}

#[conclave_node::async_trait]
impl conclave_node::Party for Roster {
    fn hibernates(&self) -> bool {
        false
    }

    async fn on_connect(
        &mut self,
        _room: &mut conclave_node::Room,
        conn: &conclave_node::Connection,
    ) -> Result<(), conclave_node::PartyError> {
        self.kept.push(conn.clone());
        Ok(())
    }

    async fn on_message(
        &mut self,
        _room: &mut conclave_node::Room,
        _conn: &conclave_node::Connection,
        msg: conclave_node::Message,
    ) -> Result<(), conclave_node::PartyError> {
        if let Some(text) = msg.as_text().and_then(|t| t.strip_prefix("all:")) {
            for kept in &self.kept {
                kept.send(conclave_node::Message::text(text.to_string()));
            }
        }
        Ok(())
    }
}

/// A connection handle the party kept still reaches its socket after the gateway's link
/// dropped and the socket came back to the same node over a new one.
#[tokio::test]
async fn a_kept_connection_reaches_its_socket_after_a_new_link() {
    let cluster = LocalCluster::start_with(&["a", "b"], |r| r.with::<Roster>("roster")).await;
    let room = cluster.room_on("roster", "a");
    let mut first = cluster
        .connect(&format!("/parties/roster/{room}?_pk=f"))
        .await;
    let mut second = cluster
        .connect(&format!("/parties/roster/{room}?_pk=s"))
        .await;
    send(&mut first, "all:before").await;
    assert_eq!(next_text(&mut second).await, "before");
    assert_eq!(next_text(&mut first).await, "before");
    cluster.link("a").end();
    // The second socket is back once a message of its own is handled.
    send(&mut second, "all:back").await;
    assert_eq!(next_text(&mut second).await, "back");
    send(&mut first, "all:after").await;
    assert_eq!(
        next_text(&mut second).await,
        "after",
        "the handle kept since its connect no longer reached the socket"
    );
    // The first may have heard "back" too, if it was back in time.
    let mut heard = next_text(&mut first).await;
    if heard == "back" {
        heard = next_text(&mut first).await;
    }
    assert_eq!(heard, "after");
}

/// A node left a room without letting go of its claim (its store failed the release) and
/// lives on: the node the ring places the room on now takes it over once the holder has
/// had its time, instead of refusing the room's clients for as long as the holder lives.
#[tokio::test]
async fn a_room_whose_live_holder_never_let_go_is_taken_over() {
    let cluster = LocalCluster::start(&["a", "b"]).await;
    let room = cluster.room_on("counter", "b");
    let key = conclave_proto::RoomKey::new("counter", &room).unwrap();
    let kept = conclave_node::storage::Claim {
        node: "a".into(),
        incarnation: 0,
        region: conclave_node::storage::DEFAULT_REGION.into(),
        live_nodes: vec!["a".into(), "b".into()],
        take_over: false,
    };
    cluster.store.claim(&key, &kept).await.unwrap();
    let mut client = tokio::time::timeout(
        Duration::from_secs(10),
        cluster.connect(&format!("/parties/counter/{room}?_pk=c")),
    )
    .await
    .expect("the room's clients were kept waiting");
    send(&mut client, "incr").await;
    assert_eq!(next_value(&mut client).await, 1);
}

/// Keeps its players in memory, from `on_connect`, and asks to hear of the connections a
/// new instance inherits; `who` answers the players it knows.
#[derive(Default)]
struct Players {
    ids: Vec<String>,
}

#[conclave_node::async_trait]
impl conclave_node::Party for Players {
    fn hibernates(&self) -> bool {
        false
    }

    fn greets_inherited_connections(&self) -> bool {
        true
    }

    async fn on_connect(
        &mut self,
        _room: &mut conclave_node::Room,
        conn: &conclave_node::Connection,
    ) -> Result<(), conclave_node::PartyError> {
        self.ids.push(conn.id().to_string());
        Ok(())
    }

    async fn on_message(
        &mut self,
        _room: &mut conclave_node::Room,
        conn: &conclave_node::Connection,
        _msg: conclave_node::Message,
    ) -> Result<(), conclave_node::PartyError> {
        let mut ids = self.ids.clone();
        ids.sort();
        conn.send(conclave_node::Message::text(format!(
            "players:{}",
            ids.join(",")
        )));
        Ok(())
    }
}

/// The next `players:` answer the socket hears.
async fn next_players(ws: &mut Ws) -> String {
    loop {
        let text = next_text(ws).await;
        if let Some(players) = text.strip_prefix("players:") {
            return players.to_string();
        }
    }
}

/// Two sockets of a `players` room on a, then handed off to b: the instance on b knows
/// each of them once (as `who` answers) once both have sent something there.
async fn players_known_after_a_hand_off(cluster: &LocalCluster) {
    let room = cluster.room_on("players", "a");
    let mut first = cluster
        .connect(&format!("/parties/players/{room}?_pk=f"))
        .await;
    let mut second = cluster
        .connect(&format!("/parties/players/{room}?_pk=s"))
        .await;
    send(&mut first, "who").await;
    assert_eq!(next_players(&mut first).await, "f,s");
    cluster.hand_off_to(&["b"]);
    send(&mut second, "who").await;
    next_players(&mut second).await;
    send(&mut first, "who").await;
    assert_eq!(
        next_players(&mut first).await,
        "f,s",
        "the instance on b does not know the sockets that moved to it, each once"
    );
}

/// Sockets moving to another node are in the new instance's memory as they were in the
/// old one's, each once: the instance hears `on_connect` for each of them.
#[tokio::test]
async fn a_party_that_asks_hears_of_the_sockets_that_moved_to_it() {
    let cluster = LocalCluster::start_with(&["a", "b"], |r| r.with::<Players>("players")).await;
    players_known_after_a_hand_off(&cluster).await;
}

/// A JavaScript party that does not hibernate (PartyKit's default) and keeps its players
/// in memory from `onConnect`, as many PartyKit projects do: after its sockets moved to
/// another node, the instance there knows them, each once.
#[tokio::test]
async fn a_javascript_party_knows_the_sockets_that_moved_to_it() {
    use conclave_node::js::{JsConfig, JsEngine, PartySource};
    let script = r#"
        var __party = { default: class {
            constructor(room) { this.room = room; this.players = []; }
            onConnect(conn) { this.players.push(conn.id); }
            onMessage(message, sender) {
                sender.send("players:" + [...this.players].sort().join(","));
            }
        } };
    "#;
    let engine = JsEngine::start(JsConfig {
        workers: 1,
        ..JsConfig::default()
    })
    .unwrap();
    let factory: std::sync::Arc<dyn conclave_node::PartyFactory> = std::sync::Arc::new(
        engine
            .load(PartySource {
                name: "players".into(),
                origin: "players.js".into(),
                script: script.into(),
                env: serde_json::json!({}),
                assets: None,
                crons: std::sync::Arc::from([]),
            })
            .await
            .unwrap(),
    );
    let cluster = LocalCluster::start_with(&["a", "b"], |r| {
        r.with_shared_factory("players", factory.clone())
    })
    .await;
    players_known_after_a_hand_off(&cluster).await;
}
