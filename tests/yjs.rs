//! The yjs party's storage under many edits: 10,000 updates from one client leave at most
//! a bounded number of stored updates beside one snapshot, and what is stored is the
//! whole document; snapshot mode compacts it when the room empties. (Convergence,
//! awareness, restarts and the other options with the real npm providers:
//! tests/compat/yjs.test.mjs.)

mod common;

use common::*;
use conclave_node::parties::yjs::{Persistence, Yjs, YjsOptions};
use conclave_node::storage::{ListOptions, Store};
use conclave_node::Party;
use conclave_proto::RoomKey;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, Text, TextRef, Transact, Update};

const UPDATES: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_updates_leave_a_bounded_store_holding_the_whole_document() {
    let mut store: Option<Arc<dyn Store>> = None;
    let server = start_with_store(
        |c| {
            c.gateway.messages_per_second = 1e9;
            c.gateway.message_burst = 1e9;
        },
        |r| r,
        |s| {
            store = Some(s.clone());
            s
        },
    )
    .await;
    let store = store.unwrap();
    let mut ws = server.connect("/parties/yjs/doc?_pk=writer").await;

    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    type_digits(&mut ws, &doc, &text, UPDATES).await;
    // Every update comes back (the party sends each to everyone) once it is stored.
    let mut echoed = 0;
    while echoed < UPDATES {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(60), ws.next())
            .await
            .expect("the updates stopped coming back")
            .unwrap()
            .unwrap();
        if let WsMessage::Binary(b) = frame {
            if matches!(
                Message::decode_v1(&b),
                Ok(Message::Sync(SyncMessage::Update(_)))
            ) {
                echoed += 1;
            }
        }
    }

    let room = RoomKey::new("yjs", "doc").unwrap();
    let stored = store.list(&room, &ListOptions::default()).await.unwrap();
    let bytes: usize = stored.iter().map(|(_, v)| v.len()).sum();
    assert!(
        bytes < 256 * 1024,
        "{bytes} bytes stored for a 10,000-character document"
    );
    // What is stored is the document: the snapshot, then the updates after it.
    let (updates, restored) = stored_document(&store, &room).await;
    assert!(
        updates <= 500,
        "{updates} updates stored past the compaction bound"
    );
    let want = text.get_string(&doc.transact());
    assert_eq!(restored, want);
    assert_eq!(want.len(), UPDATES);
}

/// Types `count` digits at the end of `text`, one y-websocket update each, sent on `ws`.
async fn type_digits<S>(ws: &mut S, doc: &Doc, text: &TextRef, count: usize)
where
    S: futures::Sink<WsMessage> + Unpin,
    S::Error: std::fmt::Debug,
{
    for i in 0..count {
        let update = {
            let mut txn = doc.transact_mut();
            text.push(&mut txn, &(i % 10).to_string());
            txn.encode_update_v1()
        };
        let message = Message::Sync(SyncMessage::Update(update)).encode_v1();
        ws.send(WsMessage::binary(message)).await.unwrap();
    }
}

/// What `store` holds of `room`'s document: (updates stored beside the snapshot, the text
/// `"t"` of the snapshot and updates applied in order).
async fn stored_document(store: &Arc<dyn Store>, room: &RoomKey) -> (usize, String) {
    let stored = store.list(room, &ListOptions::default()).await.unwrap();
    let restored = Doc::new();
    let text = restored.get_or_insert_text("t");
    let mut txn = restored.transact_mut();
    let snapshot: Vec<u8> = stored
        .iter()
        .filter(|(k, _)| k.starts_with("y/s/"))
        .flat_map(|(_, v)| v.to_vec())
        .collect();
    if !snapshot.is_empty() {
        txn.apply_update(Update::decode_v1(&snapshot).unwrap())
            .unwrap();
    }
    let updates: Vec<_> = stored
        .iter()
        .filter(|(k, _)| k.starts_with("y/u/"))
        .collect();
    for (_, v) in &updates {
        txn.apply_update(Update::decode_v1(v).unwrap()).unwrap();
    }
    drop(txn);
    let text = text.get_string(&restored.transact());
    (updates.len(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_mode_compacts_the_document_when_the_room_empties_and_history_mode_does_not() {
    let mut store: Option<Arc<dyn Store>> = None;
    let server = start_with_store(
        |_| {},
        |r| {
            r.with_factory("snap", || {
                let options = YjsOptions {
                    persist: Persistence::Snapshot,
                    ..Default::default()
                };
                Box::new(Yjs::new(options)) as Box<dyn Party>
            })
        },
        |s| {
            store = Some(s.clone());
            s
        },
    )
    .await;
    let store = store.unwrap();
    for party in ["snap", "yjs"] {
        let mut ws = server.connect(&format!("/parties/{party}/doc?_pk=w")).await;
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        type_digits(&mut ws, &doc, &text, 20).await;
        let room = RoomKey::new(party, "doc").unwrap();
        let want = text.get_string(&doc.transact());
        // Stored as they come, in both modes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stored_document(&store, &room).await != (20, want.clone()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{party}: updates not stored"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        ws.close(None).await.unwrap();
        let compacted = (0, want.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut last = stored_document(&store, &room).await;
        while last != compacted && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            last = stored_document(&store, &room).await;
        }
        match party {
            "snap" => assert_eq!(last, compacted, "snapshot mode kept updates"),
            _ => assert_eq!(last, (20, want), "history mode compacted early"),
        }
    }
}

/// A sync step 2 whose update waits on structs nobody sent (found by the `y_websocket`
/// fuzz target): yrs keeps it pending, and merging it into an encoding panics. Stored, it
/// made every later sync step 1 (each new client's first message) kill the room, for good.
const UNENCODABLE_WHEN_PENDING: [u8; 20] = [
    0x00, 0x01, 0x11, 0x02, 0x02, 0x02, 0x40, 0x0a, 0x29, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

/// The update a sync step 2 answering `ws`'s sync step 1 carries.
async fn synced_update<S>(ws: &mut S) -> Option<Vec<u8>>
where
    S: futures::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<WsMessage>
        + Unpin,
    <S as futures::Sink<WsMessage>>::Error: std::fmt::Debug,
{
    let step1 = Message::Sync(SyncMessage::SyncStep1(Default::default())).encode_v1();
    ws.send(WsMessage::binary(step1)).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let WsMessage::Binary(b) = frame {
            if let Ok(Message::Sync(SyncMessage::SyncStep2(update))) = Message::decode_v1(&b) {
                return Some(update);
            }
        }
    }
    None
}

#[tokio::test]
async fn an_update_that_would_break_the_document_is_refused_and_the_room_serves_on() {
    let server = start(|_| {}, |r| r).await;
    let path = "/parties/yjs/fuzzed";
    let mut writer = server.connect(path).await;
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    type_digits(&mut writer, &doc, &text, 3).await;

    let mut attacker = server.connect(path).await;
    attacker
        .send(WsMessage::binary(UNENCODABLE_WHEN_PENDING.to_vec()))
        .await
        .unwrap();
    for _ in 0..2 {
        let mut reader = server.connect(path).await;
        let update = synced_update(&mut reader)
            .await
            .expect("a new client got no sync step 2: the room is broken");
        let copy = Doc::new();
        let copy_text = copy.get_or_insert_text("t");
        copy.transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        assert_eq!(copy_text.get_string(&copy.transact()), "012");
    }
}
