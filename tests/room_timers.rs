//! The room runtime's timers: hibernation and alarms, on a node the test drives through
//! relay events (`common::relay`), with no sockets.
//!
//! Where it works, tokio time is paused: it moves only when every task waits on a timer,
//! so "700 ms later" is exact and takes no real time. An alarm's due time, though, is
//! wall-clock time (as in Durable Objects), which paused time does not move: the test of
//! an alarm that comes due later runs in real time.

mod common;

use common::relay::RelayGateway;
use conclave_node::{
    async_trait, Connection, Message, NodeConfig, Party, PartyError, PartyRegistry, Room,
};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A node whose rooms hibernate after `hibernate_after` idle.
fn node(hibernate_after: Duration, parties: PartyRegistry) -> RelayGateway {
    let config = NodeConfig {
        hibernate_after,
        ..Default::default()
    };
    RelayGateway::start(config, parties)
}

/// Reports the room's connections with tags and state; counts its starts.
struct Probe {
    starts: Arc<AtomicUsize>,
}

#[async_trait]
impl Party for Probe {
    async fn on_start(&mut self, _room: &mut Room) -> Result<(), PartyError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn connection_tags(&mut self, _room: &mut Room, conn: &Connection) -> Vec<String> {
        vec![format!(
            "group:{}",
            if conn.id().starts_with('a') { "a" } else { "b" }
        )]
    }

    async fn on_connect(&mut self, _room: &mut Room, conn: &Connection) -> Result<(), PartyError> {
        conn.set_state(&json!({"joined_as": conn.id()}))?;
        Ok(())
    }

    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        _msg: Message,
    ) -> Result<(), PartyError> {
        let mut conns: Vec<_> = room
            .connections(None)
            .iter()
            .map(|c| json!({"id": c.id(), "tags": c.tags(), "state": c.state::<serde_json::Value>()}))
            .collect();
        conns.sort_by_key(|c| c["id"].as_str().map(String::from));
        let group_a = room.connections(Some("group:a")).len();
        conn.send(Message::text(
            json!({"conns": conns, "group_a": group_a}).to_string(),
        ));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn hibernated_room_wakes_with_connections_tags_and_state() {
    let starts = Arc::new(AtomicUsize::new(0));
    let s = starts.clone();
    let probe = move || Box::new(Probe { starts: s.clone() }) as Box<dyn Party>;
    let mut gw = node(
        Duration::from_millis(200),
        PartyRegistry::new().with_factory("probe", probe),
    );
    let a = gw.open("probe", "room", "a1").await;
    gw.open("probe", "room", "b1").await;
    gw.send(a, "?").await;
    let before = gw.next_json().await;
    assert_eq!(starts.load(Ordering::SeqCst), 1);

    // Events closer together than hibernate_after keep the room in memory, however long
    // they go on (each moves the idle deadline on)…
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        gw.send(a, "?").await;
        assert_eq!(gw.next_json().await, before);
    }
    assert_eq!(
        starts.load(Ordering::SeqCst),
        1,
        "the room left memory while its events came less than hibernate_after apart"
    );

    // …a longer pause does not.
    tokio::time::sleep(Duration::from_millis(700)).await;
    gw.send(a, "?").await;
    let after = gw.next_json().await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        2,
        "the room should have left memory and started again"
    );
    assert_eq!(before, after);
    assert_eq!(
        after,
        json!({"conns": [
            {"id": "a1", "tags": ["a1", "group:a"], "state": {"joined_as": "a1"}},
            {"id": "b1", "tags": ["b1", "group:b"], "state": {"joined_as": "b1"}},
        ], "group_a": 1})
    );
}

/// `set:<ms>` sets the alarm `ms` from now (wall clock), `del` deletes it; the alarm
/// broadcasts `fired:<n>`.
/// Fails its first `fail_first` alarm runs; records when each run began and counts the
/// room's starts.
#[derive(Clone, Default)]
struct AlarmProbe {
    fail_first: Arc<AtomicUsize>,
    runs: Arc<Mutex<Vec<Instant>>>,
    starts: Arc<AtomicUsize>,
    /// When above 0, `on_start` sets the alarm this many ms from now (a party that arms
    /// its next alarm whenever it starts).
    arm_on_start: Arc<AtomicUsize>,
}

