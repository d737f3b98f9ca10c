//! A room's connection table. It outlives the party instance: a hibernated room keeps it,
//! so connections, their tags and their state are all there when the room wakes.

use crate::links::GatewayId;
use conclave_proto::{ConnId, SocketId};
use hashbrown::hash_table::{Entry, HashTable};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A socket as the node knows it. Socket ids are unique per gateway, so the pair is
/// unique on the node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Peer {
    pub gateway: GatewayId,
    pub socket: SocketId,
}

pub(crate) struct ConnEntry {
    pub id: ConnId,
    pub socket: SocketId,
    pub gateway: GatewayId,
    pub uri: Arc<str>,
    pub tags: Arc<[String]>,
    /// Boxed: most connections have none, and the table holds an entry per connection.
    pub state: Option<Box<serde_json::Value>>,
    /// The gateway process the socket belongs to (with `socket`, the socket's identity
    /// across moves between nodes and links).
    pub origin: u64,
    /// The last frame handled; a replayed frame at or below it is a duplicate.
    pub last_seq: u64,
}

impl ConnEntry {
    pub fn peer(&self) -> Peer {
        Peer {
            gateway: self.gateway,
            socket: self.socket,
        }
    }
}

pub(crate) struct ConnTable {
    /// The connections, found by their peer, which each entry holds (a map would store
    /// it a second time as the key).
    by_peer: HashTable<ConnEntry>,
    by_id: HashMap<ConnId, Peer>,
    hasher: RandomState,
    /// How many connections the table holds, shared with the node's room registry (the
    /// room-full check at admission, and whether the room may retire).
    count: Arc<AtomicUsize>,
}

impl ConnTable {
    /// An empty table that keeps `count` equal to its size.
    pub fn new(count: Arc<AtomicUsize>) -> Self {
        Self {
            by_peer: HashTable::new(),
            by_id: HashMap::new(),
            hasher: RandomState::new(),
            count,
        }
    }

    fn hash(&self, peer: Peer) -> u64 {
        self.hasher.hash_one(peer)
    }

    /// Adds a connection; returns the socket it replaces if one already had this id
    /// (the newer connection wins).
    pub fn insert(&mut self, entry: ConnEntry) -> Option<ConnEntry> {
        let peer = entry.peer();
        let replaced = self
            .by_id
            .insert(entry.id.clone(), peer)
            .and_then(|old| self.take(old));
        let hash = self.hash(peer);
        let hasher = &self.hasher;
        match self
            .by_peer
            .entry(hash, |e| e.peer() == peer, |e| hasher.hash_one(e.peer()))
        {
            Entry::Occupied(mut slot) => *slot.get_mut() = entry,
            Entry::Vacant(slot) => {
                slot.insert(entry);
            }
        }
        self.count_changed();
        replaced
    }

    /// Takes `peer`'s entry out of `by_peer` alone.
    fn take(&mut self, peer: Peer) -> Option<ConnEntry> {
        let slot = self
            .by_peer
            .find_entry(self.hash(peer), |e| e.peer() == peer)
            .ok()?;
        Some(slot.remove().0)
    }

    pub fn remove(&mut self, peer: Peer) -> Option<ConnEntry> {
        let e = self.take(peer)?;
        if self.by_id.get(&e.id) == Some(&peer) {
            self.by_id.remove(&e.id);
        }
        self.count_changed();
        Some(e)
    }

    fn count_changed(&self) {
        self.count.store(self.by_peer.len(), Ordering::Relaxed);
    }

    pub fn get(&self, peer: Peer) -> Option<&ConnEntry> {
        self.by_peer.find(self.hash(peer), |e| e.peer() == peer)
    }

    pub fn get_mut(&mut self, peer: Peer) -> Option<&mut ConnEntry> {
        let hash = self.hash(peer);
        self.by_peer.find_mut(hash, |e| e.peer() == peer)
    }

    pub fn by_id(&self, id: &str) -> Option<&ConnEntry> {
        self.by_conn_id(&ConnId::new(id))
    }

    pub fn by_conn_id(&self, id: &ConnId) -> Option<&ConnEntry> {
        self.by_id.get(id).and_then(|&peer| self.get(peer))
    }

    pub fn set_tags(&mut self, peer: Peer, tags: Arc<[String]>) {
        if let Some(e) = self.get_mut(peer) {
            e.tags = tags;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConnEntry> {
        self.by_peer.iter()
    }

    pub fn len(&self) -> usize {
        self.by_peer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, socket: u64) -> ConnEntry {
        ConnEntry {
            id: ConnId::new(id),
            socket: SocketId(socket),
            gateway: 0,
            uri: Arc::from("/"),
            tags: Arc::from(Vec::new()),
            state: None,
            origin: 1,
            last_seq: 0,
        }
    }

    #[test]
    fn the_shared_count_follows_joins_replacements_and_leaves() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut table = ConnTable::new(count.clone());
        assert!(table.insert(entry("a", 1)).is_none());
        assert!(table.insert(entry("b", 2)).is_none());
        assert_eq!(count.load(Ordering::Relaxed), 2);
        // A newer socket with the same id replaces the older one.
        let replaced = table.insert(entry("a", 3)).map(|e| e.socket);
        assert_eq!(replaced, Some(SocketId(1)));
        assert_eq!(count.load(Ordering::Relaxed), 2);
        let gone = |socket| Peer {
            gateway: 0,
            socket: SocketId(socket),
        };
        assert!(table.remove(gone(1)).is_none(), "already replaced");
        assert!(table.remove(gone(3)).is_some());
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert_eq!(table.by_id("b").map(|e| e.socket), Some(SocketId(2)));
    }

    #[test]
    fn a_socket_inserted_again_replaces_its_own_entry() {
        let mut table = ConnTable::new(Arc::new(AtomicUsize::new(0)));
        assert!(table.insert(entry("a", 1)).is_none());
        let mut again = entry("a", 1);
        again.last_seq = 7;
        assert_eq!(table.insert(again).map(|e| e.last_seq), Some(0));
        assert_eq!(table.len(), 1);
        let peer = Peer {
            gateway: 0,
            socket: SocketId(1),
        };
        assert_eq!(table.get(peer).map(|e| e.last_seq), Some(7));
        table.get_mut(peer).unwrap().last_seq = 8;
        assert_eq!(table.by_id("a").map(|e| e.last_seq), Some(8));
        assert!(table.remove(peer).is_some());
        assert!(table.by_id("a").is_none() && table.iter().next().is_none());
    }
}
