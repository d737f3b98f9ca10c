//! The storage conformance suite: the storage API, its limits, fencing and alarms, written
//! once against [`Store`] and run against every backend available: the embedded redb file
//! and a real PostgreSQL server started by the harness, always; FoundationDB when the
//! `fdb` feature is on: the cluster `FDB_CLUSTER_FILE` names, else the FoundationDB test
//! double (each run in a fresh directory `conclave/test-<uuid>`; scripts/test-fdb.sh).

mod common;

use bytes::Bytes;
use conclave_node::storage::{
    Claim, PartyTotal, PostgresStore, RedbStore, StorageQuota, Store, Usage, MAX_BATCH_KEYS,
    MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
use conclave_node::{ListOptions, Storage, StorageError};
use conclave_proto::RoomKey;
use std::sync::Arc;
use std::time::Duration;

/// Where one run of a test keeps its data; `open` may be called again to reopen it.
enum Backend {
    Redb(tempfile::TempDir),
    Postgres(String),
    #[cfg(feature = "fdb")]
    Fdb(common::fdb::Fdb),
}

impl Backend {
    async fn all() -> Vec<Backend> {
        #[allow(unused_mut)]
        let mut all = vec![
            Backend::Redb(tempfile::tempdir().unwrap()),
            Backend::Postgres(common::postgres::fresh_database().await),
        ];
        #[cfg(feature = "fdb")]
        all.push(Backend::Fdb(common::fdb::Fdb::start().await));
        all
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Redb(_) => "redb",
            Backend::Postgres(_) => "PostgreSQL",
            #[cfg(feature = "fdb")]
            Backend::Fdb(..) => "FoundationDB",
        }
    }

    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Redb(dir) => Arc::new(RedbStore::open(&dir.path().join("db.redb")).unwrap()),
            Backend::Postgres(url) => Arc::new(PostgresStore::connect(url, 4).await.unwrap()),
            #[cfg(feature = "fdb")]
            Backend::Fdb(fdb) => Arc::new(
                conclave_node::storage::FdbStore::open(
                    fdb.cluster_file().to_str().unwrap(),
                    fdb.directory(),
                )
                .await
                .unwrap(),
            ),
        }
    }
}

/// Runs `test` once per backend; a failure says which backend it failed on.
async fn for_each_backend(test: impl AsyncFn(&Backend)) {
    for backend in Backend::all().await {
        let run = std::panic::AssertUnwindSafe(test(&backend));
        if let Err(panic) = futures::FutureExt::catch_unwind(run).await {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("failed on the {} backend: {message}", backend.name());
        }
    }
}

fn room(name: &str) -> RoomKey {
    RoomKey::new("main", name).unwrap()
}

fn keys(entries: &[(String, Bytes)]) -> Vec<&str> {
    entries.iter().map(|(k, _)| k.as_str()).collect()
}

#[tokio::test]
async fn reads_see_own_writes_and_commits_persist_across_reopen() {
    for_each_backend(async |backend| {
        {
            let store = backend.open().await;
            let mut s = Storage::new(room("r"), store.clone());
            s.put("a", "1").unwrap();
            s.put_json("j", &serde_json::json!({"x": 1})).unwrap();
            assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
            // Not visible to another handle before commit.
            assert_eq!(
                Storage::new(room("r"), store.clone())
                    .get("a")
                    .await
                    .unwrap(),
                None
            );
            s.commit().await.unwrap();
            s.delete("a").unwrap();
            assert_eq!(s.get("a").await.unwrap(), None);
            // Another room never sees this room's keys.
            assert_eq!(
                Storage::new(room("r2"), store.clone())
                    .get("j")
                    .await
                    .unwrap(),
                None
            );
        }
        let store = backend.open().await;
        let s = Storage::new(room("r"), store);
        assert_eq!(
            s.get("a").await.unwrap().as_deref(),
            Some(&b"1"[..]),
            "uncommitted delete must not persist"
        );
        let j: serde_json::Value = s.get_json("j").await.unwrap().unwrap();
        assert_eq!(j["x"], 1);
        assert_eq!(
            s.get_many(&["a", "missing", "j"])
                .await
                .unwrap()
                .iter()
                .map(Option::is_some)
                .collect::<Vec<_>>(),
            [true, false, true]
        );
    })
    .await;
}

#[tokio::test]
async fn list_honours_prefix_range_reverse_limit_over_buffered_writes() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let mut s = Storage::new(room("list"), store);
        for k in ["a", "b1", "b2", "b3", "c", "d"] {
            s.put(k, k.to_string()).unwrap();
        }
        s.commit().await.unwrap();
        // Buffered changes overlay committed data.
        s.delete("b2").unwrap();
        s.put("b4", "new").unwrap();

        let all = s.list(&ListOptions::default()).await.unwrap();
        assert_eq!(keys(&all), ["a", "b1", "b3", "b4", "c", "d"]);
        assert_eq!(
            keys(&s.list(&ListOptions::prefix("b")).await.unwrap()),
            ["b1", "b3", "b4"]
        );
        let o = ListOptions {
            start: Some("b1".into()),
            end: Some("c".into()),
            ..Default::default()
        };
        assert_eq!(keys(&s.list(&o).await.unwrap()), ["b1", "b3", "b4"]);
        let o = ListOptions {
            start_after: Some("b1".into()),
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(keys(&s.list(&o).await.unwrap()), ["b3", "b4"]);
        let o = ListOptions {
            reverse: true,
            limit: Some(3),
            ..Default::default()
        };
        assert_eq!(keys(&s.list(&o).await.unwrap()), ["d", "c", "b4"]);
        let o = ListOptions {
            prefix: Some("b".into()),
            reverse: true,
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(keys(&s.list(&o).await.unwrap()), ["b4", "b3"]);
        // limit counts results after hiding buffered deletes.
        let o = ListOptions {
            prefix: Some("b".into()),
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(keys(&s.list(&o).await.unwrap()), ["b1", "b3"]);

        s.delete_all();
        assert!(s.list(&ListOptions::default()).await.unwrap().is_empty());
        s.put("z", "after clear").unwrap();
        s.commit().await.unwrap();
        assert_eq!(keys(&s.list(&ListOptions::default()).await.unwrap()), ["z"]);
    })
    .await;
}

