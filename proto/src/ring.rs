//! Consistent hashing with virtual nodes.

use crate::RoomKey;
use hashring::HashRing;

/// Virtual nodes per physical node: max/avg load ≈ 1.1 at this count.
pub const VNODES_PER_NODE: u32 = 128;

/// Monotonic version of a published ring (0: none published yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingVersion(pub u64);

impl RingVersion {
    /// The version after this one.
    pub fn next(self) -> Self {
        RingVersion(self.0 + 1)
    }
}

impl std::fmt::Display for RingVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

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

/// The region of nodes and gateways that name none.
pub const DEFAULT_REGION: &str = "default";

/// One ring per region, all at one version: a room is placed on the ring of its home
/// region.
#[derive(Clone)]
pub struct Rings {
    version: RingVersion,
    by_region: std::collections::BTreeMap<String, Ring>,
}

impl Rings {
    /// Rings from `(node, region)` pairs.
    pub fn new(version: RingVersion, nodes: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut grouped: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (node, region) in nodes {
            grouped.entry(region).or_default().push(node);
        }
        Self {
            version,
            by_region: grouped
                .into_iter()
                .map(|(region, nodes)| (region, Ring::new(version, nodes)))
                .collect(),
        }
    }

    pub fn version(&self) -> RingVersion {
        self.version
    }

    /// The ring of `region` (empty if the region has no live node).
    pub fn region(&self, region: &str) -> Ring {
        self.by_region
            .get(region)
            .cloned()
            .unwrap_or_else(|| Ring::new(self.version, []))
    }

    /// Regions with at least one live node.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.by_region.keys().map(String::as_str)
    }

    pub fn has_region(&self, region: &str) -> bool {
        self.by_region.contains_key(region)
    }

    /// Whether `node` is in any region's ring.
    pub fn contains(&self, node: &str) -> bool {
        self.by_region
            .values()
            .any(|r| r.nodes().iter().any(|n| n == node))
    }

    /// Every node, with its region.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_region
            .iter()
            .flat_map(|(region, r)| r.nodes().iter().map(move |n| (n.as_str(), region.as_str())))
    }

    /// The node that owns `room` in `region`.
    pub fn owner(&self, region: &str, room: &RoomKey) -> Option<&str> {
        self.by_region.get(region)?.owner(room)
    }
}

/// One published ring version: where each live node's relay listens, and its region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingView {
    pub version: RingVersion,
    /// Node id → relay URL.
    pub members: std::collections::BTreeMap<String, String>,
    /// Node id → region, for nodes not in [`DEFAULT_REGION`].
    pub regions: std::collections::BTreeMap<String, String>,
}

impl RingView {
    /// The region of a member.
    pub fn region_of(&self, node: &str) -> &str {
        self.regions
            .get(node)
            .map_or(DEFAULT_REGION, String::as_str)
    }

    /// Every region's ring.
    pub fn rings(&self) -> Rings {
        Rings::new(
            self.version,
            self.members
                .keys()
                .map(|id| (id.clone(), self.region_of(id).to_string())),
        )
    }

    /// The ring of one region.
    pub fn ring_for(&self, region: &str) -> Ring {
        Ring::new(
            self.version,
            self.members
                .keys()
                .filter(|id| self.region_of(id) == region)
                .cloned(),
        )
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
