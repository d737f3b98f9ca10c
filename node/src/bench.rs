//! Entry points for the criterion benches in `benches/` (not an API).

use crate::message::Message;
use crate::room::{broadcast_to, ConnEntry, ConnNames, ConnTable, Peer, RoomShared};
use conclave_proto::{RoomKey, SocketId};
use std::sync::Arc;

/// The `i`-th connection of a bench room: `conn-{i}`, on gateway `i % 2`.
fn member(i: usize) -> ConnEntry {
    let peer = Peer {
        gateway: i % 2,
        socket: SocketId(1_000 + i as u64),
    };
    let names = ConnNames::new("http://localhost/parties/main/room", &format!("conn-{i}"));
    ConnEntry::new(names, peer, 1, 0)
}

/// A room's connection table holding some connections, and their peers.
pub struct ConnLookup {
    table: ConnTable,
    peers: Vec<Peer>,
}

impl ConnLookup {
    /// A table of `connections` sockets over two gateways.
    pub fn new(connections: usize) -> Self {
        let mut table = ConnTable::new(Arc::default());
        let peers = (0..connections)
            .map(|i| {
                let entry = member(i);
                let peer = entry.peer();
                table.insert(entry);
                peer
            })
            .collect();
        Self { table, peers }
    }

    /// Finds every connection by its peer, as a frame from it is handled; returns how many
    /// were found.
    pub fn find_each(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| self.table.get(**p).is_some())
            .count()
    }
}

/// A room's members over two gateways, and a message broadcast to them.
pub struct Broadcast {
    shared: RoomShared,
    key: RoomKey,
    msg: Message,
}

impl Broadcast {
    /// A room of `members` connections (`conn-0`, `conn-1`, …) over two gateways.
    pub fn new(members: usize) -> Self {
        let shared = RoomShared::new(Arc::default());
        {
            let mut conns = shared.conns();
            for i in 0..members {
                conns.insert(member(i));
            }
        }
        Self {
            shared,
            key: RoomKey::new("main", "room").expect("valid names"),
            msg: Message::text("x".repeat(64)),
        }
    }

    /// Broadcasts the message to every member except those in `exclude` (as a party's
    /// `broadcast(msg, [sender])` does), then takes what was queued; returns how many
    /// deliveries (one per gateway).
    pub fn once(&self, exclude: &[&str]) -> usize {
        broadcast_to(&self.shared, &self.key, &self.msg, exclude);
        self.shared.take_outbox().len()
    }
}
