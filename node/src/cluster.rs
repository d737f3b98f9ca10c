//! This node's view of the cluster: who it is, the ring it places rooms on, and whether it
//! may serve rooms at all. It knows nothing of the rooms themselves: the host tells them
//! when the ring or the serving flag changes.

use crate::config::NodeConfig;
use crate::storage::Claim;
use conclave_proto::{Refusal, Ring, RingVersion, RoomKey};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

/// A number no earlier process of this node used: nanoseconds since the epoch, mixed with
/// the process id.
fn new_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ ((std::process::id() as u64) << 48)
}

pub(crate) struct Cluster {
    node_id: String,
    region: String,
    /// This process's incarnation: tells its claims apart from an earlier run's.
    incarnation: u64,
    /// The ring this node places rooms on (which alarms it runs, whose rooms it may take).
    ring: RwLock<Ring>,
    /// How many rings this node has been given: actors check placement again when it moves.
    rings_seen: AtomicU64,
    /// Cleared while the node is fenced (its liveness lapsed): no room may run here.
    serving: AtomicBool,
    /// Regions placement has shown with live nodes (besides this node's own).
    regions: RwLock<std::collections::BTreeSet<String>>,
    /// The regions with nodes in placement's last ring (none without placement).
    live_regions: RwLock<Vec<String>>,
}

impl Cluster {
    /// The view at start: on a first ring of the configured nodes and this one; serving
    /// unless the config says to start fenced.
    pub fn new(config: &NodeConfig) -> Self {
        let ring = Ring::new(
            RingVersion(1),
            config.nodes.iter().cloned().chain([config.node_id.clone()]),
        );
        Self {
            node_id: config.node_id.clone(),
            region: config.region.clone(),
            incarnation: new_incarnation(),
            ring: RwLock::new(ring),
            rings_seen: AtomicU64::new(1),
            serving: AtomicBool::new(!config.start_fenced),
            regions: RwLock::default(),
            live_regions: RwLock::default(),
        }
    }

    pub fn set_regions(&self, regions: Vec<String>) {
        *self.live_regions.write().unwrap_or_else(|e| e.into_inner()) = regions.clone();
        let mut known = self.regions.write().unwrap_or_else(|e| e.into_inner());
        known.extend(regions);
    }

    /// Whether this node's region runs the cluster's crons: the first of the regions
    /// with nodes now (each region has a ring of its own, and a cron runs once in all).
    /// Without placement (`conclave dev`, a static ring), the node's own.
    pub fn runs_crons_in_region(&self) -> bool {
        let live = self.live_regions.read().unwrap_or_else(|e| e.into_inner());
        live.iter().min().is_none_or(|first| *first == self.region)
    }

    /// Whether a room may be homed in `region`: this node's own, or one placement has
    /// shown. A gateway cannot make a room's home a region that does not exist (the room
    /// would never be served again).
    pub fn knows_region(&self, region: &str) -> bool {
        region == self.region
            || self
                .regions
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(region)
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn ring(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// This node's claim on a room.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn claim(&self) -> Claim {
        Claim {
            node: self.node_id.clone(),
            incarnation: self.incarnation,
            region: self.region.clone(),
            live_nodes: self.ring().nodes().to_vec(),
            take_over: false,
        }
    }

    /// Whether `room` belongs on this node under its ring.
    pub fn places_here(&self, room: &RoomKey) -> bool {
        self.ring().owner(room) == Some(self.node_id.as_str())
    }

    /// Whether the ring places `room` on another node (not: on none).
    pub fn places_elsewhere(&self, room: &RoomKey) -> bool {
        self.ring()
            .owner(room)
            .is_some_and(|owner| owner != self.node_id.as_str())
    }

    /// The version of the ring this node places rooms on.
    pub fn ring_version(&self) -> RingVersion {
        self.ring().version()
    }

    /// 421 unless `room` belongs on this node under its ring.
    pub fn check_placed_here(&self, room: &RoomKey) -> Result<(), Refusal> {
        if self.places_here(room) {
            Ok(())
        } else {
            Err(Refusal::misplaced(room, self.ring_version()))
        }
    }

    /// Places rooms on `ring` from now on.
    pub fn set_ring(&self, ring: Ring) {
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
        self.rings_seen.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes whenever the ring does (cheap to compare before every event).
    pub fn rings_seen(&self) -> u64 {
        self.rings_seen.load(Ordering::Acquire)
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Stops (or resumes) serving rooms; true if the node was serving and now stops.
    pub fn set_serving(&self, serving: bool) -> bool {
        let was = self.serving.swap(serving, Ordering::AcqRel);
        was && !serving
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(node: &str, nodes: &[&str]) -> NodeConfig {
        NodeConfig {
            node_id: node.into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn a_room_placed_elsewhere_is_refused_with_the_ring_it_is_placed_under() {
        let cluster = Cluster::new(&config("a", &["a", "b"]));
        cluster.set_ring(Ring::new(RingVersion(7), ["b".to_string()]));
        let room = RoomKey::new("main", "r").unwrap();
        assert!(!cluster.places_here(&room));
        let refusal = cluster.check_placed_here(&room).unwrap_err();
        assert!(refusal.is_misplaced());
        assert_eq!(refusal.ring_version, RingVersion(7));
        assert_eq!(cluster.claim().live_nodes, vec!["b".to_string()]);

        cluster.set_ring(Ring::new(RingVersion(8), ["a".to_string()]));
        assert!(cluster.check_placed_here(&room).is_ok());
    }

    #[test]
    fn crons_run_in_the_first_region_with_nodes_and_in_one_without_placement() {
        let in_region = |region: &str| {
            Cluster::new(&NodeConfig {
                region: region.into(),
                ..config("a", &[])
            })
        };
        let eu = in_region("eu");
        assert!(eu.runs_crons_in_region(), "no placement: its own region");
        eu.set_regions(vec!["us".into(), "eu".into()]);
        assert!(eu.runs_crons_in_region());
        let us = in_region("us");
        us.set_regions(vec!["us".into(), "eu".into()]);
        assert!(!us.runs_crons_in_region());
        // eu's nodes are gone: us runs them.
        us.set_regions(vec!["us".into()]);
        assert!(us.runs_crons_in_region());
    }

    #[test]
    fn a_node_told_to_start_fenced_serves_nothing_until_unfenced() {
        let fenced = NodeConfig {
            start_fenced: true,
            ..config("a", &[])
        };
        let cluster = Cluster::new(&fenced);
        assert!(!cluster.is_serving());
        assert!(!cluster.set_serving(true));
        assert!(cluster.is_serving());
    }

    #[test]
    fn only_the_switch_from_serving_to_fenced_reports_a_stop() {
        let cluster = Cluster::new(&config("a", &[]));
        assert!(cluster.is_serving());
        assert!(!cluster.set_serving(true));
        assert!(cluster.set_serving(false));
        assert!(!cluster.set_serving(false));
        assert!(!cluster.is_serving());
        assert!(!cluster.set_serving(true));
        assert!(cluster.is_serving());
    }
}
