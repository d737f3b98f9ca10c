//! The senders towards every gateway attached to this node, by [`GatewayId`]. Rooms
//! release their messages through them; the link that attached a gateway removes it.

use conclave_proto::wire::NodeEvent;
use std::sync::RwLock;
use tokio::sync::mpsc;

/// Index of a gateway link on this node.
pub(crate) type GatewayId = usize;

/// The senders towards each attached gateway.
#[derive(Default)]
pub(crate) struct Links {
    senders: RwLock<Vec<Option<mpsc::Sender<NodeEvent>>>>,
}

impl Links {
    pub fn add(&self, tx: mpsc::Sender<NodeEvent>) -> GatewayId {
        let mut s = self.senders.write().unwrap_or_else(|e| e.into_inner());
        s.push(Some(tx));
        s.len() - 1
    }

    pub fn remove(&self, id: GatewayId) {
        let mut s = self.senders.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = s.get_mut(id) {
            *slot = None;
        }
    }

    /// Sends `event` to gateway `id`. A gateway that went away has no sockets left to
    /// deliver to: the event is dropped.
    pub async fn send(&self, id: GatewayId, event: NodeEvent) {
        // A free slot is taken under the read lock, without cloning the sender; only a
        // full link clones it to wait (released slots go to waiting senders first).
        let (tx, event) = {
            let s = self.senders.read().unwrap_or_else(|e| e.into_inner());
            let Some(tx) = s.get(id).and_then(Option::as_ref) else {
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
