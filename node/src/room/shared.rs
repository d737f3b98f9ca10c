//! What a room shares with its connections: the connection table, and the outbox in which
//! everything a handler sends waits for the handler's writes to commit.

use super::conns::{ConnTable, Peer};
use crate::links::GatewayId;
use conclave_proto::wire::{node_event, NodeEvent};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// An HTTP answer a handler gave after its request's own step (it waited on something
/// other than storage meanwhile), held like a message: it goes out once the step that
/// made it has committed. Dropped with a discarded step, its requester hears of a failure.
pub(crate) type HeldAnswer = (
    oneshot::Sender<crate::message::Response>,
    crate::message::Response,
);

/// What a room's steps hold until their writes commit: events for the gateways, and
/// answers to earlier requests.
#[derive(Default)]
struct Outbox {
    events: Vec<(GatewayId, NodeEvent)>,
    answers: Vec<HeldAnswer>,
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

    /// The held events (not the answers).
    pub(crate) fn take_outbox(&self) -> Vec<(GatewayId, NodeEvent)> {
        std::mem::take(&mut self.outbox().events)
    }

    /// Everything held: the events and the answers.
    pub(crate) fn take_released(&self) -> (Vec<(GatewayId, NodeEvent)>, Vec<HeldAnswer>) {
        let mut outbox = self.outbox();
        (
            std::mem::take(&mut outbox.events),
            std::mem::take(&mut outbox.answers),
        )
    }

    /// Puts back what [`RoomShared::take_outbox`] took, ahead of anything pushed since.
    pub(crate) fn restore_outbox(&self, mut taken: Vec<(GatewayId, NodeEvent)>) {
        let mut outbox = self.outbox();
        taken.append(&mut outbox.events);
        outbox.events = taken;
    }

    /// Drops every held event and answer.
    pub(crate) fn clear_outbox(&self) {
        let mut outbox = self.outbox();
        outbox.events.clear();
        outbox.answers.clear();
    }

    /// How many events and answers are held.
    pub(crate) fn outbox_len(&self) -> (usize, usize) {
        let outbox = self.outbox();
        (outbox.events.len(), outbox.answers.len())
    }

    /// Drops what was queued after the first `len` events and answers.
    pub(crate) fn truncate_outbox(&self, (events, answers): (usize, usize)) {
        let mut outbox = self.outbox();
        outbox.events.truncate(events);
        outbox.answers.truncate(answers);
    }

    /// Holds an answer to an earlier request until the step's commit.
    pub(crate) fn hold_answer(&self, answer: HeldAnswer) {
        self.outbox().answers.push(answer);
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
