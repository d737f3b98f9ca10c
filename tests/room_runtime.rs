//! The room runtime through real sockets: output gate, room-to-room fetch, newest-wins
//! ids, handler failures. (Hibernation and alarms: `room_timers.rs`.)

mod common;

use bytes::Bytes;
use common::*;
use conclave_node::async_trait;
use conclave_node::{Connection, Message, Party, PartyError, Request, Response, Room};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A dev server that also serves `P` as party `name`.
async fn serving<P: Party + Default>(name: &str) -> TestServer {
    start(|_| {}, |r| r.with::<P>(name)).await
}

/// Broadcasts every message to everyone, then records it in storage.
#[derive(Default)]
struct Journal;

#[async_trait]
impl Party for Journal {
    async fn on_message(
        &mut self,
        room: &mut Room,
        _conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        room.broadcast(&msg, &[]);
        let n: u64 = room.storage().get_json("n").await?.unwrap_or(0);
        room.storage().put_json("n", &(n + 1))?;
        Ok(())
    }
}

/// Counts its frames in storage and answers each with the count; `fail` counts, then
/// fails.
#[derive(Default)]
struct Tally;

#[async_trait]
impl Party for Tally {
    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        let n: u64 = room.storage().get_json("n").await?.unwrap_or(0);
        room.storage().put_json("n", &(n + 1))?;
        if msg.as_text() == Some("fail") {
            return Err("told to fail".into());
        }
        conn.send(Message::text((n + 1).to_string()));
        Ok(())
    }
}

/// Holds the store's commits, then sends `x`: its step runs and waits in its commit, and
/// frames sent next queue behind it.
async fn x_in_a_held_commit(holding: &tokio::sync::watch::Sender<bool>, ws: &mut Ws) {
    holding.send_replace(true);
    send(ws, "x").await;
    assert!(silent_for(ws, 300).await, "a reply left before its commit");
}

/// Sends `texts`, which queue behind a held commit: nothing is answered meanwhile.
async fn queue_behind(ws: &mut Ws, texts: &[&str]) {
    for text in texts {
        send(ws, text).await;
    }
    assert!(silent_for(ws, 500).await, "a reply left before its commit");
}

/// Frames that queue while the room's commit is in flight run as a batch: each handler
/// sees the writes of those before it, and the batch takes one commit; a frame whose
/// handler fails discards its own step only; a batch whose commit fails is handled again
/// a frame at a time, each applied once.
#[tokio::test]
async fn frames_queued_behind_a_commit_share_the_next_and_a_failing_one_discards_only_its_step() {
    let (server, store) = start_on_test_store(|_| {}, |r| r.with::<Tally>("tally")).await;
    let (holding, commits, failing_batches) =
        (store.holding(), store.commits(), store.failing_batches());
    let mut ws = server.connect("/parties/tally/t?_pk=a").await;
    send(&mut ws, "x").await;
    assert_eq!(next_text(&mut ws).await, "1");

    // Frame 2's commit is held; ten more queue behind it.
    x_in_a_held_commit(&holding, &mut ws).await;
    queue_behind(&mut ws, &["x"; 10]).await;
    let before = commits.load(Ordering::SeqCst);
    holding.send_replace(false);
    for n in 2..=12 {
        assert_eq!(next_text(&mut ws).await, n.to_string());
    }
    assert_eq!(
        commits.load(Ordering::SeqCst) - before,
        2,
        "frame 2's commit, then one for the ten queued behind it"
    );

    // A failing frame inside a batch: the frames around it count, it does not.
    x_in_a_held_commit(&holding, &mut ws).await;
    queue_behind(&mut ws, &["x", "x", "fail", "x", "x"]).await;
    let before = commits.load(Ordering::SeqCst);
    holding.send_replace(false);
    for n in 13..=17 {
        assert_eq!(next_text(&mut ws).await, n.to_string());
    }
    assert_eq!(
        commits.load(Ordering::SeqCst) - before,
        2,
        "the failing frame took back its own step, not the batch's"
    );
    send(&mut ws, "x").await;
    assert_eq!(
        next_text(&mut ws).await,
        "18",
        "the failed frame's write landed"
    );

    // A batch of two sockets' frames whose commit fails.
    let mut other = server.connect("/parties/tally/t?_pk=b").await;
    x_in_a_held_commit(&holding, &mut ws).await;
    // Behind the held commit (the two sockets' frames may reach the room in any order).
    send(&mut other, "x").await;
    send(&mut ws, "x").await;
    send(&mut other, "x").await;
    assert!(
        silent_for(&mut other, 300).await,
        "a reply left before its commit"
    );
    failing_batches.store(true, Ordering::SeqCst);
    let before = commits.load(Ordering::SeqCst);
    holding.send_replace(false);
    assert_eq!(next_text(&mut ws).await, "19");
    let mut counts = vec![next_text(&mut ws).await];
    counts.push(next_text(&mut other).await);
    counts.push(next_text(&mut other).await);
    assert!(counts[1] < counts[2], "{counts:?}");
    counts.sort();
    assert_eq!(counts, ["20", "21", "22"]);
    assert_eq!(
        commits.load(Ordering::SeqCst) - before,
        4,
        "the held commit, then the failed batch's three frames one at a time"
    );
    send(&mut ws, "x").await;
    assert_eq!(
        next_text(&mut ws).await,
        "23",
        "a frame was applied twice or lost"
    );
}

