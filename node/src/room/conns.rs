//! A room's connection table. It outlives the party instance: a hibernated room keeps it,
//! so connections, their tags and their state are all there when the room wakes.

use super::ledger::SocketRef;
use crate::links::GatewayId;
use conclave_proto::IdHasher;
use conclave_proto::SocketId;
use hashbrown::hash_table::{Entry, HashTable};
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

/// A connection's URI and id, in one allocation.
#[derive(Clone)]
pub(crate) struct ConnNames {
    /// The URI, then the id.
    text: Arc<str>,
    id_at: usize,
}

impl ConnNames {
    pub fn new(uri: &str, id: &str) -> Self {
        Self {
            text: Arc::from([uri, id].concat()),
            id_at: uri.len(),
        }
    }

    /// The connection id: the client's `_pk`, else a generated UUID.
    pub fn id(&self) -> &str {
        &self.text[self.id_at..]
    }

    pub fn uri(&self) -> &str {
        &self.text[..self.id_at]
    }
}

impl std::fmt::Debug for ConnNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// Whether a connection carries `tag`: `all` its tags when it has others than its id, else
/// `None` and its id alone.
pub(super) fn carries_tag(all: Option<&[String]>, id: &str, tag: &str) -> bool {
    match all {
        Some(all) => all.iter().any(|t| t == tag),
        None => id == tag,
    }
}

/// One connection of the room. The table holds an entry per connection, so what most
/// connections do not have is boxed away.
pub(crate) struct ConnEntry {
    pub names: ConnNames,
    pub socket: SocketId,
    pub gateway: GatewayId,
    /// Tags besides the id, and state: `None` (nothing allocated) for a connection with
    /// neither.
    extra: Option<Box<ConnExtra>>,
    /// The gateway process the socket belongs to (with `socket`, the socket's identity
    /// across moves between nodes and links).
    pub origin: u64,
    /// The last frame handled; a replayed frame at or below it is a duplicate.
    pub last_seq: u64,
}

#[derive(Default)]
struct ConnExtra {
    /// All the connection's tags, its id first; `None` when the id is its only tag.
    tags: Option<Arc<[String]>>,
    state: Option<serde_json::Value>,
}

impl ConnEntry {
    /// The socket as the room's ledger names it, across links and nodes.
    pub fn socket_ref(&self) -> SocketRef {
        SocketRef {
            origin: self.origin,
            socket: self.socket.0,
        }
    }

    /// A connection with no tags besides its id and no state.
    pub fn new(names: ConnNames, peer: Peer, origin: u64, last_seq: u64) -> Self {
        Self {
            names,
            socket: peer.socket,
            gateway: peer.gateway,
            extra: None,
            origin,
            last_seq,
        }
    }

    pub fn peer(&self) -> Peer {
        Peer {
            gateway: self.gateway,
            socket: self.socket,
        }
    }

    pub fn id(&self) -> &str {
        self.names.id()
    }

    /// All the tags, the id first, when there are others.
    pub fn extra_tags(&self) -> Option<&Arc<[String]>> {
        self.extra.as_ref()?.tags.as_ref()
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        carries_tag(self.extra_tags().map(|all| &all[..]), self.id(), tag)
    }

    /// Sets the tags (the id first); only the id, or none, is the default.
    pub fn set_tags(&mut self, tags: Vec<String>) {
        let tags = match tags.as_slice() {
            [] => None,
            [only] if only == self.id() => None,
            _ => Some(Arc::from(tags)),
        };
        self.update_extra(|x| x.tags = tags);
    }

    pub fn state(&self) -> Option<&serde_json::Value> {
        self.extra.as_ref()?.state.as_ref()
    }

    /// Replaces the state; returns the one it had.
    pub fn replace_state(&mut self, state: Option<serde_json::Value>) -> Option<serde_json::Value> {
        let mut old = None;
        self.update_extra(|x| old = std::mem::replace(&mut x.state, state));
        old
    }

    fn update_extra(&mut self, change: impl FnOnce(&mut ConnExtra)) {
        change(self.extra.get_or_insert_with(Box::default));
        if self
            .extra
            .as_ref()
            .is_some_and(|x| x.tags.is_none() && x.state.is_none())
        {
            self.extra = None;
        }
    }
}

pub(crate) struct ConnTable {
    /// The connections, found by their peer, which each entry holds (a map would store
    /// it a second time as the key).
    by_peer: HashTable<ConnEntry>,
    /// The peer holding each connection id, hashed by the id its entry holds (so the
    /// index keeps no id of its own). Every peer here has its entry in `by_peer`.
    by_id: HashTable<Peer>,
    /// Hashes the connection ids (chosen by clients).
    hasher: RandomState,
    /// Hashes the peers (assigned by the node and its gateways), found for every frame.
    peer_hasher: IdHasher,
    /// How many connections the table holds, shared with the node's room registry (the
    /// room-full check at admission, and whether the room may retire).
    count: Arc<AtomicUsize>,
}

impl ConnTable {
    /// An empty table that keeps `count` equal to its size.
    pub fn new(count: Arc<AtomicUsize>) -> Self {
        Self {
            by_peer: HashTable::new(),
            by_id: HashTable::new(),
            hasher: RandomState::new(),
            peer_hasher: IdHasher::default(),
            count,
        }
    }