#[tokio::test]
async fn limits_are_errors_not_truncations() {
    for_each_backend(async |backend| {
        let mut s = Storage::new(room("limits"), backend.open().await);
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            s.put(&long_key, "v"),
            Err(StorageError::KeyTooLarge { .. })
        ));
        assert!(matches!(
            s.get(&long_key).await,
            Err(StorageError::KeyTooLarge { .. })
        ));
        s.put(&"k".repeat(MAX_KEY_BYTES), "ok").unwrap();
        assert!(matches!(
            s.put("big", vec![0u8; MAX_VALUE_BYTES + 1]),
            Err(StorageError::ValueTooLarge { .. })
        ));
        s.put("max", vec![7u8; MAX_VALUE_BYTES]).unwrap();
        let too_many: Vec<(String, Bytes)> = (0..=MAX_BATCH_KEYS)
            .map(|i| (format!("k{i}"), Bytes::from_static(b"v")))
            .collect();
        assert!(matches!(
            s.put_many(too_many.clone()),
            Err(StorageError::TooManyKeys { .. })
        ));
        assert!(
            s.get("k0").await.unwrap().is_none(),
            "a refused batch writes nothing"
        );
        s.put_many(too_many[..MAX_BATCH_KEYS].to_vec()).unwrap();
        let names: Vec<String> = (0..=MAX_BATCH_KEYS).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert!(matches!(
            s.get_many(&refs).await,
            Err(StorageError::TooManyKeys { .. })
        ));
        assert!(matches!(
            s.delete_many(&refs),
            Err(StorageError::TooManyKeys { .. })
        ));
        s.commit().await.unwrap();
        assert_eq!(s.get("max").await.unwrap().unwrap().len(), MAX_VALUE_BYTES);
        let err = s
            .put("big", vec![0u8; MAX_VALUE_BYTES + 1])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("131073 bytes") && err.contains("131072"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn transaction_rolls_back_on_error() {
    for_each_backend(async |backend| {
        let mut s = Storage::new(room("txn"), backend.open().await);
        s.put("kept", "1").unwrap();
        let r: Result<(), StorageError> = s
            .transaction(|t| {
                Box::pin(async move {
                    t.put("inside", "x")?;
                    t.delete("kept")?;
                    t.put(&"k".repeat(MAX_KEY_BYTES + 1), "fails")
                })
            })
            .await;
        assert!(r.is_err());
        assert!(s.get("inside").await.unwrap().is_none());
        assert!(s.get("kept").await.unwrap().is_some());
        s.transaction(|t| Box::pin(async move { t.put("inside", "y") }))
            .await
            .unwrap();
        s.commit().await.unwrap();
        assert_eq!(s.get("inside").await.unwrap().as_deref(), Some(&b"y"[..]));
    })
    .await;
}

#[tokio::test]
async fn alarms_are_indexed_by_due_time_and_replaced() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let mut a = Storage::new(room("a"), store.clone());
        let mut b = Storage::new(room("b"), store.clone());
        a.set_alarm(2_000);
        b.set_alarm(1_000);
        a.commit().await.unwrap();
        b.commit().await.unwrap();
        assert_eq!(store.next_alarm().await.unwrap(), Some(1_000));
        assert_eq!(
            store.due_alarms(1_500, None, 10).await.unwrap(),
            vec![(room("b"), 1_000)]
        );
        assert_eq!(store.due_alarms(5_000, None, 10).await.unwrap().len(), 2);
        // Paging: the page after the first entry holds the second.
        let first = store.due_alarms(5_000, None, 1).await.unwrap();
        assert_eq!(first, vec![(room("b"), 1_000)]);
        let second = store
            .due_alarms(5_000, first.last().cloned(), 10)
            .await
            .unwrap();
        assert_eq!(second, vec![(room("a"), 2_000)]);
        // Setting again replaces the old entry; deleting removes it from the index.
        b.set_alarm(3_000);
        b.commit().await.unwrap();
        assert_eq!(
            store.due_alarms(2_500, None, 10).await.unwrap(),
            vec![(room("a"), 2_000)]
        );
        a.delete_alarm();
        a.commit().await.unwrap();
        assert_eq!(a.get_alarm().await.unwrap(), None);
        assert_eq!(store.next_alarm().await.unwrap(), Some(3_000));
        assert_eq!(b.get_alarm().await.unwrap(), Some(3_000));
    })
    .await;
}

#[tokio::test]
async fn many_rooms_committing_at_once_all_land() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut s = Storage::new(room(&format!("room-{i}")), store);
                    s.put("n", i.to_string()).unwrap();
                    s.commit().await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        drop(store);
        let store = backend.open().await;
        for i in 0..300 {
            let s = Storage::new(room(&format!("room-{i}")), store.clone());
            assert_eq!(s.get("n").await.unwrap().unwrap(), i.to_string().as_bytes());
        }
    })
    .await;
}

fn claim(node: &str, incarnation: u64, live: &[&str]) -> Claim {
    Claim {
        node: node.into(),
        incarnation,
        region: conclave_node::storage::DEFAULT_REGION.into(),
        live_nodes: live.iter().map(|s| s.to_string()).collect(),
        take_over: false,
    }
}

