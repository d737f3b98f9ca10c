//! An operator deleting the room (`DELETE /admin/rooms/:party/:room`): between two of its
//! steps, its connections are closed and forgotten (no `onClose` runs), its keys and alarm
//! are deleted in one fenced commit, and its party instance is dropped, so the next
//! connection starts an empty room.

use super::{gauge, RoomActor};
use crate::room::close_socket;
use crate::storage::StorageError;
use serde_json::json;

/// The close code and reason deleted rooms' sockets get.
const DELETED: (u16, &str) = (1000, "Room deleted");

impl RoomActor {
    pub(super) async fn delete(&mut self) -> serde_json::Value {
        if let Err(e) = self.claim().await {
            return json!({"error": format!("cannot claim the room: {e}")});
        }
        let held = self.room.storage().usage();
        let entries: Vec<_> = {
            let mut conns = self.room.shared().conns();
            let peers: Vec<_> = conns.iter().map(|e| e.peer()).collect();
            peers.into_iter().filter_map(|p| conns.remove(p)).collect()
        };
        // Their records of applied frames go in the same commit; kept to be put back if
        // it fails.
        let mut applied = Vec::new();
        for entry in &entries {
            let socket = entry.socket_ref();
            applied.push((socket, self.room.ledger().applied(socket)));
            self.room.ledger().closed(socket);
        }
        // What the party had written or sent in this step is not kept.
        self.room.discard_all();
        for entry in &entries {
            let (code, reason) = DELETED;
            self.room
                .shared()
                .push(entry.gateway, close_socket(entry.socket, code, reason));
        }
        self.room.storage().delete_all();
        self.room.storage().delete_alarm();
        let committed = self.room.commit().await;
        if self.party.take().is_some() {
            gauge::party_dropped();
        }
        if let Err(e) = committed {
            // Nothing was deleted: the connections stay in the room with their records
            // (their closes went with the failed commit), or their sockets would be open to
            // a room that no longer answers them.
            self.fenced |= matches!(e, StorageError::Fenced { .. });
            for (socket, seq) in applied {
                self.room.ledger().not_closed(socket, seq);
            }
            let mut conns = self.room.shared().conns();
            for entry in entries {
                conns.insert(entry);
            }
            return json!({"error": format!("the deletion did not commit: {e}")});
        }
        self.room.flush().await;
        self.ctx.alarms_changed.notify_one();
        json!({
            "deleted": true,
            "bytes": held.bytes,
            "keys": held.keys,
            "connections_closed": entries.len(),
        })
    }
}