/// Nothing a step sends leaves before its writes commit; a message whose writes do not
/// commit is not dropped: it is tried again (here, then on a fresh actor once the room's
/// sockets re-attach) until the store takes it, and applied once.
#[tokio::test]
async fn output_gate_holds_messages_until_commit_and_retries_them_until_they_commit() {
    let (server, store) = start_on_test_store(|_| {}, |r| r.with::<Journal>("journal")).await;
    let failing = store.failing();

    let mut counter = server.connect("/parties/counter/c?_pk=a").await;
    send(&mut counter, "incr").await;
    assert_eq!(
        next_json(&mut counter).await,
        json!({"type": "count", "value": 1})
    );

    let mut j1 = server.connect("/parties/journal/j?_pk=j1").await;
    let mut j2 = server.connect("/parties/journal/j?_pk=j2").await;
    send(&mut j1, "committed").await;
    assert_eq!(next_text(&mut j2).await, "committed");
    assert_eq!(next_text(&mut j1).await, "committed");

    failing.store(true, Ordering::SeqCst);
    send(&mut counter, "incr").await;
    send(&mut j1, "held").await;
    assert!(
        silent_for(&mut counter, 500).await,
        "count sent for a write that did not commit"
    );
    assert!(
        silent_for(&mut j2, 300).await,
        "broadcast released for a write that did not commit"
    );
    assert!(silent_for(&mut j1, 100).await);

    // Rooms that write nothing keep working meanwhile.
    let mut r1 = server.connect("/parties/main/plain?_pk=r1").await;
    let mut r2 = server.connect("/parties/main/plain?_pk=r2").await;
    send(&mut r1, "relay ok").await;
    assert_eq!(next_text(&mut r2).await, "relay ok");

    // Past the retries here (1.3 s), the rooms re-attach and the messages are replayed.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    failing.store(false, Ordering::SeqCst);
    // Each held message is applied once, and only then its messages go out.
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(
            &next_text_within(&mut counter, Duration::from_secs(10)).await
        )
        .unwrap(),
        json!({"type": "count", "value": 2})
    );
    assert_eq!(
        next_text_within(&mut j2, Duration::from_secs(10)).await,
        "held"
    );
    assert_eq!(next_text(&mut j1).await, "held");
    send(&mut counter, "get").await;
    assert_eq!(
        next_json(&mut counter).await,
        json!({"type": "count", "value": 2})
    );
    send(&mut j1, "after").await;
    assert_eq!(next_text(&mut j2).await, "after");
}

/// Answers HTTP requests with what another room says.
#[derive(Default)]
struct Caller;

#[async_trait]
impl Party for Caller {
    async fn on_message(
        &mut self,
        _room: &mut Room,
        _conn: &Connection,
        _msg: Message,
    ) -> Result<(), PartyError> {
        Ok(())
    }
    async fn on_request(&mut self, room: &mut Room, _req: Request) -> Result<Response, PartyError> {
        let req = http::Request::get("/parties/counter/shared").body(Bytes::new())?;
        let answer = room.parties("counter").get("shared").fetch(req).await?;
        Ok(http::Response::new(answer.into_body()))
    }
}

#[tokio::test]
async fn rooms_call_other_rooms() {
    let server = serving::<Caller>("caller").await;
    let mut c = server.connect("/parties/counter/shared?_pk=x").await;
    send(&mut c, "incr").await;
    next_json(&mut c).await;
    let (status, body) = server.http("GET", "/parties/caller/any", "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"value":1}"#));
}

#[tokio::test]
async fn newest_connection_with_the_same_id_wins() {
    let server = start(|_| {}, |r| r).await;
    let mut old = server
        .connect("/parties/presence/p?_pk=same&name=Old")
        .await;
    next_json(&mut old).await;
    let mut new = server
        .connect("/parties/presence/p?_pk=same&name=New")
        .await;
    assert_eq!(close_code(&mut old).await, 1000);
    let mut last = next_json(&mut new).await;
    while let Ok(more) = tokio::time::timeout(Duration::from_millis(300), next_json(&mut new)).await
    {
        last = more;
    }
    assert_eq!(
        last,
        json!({"type": "presence", "users": {"same": {"name": "New", "status": "online"}}})
    );
}

#[derive(Default)]
struct Grumpy;

#[async_trait]
impl Party for Grumpy {
    async fn on_connect(&mut self, room: &mut Room, conn: &Connection) -> Result<(), PartyError> {
        room.storage().put("visited", "yes")?;
        conn.send(Message::text("welcome"));
        Err("no entry".into())
    }
    async fn on_message(
        &mut self,
        _room: &mut Room,
        _conn: &Connection,
        _msg: Message,
    ) -> Result<(), PartyError> {
        Ok(())
    }
}

#[tokio::test]
async fn on_connect_error_closes_with_1011_and_discards_the_step() {
    let server = serving::<Grumpy>("grumpy").await;
    let mut ws = server.connect("/parties/grumpy/g").await;
    // "welcome" was held behind the failed step: the first thing seen is the close.
    let msg = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut ws))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match msg {
        tokio_tungstenite::tungstenite::Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 1011);
            assert_eq!(f.reason.as_str(), "no entry");
        }
        other => panic!("expected close 1011, got {other:?}"),
    }
}

