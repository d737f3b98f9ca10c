//! A node's membership of a dynamic cluster: its heartbeat, the rings it follows, and the
//! serving gate between them.
//!
//! The gate is the safety rule: a node serves rooms only while its heartbeat is fresh
//! (it has not fenced itself) *and* it holds a ring that includes it. Before its first
//! ring its view of who is alive could let it take rooms that live nodes hold; once its
//! heartbeat is stale, placement may already be handing its rooms to others.

use crate::grpc::follow_placement;
use crate::heartbeat::{self, Beat};
use crate::{LivenessTiming, RedisTarget};
use conclave_proto::{Ring, RingView};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// What membership drives on the node it gates.
pub trait Member: Send + Sync + 'static {
    /// Serve rooms (`true`), or serve none (`false`: fenced).
    fn set_serving(&self, serving: bool);
    /// Place rooms on `ring` (the node's region's ring) from now on.
    fn set_ring(&self, ring: Ring);
    /// The regions of the cluster now (those with a live node): the only ones a room may
    /// be homed in.
    fn set_regions(&self, _regions: Vec<String>) {}
    /// Rooms the node still holds.
    fn room_count(&self) -> usize;
    /// Whether the node can do its work now (reach its store) within `within`. A node
    /// that is not fit does not renew its heartbeat: it fences itself, and its rooms move
    /// to nodes that can serve them.
    fn fit(&self, _within: Duration) -> BoxFuture<'static, bool> {
        Box::pin(std::future::ready(true))
    }
}

/// How long a drain waits for placement, then for rooms to leave.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's place in a dynamic cluster, for leaving it.
pub struct Membership {
    member: Arc<dyn Member>,
    id: String,
    leave: watch::Sender<bool>,
    rings: watch::Receiver<Option<RingView>>,
}

impl Membership {
    /// Joins: renews `beat` in `redis` and follows the rings of the placement
    /// replicas at `placement`, letting `member` serve only while the gate allows it.
    pub fn join(
        member: Arc<dyn Member>,
        beat: Beat,
        redis: RedisTarget,
        timing: LivenessTiming,
        placement: Vec<String>,
    ) -> Self {
        let id = beat.id.clone();
        let gate = Arc::new(Gate::new(member.clone(), id.clone(), beat.region.clone()));
        let (leave, leave_rx) = watch::channel(false);
        let auth = beat.auth.clone();
        let on_fence = gate.clone();
        let fit = member.clone();
        tokio::spawn(heartbeat::run(
            redis,
            beat,
            timing,
            move |within| fit.fit(within),
            move |fenced| on_fence.heartbeat(fenced),
            leave_rx,
        ));
        let rings = follow_placement(placement, auth, move |view| gate.ring(view));
        Self {
            member,
            id,
            leave,
            rings,
        }
    }

