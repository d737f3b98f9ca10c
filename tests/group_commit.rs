//! Rooms committing at the same time share durable writes (group commit). Its own test
//! binary, so the process-wide metrics count only this test's commits.

use conclave_node::storage::{RedbStore, Store};
use conclave_node::Storage;
use conclave_proto::RoomKey;
use std::sync::Arc;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_room_commits_share_transactions() {
    let metrics = conclave::telemetry::metrics();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("db.redb")).unwrap());
    const ROOMS: usize = 400;
    let tasks: Vec<_> = (0..ROOMS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = Storage::new(RoomKey::new("main", &format!("r{i}")).unwrap(), store);
                s.put("k", "v").unwrap();
                s.commit().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let text = metrics.render();
    let commits = metric(&text, "conclave_storage_commit_group_size_sum");
    let transactions = metric(&text, "conclave_storage_commit_group_size_count");
    assert_eq!(commits as usize, ROOMS, "{text}");
    println!("{ROOMS} room commits in {transactions} write transactions");
    assert!(
        transactions < ROOMS as f64 / 4.0,
        "{ROOMS} commits took {transactions} write transactions"
    );
}