/// Lets in only sockets that present `x-api-key: let-me-in`.
struct Guarded;

impl conclave_node::PartyFactory for Guarded {
    fn create(&self) -> Box<dyn Party> {
        Box::new(Caller)
    }

    fn before_connect(
        &self,
        req: &conclave_node::ConnectRequest<'_>,
    ) -> Result<(), conclave_node::Rejection> {
        match req.headers.get("x-api-key").map(|v| v.as_bytes()) {
            Some(b"let-me-in") => Ok(()),
            Some(_) => Err(conclave_node::Rejection::forbidden("wrong key")),
            None => Err(conclave_node::Rejection::unauthorized("missing x-api-key")),
        }
    }
}

#[tokio::test]
async fn before_connect_hook_refuses_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = start(|_| {}, |r| r.with_factory("guarded", Guarded)).await;
    assert_eq!(server.connect_status("/parties/guarded/room").await, 401);
    let with_key = |key: &'static str| {
        let mut req = format!("ws://{}/parties/guarded/room", server.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("x-api-key", http::HeaderValue::from_static(key));
        req
    };
    match tokio_tungstenite::connect_async(with_key("guess")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(tokio_tungstenite::connect_async(with_key("let-me-in"))
        .await
        .is_ok());
}

/// `set:X` stores X as connection state, `fail:X` stores it and then fails, `get` answers
/// the state.
#[derive(Default)]
struct Moody;

#[async_trait]
impl Party for Moody {
    async fn on_message(
        &mut self,
        _room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        let text = msg.as_text().unwrap_or_default().to_string();
        if let Some(v) = text.strip_prefix("set:") {
            conn.set_state(&v)?;
        } else if let Some(v) = text.strip_prefix("fail:") {
            conn.set_state(&v)?;
            return Err("failing after set_state".into());
        } else {
            conn.send(Message::text(conn.state::<String>().unwrap_or_default()));
        }
        Ok(())
    }
}

#[tokio::test]
async fn connection_state_set_in_a_failed_step_is_undone() {
    let server = serving::<Moody>("moody").await;
    let mut ws = server.connect("/parties/moody/m?_pk=x").await;
    send(&mut ws, "set:kept").await;
    send(&mut ws, "fail:dropped").await;
    send(&mut ws, "get").await;
    assert_eq!(next_text(&mut ws).await, "kept");
}

/// Set by `Panicky` just before it panics.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Panics on `boom`, echoes anything else.
#[derive(Default)]
struct Panicky;

#[async_trait]
impl Party for Panicky {
    async fn on_message(
        &mut self,
        _room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        if msg.as_text() == Some("boom") {
            PANICKED.store(true, Ordering::SeqCst);
            panic!("party code panicked on purpose");
        }
        conn.send(msg);
        Ok(())
    }
}

#[tokio::test]
async fn a_party_that_panicked_starts_afresh_and_keeps_its_sockets() {
    let server = serving::<Panicky>("panicky").await;
    let mut first = server.connect("/parties/panicky/p?_pk=first").await;
    send(&mut first, "boom").await;
    assert!(
        eventually(async || PANICKED.load(Ordering::SeqCst)).await,
        "the party never panicked"
    );
    // The room must neither hang nor spin: a fresh instance serves it.
    let mut second = tokio::time::timeout(
        Duration::from_secs(5),
        server.connect("/parties/panicky/p?_pk=second"),
    )
    .await
    .expect("the room did not come back after its party panicked");
    send(&mut second, "still alive").await;
    assert_eq!(next_text(&mut second).await, "still alive");
    // The socket whose message made the party panic is still in the room, served by the
    // fresh instance.
    send(&mut first, "after").await;
    assert_eq!(next_text(&mut first).await, "after");
    assert_serving(&server).await;
}

/// How often `PanickyHibernation` was asked whether it hibernates.
static HIBERNATION_ASKED: AtomicUsize = AtomicUsize::new(0);

