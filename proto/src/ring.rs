//! Consistent hashing with virtual nodes.

use crate::RoomKey;
use hashring::HashRing;

/// Virtual nodes per physical node: max/avg load ≈ 1.1 at this count.
pub const VNODES_PER_NODE: u32 = 128;

/// Monotonic version of a published ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingVersion(pub u64);

#[derive(Clone, Debug, Hash, PartialEq)]
struct VNode {
    node: String,
    idx: u32,
}

/// A ring of node ids at one version.
#[derive(Clone)]
pub struct Ring {
    version: RingVersion,
    nodes: Vec<String>,
    ring: HashRing<VNode>,
}

impl Ring {
    pub fn new(version: RingVersion, nodes: impl IntoIterator<Item = String>) -> Self {
        let mut nodes: Vec<String> = nodes.into_iter().collect();
        nodes.sort();
        nodes.dedup();
        let mut ring = HashRing::new();
        ring.batch_add(
            nodes
                .iter()
                .flat_map(|n| {
                    (0..VNODES_PER_NODE).map(move |idx| VNode {
                        node: n.clone(),
                        idx,
                    })
                })
                .collect(),
        );
        Self {
            version,
            nodes,
            ring,
        }
    }

    pub fn version(&self) -> RingVersion {
        self.version
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The node that owns `room` under this ring, if the ring has any node.
    pub fn owner(&self, room: &RoomKey) -> Option<&str> {
        let key = (room.party.as_str(), room.room.as_str());
        self.ring.get(&key).map(|v| v.node.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the hash: if this changes, processes of two builds would disagree on owners.
    #[test]
    fn owner_test_vector_is_stable() {
        let ring = Ring::new(
            RingVersion(1),
            ["node-a", "node-b", "node-c"].map(String::from),
        );
        let owners: Vec<&str> = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"]
            .iter()
            .map(|r| ring.owner(&RoomKey::new("main", r).unwrap()).unwrap())
            .collect();
        assert_eq!(owners, PINNED);
    }

    const PINNED: [&str; 8] = [
        "node-a", "node-a", "node-c", "node-b", "node-c", "node-a", "node-b", "node-a",
    ];

    #[test]
    fn load_is_spread() {
        let nodes: Vec<String> = (0..4).map(|i| format!("n{i}")).collect();
        let ring = Ring::new(RingVersion(1), nodes.clone());
        let mut counts = std::collections::HashMap::new();
        for i in 0..20_000 {
            let k = RoomKey::new("main", &format!("room-{i}")).unwrap();
            *counts
                .entry(ring.owner(&k).unwrap().to_string())
                .or_insert(0) += 1;
        }
        let max = *counts.values().max().unwrap() as f64;
        assert!(max / 5_000.0 < 1.25, "uneven ring: {counts:?}");
    }
}
