//! A room's connection table. It outlives the party instance: a hibernated room keeps it,
//! so connections, their tags and their state are all there when the room wakes.

use crate::host::GatewayId;
use conclave_proto::{ConnId, SocketId};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) struct ConnEntry {
    pub id: ConnId,
    pub socket: SocketId,
    pub gateway: GatewayId,
    pub uri: Arc<str>,
    pub tags: Arc<[String]>,
    pub state: Option<serde_json::Value>,
}

#[derive(Default)]
pub(crate) struct ConnTable {
    by_socket: HashMap<SocketId, ConnEntry>,
    by_id: HashMap<ConnId, SocketId>,
}

impl ConnTable {
    /// Adds a connection; returns the socket it replaces if one already had this id
    /// (the newer connection wins).
    pub fn insert(&mut self, entry: ConnEntry) -> Option<ConnEntry> {
        let replaced = self
            .by_id
            .insert(entry.id.clone(), entry.socket)
            .and_then(|old| self.by_socket.remove(&old));
        self.by_socket.insert(entry.socket, entry);
        replaced
    }

    pub fn remove(&mut self, socket: SocketId) -> Option<ConnEntry> {
        let e = self.by_socket.remove(&socket)?;
        if self.by_id.get(&e.id) == Some(&socket) {
            self.by_id.remove(&e.id);
        }
        Some(e)
    }

    pub fn get(&self, socket: SocketId) -> Option<&ConnEntry> {
        self.by_socket.get(&socket)
    }

    pub fn get_mut(&mut self, socket: SocketId) -> Option<&mut ConnEntry> {
        self.by_socket.get_mut(&socket)
    }

    pub fn by_id(&self, id: &str) -> Option<&ConnEntry> {
        self.by_id
            .get(&ConnId::new(id))
            .and_then(|s| self.by_socket.get(s))
    }

    pub fn set_tags(&mut self, socket: SocketId, tags: Arc<[String]>) {
        if let Some(e) = self.by_socket.get_mut(&socket) {
            e.tags = tags;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConnEntry> {
        self.by_socket.values()
    }

    pub fn len(&self) -> usize {
        self.by_socket.len()
    }
}