/// Echoes; panics when asked whether it hibernates (between events).
#[derive(Default)]
struct PanickyHibernation;

#[async_trait]
impl Party for PanickyHibernation {
    fn hibernates(&self) -> bool {
        HIBERNATION_ASKED.fetch_add(1, Ordering::SeqCst);
        panic!("hibernates panicked on purpose");
    }

    async fn on_message(
        &mut self,
        _room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        conn.send(msg);
        Ok(())
    }
}

#[tokio::test]
async fn a_party_that_panics_between_events_keeps_serving_its_sockets() {
    let server = serving::<PanickyHibernation>("sleepless").await;
    let mut ws = server.connect("/parties/sleepless/s?_pk=a").await;
    send(&mut ws, "one").await;
    assert_eq!(next_text(&mut ws).await, "one");
    assert!(
        eventually(async || HIBERNATION_ASKED.load(Ordering::SeqCst) > 0).await,
        "the room never asked its party whether it hibernates"
    );
    // The panicking instance is dropped; a fresh one serves the same socket.
    send(&mut ws, "two").await;
    assert_eq!(next_text(&mut ws).await, "two");
    assert_serving(&server).await;
}

/// A party whose checks panic: `before_connect` for connection `gate`, the asynchronous
/// check for `check`, the request check for a query with `boom`, and `connection_tags`
/// for `tags`. Its rooms echo.
struct PanickyChecks;

impl conclave_node::PartyFactory for PanickyChecks {
    fn create(&self) -> Box<dyn Party> {
        Box::new(PanickyTags)
    }

    fn before_connect(
        &self,
        req: &conclave_node::ConnectRequest<'_>,
    ) -> Result<(), conclave_node::Rejection> {
        assert_ne!(req.conn_id, "gate", "before_connect panicked on purpose");
        Ok(())
    }

    fn check_connect(
        &self,
        req: conclave_node::ConnectCheck,
    ) -> Option<futures::future::BoxFuture<'static, Result<conclave_node::ConnectCheck, Response>>>
    {
        Some(Box::pin(async move {
            tokio::task::yield_now().await;
            assert_ne!(req.conn_id, "check", "check_connect panicked on purpose");
            Ok(req)
        }))
    }

    fn check_request(
        &self,
        _room: &str,
        req: Request,
    ) -> Option<futures::future::BoxFuture<'static, Result<Request, Response>>> {
        Some(Box::pin(async move {
            let query = req.uri().query().unwrap_or_default().to_string();
            assert!(!query.contains("boom"), "check_request panicked on purpose");
            Ok(req)
        }))
    }
}

struct PanickyTags;

#[async_trait]
impl Party for PanickyTags {
    async fn connection_tags(&mut self, _room: &mut Room, conn: &Connection) -> Vec<String> {
        assert_ne!(conn.id(), "tags", "connection_tags panicked on purpose");
        Vec::new()
    }

    async fn on_request(&mut self, room: &mut Room, _req: Request) -> Result<Response, PartyError> {
        let count = format!("connections: {}", room.connection_count());
        Ok(Response::new(Bytes::from(count)))
    }

    async fn on_message(
        &mut self,
        _room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        conn.send(msg);
        Ok(())
    }
}

/// A panic in a party's checks refuses what it was checking (500 to the client, or a close
/// with 1011 once upgraded); the node, the room and its other sockets carry on.
#[tokio::test]
async fn a_party_that_panics_in_its_checks_refuses_and_keeps_serving() {
    let server = start(|_| {}, |r| r.with_factory("pcheck", PanickyChecks)).await;
    let mut member = server.connect("/parties/pcheck/r?_pk=member").await;
    for id in ["gate", "check"] {
        let path = format!("/parties/pcheck/r?_pk={id}");
        assert_eq!(server.connect_status(&path).await, 500, "{id}");
    }
    let (status, _) = server.http("GET", "/parties/pcheck/r?boom=1", "").await;
    assert_eq!(status, 500);
    let mut tagged = server.connect("/parties/pcheck/r?_pk=tags").await;
    assert_eq!(close_code(&mut tagged).await, 1011);
    send(&mut member, "still here").await;
    assert_eq!(next_text(&mut member).await, "still here");
    let (_, body) = server.http("GET", "/parties/pcheck/r", "").await;
    assert_eq!(
        body, "connections: 1",
        "the refused sockets are not in the room"
    );
    assert_serving(&server).await;
}