#[tokio::test]
async fn a_room_home_region_is_fixed_once_and_binds_its_claims() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("homed");
        assert_eq!(store.home_region(&r, "eu").await.unwrap(), "eu");
        assert_eq!(
            store.home_region(&r, "us").await.unwrap(),
            "eu",
            "the first proposal wins"
        );
        let in_region = |node: &str, region: &str| Claim {
            region: region.into(),
            ..claim(node, 1, &["a", "b"])
        };
        assert!(matches!(
            store.claim(&r, &in_region("a", "us")).await,
            Err(StorageError::OtherRegion { ref home }) if home == "eu"
        ));
        let b = store.claim(&r, &in_region("b", "eu")).await.unwrap();
        assert_eq!((b.epoch, b.region.as_str()), (1, "eu"));
        assert_eq!(store.home_region(&r, "us").await.unwrap(), "eu");
        // A room first claimed without a lookup is homed in its claimer's region.
        let fresh = room("claimed-first");
        store.claim(&fresh, &in_region("a", "us")).await.unwrap();
        assert_eq!(store.home_region(&fresh, "eu").await.unwrap(), "us");
    })
    .await;
}

/// A claimant the ring places the room on takes it from a live holder that did not let it
/// go in time (`take_over`); what the holder commits after that is refused.
#[tokio::test]
async fn a_room_is_taken_over_from_a_live_holder_that_kept_it() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("kept");
        let a = store.claim(&r, &claim("a", 1, &["a", "b"])).await.unwrap();
        assert!(matches!(
            store.claim(&r, &claim("b", 1, &["a", "b"])).await,
            Err(StorageError::Held { .. })
        ));
        let taking_over = Claim {
            take_over: true,
            ..claim("b", 1, &["a", "b"])
        };
        let b = store.claim(&r, &taking_over).await.unwrap();
        assert_eq!((b.node.as_str(), b.epoch), ("b", a.epoch + 1));
        let mut late = Storage::new(r.clone(), store.clone());
        late.set_fence(Some(a));
        late.put("k", "from a").unwrap();
        assert!(matches!(
            late.commit().await,
            Err(StorageError::Fenced { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn ownership_is_claimed_in_storage_and_stale_owners_are_fenced() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("owned");
        let a1 = store.claim(&r, &claim("a", 1, &["a", "b"])).await.unwrap();
        assert_eq!((a1.node.as_str(), a1.epoch), ("a", 1));
        assert_eq!(
            store.claim(&r, &claim("a", 1, &["a", "b"])).await.unwrap(),
            a1,
            "re-claiming keeps the epoch"
        );
        assert!(matches!(
            store.claim(&r, &claim("b", 9, &["a", "b"])).await,
            Err(StorageError::Held { .. })
        ));

        let mut stale = Storage::new(r.clone(), store.clone());
        stale.set_fence(Some(a1.clone()));
        stale.put("k", "from a1").unwrap();
        stale.commit().await.unwrap();

        // The node restarts: its new process takes over from the old one.
        let a2 = store.claim(&r, &claim("a", 2, &["a", "b"])).await.unwrap();
        assert_eq!(a2.epoch, 2);
        stale.put("k", "late write from a1").unwrap();
        stale.set_alarm(1);
        assert!(matches!(
            stale.commit().await,
            Err(StorageError::Fenced { .. })
        ));
        assert_eq!(
            store.get(&r, &["k".into()]).await.unwrap()[0].as_deref(),
            Some(&b"from a1"[..])
        );
        assert_eq!(
            store.next_alarm().await.unwrap(),
            None,
            "a fenced commit writes nothing"
        );

        // Node a leaves the ring: b takes over, a's commits are fenced.
        let b1 = store.claim(&r, &claim("b", 9, &["b"])).await.unwrap();
        assert_eq!(b1.epoch, 3);
        let mut a = Storage::new(r.clone(), store.clone());
        a.set_fence(Some(a2.clone()));
        a.put("k", "a2").unwrap();
        assert!(matches!(a.commit().await, Err(StorageError::Fenced { .. })));

        // A released room may be claimed by any node; releasing someone else's claim does nothing.
        store.release(&r, &a2).await.unwrap();
        assert_eq!(store.owner(&r).await.unwrap(), Some(b1.clone()));
        store.release(&r, &b1).await.unwrap();
        let mut released = Storage::new(r.clone(), store.clone());
        released.set_fence(Some(b1.clone()));
        released.put("k", "after release").unwrap();
        assert!(matches!(
            released.commit().await,
            Err(StorageError::Fenced { .. })
        ));
        let a3 = store.claim(&r, &claim("a", 2, &["a", "b"])).await.unwrap();
        assert_eq!((a3.node.as_str(), a3.epoch), ("a", 4));
    })
    .await;
}

/// A released room that holds nothing but its owner record is forgotten (a room that was
/// only read leaves nothing behind); one with a key or an alarm keeps a released record,
/// and a room whose name extends the other's does not count as the other's.
#[tokio::test]
async fn releasing_a_room_that_holds_nothing_forgets_it() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let live = ["a", "b"];
        let (read_only, longer, alarmed) = (room("read"), room("read-too"), room("alarmed"));
        let owner = store
            .claim(&read_only, &claim("a", 1, &live))
            .await
            .unwrap();
        let longer_owner = store.claim(&longer, &claim("a", 1, &live)).await.unwrap();
        let alarmed_owner = store.claim(&alarmed, &claim("a", 1, &live)).await.unwrap();
        let mut writes = Storage::new(longer.clone(), store.clone());
        writes.set_fence(Some(longer_owner.clone()));
        writes.put("k", "v").unwrap();
        writes.commit().await.unwrap();
        let mut alarm = Storage::new(alarmed.clone(), store.clone());
        alarm.set_fence(Some(alarmed_owner.clone()));
        alarm.set_alarm(4_000_000_000_000);
        alarm.commit().await.unwrap();

        store.release(&read_only, &owner).await.unwrap();
        store.release(&longer, &longer_owner).await.unwrap();
        store.release(&alarmed, &alarmed_owner).await.unwrap();
        assert_eq!(
            store.owner(&read_only).await.unwrap(),
            None,
            "not forgotten"
        );
        for (r, what) in [(&longer, "a key"), (&alarmed, "an alarm")] {
            let record = store.owner(r).await.unwrap();
            assert!(
                record.is_some_and(|o| o.released),
                "a room with {what} lost its record"
            );
        }

        // Forgotten, the room starts over; the old claim is refused.
        let again = store
            .claim(&read_only, &claim("b", 2, &live))
            .await
            .unwrap();
        assert_eq!((again.node.as_str(), again.epoch), ("b", 1));
        let mut stale = Storage::new(read_only.clone(), store.clone());
        stale.set_fence(Some(owner));
        stale.put("k", "late").unwrap();
        assert!(matches!(
            stale.commit().await,
            Err(StorageError::Fenced { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn concurrent_first_claims_have_one_winner() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let nodes: Vec<String> = (0..16).map(|i| format!("n{i}")).collect();
        let live: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let tasks: Vec<_> = nodes
            .iter()
            .map(|n| {
                let (store, c) = (store.clone(), claim(n, 1, &live));
                tokio::spawn(async move { store.claim(&room("contested"), &c).await })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(owner) => winners.push(owner),
                Err(StorageError::Held { .. }) => {}
                Err(e) => panic!("unexpected claim error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        assert_eq!(
            store.owner(&room("contested")).await.unwrap().as_ref(),
            winners.first()
        );
    })
    .await;
}

#[tokio::test]
async fn large_values_round_trip_whole_and_in_order() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("large");
        // Around the sizes a backend may split values at, up to the per-value limit.
        let sizes = [
            0,
            1,
            65_535,
            65_536,
            65_537,
            100_000,
            131_071,
            MAX_VALUE_BYTES,
        ];
        let value = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 251) as u8).collect() };
        let mut s = Storage::new(r.clone(), store.clone());
        for (i, n) in sizes.iter().enumerate() {
            s.put(&format!("v{i}"), value(*n)).unwrap();
        }
        s.commit().await.unwrap();
        let s = Storage::new(r.clone(), store.clone());
        for (i, n) in sizes.iter().enumerate() {
            let got = s.get(&format!("v{i}")).await.unwrap().unwrap();
            assert_eq!(got.len(), *n, "v{i}");
            assert_eq!(&got[..], &value(*n)[..], "v{i}");
        }
        let listed = s.list(&ListOptions::default()).await.unwrap();
        assert_eq!(
            keys(&listed),
            ["v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"]
        );
        assert!(listed
            .iter()
            .zip(sizes)
            .all(|((_, v), n)| v.len() == n && v[..] == value(n)[..]));
        let backwards = s
            .list(&ListOptions {
                reverse: true,
                limit: Some(3),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(keys(&backwards), ["v7", "v6", "v5"]);
        assert_eq!(backwards[0].1.len(), MAX_VALUE_BYTES);
        // Overwriting a large value with a small one leaves nothing of the old one.
        let mut s = Storage::new(r.clone(), store.clone());
        s.put("v7", "small").unwrap();
        s.commit().await.unwrap();
        assert_eq!(
            store.get(&r, &["v7".into()]).await.unwrap()[0].as_deref(),
            Some(&b"small"[..])
        );
    })
    .await;
}