    fn hash(&self, peer: Peer) -> u64 {
        self.peer_hasher.hash_one(peer)
    }

    fn id_hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Adds a connection; returns the socket it replaces if one already had this id
    /// (the newer connection wins).
    pub fn insert(&mut self, entry: ConnEntry) -> Option<ConnEntry> {
        let peer = entry.peer();
        // A socket keeps its id for life; were it to come back under another, its old
        // id would otherwise stay indexed.
        if self.get(peer).is_some_and(|e| e.id() != entry.id()) {
            self.remove(peer);
        }
        let (id_hash, hash) = (self.id_hash(entry.id()), self.hash(peer));
        let Self {
            by_peer,
            by_id,
            hasher,
            peer_hasher,
            ..
        } = self;
        let entry_of = |p: &Peer| by_peer.find(peer_hasher.hash_one(*p), |e| e.peer() == *p);
        let previous = match by_id.entry(
            id_hash,
            |p| entry_of(p).is_some_and(|e| e.id() == entry.id()),
            |p| entry_of(p).map_or(0, |e| hasher.hash_one(e.id())),
        ) {
            Entry::Occupied(mut slot) => Some(std::mem::replace(slot.get_mut(), peer)),
            Entry::Vacant(slot) => {
                slot.insert(peer);
                None
            }
        };
        let replaced = match by_peer.entry(
            hash,
            |e| e.peer() == peer,
            |e| peer_hasher.hash_one(e.peer()),
        ) {
            // The same socket again: its own entry is the one replaced.
            Entry::Occupied(mut slot) => Some(std::mem::replace(slot.get_mut(), entry)),
            Entry::Vacant(slot) => {
                slot.insert(entry);
                previous.and_then(|old| self.take(old))
            }
        };
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
        let id_hash = self.id_hash(e.id());
        if let Ok(slot) = self.by_id.find_entry(id_hash, |p| *p == peer) {
            slot.remove();
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
        // The match finds the entry in passing: one lookup in `by_peer`, not two.
        let mut found = None;
        self.by_id.find(self.id_hash(id), |&p| {
            found = self.get(p).filter(|e| e.id() == id);
            found.is_some()
        });
        found
    }

    /// Connection `id`, if it is still the socket `socket` of gateway process `origin`
    /// (on whichever link that gateway has it now).
    pub fn by_identity(&self, id: &str, origin: u64, socket: SocketId) -> Option<&ConnEntry> {
        self.by_id(id)
            .filter(|e| e.origin == origin && e.socket == socket)
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
        let peer = Peer {
            gateway: 0,
            socket: SocketId(socket),
        };
        ConnEntry::new(ConnNames::new("/", id), peer, 1, 0)
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

    #[test]
    fn ids_stay_found_as_the_table_grows_and_shrinks() {
        let mut table = ConnTable::new(Arc::new(AtomicUsize::new(0)));
        for n in 0..1000 {
            assert!(table.insert(entry(&format!("c{n}"), n)).is_none());
        }
        for n in (0..1000).step_by(2) {
            let peer = Peer {
                gateway: 0,
                socket: SocketId(n),
            };
            assert!(table.remove(peer).is_some());
        }
        for n in 0..1000u64 {
            let found = table.by_id(&format!("c{n}")).map(|e| e.socket);
            assert_eq!(found, (n % 2 == 1).then_some(SocketId(n)), "c{n}");
        }
        // Newer sockets take over half the ids.
        for n in (1..1000).step_by(4) {
            let replaced = table.insert(entry(&format!("c{n}"), 5000 + n));
            assert_eq!(replaced.map(|e| e.socket), Some(SocketId(n)));
        }
        assert_eq!(table.len(), 500);
        assert_eq!(table.by_id("c1").map(|e| e.socket), Some(SocketId(5001)));
        assert_eq!(table.by_id("c3").map(|e| e.socket), Some(SocketId(3)));
    }

    #[test]
    fn a_socket_back_under_another_id_is_found_by_the_new_one_only() {
        let mut table = ConnTable::new(Arc::new(AtomicUsize::new(0)));
        table.insert(entry("a", 1));
        assert!(table.insert(entry("b", 1)).is_none());
        assert!(table.by_id("a").is_none());
        assert_eq!(table.by_id("b").map(|e| e.socket), Some(SocketId(1)));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn only_tags_besides_the_id_and_a_state_are_allocated() {
        let mut e = entry("a", 1);
        let names = ConnNames::new("http://h/parties/main/r?_pk=a", "a");
        assert_eq!(
            (names.uri(), names.id()),
            ("http://h/parties/main/r?_pk=a", "a")
        );
        e.set_tags(vec!["a".into()]);
        assert!(e.extra.is_none() && e.has_tag("a") && !e.has_tag("admin"));
        e.set_tags(vec!["a".into(), "admin".into()]);
        assert!(e.has_tag("a") && e.has_tag("admin") && !e.has_tag("b"));
        assert!(e.replace_state(Some(serde_json::json!(1))).is_none());
        e.set_tags(Vec::new());
        assert!(!e.has_tag("admin") && e.extra.is_some(), "the state stays");
        assert_eq!(e.replace_state(None), Some(serde_json::json!(1)));
        assert!(e.extra.is_none());
    }
}