/// An operator lists the rooms of a party that store keys, a page at a time, and deletes
/// one: its sockets are closed with 1000, its keys are gone, and the next client finds an
/// empty room. Without the token, neither is served.
#[tokio::test]
async fn an_operator_lists_a_partys_rooms_and_deletes_one() {
    const TOKEN: &str = "t0ken-of-the-operator";
    let server = start(|c| c.gateway.admin_token = Some(TOKEN.into()), |r| r).await;
    let admin = async |method: &str, path: &str| {
        let (status, body) = http(server.addr, method, path, Some(TOKEN), "").await;
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or(json!(body)),
        )
    };
    let mut sockets = Vec::new();
    for room in ["a", "b", "c"] {
        let mut ws = server.connect(&format!("/parties/chat/{room}")).await;
        assert_eq!(next_json(&mut ws).await["type"], "history");
        send(&mut ws, r#"{"type":"message","text":"hello"}"#).await;
        assert_eq!(next_json(&mut ws).await["type"], "message");
        sockets.push(ws);
    }
    let names = |list: &serde_json::Value| -> Vec<String> {
        let rooms = list["rooms"].as_array().unwrap_or_else(|| panic!("{list}"));
        rooms
            .iter()
            .map(|r| r["room"].as_str().unwrap().to_string())
            .collect()
    };

    let (status, list) = admin("GET", "/admin/rooms/chat").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(names(&list), ["a", "b", "c"]);
    assert_eq!(list["rooms"][1]["keys"], 2, "{list}"); // the message and the next id
    assert!(list["rooms"][1]["bytes"].as_u64().unwrap() > 50, "{list}");
    let (_, first) = admin("GET", "/admin/rooms/chat?limit=2").await;
    assert_eq!(
        (names(&first), &first["next"]),
        (vec!["a".into(), "b".into()], &json!("b"))
    );
    let (_, rest) = admin("GET", "/admin/rooms/chat?after=b&limit=2").await;
    assert_eq!(
        (names(&rest), &rest["next"]),
        (vec!["c".to_string()], &json!(null))
    );
    let (status, _) = get(server.addr, "/admin/rooms/chat").await;
    assert_eq!(status, 401);
    let (status, _) = http(server.addr, "DELETE", "/admin/rooms/chat/b", None, "").await;
    assert_eq!(status, 401);

    let (status, deleted) = admin("DELETE", "/admin/rooms/chat/b").await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true, "{deleted}");
    assert_eq!(deleted["keys"], 2, "{deleted}");
    assert_eq!(deleted["connections_closed"], 1, "{deleted}");
    assert_eq!(close_code(&mut sockets[1]).await, 1000);
    let (_, list) = admin("GET", "/admin/rooms/chat").await;
    assert_eq!(names(&list), ["a", "c"]);
    let (_, info) = admin("GET", "/admin/rooms/chat/b").await;
    assert_eq!(
        info["node"]["storage"],
        json!({"bytes": 0, "keys": 0}),
        "{info}"
    );
    let mut again = server.connect("/parties/chat/b").await;
    let history = next_json(&mut again).await;
    assert_eq!(history["messages"], json!([]), "{history}");
    // The other rooms and their sockets are untouched.
    send(&mut sockets[0], r#"{"type":"message","text":"still here"}"#).await;
    assert_eq!(next_json(&mut sockets[0]).await["text"], "still here");
}

/// Each frame leaves as it is written. With Nagle's algorithm on a client's socket, a
/// frame written while the client had not yet acknowledged the previous one waited for
/// that acknowledgement, and a client that also talks delays its acknowledgements to carry
/// them on what it sends next (Linux: 20–40 ms): the second of two broadcasts a
/// millisecond apart reached such a client 10–40 ms after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_does_not_wait_for_the_previous_one_to_be_acknowledged() {
    let server = start(|_| {}, |r| r).await;
    let mut a = server.connect("/parties/main/nagle").await;
    let mut b = server.connect("/parties/main/nagle").await;
    let mut gaps = Vec::new();
    for round in 0..15 {
        send(&mut b, &format!("first {round}")).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        send(&mut b, &format!("second {round}")).await;
        assert_eq!(next_text(&mut a).await, format!("first {round}"));
        let first = std::time::Instant::now();
        assert_eq!(next_text(&mut a).await, format!("second {round}"));
        gaps.push(first.elapsed());
        // A answers a little after it hears, as a chatty client does, so its TCP stack
        // holds acknowledgements back for its answers.
        tokio::time::sleep(Duration::from_millis(5)).await;
        send(&mut a, &format!("answer {round}")).await;
        assert_eq!(next_text(&mut b).await, format!("answer {round}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        median < Duration::from_millis(10),
        "the second broadcast came {median:?} after the first (median; all: {gaps:?})"
    );
}

/// Relays, after checking each socket for `delay` (a slow `onBeforeConnect`).
struct SlowCheck {
    delay: Duration,
}

impl conclave_node::PartyFactory for SlowCheck {
    fn create(&self) -> Box<dyn Party> {
        Box::new(conclave_node::parties::Relay)
    }

    fn check_connect(
        &self,
        req: conclave_node::ConnectCheck,
    ) -> Option<futures::future::BoxFuture<'static, Result<conclave_node::ConnectCheck, Response>>>
    {
        let delay = self.delay;
        Some(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(req)
        }))
    }
}

