//! What a room shares with its connections: the connection table, and the outbox in which
//! everything a handler sends waits for the handler's writes to commit.

use super::conns::{ConnTable, Peer};
use crate::links::GatewayId;
use conclave_proto::wire::{node_event, NodeEvent};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a step holds, besides its messages, until its writes commit: the answer to an
/// earlier request its handler gave after that request's own step, the go-ahead of a
/// fetch it made (a Durable Object's output gate holds those too). Run when the step's
/// outputs are released; dropped with a discarded step, so that what waits on it hears
/// of the failure.
pub(crate) type Released = Box<dyn FnOnce() + Send>;

/// What a room's steps hold until their writes commit: events for the gateways, and what
/// else waits on the release ([`Released`]).
#[derive(Default)]
struct Outbox {
    events: Vec<(GatewayId, NodeEvent)>,
    released: Vec<Released>,
}

/// Connection table and outbox of one room, shared by the room and its connections.
pub(crate) struct RoomShared {
    conns: Mutex<ConnTable>,
    outbox: Mutex<Outbox>,
    /// Connection states as they were before this step's `set_state` calls, newest last:
    /// a discarded step puts them back.
    state_undo: Mutex<Vec<(Peer, Option<serde_json::Value>)>>,
    /// How many times a connection moved to another gateway link (its gateway re-attached
    /// it over a new one): a `Connection` made since the last move names its socket right.
    relinked: AtomicU64,
}

impl RoomShared {
    /// `conn_count` follows the size of the connection table.
    pub(crate) fn new(conn_count: Arc<AtomicUsize>) -> Self {
        Self {
            conns: Mutex::new(ConnTable::new(conn_count)),
            outbox: Mutex::default(),
            state_undo: Mutex::default(),
            relinked: AtomicU64::new(0),
        }
    }

    /// How many times a connection moved to another gateway link.
    pub(crate) fn relinked(&self) -> u64 {
        self.relinked.load(Ordering::Acquire)
    }

    /// A connection moved to another gateway link.
    pub(crate) fn note_relink(&self) {
        self.relinked.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn conns(&self) -> MutexGuard<'_, ConnTable> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, gateway: GatewayId, event: node_event::Event) {
        self.outbox()
            .events
            .push((gateway, NodeEvent { event: Some(event) }));
    }

    /// The held events (not the rest).
    pub(crate) fn take_outbox(&self) -> Vec<(GatewayId, NodeEvent)> {
        std::mem::take(&mut self.outbox().events)
    }

    /// Everything held: the events, and what runs on their release.
    pub(crate) fn take_released(&self) -> (Vec<(GatewayId, NodeEvent)>, Vec<Released>) {
        let mut outbox = self.outbox();
        (
            std::mem::take(&mut outbox.events),
            std::mem::take(&mut outbox.released),
        )
    }

    /// Puts back what [`RoomShared::take_outbox`] took, ahead of anything pushed since.
    pub(crate) fn restore_outbox(&self, mut taken: Vec<(GatewayId, NodeEvent)>) {
        let mut outbox = self.outbox();
        taken.append(&mut outbox.events);
        outbox.events = taken;
    }

    /// Drops everything held.
    pub(crate) fn clear_outbox(&self) {
        let mut outbox = self.outbox();
        outbox.events.clear();
        outbox.released.clear();
    }

    /// How many events, and things to run on their release, are held.
    pub(crate) fn outbox_len(&self) -> (usize, usize) {
        let outbox = self.outbox();
        (outbox.events.len(), outbox.released.len())
    }

    /// Drops what was held after the first `len` events and things to run.
    pub(crate) fn truncate_outbox(&self, (events, released): (usize, usize)) {
        let mut outbox = self.outbox();
        outbox.events.truncate(events);
        outbox.released.truncate(released);
    }

    /// Runs `action` when the step's outputs are released; drops it with the step.
    pub(crate) fn hold(&self, action: Released) {
        self.outbox().released.push(action);
    }

    fn state_undo(&self) -> MutexGuard<'_, Vec<(Peer, Option<serde_json::Value>)>> {
        self.state_undo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a connection's state before a `set_state`, to undo it with the step.
    pub(super) fn state_replaced(&self, peer: Peer, old: Option<serde_json::Value>) {
        self.state_undo().push((peer, old));
    }

    /// The step's connection states are kept; returns the connections whose state changed.
    pub(super) fn keep_states(&self) -> Vec<Peer> {
        let mut changed: Vec<Peer> = self.state_undo().drain(..).map(|(p, _)| p).collect();
        changed.sort_unstable_by_key(|p| (p.gateway, p.socket.0));
        changed.dedup();
        changed
    }

    /// How many connection state changes are held.
    pub(super) fn state_changes(&self) -> usize {
        self.state_undo().len()
    }

    /// The held connection state changes after the first `kept` are undone.
    pub(super) fn revert_states_after(&self, kept: usize) {
        let undo: Vec<_> = {
            let mut log = self.state_undo();
            let kept = kept.min(log.len());
            log.drain(kept..).collect()
        };
        let mut conns = self.conns();
        for (peer, old) in undo.into_iter().rev() {
            if let Some(e) = conns.get_mut(peer) {
                e.replace_state(old);
            }
        }
    }
}
