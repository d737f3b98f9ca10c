//! Every open client socket of this gateway, attached to a node or moving between nodes.

use crate::session::Session;
use conclave_proto::SocketId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) struct Sessions {
    /// This gateway process, as nodes tell its sockets apart from other gateways'.
    pub origin: u64,
    next_socket: AtomicU64,
    open: Mutex<HashMap<SocketId, Arc<Session>>>,
}

impl Sessions {
    pub fn new() -> Self {
        Self {
            origin: random_origin(),
            next_socket: AtomicU64::new(1),
            open: Mutex::default(),
        }
    }

    fn open(&self) -> MutexGuard<'_, HashMap<SocketId, Arc<Session>>> {
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
