//! Node settings the runtime uses (the CLI builds this from flags, env and TOML).

use crate::storage::StorageQuota;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id in the cluster (`local` in `conclave dev`).
    pub node_id: String,
    /// Every node of the cluster's region, this one included: the ring rooms are placed
    /// on. A room held by a node outside it may be taken over.
    pub nodes: Vec<String>,
    /// This node's region: it runs only rooms whose home region this is.
    pub region: String,
    /// A room with no event for this long leaves memory (hibernates); its connections stay.
    pub hibernate_after: Duration,
    /// Connections one room accepts; past it new sockets get HTTP 503 before the upgrade.
    pub max_connections_per_room: usize,
    /// Events queued per room before the sender waits.
    pub room_mailbox: usize,
    /// The largest client message a gateway may forward (the gateways' `max_frame_bytes`):
    /// a bigger one closes its socket with 1009.
    pub max_frame_bytes: usize,
    /// The largest HTTP request body a gateway may forward (the gateways'
    /// `max_http_body_bytes`): a bigger one is answered 413.
    pub max_http_body_bytes: usize,
    /// How long an HTTP request to a room (a gateway's, or another room's `fetch`) waits
    /// for the room's answer; as long as the gateway's `answer_timeout`.
    pub fetch_timeout: Duration,
    /// Start fenced: serve no room (not even an alarm) until told to (`Node::set_serving`).
    /// A node of a dynamic cluster starts so: until its membership says it is alive and on
    /// the ring, its first ring (of itself) would let it take rooms that live nodes hold.
    pub start_fenced: bool,
    /// What each room (and each party's rooms together) may store, unless the party has
    /// its own in `party_storage_quotas`.
    pub storage_quota: StorageQuota,
    /// Parties with a storage quota of their own.
    pub party_storage_quotas: BTreeMap<String, StorageQuota>,
}

impl NodeConfig {
    /// The storage quota of `party`'s rooms.
    pub fn storage_quota(&self, party: &str) -> StorageQuota {
        self.party_storage_quotas
            .get(party)
            .copied()
            .unwrap_or(self.storage_quota)
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: "local".into(),
            nodes: vec!["local".into()],
            region: crate::storage::DEFAULT_REGION.into(),
            hibernate_after: Duration::from_secs(30),
            max_connections_per_room: 10_000,
            room_mailbox: 4096,
            max_frame_bytes: 1024 * 1024,
            max_http_body_bytes: 1024 * 1024,
            fetch_timeout: Duration::from_secs(100),
            start_fenced: false,
            storage_quota: StorageQuota::default(),
            party_storage_quotas: BTreeMap::new(),
        }
    }
}