    /// Leaves the ring (deletes the heartbeat), waits until placement publishes a ring
    /// without this node, then until the node holds no rooms. On that ring gateways route
    /// the node's rooms to their next owners, and the node hands each room off and stops
    /// serving; gateways move the rooms' sockets without disconnecting them. Each wait
    /// gives up after [`DRAIN_TIMEOUT`].
    pub async fn drain(mut self) {
        let _ = self.leave.send(true);
        let id = self.id.clone();
        let gone = self
            .rings
            .wait_for(|r| r.as_ref().is_some_and(|v| !v.members.contains_key(&id)));
        if tokio::time::timeout(DRAIN_TIMEOUT, gone).await.is_err() {
            tracing::warn!("placement did not drop this node in time; closing its rooms anyway");
        }
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while self.member.room_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The serving gate of one node: serving iff alive (heartbeat fresh) and placed (in the
/// latest ring). It starts closed.
struct Gate {
    member: Arc<dyn Member>,
    id: String,
    region: String,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    alive: bool,
    placed: bool,
}

impl Gate {
    fn new(member: Arc<dyn Member>, id: String, region: String) -> Self {
        member.set_serving(false);
        Self {
            member,
            id,
            region,
            state: Mutex::default(),
        }
    }

    /// The heartbeat fenced the node (renewals failed for too long) or renewed again.
    fn heartbeat(&self, fenced: bool) {
        self.update(|s| s.alive = !fenced);
    }

    /// A new ring: the node places rooms on its region's part, and serves only if the
    /// ring includes it.
    fn ring(&self, view: &RingView) {
        self.member.set_ring(view.ring_for(&self.region));
        let rings = view.rings();
        self.member
            .set_regions(rings.regions().map(String::from).collect());
        let placed = view.members.contains_key(&self.id);
        self.update(|s| s.placed = placed);
    }

    fn update(&self, change: impl FnOnce(&mut GateState)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut state);
        self.member.set_serving(state.alive && state.placed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::RingVersion;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A node that records what membership tells it.
    #[derive(Default)]
    struct FakeNode {
        serving: Mutex<Option<bool>>,
        ring: Mutex<Option<Ring>>,
        rooms: AtomicUsize,
    }

    impl Member for FakeNode {
        fn set_serving(&self, serving: bool) {
            *self.serving.lock().unwrap() = Some(serving);
        }
        fn set_ring(&self, ring: Ring) {
            *self.ring.lock().unwrap() = Some(ring);
        }
        fn room_count(&self) -> usize {
            self.rooms.load(Ordering::SeqCst)
        }
    }

    impl FakeNode {
        fn serving(&self) -> Option<bool> {
            *self.serving.lock().unwrap()
        }
    }

    /// Ring `version` with `members` (`id` or `id@region`).
    fn view(version: u64, members: &[&str]) -> RingView {
        let mut v = RingView {
            version: RingVersion(version),
            ..Default::default()
        };
        for m in members {
            let (id, region) = m.split_once('@').unwrap_or((m, ""));
            v.members.insert(id.to_string(), format!("http://{id}"));
            if !region.is_empty() {
                v.regions.insert(id.to_string(), region.to_string());
            }
        }
        v
    }

    fn gate(node: &Arc<FakeNode>) -> Gate {
        Gate::new(node.clone(), "a".into(), "eu".into())
    }

    #[test]
    fn a_node_starts_not_serving() {
        let node = Arc::new(FakeNode::default());
        let _gate = gate(&node);
        assert_eq!(node.serving(), Some(false));
    }

    #[test]
    fn a_node_serves_only_when_alive_and_placed() {
        let node = Arc::new(FakeNode::default());
        let g = gate(&node);
        g.heartbeat(false);
        assert_eq!(node.serving(), Some(false), "alive but holding no ring");
        g.ring(&view(1, &["a@eu", "b"]));
        assert_eq!(node.serving(), Some(true));

        let node = Arc::new(FakeNode::default());
        let g = gate(&node);
        g.ring(&view(1, &["a@eu"]));
        assert_eq!(node.serving(), Some(false), "placed but no heartbeat yet");
        g.heartbeat(false);
        assert_eq!(node.serving(), Some(true));
    }

    #[test]
    fn a_node_fences_when_its_heartbeat_is_lost_and_unfences_when_it_renews() {
        let node = Arc::new(FakeNode::default());
        let g = gate(&node);
        g.heartbeat(false);
        g.ring(&view(1, &["a@eu"]));
        g.heartbeat(true);
        assert_eq!(node.serving(), Some(false));
        g.heartbeat(false);
        assert_eq!(node.serving(), Some(true));
    }

    #[test]
    fn a_ring_without_the_node_stops_it_serving() {
        let node = Arc::new(FakeNode::default());
        let g = gate(&node);
        g.heartbeat(false);
        g.ring(&view(1, &["a@eu", "b@eu"]));
        g.ring(&view(2, &["b@eu"]));
        assert_eq!(node.serving(), Some(false));
    }

    #[test]
    fn the_node_places_rooms_on_its_regions_ring() {
        let node = Arc::new(FakeNode::default());
        let g = gate(&node);
        g.ring(&view(3, &["a@eu", "b", "c@eu"]));
        let ring = node.ring.lock().unwrap().clone().unwrap();
        assert_eq!(ring.version(), RingVersion(3));
        assert_eq!(ring.nodes(), ["a", "c"]);
    }

    /// A membership of node `a` over a ring channel, without Redis or placement.
    fn membership(
        node: &Arc<FakeNode>,
        first: RingView,
    ) -> (
        Membership,
        watch::Sender<Option<RingView>>,
        watch::Receiver<bool>,
    ) {
        let (rings_tx, rings) = watch::channel(Some(first));
        let (leave, left) = watch::channel(false);
        let m = Membership {
            member: node.clone(),
            id: "a".into(),
            leave,
            rings,
        };
        (m, rings_tx, left)
    }

    #[tokio::test(start_paused = true)]
    async fn drain_leaves_then_waits_for_a_ring_without_the_node() {
        let node = Arc::new(FakeNode::default());
        let (m, rings, mut left) = membership(&node, view(1, &["a", "b"]));
        let drain = tokio::spawn(m.drain());
        left.wait_for(|l| *l).await.unwrap();
        rings.send(Some(view(2, &["a", "b", "c"]))).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!drain.is_finished(), "the ring still includes the node");
        let dropped = tokio::time::Instant::now();
        rings.send(Some(view(3, &["b", "c"]))).unwrap();
        drain.await.unwrap();
        assert!(dropped.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_the_rooms_to_leave() {
        let node = Arc::new(FakeNode::default());
        node.rooms.store(2, Ordering::SeqCst);
        let (m, _rings, _left) = membership(&node, view(2, &["b"]));
        let drain = tokio::spawn(m.drain());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!drain.is_finished(), "two rooms are still here");
        node.rooms.store(0, Ordering::SeqCst);
        drain.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_on_placement_after_its_timeout() {
        let node = Arc::new(FakeNode::default());
        let (m, _rings, _left) = membership(&node, view(1, &["a"]));
        let started = tokio::time::Instant::now();
        m.drain().await;
        assert!(started.elapsed() >= DRAIN_TIMEOUT);
        assert!(started.elapsed() < DRAIN_TIMEOUT * 2);
    }
}
