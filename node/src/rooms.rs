//! The rooms live on this node: each one's mailbox and its connection count.
//!
//! An actor retires through the registry, under the same lock that hands out mailboxes:
//! an event either reaches a mailbox that is still registered, or finds it closed and
//! gets a fresh actor.

use crate::mailbox::{MailboxRx, MailboxTx};
use conclave_proto::RoomKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

struct Entry {
    tx: MailboxTx,
    /// Kept by the room's connection table.
    conns: Arc<AtomicUsize>,
}

#[derive(Default)]
pub(crate) struct Rooms {
    /// Keyed by a shared key: the records kept per socket hold the room's as a pointer.
    rooms: Mutex<HashMap<Arc<RoomKey>, Entry>>,
}

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<RoomKey>, Entry>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mailbox of `key`; if the room is not live, `start` starts its actor with the
    /// counter its connection table is to keep, and returns the actor's mailbox.
    pub fn mailbox<E>(
        &self,
        key: &RoomKey,
        start: impl FnOnce(Arc<AtomicUsize>) -> Result<MailboxTx, E>,
    ) -> Result<MailboxTx, E> {
        let mut rooms = self.lock();
        if let Some(e) = rooms.get(key) {
            return Ok(e.tx.clone());
        }
        let conns = Arc::new(AtomicUsize::new(0));
        let tx = start(conns.clone())?;
        rooms.insert(
            Arc::new(key.clone()),
            Entry {
                tx: tx.clone(),
                conns,
            },
        );
        gauge::room_started();
        Ok(tx)
    }

    /// `key` as the registry holds it when the room is live (a pointer to one key per
    /// room); else `key` in a pointer of its own (a room that starts later keeps another).
    pub fn shared_key(&self, key: RoomKey) -> Arc<RoomKey> {
        self.lock()
            .get_key_value(&key)
            .map_or_else(|| Arc::new(key), |(k, _)| k.clone())
    }

    /// The mailbox of `key` if the room is live on this node.
    pub fn live_mailbox(&self, key: &RoomKey) -> Option<MailboxTx> {
        self.lock().get(key).map(|e| e.tx.clone())
    }

    /// Forgets `key`'s entry if its actor is gone (retired or died).
    pub fn forget_if_closed(&self, key: &RoomKey) {
        let mut rooms = self.lock();
        if rooms.get(key).is_some_and(|e| e.tx.is_closed()) {
            rooms.remove(key);
        }
    }

    /// Removes an idle room with no connections, unless events are waiting for it; then
    /// closes its mailbox.
    pub fn retire(&self, key: &RoomKey, rx: &mut MailboxRx) -> bool {
        let mut rooms = self.lock();
        if !rx.is_empty() {
            return false;
        }
        if rooms
            .get(key)
            .is_some_and(|e| e.conns.load(Ordering::Relaxed) > 0)
        {
            return false;
        }
        rooms.remove(key);
        rx.close();
        true
    }

    /// Drops a room's actor from the registry at once (it was fenced).
    pub fn evict(&self, key: &RoomKey) {
        self.lock().remove(key);
    }

    /// Mailboxes of the live rooms `which` selects.
    pub fn mailboxes(&self, which: impl Fn(&RoomKey) -> bool) -> Vec<MailboxTx> {
        self.lock()
            .iter()
            .filter(|(k, _)| which(k))
            .map(|(_, e)| e.tx.clone())
            .collect()
    }

    /// Connections of the room on this node (0 if it is not live here).
    pub fn conn_count(&self, key: &RoomKey) -> usize {
        self.lock()
            .get(key)
            .map_or(0, |e| e.conns.load(Ordering::Relaxed))
    }

    /// Whether the room has an actor on this node (active or hibernated).
    pub fn is_live(&self, key: &RoomKey) -> bool {
        self.lock().contains_key(key)
    }

    /// Rooms live on this node.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The room gauges: a live room counts as hibernated until its party instance is in
/// memory, then as active.
pub(crate) mod gauge {
    const HIBERNATED: &str = "conclave_rooms_hibernated";
    const ACTIVE: &str = "conclave_rooms_active";

    pub fn room_started() {
        metrics::gauge!(HIBERNATED).increment(1.0);
    }

    pub fn room_retired() {
        metrics::gauge!(HIBERNATED).decrement(1.0);
    }

    pub fn party_loaded() {
        metrics::gauge!(HIBERNATED).decrement(1.0);
        metrics::gauge!(ACTIVE).increment(1.0);
    }

    pub fn party_dropped() {
        metrics::gauge!(ACTIVE).decrement(1.0);
        metrics::gauge!(HIBERNATED).increment(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_rooms_key_is_handed_out_in_place_of_an_equal_copy() {
        let rooms = Rooms::default();
        let key = RoomKey::new("main", "r").unwrap();
        let (tx, _rx) = crate::mailbox::mailbox(1);
        rooms.mailbox(&key, |_| Ok::<_, ()>(tx)).unwrap();
        let shared = rooms.shared_key(RoomKey::new("main", "r").unwrap());
        let again = rooms.shared_key(RoomKey::new("main", "r").unwrap());
        assert!(Arc::ptr_eq(&shared, &again));
        assert_eq!(*shared, key);
        // A room that is not live keeps the caller's key.
        let other = RoomKey::new("main", "s").unwrap();
        let kept = rooms.shared_key(other.clone());
        assert!(std::ptr::eq(kept.room.as_str(), other.room.as_str()));
    }
}