/// A dev server with party `slow`: a relay whose sockets are checked for 800 ms first.
async fn with_slow_check(edit: impl FnOnce(&mut conclave::DevConfig)) -> TestServer {
    let check = SlowCheck {
        delay: Duration::from_millis(800),
    };
    start(edit, |r| r.with_factory("slow", check)).await
}

/// A socket the gateway gave up on while the party's asynchronous check ran (504 to the
/// client) does not join the room when the check passes later: the room would keep a
/// member no one closes.
#[tokio::test]
async fn a_socket_given_up_during_a_slow_check_never_joins_its_room() {
    let server = with_slow_check(|c| c.gateway.node_timeout = Duration::from_millis(200)).await;
    assert_eq!(server.connect_status("/parties/slow/r?_pk=late").await, 504);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, body) = server.http("GET", "/parties/slow/r", "").await;
    assert!(body.contains("\"connections\":0"), "{body}");
}

/// A client that goes away while its upgrade waits on the room (here, a slow asynchronous
/// check) never joins the room, also on the path for requests with many headers (the HTTP
/// server's, which ends the connection and drops the upgrade midway).
#[tokio::test]
async fn a_client_gone_during_a_slow_admission_never_joins_its_room() {
    use tokio::io::AsyncWriteExt;
    let server = with_slow_check(|_| {}).await;
    let mut request = String::from(
        "GET /parties/slow/r?_pk=gone HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    for i in 0..70 {
        request.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    request.push_str("\r\n");
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, body) = server.http("GET", "/parties/slow/r", "").await;
    assert!(body.contains("\"connections\":0"), "{body}");
}

/// Counts `incr`s, forgiving a read that fails (it counts from 0 then), as party code
/// that catches storage errors does.
#[derive(Default)]
struct Forgiving;

#[async_trait]
impl Party for Forgiving {
    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        _msg: Message,
    ) -> Result<(), PartyError> {
        let value: i64 = room
            .storage()
            .get_json("n")
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        room.storage().put_json("n", &(value + 1))?;
        conn.send(Message::text((value + 1).to_string()));
        Ok(())
    }
}

/// The store fails a read between two commits (a partition, a restarting PostgreSQL):
/// the step that read is not taken as done, though its handler caught the error and went
/// on from what it did not see. It runs again once the store answers.
#[tokio::test]
async fn a_step_whose_read_the_store_failed_runs_again_instead_of_counting() {
    let (server, store) = start_on_test_store(|_| {}, |r| r.with::<Forgiving>("forgiving")).await;
    let failing_reads = store.failing_reads();
    let mut ws = server.connect("/parties/forgiving/f?_pk=a").await;
    for n in 1..=3 {
        send(&mut ws, "incr").await;
        assert_eq!(next_text(&mut ws).await, n.to_string());
    }
    failing_reads.store(true, Ordering::SeqCst);
    send(&mut ws, "incr").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    failing_reads.store(false, Ordering::SeqCst);
    assert_eq!(
        next_text(&mut ws).await,
        "4",
        "the step counted from what a failed read gave it"
    );
    send(&mut ws, "incr").await;
    assert_eq!(next_text(&mut ws).await, "5");
}

/// Counts messages, committing the count in the middle of the step (`Room::sync`), then
/// writing when it answered. It forgives a sync that fails, except on `strict`.
#[derive(Default)]
struct SyncsMidway;

#[async_trait]
impl Party for SyncsMidway {
    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        let value: i64 = room.storage().get_json("n").await?.unwrap_or(0);
        room.storage().put_json("n", &(value + 1))?;
        let synced = room.sync().await;
        if msg.as_text() == Some("strict") {
            synced?;
        }
        room.storage().put_json("answered", &(value + 1))?;
        conn.send(Message::text((value + 1).to_string()));
        Ok(())
    }
}

/// A commit the party made in the middle of a step (`Room::sync`) fails, and the party
/// goes on as if it had not: the step is not taken as done with its first half lost. It
/// runs again, as a step whose commit failed does.
#[tokio::test]
async fn a_step_whose_sync_failed_runs_again_though_the_party_went_on() {
    let (server, store) = start_on_test_store(|_| {}, |r| r.with::<SyncsMidway>("syncs")).await;
    let mut ws = server.connect("/parties/syncs/s?_pk=a").await;
    send(&mut ws, "incr").await;
    assert_eq!(next_text(&mut ws).await, "1");
    store.failing_next().store(1, Ordering::SeqCst);
    send(&mut ws, "incr").await;
    assert_eq!(next_text(&mut ws).await, "2");
    send(&mut ws, "incr").await;
    assert_eq!(
        next_text(&mut ws).await,
        "3",
        "the step whose sync failed was taken as done, its count lost"
    );
    // Passed on, the store's error is not the party's own: the message is not dropped.
    store.failing_next().store(1, Ordering::SeqCst);
    send(&mut ws, "strict").await;
    assert_eq!(
        next_text(&mut ws).await,
        "4",
        "the message whose sync failed was dropped as the party's error"
    );
}