#[tokio::test]
async fn commits_of_a_room_apply_in_order_and_rooms_stay_apart() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("ordered");
        for i in 0..50 {
            let mut s = Storage::new(r.clone(), store.clone());
            s.put("n", i.to_string()).unwrap();
            s.put(&format!("k{i:02}"), "x").unwrap();
            if i == 25 {
                // delete_all and writes in one commit: the writes survive it.
                s.delete_all();
                s.put("n", i.to_string()).unwrap();
                s.put(&format!("k{i:02}"), "x").unwrap();
            }
            s.commit().await.unwrap();
        }
        let s = Storage::new(r.clone(), store.clone());
        assert_eq!(s.get("n").await.unwrap().as_deref(), Some(&b"49"[..]));
        let listed = s
            .list(&ListOptions {
                prefix: Some("k".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 25, "keys before the delete_all are gone");
        assert_eq!(listed[0].0, "k25");
        assert_eq!(
            Storage::new(room("other"), store.clone())
                .get("n")
                .await
                .unwrap(),
            None
        );
    })
    .await;
}

/// A store's sessions plan their statements generically unless the operator's URL says
/// otherwise, and the claim it rehearses on each pooled session at start leaves nothing
/// stored.
#[tokio::test]
async fn sessions_plan_generically_and_the_start_leaves_nothing_stored() {
    use conclave_node::storage::postgres_session_config;
    let url = common::postgres::fresh_database().await;
    let _store = PostgresStore::connect(&url, 4).await.unwrap();
    let plan_mode = async |url: &str| {
        let (client, conn) = postgres_session_config(url)
            .unwrap()
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let row = client.query_one("SHOW plan_cache_mode", &[]).await.unwrap();
        let stored: i64 = client
            .query_one("SELECT count(*) FROM conclave_kv", &[])
            .await
            .unwrap()
            .get(0);
        conn.abort();
        (row.get::<_, String>(0), stored)
    };
    assert_eq!(plan_mode(&url).await, ("force_generic_plan".into(), 0));
    let sep = if url.contains('?') { '&' } else { '?' };
    let own = format!("{url}{sep}options=-c%20plan_cache_mode%3Dauto");
    assert_eq!(plan_mode(&own).await.0, "auto");
}

