//! Entry points for the criterion benches in `benches/` (not an API).

use crate::room::{ConnEntry, ConnNames, ConnTable, Peer};
use conclave_proto::SocketId;
use std::sync::Arc;

/// A room's connection table holding some connections, and their peers.
pub struct ConnLookup {
    table: ConnTable,
    peers: Vec<Peer>,
}

impl ConnLookup {
    /// A table of `connections` sockets over two gateways.
    pub fn new(connections: usize) -> Self {
        let mut table = ConnTable::new(Arc::default());
        let peers: Vec<Peer> = (0..connections)
            .map(|i| Peer {
                gateway: i % 2,
                socket: SocketId(1_000 + i as u64),
            })
            .collect();
        for (i, peer) in peers.iter().enumerate() {
            let names = ConnNames::new("http://localhost/parties/main/room", &format!("conn-{i}"));
            table.insert(ConnEntry::new(names, *peer, 1, 0));
        }
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