/// Answers each message after a pause, as a handler that does some work does.
#[derive(Default)]
struct SlowToAnswer;

#[async_trait]
impl Party for SlowToAnswer {
    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        room.storage().put_json("last", &msg.as_text())?;
        conn.send(Message::text(format!(
            "done: {}",
            msg.as_text().unwrap_or("")
        )));
        Ok(())
    }
}

/// A server told to stop (SIGTERM) lets a message its client sent just before get its
/// answer, then closes the socket with 1001: a client that saw no answer cannot tell
/// whether its write took effect.
#[tokio::test]
async fn a_stopping_server_answers_what_its_clients_sent_before_closing() {
    let server = serving::<SlowToAnswer>("slow").await;
    let mut ws = server.connect("/parties/slow/s?_pk=a").await;
    send(&mut ws, "last words").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = async {
        let answer = next_text(&mut ws).await;
        (answer, close_code(&mut ws).await)
    };
    let ((answer, code), ()) = tokio::join!(client, server.server.stop());
    assert_eq!(answer, "done: last words");
    assert_eq!(code, 1001);
}

/// Counts the connections that closed, in storage; answers `count` with the count.
#[derive(Default)]
struct CountsCloses;

#[async_trait]
impl Party for CountsCloses {
    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        _msg: Message,
    ) -> Result<(), PartyError> {
        let n: i64 = room.storage().get_json("closes").await?.unwrap_or(0);
        conn.send(Message::text(n.to_string()));
        Ok(())
    }

    async fn on_close(
        &mut self,
        room: &mut Room,
        _conn: &Connection,
        _code: u16,
        _reason: &str,
    ) -> Result<(), PartyError> {
        let n: i64 = room.storage().get_json("closes").await?.unwrap_or(0);
        room.storage().put_json("closes", &(n + 1))?;
        Ok(())
    }
}

/// A close whose step the store fails once (a hiccup) is delivered again: the party would
/// otherwise count the connection as present for good (a ghost in a presence list).
#[tokio::test]
async fn a_close_whose_commit_failed_reaches_the_party_again() {
    let (server, store) = start_on_test_store(|_| {}, |r| r.with::<CountsCloses>("closes")).await;
    let mut stays = server.connect("/parties/closes/c?_pk=stays").await;
    let leaves = server.connect("/parties/closes/c?_pk=leaves").await;
    store.failing_next().store(1, Ordering::SeqCst);
    drop(leaves);
    let counted = eventually_within(Duration::from_secs(5), async || {
        send(&mut stays, "count").await;
        next_text(&mut stays).await == "1"
    })
    .await;
    assert!(
        counted,
        "the close whose commit failed never reached the party"
    );
}

/// Names each connection in its state (`?name=`), and says who left.
#[derive(Default)]
struct SaysWhoLeft;

#[async_trait]
impl Party for SaysWhoLeft {
    async fn on_connect(&mut self, _room: &mut Room, conn: &Connection) -> Result<(), PartyError> {
        let name = conn.uri().split("name=").nth(1).unwrap_or("?").to_string();
        conn.set_state(&name)?;
        Ok(())
    }

    async fn on_message(
        &mut self,
        _room: &mut Room,
        _conn: &Connection,
        _msg: Message,
    ) -> Result<(), PartyError> {
        Ok(())
    }

    async fn on_close(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        _code: u16,
        _reason: &str,
    ) -> Result<(), PartyError> {
        let name: Option<String> = conn.state();
        room.broadcast(&Message::text(format!("left: {name:?}")), &[]);
        Ok(())
    }
}