/// Finding 2 of issue 11: an owner stopped in the middle of a commit (its session holding
/// the owner row `FOR SHARE`) must not hold up the next owner's claim for longer than the
/// store's bound. Here a session opened with the store's own settings stalls inside such a
/// transaction; PostgreSQL ends it after `IDLE_IN_TRANSACTION_TIMEOUT`, and the claim goes
/// through; the stalled owner's later commit is fenced as before.
#[tokio::test]
async fn a_claim_does_not_wait_for_an_owner_stalled_mid_commit() {
    use conclave_node::storage::postgres_session_config;
    let url = common::postgres::fresh_database().await;
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
    let r = room("stalled");
    let a = store.claim(&r, &claim("a", 1, &["a", "b"])).await.unwrap();

    // Node a's session, stopped mid-commit: the owner row is locked and nothing follows.
    let (stalled, conn) = postgres_session_config(&url)
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    stalled
        .batch_execute("BEGIN; SELECT k FROM conclave_kv FOR SHARE;")
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let claimed = tokio::time::timeout(
        Duration::from_secs(10),
        store.claim(&r, &claim("b", 7, &["b"])),
    )
    .await
    .expect("the claim waited on the stalled owner's lock")
    .unwrap();
    assert_eq!(claimed.node, "b");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the claim took {:?}",
        started.elapsed()
    );
    // PostgreSQL ended the stalled session; its node's later commit is refused.
    assert!(stalled.simple_query("SELECT 1").await.is_err());
    conn.abort();
    let mut late = Storage::new(r.clone(), store.clone());
    late.set_fence(Some(a));
    late.put("k", "late").unwrap();
    assert!(matches!(
        late.commit().await,
        Err(StorageError::Fenced { .. })
    ));
}

/// The runtime's ledger records commit atomically with the room's writes, but live apart
/// from the party's keys: `list`, `get` and `delete_all` never see them, and a fenced
/// commit writes neither.
/// A claim hands its owner every commit of the previous owner that was acknowledged before
/// the claim, in its ledger and its usage, and none after: those are fenced.
#[tokio::test]
async fn a_claim_loads_every_commit_acknowledged_before_it() {
    use conclave_node::storage::RoomCommit;
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("handed-over");
        let a = store.claim(&r, &claim("a", 1, &["a", "b"])).await.unwrap();
        // Node a commits as fast as it can while b takes the room over.
        let writer = {
            let (store, r) = (store.clone(), r.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let key = format!("a/{i:06}");
                    let commit = RoomCommit {
                        writes: vec![(key.clone(), Some(Bytes::from("value")))],
                        ledger: vec![(key.clone(), Some(Bytes::from("record")))],
                        fence: Some(a.clone()),
                        ..RoomCommit::default()
                    };
                    match store.commit(&r, commit).await {
                        Ok(_) => acknowledged.push(key),
                        Err(StorageError::Fenced { .. }) => return acknowledged,
                        Err(e) => panic!("unexpected commit error: {e}"),
                    }
                }
                unreachable!("the loop ends when the commits are fenced")
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let taken = store
            .claim_and_load(&r, &claim("b", 1, &["b"]))
            .await
            .unwrap();
        let acknowledged = writer.await.unwrap();
        assert_eq!((taken.owner.node.as_str(), taken.owner.epoch), ("b", 2));
        assert!(
            !acknowledged.is_empty(),
            "no commit got in before the claim"
        );
        assert_eq!(keys(&taken.ledger), acknowledged);
        assert_eq!(taken.usage.keys, acknowledged.len() as u64);
        assert_eq!(taken.usage, store.usage(&r).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn ledger_records_commit_with_the_step_and_stay_apart_from_the_party_keys() {
    use conclave_node::storage::RoomCommit;
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("ledger");
        let owner = store.claim(&r, &claim("a", 1, &["a"])).await.unwrap();
        let put = |k: &str, v: &str| (k.to_string(), Some(Bytes::from(v.to_string())));
        let commit = RoomCommit {
            writes: vec![put("a/1", "party")],
            ledger: vec![put("a/1", "ledger"), put("o/2", "out")],
            fence: Some(owner.clone()),
            ..RoomCommit::default()
        };
        store.commit(&r, commit).await.unwrap();
        assert_eq!(
            store.ledger(&r).await.unwrap(),
            [
                ("a/1".to_string(), Bytes::from("ledger")),
                ("o/2".to_string(), Bytes::from("out"))
            ]
        );
        assert_eq!(
            keys(&store.list(&r, &ListOptions::default()).await.unwrap()),
            ["a/1"]
        );
        assert!(store.ledger(&room("other")).await.unwrap().is_empty());

        // delete_all clears the party's keys only; a ledger delete is a delete.
        let commit = RoomCommit {
            delete_all: true,
            ledger: vec![("o/2".to_string(), None)],
            fence: Some(owner.clone()),
            ..RoomCommit::default()
        };
        store.commit(&r, commit).await.unwrap();
        assert!(store
            .list(&r, &ListOptions::default())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(keys(&store.ledger(&r).await.unwrap()), ["a/1"]);

        // A stale owner's ledger writes are refused with the rest of its commit.
        let taken = store.claim(&r, &claim("b", 1, &["b"])).await.unwrap();
        assert_ne!(taken, owner);
        let stale = RoomCommit {
            ledger: vec![put("a/1", "stale")],
            fence: Some(owner),
            ..RoomCommit::default()
        };
        assert!(matches!(
            store.commit(&r, stale).await,
            Err(StorageError::Fenced { .. })
        ));
        assert_eq!(
            store.ledger(&r).await.unwrap(),
            [("a/1".to_string(), Bytes::from("ledger"))]
        );
    })
    .await;
}

/// Values of `n` bytes, different for each key, checked byte for byte.
fn pattern(key: &str, n: usize) -> Vec<u8> {
    let seed = key
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    (0..n)
        .map(|i| (seed.wrapping_add(i as u32 * 131) % 251) as u8)
        .collect()
}

/// Thousands of keys, some of them two-chunk values, listed forward and in reverse, with
/// limits, prefixes, `start_after` and `end` that cross any page a backend reads in (a
/// backend that stops at its first short page, or cuts a value at a page's edge, fails).
#[tokio::test]
async fn thousands_of_keys_list_exactly_across_pages() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("thousands");
        let names: Vec<String> = (0..3_000).map(|i| format!("k{i:04}")).collect();
        let size = |i: usize| {
            if i.is_multiple_of(97) {
                100_000
            } else {
                40 + i % 300
            }
        };
        for chunk in names.chunks(500).enumerate() {
            let mut s = Storage::new(r.clone(), store.clone());
            for (j, k) in chunk.1.iter().enumerate() {
                s.put(k, pattern(k, size(chunk.0 * 500 + j))).unwrap();
            }
            s.commit().await.unwrap();
        }
        let check = |got: &[(String, Bytes)], want: &[String]| {
            assert_eq!(
                keys(got),
                want.iter().map(String::as_str).collect::<Vec<_>>()
            );
            for (k, v) in got {
                let i: usize = k[1..].parse().unwrap();
                assert!(v[..] == pattern(k, size(i))[..], "{k} differs");
            }
        };
        let list = |opts: ListOptions| {
            let (store, r) = (store.clone(), r.clone());
            async move { store.list(&r, &opts).await.unwrap() }
        };
        check(&list(ListOptions::default()).await, &names);
        let mut reversed = names.clone();
        reversed.reverse();
        check(
            &list(ListOptions {
                reverse: true,
                limit: Some(2_500),
                ..Default::default()
            })
            .await,
            &reversed[..2_500],
        );
        check(&list(ListOptions::prefix("k1")).await, &names[1_000..2_000]);
        check(
            &list(ListOptions {
                start_after: Some("k0999".into()),
                limit: Some(1_200),
                ..Default::default()
            })
            .await,
            &names[1_000..2_200],
        );
        check(
            &list(ListOptions {
                end: Some("k2500".into()),
                reverse: true,
                limit: Some(1_100),
                ..Default::default()
            })
            .await,
            &reversed[500..1_600],
        );
        assert!(list(ListOptions {
            limit: Some(0),
            ..Default::default()
        })
        .await
        .is_empty());
    })
    .await;
}

