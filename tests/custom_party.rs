//! A server binary of one's own runs as a cluster exactly like `conclave`:
//! `examples/custom-party` (`conclave::Conclave` plus a `reminders` party kind) as two
//! nodes on one PostgreSQL and a gateway, every role started from that binary.

mod common;

use common::cluster::{named_room_on, Cluster};
use common::*;
use std::path::PathBuf;

/// The example's binary, built next to `conclave` (scripts/test.sh builds the workspace).
fn custom_party() -> PathBuf {
    let bin = common::process::conclave().with_file_name("custom-party");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p custom-party)",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn a_custom_party_runs_on_both_nodes_of_a_cluster_with_its_alarms() {
    let cluster = Cluster::builder()
        .program(custom_party())
        .nodes(["a", "b"])
        .start()
        .await;
    for node in ["a", "b"] {
        let room = named_room_on("remind", "reminders", &["a", "b"], node);
        let mut ws = cluster
            .ws(0, &format!("/parties/reminders/{room}?_pk=me"))
            .await;
        send(&mut ws, r#"{"in_ms": 200, "text": "stand up"}"#).await;
        assert_eq!(next_json(&mut ws).await["type"], "scheduled");
        // The alarm fires on the room's node and the reminder reaches the socket.
        let fired = next_json(&mut ws).await;
        assert_eq!(
            (fired["type"].as_str(), fired["text"].as_str()),
            (Some("reminder"), Some("stand up"))
        );
        let info = cluster
            .admin(0, &format!("/admin/rooms/reminders/{room}"))
            .await;
        assert_eq!(info["node"]["owner"]["node"], node, "{info}");
        let (status, body) = cluster.get(0, &format!("/parties/reminders/{room}")).await;
        assert_eq!(status, 200, "{body}");
        let state: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(state["fired"][0]["text"], "stand up", "{state}");
    }
    // The built-in kinds are still served by the custom binary.
    let mut c = cluster.ws(0, "/parties/counter/c?_pk=x").await;
    send(&mut c, "incr").await;
    assert_eq!(next_json(&mut c).await["value"], 1);
}