/// A connection's state is still there in the handler of its leaving (PartyKit's
/// `onClose(conn)` reads `conn.state`), though the room no longer counts it.
#[tokio::test]
async fn on_close_reads_the_state_of_the_connection_that_left() {
    let server = serving::<SaysWhoLeft>("who").await;
    let mut stays = server.connect("/parties/who/w?_pk=a&name=Ann").await;
    let mut leaves = server.connect("/parties/who/w?_pk=b&name=Bob").await;
    leaves.close(None).await.unwrap();
    assert_eq!(next_text(&mut stays).await, r#"left: Some("Bob")"#);
}

/// An operator's delete whose commit fails deletes nothing: the room's sockets stay in it
/// and are served as before, instead of staying open to a room that forgot them.
#[tokio::test]
async fn a_delete_that_did_not_commit_leaves_the_room_serving_its_sockets() {
    const TOKEN: &str = "t0ken-of-the-operator";
    let (server, store) =
        start_on_test_store(|c| c.gateway.admin_token = Some(TOKEN.into()), |r| r).await;
    let failing = store.failing();
    let mut ws = server.connect("/parties/counter/kept?_pk=a").await;
    send(&mut ws, "incr").await;
    assert_eq!(next_json(&mut ws).await["value"], 1);
    failing.store(true, Ordering::SeqCst);
    let (_, body) = http(
        server.addr,
        "DELETE",
        "/admin/rooms/counter/kept",
        Some(TOKEN),
        "",
    )
    .await;
    assert!(body.contains("did not commit"), "{body}");
    failing.store(false, Ordering::SeqCst);
    send(&mut ws, "incr").await;
    assert_eq!(
        next_json(&mut ws).await["value"],
        2,
        "the socket's room no longer answered it"
    );
}

/// A read the store fails every time while this node goes on serving (not a store cut
/// off: the node would stop) does not hold the room for good: after the retries the party
/// gets the error as it is, and here forgives it.
#[tokio::test]
async fn a_read_that_always_fails_reaches_the_party_after_the_retries() {
    let (server, store) = start_on_test_store(|_| {}, |r| r.with::<Forgiving>("forgiving")).await;
    let mut ws = server.connect("/parties/forgiving/f?_pk=a").await;
    send(&mut ws, "incr").await;
    assert_eq!(next_text(&mut ws).await, "1");
    store.failing_reads().store(true, Ordering::SeqCst);
    send(&mut ws, "incr").await;
    assert_eq!(
        next_text_within(&mut ws, Duration::from_secs(10)).await,
        "1",
        "the room went on retrying the read"
    );
}

/// Keeps no state on disk, asks to hear of the connections a new instance inherits, and
/// greets each connection with the `x-who` header of its upgrade (`none` without one);
/// `break` drops the instance.
#[derive(Default)]
struct Greeter;

#[async_trait]
impl Party for Greeter {
    fn hibernates(&self) -> bool {
        false
    }

    fn greets_inherited_connections(&self) -> bool {
        true
    }

    async fn on_connect(&mut self, room: &mut Room, conn: &Connection) -> Result<(), PartyError> {
        let who = room
            .upgrade_headers()
            .and_then(|h| h.get("x-who"))
            .map_or("none".to_string(), |v| v.to_str().unwrap().to_string());
        conn.send(Message::text(format!("hello {who}")));
        Ok(())
    }

    async fn on_message(
        &mut self,
        _room: &mut Room,
        _conn: &Connection,
        _msg: Message,
    ) -> Result<(), PartyError> {
        Err(Box::new(conclave_node::InstanceBroken("on purpose".into())))
    }
}

/// A WebSocket to `path` whose upgrade carries `x-who: who`.
async fn connect_as(server: &TestServer, path: &str, who: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}{path}", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("x-who", who.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws
}

/// A socket joining a room whose instance had gone starts the new one, which greets the
/// sockets it inherits: with no upgrade headers, not with those of the socket joining.
#[tokio::test]
async fn inherited_connections_are_greeted_without_the_joining_sockets_headers() {
    let server = serving::<Greeter>("greeter").await;
    let mut first = connect_as(&server, "/parties/greeter/g?_pk=first", "first").await;
    assert_eq!(next_text(&mut first).await, "hello first");
    send(&mut first, "break").await;
    // Once the message has dropped the instance, a second socket starts the next one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = connect_as(&server, "/parties/greeter/g?_pk=second", "second").await;
    assert_eq!(next_text(&mut second).await, "hello second");
    assert_eq!(
        next_text(&mut first).await,
        "hello none",
        "the inherited connection was greeted with another socket's headers"
    );
    assert!(
        silent_for(&mut second, 200).await,
        "the joining socket was greeted twice"
    );
}

/// A socket replacing another with the same id, in a room whose instance had gone: the
/// instance its admission starts greets the other sockets once, and the new socket hears
/// only its own `on_connect`, with its own headers.
#[tokio::test]
async fn a_socket_replacing_another_is_not_greeted_besides_its_own_connect() {
    let server = serving::<Greeter>("greeter").await;
    let mut other = connect_as(&server, "/parties/greeter/r?_pk=other", "other").await;
    assert_eq!(next_text(&mut other).await, "hello other");
    let _first = connect_as(&server, "/parties/greeter/r?_pk=dup", "first").await;
    send(&mut other, "break").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = connect_as(&server, "/parties/greeter/r?_pk=dup", "second").await;
    assert_eq!(next_text(&mut second).await, "hello second");
    assert!(
        silent_for(&mut second, 300).await,
        "the socket being admitted was greeted as well"
    );
    assert_eq!(next_text(&mut other).await, "hello none");
    assert!(
        silent_for(&mut other, 200).await,
        "the other socket was greeted twice"
    );
}