/// Keys that are prefixes of one another, each holding a value of two chunks or more: each
/// reads back whole, alone and in a list, and deleting one leaves the others whole.
#[tokio::test]
async fn keys_that_prefix_each_other_keep_their_multi_chunk_values_apart() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("prefixes");
        let names = ["a", "ab", "abc", "abc\u{0}", "abd"];
        let mut s = Storage::new(r.clone(), store.clone());
        for (i, k) in names.iter().enumerate() {
            s.put(k, pattern(k, 65_536 + 17 * i)).unwrap();
        }
        s.commit().await.unwrap();
        let read = |k: &str| {
            let (store, r, k) = (store.clone(), r.clone(), k.to_string());
            async move { store.get(&r, &[k]).await.unwrap().pop().flatten() }
        };
        for (i, k) in names.iter().enumerate() {
            assert!(
                read(k).await.unwrap()[..] == pattern(k, 65_536 + 17 * i)[..],
                "{k:?}"
            );
        }
        let listed = store.list(&r, &ListOptions::prefix("ab")).await.unwrap();
        assert_eq!(keys(&listed), ["ab", "abc", "abc\u{0}", "abd"]);
        let mut s = Storage::new(r.clone(), store.clone());
        s.delete("abc").unwrap();
        s.commit().await.unwrap();
        assert_eq!(read("abc").await, None);
        for (i, k) in names.iter().enumerate().filter(|(_, k)| **k != "abc") {
            assert!(
                read(k).await.unwrap()[..] == pattern(k, 65_536 + 17 * i)[..],
                "{k:?}"
            );
        }
    })
    .await;
}

/// Hundreds of due alarms of rooms with long names, read in pages through `after`: each
/// comes exactly once, earliest first; a page of 0 is empty.
#[tokio::test]
async fn hundreds_of_due_alarms_with_long_names_page_exactly_once() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let long = "r".repeat(480);
        let rooms: Vec<RoomKey> = (0..300).map(|i| room(&format!("{long}{i:03}"))).collect();
        for (i, r) in rooms.iter().enumerate() {
            let mut s = Storage::new(r.clone(), store.clone());
            s.set_alarm(1_000 + (i as i64 % 7));
            s.commit().await.unwrap();
        }
        // Pages as the scheduler reads them (node/src/alarms.rs): a page shorter than the
        // limit is the end of the index. 256 keys of ~500 bytes are more than one
        // FoundationDB batch holds.
        let (mut seen, mut after, limit) = (Vec::new(), None, 256);
        loop {
            let page = store.due_alarms(2_000, after.clone(), limit).await.unwrap();
            assert!(page.len() <= limit);
            let end = page.len() < limit;
            after = page.last().cloned().or(after);
            seen.extend(page);
            if end {
                break;
            }
        }
        assert_eq!(seen.len(), rooms.len(), "every due alarm once");
        assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "earliest first");
        let mut names: Vec<&str> = seen.iter().map(|(r, _)| r.room.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), rooms.len(), "an alarm came twice");
        assert!(store.due_alarms(2_000, None, 0).await.unwrap().is_empty());
        assert_eq!(store.next_alarm().await.unwrap(), Some(1_000));
    })
    .await;
}

/// A claim waiting for another live holder hears of its release promptly.
#[tokio::test]
async fn an_owner_change_wait_ends_soon_after_the_release() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("handover");
        let held = store.claim(&r, &claim("a", 1, &["a", "b"])).await.unwrap();
        let release = {
            let (store, r) = (store.clone(), r.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                store.release(&r, &held).await.unwrap();
            })
        };
        let started = std::time::Instant::now();
        loop {
            match store.claim(&r, &claim("b", 1, &["a", "b"])).await {
                Ok(owner) => {
                    assert_eq!(owner.node, "b");
                    break;
                }
                Err(StorageError::Held { .. }) => {
                    assert!(started.elapsed() < Duration::from_secs(3), "still held");
                    store.wait_owner_change(&r, Duration::from_secs(3)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        release.await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1_200),
            "the wait went on {:?} after a release at 200 ms",
            started.elapsed()
        );
    })
    .await;
}

