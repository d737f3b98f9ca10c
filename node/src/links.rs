//! The senders towards every gateway attached to this node, by [`GatewayId`]. Rooms
//! release their messages through them; the link that attached a gateway removes it.

use conclave_proto::wire::NodeEvent;
use std::sync::RwLock;
use tokio::sync::mpsc;

/// A gateway link on this node: its slot in [`Links`] (the low 32 bits) and that slot's
/// generation (the high 32 bits). A slot a link left is taken by the next gateway that
/// attaches, and the generation keeps an id a room still holds for the link that left from
/// reaching the one that came after it (socket ids are per gateway).
pub(crate) type GatewayId = usize;

const _: () = assert!(usize::BITS == 64, "GatewayId packs two 32-bit halves");
const SLOT_BITS: u32 = 32;
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;

fn slot_of(id: GatewayId) -> usize {
    id & SLOT_MASK
}

struct Slot {
    id: GatewayId,
    tx: Option<mpsc::Sender<NodeEvent>>,
}

/// The senders towards each attached gateway: one slot per gateway attached at once, not
/// per gateway that ever attached (a gateway reconnecting for weeks leaves nothing behind).
#[derive(Default)]
pub(crate) struct Links {
    slots: RwLock<Slots>,
    /// Where [`Links::any`] starts looking next.
    next_any: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    /// Slots whose link left.
    free: Vec<usize>,
}

impl Links {
    pub fn add(&self, tx: mpsc::Sender<NodeEvent>) -> GatewayId {
        let mut s = self.slots.write().unwrap_or_else(|e| e.into_inner());
        match s.free.pop() {
            Some(slot) => {
                let generation = (s.slots[slot].id >> SLOT_BITS).wrapping_add(1) & SLOT_MASK;
                let id = slot | (generation << SLOT_BITS);
                s.slots[slot] = Slot { id, tx: Some(tx) };
                id
            }
            None => {
                let id = s.slots.len();
                s.slots.push(Slot { id, tx: Some(tx) });
                id
            }
        }
    }

    pub fn remove(&self, id: GatewayId) {
        let mut s = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let slot = slot_of(id);
        if let Some(taken) = s.slots.get_mut(slot).filter(|t| t.id == id) {
            if taken.tx.take().is_some() {
                s.free.push(slot);
            }
        }
    }

    /// A gateway attached now, if any: each call starts looking one slot further, so
    /// requests spread over the gateways.
    pub fn any(&self) -> Option<GatewayId> {
        let s = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let n = s.slots.len();
        let start = self
            .next_any
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (0..n)
            .map(|i| &s.slots[(start + i) % n])
            .find(|t| t.tx.is_some())
            .map(|t| t.id)
    }

    /// Sends `event` to gateway `id`. A gateway that went away has no sockets left to
    /// deliver to: the event is dropped.
    pub async fn send(&self, id: GatewayId, event: NodeEvent) {
        // A free slot is taken under the read lock, without cloning the sender; only a
        // full link clones it to wait (released slots go to waiting senders first).
        let (tx, event) = {
            let s = self.slots.read().unwrap_or_else(|e| e.into_inner());
            let Some(tx) = s
                .slots
                .get(slot_of(id))
                .filter(|t| t.id == id)
                .and_then(|t| t.tx.as_ref())
            else {
                return;
            };
            match tx.try_send(event) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(event)) => (tx.clone(), event),
            }
        };
        let _ = tx.send(event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> NodeEvent {
        NodeEvent { event: None }
    }

    #[tokio::test]
    async fn a_slot_a_link_left_is_reused_and_its_old_id_reaches_no_one() {
        let links = Links::default();
        let (first_tx, _first_rx) = mpsc::channel(4);
        let first = links.add(first_tx);
        links.remove(first);
        let (next_tx, mut next_rx) = mpsc::channel(4);
        let next = links.add(next_tx);
        assert_eq!(slot_of(next), slot_of(first), "the free slot is taken");
        assert_ne!(next, first);
        // A room still holding the first link's id: its events are dropped, not delivered
        // to the gateway that came after.
        links.send(first, event()).await;
        assert!(
            next_rx.try_recv().is_err(),
            "a stale id reached the next gateway"
        );
        links.send(next, event()).await;
        assert!(next_rx.try_recv().is_ok());
        // Removing by the stale id leaves the new link in place.
        links.remove(first);
        links.send(next, event()).await;
        assert!(next_rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn gateways_that_come_and_go_leave_no_slots_behind() {
        let links = Links::default();
        let (stays_tx, _stays_rx) = mpsc::channel(1);
        links.add(stays_tx);
        for _ in 0..1000 {
            let (tx, _rx) = mpsc::channel(1);
            let id = links.add(tx);
            links.remove(id);
            links.remove(id);
        }
        let s = links.slots.read().unwrap();
        assert_eq!(s.slots.len(), 2);
        assert_eq!(s.free.len(), 1);
    }
}
