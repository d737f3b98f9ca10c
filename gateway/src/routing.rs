//! Where a room lives: the rings (one per region, all at one version) and the rooms' home
//! regions as storage fixed them. No lookup on the hot path: a room's owner is its hash
//! on the ring of its home region.

use conclave_proto::{RingVersion, Rings, RoomKey};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;
use tokio::time::Instant;

/// Home regions a gateway remembers (the cache is cleared when full).
const MAX_CACHED_HOMES: usize = 100_000;

pub(crate) struct Routing {
    /// The rings rooms are routed by; moves wait on it for newer versions.
    rings: watch::Sender<Rings>,
    /// This gateway's region: new rooms without a `?_region=` hint are homed here.
    region: String,
    /// Rooms' home regions, as storage fixed them.
    homes: Mutex<HashMap<RoomKey, String>>,
}

impl Routing {
    pub fn new(rings: Rings, region: String) -> Self {
        Self {
            rings: watch::Sender::new(rings),
            region,
            homes: Mutex::default(),
        }
    }

    fn homes(&self) -> MutexGuard<'_, HashMap<RoomKey, String>> {
        self.homes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes by `rings` from now on.
    pub fn set_rings(&self, rings: Rings) {
        self.rings.send_replace(rings);
    }

    pub fn version(&self) -> RingVersion {
        self.rings.borrow().version()
    }

    /// Waits until the rings are at least `version`, or `deadline`.
    pub async fn wait_for_version(&self, version: RingVersion, deadline: Instant) {
        let mut rx = self.rings.subscribe();
        let newer = rx.wait_for(|r| r.version() >= version);
        let _ = tokio::time::timeout_at(deadline, newer).await;
    }

    /// The rings as they change.
    pub fn subscribe(&self) -> watch::Receiver<Rings> {
        self.rings.subscribe()
    }

    /// Every node of the rings with its region, and the rings' version.
    pub fn nodes(&self) -> (RingVersion, Vec<(String, String)>) {
        let rings = self.rings.borrow();
        let nodes = rings
            .nodes()
            .map(|(n, region)| (n.to_string(), region.to_string()))
            .collect();
        (rings.version(), nodes)
    }

    /// The room's home region if this gateway knows it without asking storage: learned
    /// before, or the only region there is (its nodes record it when they claim the room).
    pub fn known_home(&self, room: &RoomKey) -> Option<String> {
        if let Some(home) = self.homes().get(room) {
            return Some(home.clone());
        }
        let rings = self.rings.borrow();
        let mut regions = rings.regions();
        match (regions.next(), regions.next()) {
            (Some(only), None) => Some(only.to_string()),
            _ => None,
        }
    }

    pub fn learn_home(&self, room: &RoomKey, region: String) {
        let mut homes = self.homes();
        if homes.len() >= MAX_CACHED_HOMES {
            homes.clear();
        }
        homes.insert(room.clone(), region);
    }

    pub fn has_region(&self, region: &str) -> bool {
        self.rings.borrow().has_region(region)
    }

    /// Where new rooms without a hint live: this gateway's region, or (a gateway in a
    /// region without nodes) the first region that has some.
    pub fn default_home(&self) -> String {
        let rings = self.rings.borrow();
        if rings.has_region(&self.region) {
            return self.region.clone();
        }
        let first = rings.regions().next().map(str::to_string);
        first.unwrap_or_else(|| self.region.clone())
    }

    /// The node that may fix a new room's home: the room's owner in this gateway's region,
    /// else in `fallback`'s, else in the first region with nodes.
    pub fn home_oracle(&self, room: &RoomKey, fallback: &str) -> Option<String> {
        let rings = self.rings.borrow();
        let first = rings.regions().next().map(str::to_string);
        [Some(self.region.clone()), Some(fallback.to_string()), first]
            .into_iter()
            .flatten()
            .find_map(|region| rings.owner(&region, room).map(str::to_string))
    }

    /// The node that owns `room`: its owner on the ring of the room's home region.
    /// The node `key` hashes to in `region`'s ring.
    pub fn owner_in(&self, region: &str, key: &RoomKey) -> Option<String> {
        self.rings.borrow().owner(region, key).map(str::to_string)
    }

    pub fn owner_of(&self, room: &RoomKey) -> Option<String> {
        let home = self.known_home(room).unwrap_or_else(|| self.region.clone());
        self.rings.borrow().owner(&home, room).map(str::to_string)
    }
}