/// A commit either applies whole or not at all, however large (a backend with a
/// transaction size limit refuses it whole).
#[tokio::test]
async fn a_large_commit_applies_whole_or_not_at_all() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("oversized");
        let mut s = Storage::new(r.clone(), store.clone());
        s.put("before", "kept").unwrap();
        s.commit().await.unwrap();
        let names: Vec<String> = (0..80).map(|i| format!("big{i:02}")).collect();
        let mut s = Storage::new(r.clone(), store.clone());
        for k in &names {
            s.put(k, pattern(k, MAX_VALUE_BYTES)).unwrap();
        }
        s.delete("before").unwrap();
        let result = s.commit().await;
        let listed = store.list(&r, &ListOptions::default()).await.unwrap();
        match result {
            Ok(()) => {
                assert_eq!(listed.len(), names.len());
                assert!(listed
                    .iter()
                    .all(|(k, v)| v[..] == pattern(k, MAX_VALUE_BYTES)[..]));
            }
            Err(e) => {
                assert_eq!(
                    keys(&listed),
                    ["before"],
                    "a refused commit ({e}) left a part"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn usage_counts_keys_and_bytes_exactly_and_sums_a_partys_rooms() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let usage = |bytes, keys| Usage { bytes, keys };
        let (r, longer, other) = (
            room("u"),
            room("u-longer"),
            RoomKey::new("other", "u").unwrap(),
        );
        let mut s = Storage::new(r.clone(), store.clone());
        s.put("a", vec![1u8; 10]).unwrap();
        s.put("bb", vec![2u8; 5]).unwrap();
        s.commit().await.unwrap();
        assert_eq!(store.usage(&r).await.unwrap(), usage(18, 2));
        // Overwritten, deleted, and a delete of a key that is not there.
        s.put("a", vec![1u8; 3]).unwrap();
        s.delete("bb").unwrap();
        s.delete("zz").unwrap();
        s.commit().await.unwrap();
        assert_eq!(store.usage(&r).await.unwrap(), usage(4, 1));
        // A value as large as allowed (FoundationDB keeps it in chunks), then replaced.
        s.put("big", vec![3u8; MAX_VALUE_BYTES]).unwrap();
        s.commit().await.unwrap();
        let big = 3 + MAX_VALUE_BYTES as u64;
        assert_eq!(store.usage(&r).await.unwrap(), usage(4 + big, 2));
        s.put("big", vec![3u8; 100]).unwrap();
        s.commit().await.unwrap();
        assert_eq!(store.usage(&r).await.unwrap(), usage(4 + 103, 2));
        // Rooms of the party add up; a room whose name extends another's and another
        // party's room stay apart.
        let mut l = Storage::new(longer.clone(), store.clone());
        l.put("k", "v").unwrap();
        l.commit().await.unwrap();
        let mut o = Storage::new(other.clone(), store.clone());
        o.put("k", vec![0u8; 1000]).unwrap();
        o.commit().await.unwrap();
        assert_eq!(store.usage(&longer).await.unwrap(), usage(2, 1));
        assert_eq!(store.party_usage("main").await.unwrap(), usage(109, 3));
        assert_eq!(store.party_usage("other").await.unwrap(), usage(1001, 1));
        assert_eq!(store.party_usage("nobody").await.unwrap(), usage(0, 0));
        // delete_all starts the count again.
        s.delete_all();
        s.put("c", "1").unwrap();
        s.commit().await.unwrap();
        assert_eq!(store.usage(&r).await.unwrap(), usage(2, 1));
        drop((s, l, o, store));
        // It persists, and a room that deleted everything holds nothing.
        let store = backend.open().await;
        assert_eq!(store.usage(&r).await.unwrap(), usage(2, 1));
        let mut s = Storage::new(r.clone(), store.clone());
        s.delete("c").unwrap();
        s.commit().await.unwrap();
        assert_eq!(store.usage(&r).await.unwrap(), usage(0, 0));
        assert_eq!(store.party_usage("main").await.unwrap(), usage(2, 1));
        // So its claim is forgotten when released, as for a room that never wrote.
        let owner = store.claim(&r, &claim("a", 1, &["a"])).await.unwrap();
        store.release(&r, &owner).await.unwrap();
        assert_eq!(store.owner(&r).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn a_rooms_quota_refuses_writes_past_it_and_counts_what_deletes_free() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let r = room("quota");
        let quota = StorageQuota {
            room_bytes: Some(100),
            room_keys: Some(3),
            ..StorageQuota::UNLIMITED
        };
        let mut s = Storage::new(r.clone(), store.clone());
        s.set_quota(quota, store.usage(&r).await.unwrap(), None);
        s.put("a", vec![0u8; 49]).unwrap(); // 50 bytes with its key
                                            // The same key again replaces what it buffered, it does not add to it.
        s.put("a", vec![0u8; 49]).unwrap();
        let refused = s.put("b", vec![0u8; 50]).unwrap_err();
        assert!(
            matches!(
                refused,
                StorageError::QuotaExceeded {
                    scope: "room",
                    what: "bytes",
                    used: 101,
                    limit: 100
                }
            ),
            "{refused}"
        );
        let text = refused.to_string();
        assert!(text.contains("quota") && text.contains("100"), "{text}");
        assert_eq!(
            s.get("b").await.unwrap(),
            None,
            "a refused write is not buffered"
        );
        // A batch over the quota is refused whole.
        let batch = vec![("c", vec![0u8; 10]), ("d", vec![0u8; 45])];
        assert!(matches!(
            s.put_many(batch),
            Err(StorageError::QuotaExceeded { .. })
        ));
        assert_eq!(s.get("c").await.unwrap(), None);
        s.put_many(vec![("c", vec![0u8; 9]), ("d", vec![0u8; 9])])
            .unwrap();
        assert!(matches!(
            s.put("e", ""),
            Err(StorageError::QuotaExceeded { what: "keys", .. })
        ));
        // Deleting what it buffered frees it at once.
        s.delete("d").unwrap();
        s.put("e", "").unwrap();
        s.commit().await.unwrap();
        assert_eq!(store.usage(&r).await.unwrap(), Usage { bytes: 61, keys: 3 });
        // A stored key is counted again until the commit says what it replaced: deleted
        // and committed, its bytes are free for the next write.
        s.delete("a").unwrap();
        assert!(s.put("big", vec![0u8; 60]).is_err());
        s.commit().await.unwrap();
        s.put("big", vec![0u8; 60]).unwrap();
        s.commit().await.unwrap();
        assert_eq!(store.usage(&r).await.unwrap(), Usage { bytes: 74, keys: 3 });
        // A room reopened with its usage from the store is held to the same bound.
        let mut again = Storage::new(r.clone(), store.clone());
        again.set_quota(quota, store.usage(&r).await.unwrap(), None);
        assert!(again.put("f", vec![0u8; 30]).is_err());
    })
    .await;
}

/// A commit that failed counts nothing against the quota: the step that wrote runs again
/// and writes the same, which must fit as it did the first time.
#[tokio::test]
async fn a_failed_commit_leaves_nothing_counted_against_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let test_store = common::store::TestStore::redb(&dir.path().join("quota.redb"));
    let failing = test_store.failing();
    let store: Arc<dyn Store> = Arc::new(test_store);
    let r = room("quota-retry");
    let quota = StorageQuota {
        room_keys: Some(1),
        ..StorageQuota::UNLIMITED
    };
    let mut s = Storage::new(r.clone(), store.clone());
    s.set_quota(quota, Usage::default(), None);
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    s.put("a", "1").unwrap();
    assert!(s.commit().await.is_err());
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    s.put("a", "1").unwrap();
    s.commit().await.unwrap();
    assert_eq!(store.usage(&r).await.unwrap().keys, 1);
}

