//! Every open client socket of this gateway, attached to a node or moving between nodes.

use crate::session::Session;
use conclave_proto::{IdHasher, RoomKey, SocketId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

pub(crate) struct Sessions {
    /// This gateway process, as nodes tell its sockets apart from other gateways'.
    pub origin: u64,
    next_socket: AtomicU64,
    /// Keyed by ids this gateway assigns: the fast hasher.
    open: Mutex<HashMap<SocketId, Arc<Session>, IdHasher>>,
    room_keys: Mutex<RoomKeys>,
}

/// One shared copy of each open socket's room key: a socket holds a pointer to its
/// room's key rather than its own copy of the names.
#[derive(Default)]
struct RoomKeys {
    keys: HashMap<RoomKey, Weak<RoomKey>>,
    /// How many keys the last sweep for rooms no socket is in left.
    after_sweep: usize,
}

/// Keys kept before the first sweep.
const MIN_SWEEP: usize = 64;

impl RoomKeys {
    fn share(&mut self, key: RoomKey) -> Arc<RoomKey> {
        if let Some(shared) = self.keys.get(&key).and_then(Weak::upgrade) {
            return shared;
        }
        // Rooms whose sockets have all gone are swept once the map has doubled since the
        // last sweep: at most twice the live rooms are kept, at O(1) a key amortized.
        if self.keys.len() >= 2 * self.after_sweep.max(MIN_SWEEP) {
            self.keys.retain(|_, k| k.strong_count() > 0);
            self.after_sweep = self.keys.len();
        }
        let shared = Arc::new(key);
        // The map's key shares the names' allocations with the shared key.
        self.keys
            .insert(RoomKey::clone(&shared), Arc::downgrade(&shared));
        shared
    }
}

impl Sessions {
    pub fn new() -> Self {
        Self {
            origin: random_origin(),
            next_socket: AtomicU64::new(1),
            open: Mutex::default(),
            room_keys: Mutex::default(),
        }
    }

    /// `key` as the sockets of its room share it.
    pub fn room_key(&self, key: RoomKey) -> Arc<RoomKey> {
        self.room_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .share(key)
    }

    fn open(&self) -> MutexGuard<'_, HashMap<SocketId, Arc<Session>, IdHasher>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A gateway-wide id for a new socket (nodes see it on every link it moves over).
    pub fn next_socket_id(&self) -> SocketId {
        SocketId(self.next_socket.fetch_add(1, Ordering::Relaxed))
    }

    pub fn add(&self, session: Arc<Session>) {
        self.open().insert(session.id, session);
    }

    pub fn remove(&self, socket: SocketId) {
        self.open().remove(&socket);
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.open().values().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.open().is_empty()
    }
}

/// A random id for this gateway process.
fn random_origin() -> u64 {
    let u = uuid::Uuid::new_v4().as_u128();
    (u as u64) ^ ((u >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rooms_sockets_share_its_key_and_gone_rooms_are_swept() {
        let mut keys = RoomKeys::default();
        let key = |r: &str| RoomKey::new("main", r).unwrap();
        let a = keys.share(key("a"));
        assert!(Arc::ptr_eq(&a, &keys.share(key("a"))));
        // Rooms come and go; the map stays within twice what is live (and the minimum).
        for n in 0..10 * MIN_SWEEP {
            drop(keys.share(key(&format!("gone-{n}"))));
        }
        assert!(
            keys.keys.len() <= 2 * MIN_SWEEP,
            "{} keys kept",
            keys.keys.len()
        );
        assert!(
            Arc::ptr_eq(&a, &keys.share(key("a"))),
            "a live room's key stays shared"
        );
    }
}