impl AlarmProbe {
    fn failing_first(n: usize) -> Self {
        let probe = Self::default();
        probe.fail_first.store(n, Ordering::SeqCst);
        probe
    }

    /// A node (rooms hibernating after 100 ms) serving this probe as `alarm`.
    fn node(&self) -> RelayGateway {
        let probe = self.clone();
        let factory = move || Box::new(probe.clone()) as Box<dyn Party>;
        node(
            Duration::from_millis(100),
            PartyRegistry::new().with_factory("alarm", factory),
        )
    }

    fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[async_trait]
impl Party for AlarmProbe {
    async fn on_start(&mut self, room: &mut Room) -> Result<(), PartyError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        let arm = self.arm_on_start.load(Ordering::SeqCst);
        if arm > 0 {
            room.storage().set_alarm(now_ms() + arm as i64);
        }
        Ok(())
    }

    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        if msg.as_text() == Some("del") {
            room.storage().delete_alarm();
            conn.send(Message::text("deleted"));
            return Ok(());
        }
        let ms: i64 = msg
            .as_text()
            .and_then(|t| t.strip_prefix("set:"))
            .and_then(|v| v.parse().ok())
            .ok_or("bad")?;
        room.storage().set_alarm(now_ms() + ms);
        conn.send(Message::text("set"));
        Ok(())
    }

    async fn on_alarm(&mut self, room: &mut Room) -> Result<(), PartyError> {
        self.runs.lock().unwrap().push(Instant::now());
        if self.fail_first.load(Ordering::SeqCst) > 0 {
            self.fail_first.fetch_sub(1, Ordering::SeqCst);
            return Err("alarm handler failed on purpose".into());
        }
        let n: u64 = room.storage().get_json("fired").await?.unwrap_or(0) + 1;
        room.storage().put_json("fired", &n)?;
        room.broadcast(&Message::text(format!("fired:{n}")), &[]);
        Ok(())
    }
}

/// Real time: the alarm comes due by the wall clock.
#[tokio::test]
async fn alarm_fires_once_even_when_the_room_hibernated_first() {
    let probe = AlarmProbe::default();
    let mut gw = probe.node();
    let socket = gw.open("alarm", "a", "x").await;
    gw.send(socket, "set:600").await;
    assert_eq!(gw.next_text().await, "set");
    // The room hibernates after 100 ms; the alarm wakes it.
    assert_eq!(gw.next_text().await, "fired:1");
    assert_eq!(
        probe.starts(),
        2,
        "the room did not hibernate before its alarm"
    );
    assert!(
        gw.silent_for(Duration::from_millis(1500)).await,
        "an alarm fired twice"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_alarm_is_retried_with_backoff() {
    let probe = AlarmProbe::failing_first(1);
    let mut gw = probe.node();
    let socket = gw.open("alarm", "b", "x").await;
    gw.send(socket, "set:0").await;
    assert_eq!(gw.next_text().await, "set");
    assert_eq!(gw.next_text().await, "fired:1");
    let runs = probe.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2, "one failed run, then one that succeeded");
    let backoff = runs[1] - runs[0];
    assert!(
        backoff >= Duration::from_secs(2),
        "retry came before its backoff (2 s): {backoff:?}"
    );
}

/// The backoff of a failing alarm belongs to that alarm: once the party deletes it, a new
/// alarm runs when due and starts its retries afresh.
#[tokio::test(start_paused = true)]
async fn a_new_alarm_does_not_inherit_the_backoff_of_a_deleted_one() {
    let probe = AlarmProbe::failing_first(4);
    let mut gw = probe.node();
    let socket = gw.open("alarm", "c", "x").await;
    gw.send(socket, "set:0").await;
    assert_eq!(gw.next_text().await, "set");
    // Three failed runs (2 s and 4 s apart): the next retry would wait 8 s.
    while probe.runs.lock().unwrap().len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.send(socket, "del").await;
    assert_eq!(gw.next_text().await, "deleted");
    // The scheduler looks at the due alarms at least once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.send(socket, "set:0").await;
    assert_eq!(gw.next_text().await, "set");
    let set_at = Instant::now();
    // The new alarm fails once (the probe's fourth failure), then fires. (Paused time:
    // the long wait costs nothing, and lets a wrong backoff show as one.)
    let fired = gw.next_text_within(Duration::from_secs(60)).await;
    assert_eq!(fired.as_deref(), Some("fired:1"));
    let runs = probe.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 5);
    let waited = runs[3] - set_at;
    assert!(
        waited < Duration::from_secs(2),
        "the new alarm waited out the deleted one's backoff: {waited:?}"
    );
    let backoff = runs[4] - runs[3];
    assert!(
        backoff >= Duration::from_secs(2) && backoff < Duration::from_secs(4),
        "the new alarm's first retry should come after 2 s, as a first retry: {backoff:?}"
    );
}