#[tokio::test]
async fn a_partys_quota_counts_all_its_rooms() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        let quota = StorageQuota {
            party_bytes: Some(100),
            ..StorageQuota::UNLIMITED
        };
        let total = Arc::new(PartyTotal::default());
        total.set(store.party_usage("main").await.unwrap());
        let mut a = Storage::new(room("pa"), store.clone());
        a.set_quota(quota, Usage::default(), Some(total.clone()));
        let mut b = Storage::new(room("pb"), store.clone());
        b.set_quota(quota, Usage::default(), Some(total.clone()));
        a.put("k", vec![0u8; 59]).unwrap();
        a.commit().await.unwrap();
        assert_eq!(total.get(), Usage { bytes: 60, keys: 1 });
        let refused = b.put("k", vec![0u8; 40]).unwrap_err();
        assert!(
            matches!(refused, StorageError::QuotaExceeded { scope: "party", .. }),
            "{refused}"
        );
        b.put("k", vec![0u8; 39]).unwrap();
        b.commit().await.unwrap();
        assert_eq!(
            store.party_usage("main").await.unwrap(),
            Usage {
                bytes: 100,
                keys: 2
            }
        );
        assert_eq!(
            total.get(),
            Usage {
                bytes: 100,
                keys: 2
            }
        );
        // Freed in one room, room for the other.
        a.delete("k").unwrap();
        a.commit().await.unwrap();
        b.put("more", vec![0u8; 10]).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_partys_rooms_are_listed_in_pages_with_their_usage() {
    for_each_backend(async |backend| {
        let store = backend.open().await;
        for i in 0..5 {
            let r = RoomKey::new("pages", &format!("p{i}")).unwrap();
            let mut s = Storage::new(r, store.clone());
            s.put("k", vec![0u8; i]).unwrap();
            s.commit().await.unwrap();
        }
        // A room whose name extends a listed one's sorts right after it.
        let mut longer = Storage::new(RoomKey::new("pages", "p1-b").unwrap(), store.clone());
        longer.put("k", "v").unwrap();
        longer.commit().await.unwrap();
        let names =
            |page: &[(String, Usage)]| page.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>();
        let first = store.party_rooms("pages", None, 2).await.unwrap();
        assert_eq!(names(&first), ["p0", "p1"]);
        assert_eq!(first[1].1, Usage { bytes: 2, keys: 1 });
        let next = store.party_rooms("pages", Some("p1"), 2).await.unwrap();
        assert_eq!(names(&next), ["p1-b", "p2"]);
        let last = store.party_rooms("pages", Some("p3"), 10).await.unwrap();
        assert_eq!(names(&last), ["p4"]);
        assert!(store
            .party_rooms("pages", Some("p4"), 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.party_usage("pages").await.unwrap(),
            Usage {
                bytes: 5 + 10 + 2,
                keys: 6
            }
        );
    })
    .await;
}

/// A room whose keys were written before usage was recorded (no usage record) is counted
/// from its keys at its next commit, and from then on by its record. (PostgreSQL, where
/// the test can remove the record as an older version would have left the room.)
#[tokio::test]
async fn a_room_without_a_usage_record_is_counted_from_its_keys() {
    let url = common::postgres::fresh_database().await;
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 2).await.unwrap());
    let r = room("older");
    let mut s = Storage::new(r.clone(), store.clone());
    s.put_many(vec![("a", vec![0u8; 10]), ("b", vec![0u8; 20])])
        .unwrap();
    s.commit().await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // Usage records are the keys that start with the tuple-encoded string "usage".
    let records: &[u8] = b"\x02usage\x00";
    let removed = client
        .execute(
            "DELETE FROM conclave_kv WHERE substring(k from 1 for 7) = $1",
            &[&records],
        )
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(store.usage(&r).await.unwrap(), Usage { bytes: 32, keys: 2 });
    s.put("a", vec![0u8; 5]).unwrap();
    s.put("c", "").unwrap();
    s.commit().await.unwrap();
    assert_eq!(store.usage(&r).await.unwrap(), Usage { bytes: 28, keys: 3 });
    assert_eq!(
        store.party_usage("main").await.unwrap(),
        Usage { bytes: 28, keys: 3 }
    );
}