/// Real time. A party that arms its next alarm in `on_start`, woken from hibernation by
/// its alarm: the alarm `on_start` set is not the one that fired, and stays.
#[tokio::test]
async fn an_alarm_set_in_on_start_of_a_room_its_alarm_woke_stays() {
    let probe = AlarmProbe::default();
    probe.arm_on_start.store(400, Ordering::SeqCst);
    let mut gw = probe.node();
    let _socket = gw.open("alarm", "rearm", "x").await;
    // The room hibernates after 100 ms between alarms, so each one wakes it.
    for n in 1..=2 {
        let fired = gw.next_text_within(Duration::from_secs(5)).await;
        assert_eq!(
            fired,
            Some(format!("fired:{n}")),
            "the alarm on_start set was deleted with the one that fired"
        );
    }
    assert!(
        probe.starts() >= 3,
        "the room did not hibernate between alarms"
    );
}

/// While the node does not serve (its liveness lapsed: Redis restarting), a due alarm's
/// handler cannot run. Those attempts are not the alarm's retries: once the node serves
/// again, a handler that fails twice still gets its third run.
#[tokio::test(start_paused = true)]
async fn attempts_while_the_node_does_not_serve_are_not_the_alarms_retries() {
    let probe = AlarmProbe::failing_first(2);
    let mut gw = probe.node();
    let socket = gw.open("alarm", "paused", "x").await;
    gw.send(socket, "set:300").await;
    assert_eq!(gw.next_text().await, "set");
    gw.node.set_serving(false);
    // The alarm's due time is wall-clock time, which paused time does not move.
    std::thread::sleep(Duration::from_millis(400));
    tokio::time::sleep(Duration::from_secs(65)).await;
    assert!(
        probe.runs.lock().unwrap().is_empty(),
        "ran while not serving"
    );
    gw.node.set_serving(true);
    let ran = common::eventually_within(Duration::from_secs(300), async || {
        probe.runs.lock().unwrap().len() >= 3
    })
    .await;
    assert!(
        ran,
        "the alarm was dropped after {} runs: the attempts while not serving counted",
        probe.runs.lock().unwrap().len()
    );
}

/// Alarms of a party this node does not serve (another region's, or one taken out of the
/// node's configuration): more of them are overdue than one pass of the scheduler looks
/// at, and all are due before this node's own. The scheduler goes on where its last pass
/// stopped, so the node's alarm still fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_alarm_behind_more_overdue_foreign_alarms_than_a_pass_sees_fires() {
    use conclave_node::storage::{RoomCommit, Store};
    const FOREIGN: i64 = 17_000; // one pass looks at 64 pages of 256
    let dir = tempfile::tempdir().unwrap();
    let store = common::store::TestStore::redb(&dir.path().join("node.redb"));
    let commits = (0..FOREIGN).map(|i| {
        let store = store.clone();
        async move {
            let room = conclave_proto::RoomKey::new("elsewhere", &format!("r{i:05}")).unwrap();
            let commit = RoomCommit {
                alarm: Some(Some(1 + i)),
                ..RoomCommit::default()
            };
            store.commit(&room, commit).await.unwrap();
        }
    });
    futures::future::join_all(commits).await;
    let probe = AlarmProbe::default();
    let config = NodeConfig {
        hibernate_after: Duration::from_millis(100),
        ..Default::default()
    };
    let probe_party = probe.clone();
    let factory = move || Box::new(probe_party.clone()) as Box<dyn Party>;
    let mut gw = RelayGateway::start_on(
        config,
        PartyRegistry::new().with_factory("alarm", factory),
        store,
        dir,
    );
    let socket = gw.open("alarm", "a", "x").await;
    gw.send(socket, "set:0").await;
    assert_eq!(gw.next_text().await, "set");
    let fired = gw
        .next_text_within(Duration::from_secs(20))
        .await
        .expect("the node's alarm never fired behind the foreign ones");
    assert_eq!(fired, "fired:1");
}
