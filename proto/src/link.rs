//! A relay link is a pair of bounded, ordered event queues between one gateway and one node.
//! Order matters: everything a node sends to a socket arrives in the order it was sent,
//! which is how "messages from `on_connect` arrive before any later broadcast" holds.

use crate::wire::{GatewayEvent, NodeEvent};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;

/// Events in flight per direction before the sender waits (backpressure, bounded memory).
pub const LINK_CAPACITY: usize = 65_536;

/// The gateway's end of a link to one node.
pub struct GatewaySide {
    pub to_node: mpsc::Sender<GatewayEvent>,
    pub from_node: Inbound<NodeEvent>,
}

/// The node's end of a link to one gateway.
pub struct NodeSide {
    pub from_gateway: Inbound<GatewayEvent>,
    pub to_gateway: mpsc::Sender<NodeEvent>,
}

/// A link whose two ends live in the same process (`conclave dev`, tests).
pub fn in_process_link(capacity: usize) -> (GatewaySide, NodeSide) {
    let (to_node, from_gateway) = mpsc::channel(capacity);
    let (to_gateway, from_node) = mpsc::channel(capacity);
    (
        GatewaySide {
            to_node,
            from_node: from_node.into(),
        },
        NodeSide {
            from_gateway: from_gateway.into(),
            to_gateway,
        },
    )
}

/// The receiving end of one direction of a link: a channel in process, or the batches a
/// gRPC stream decodes, taken by the link's own task with no task forwarding them in
/// between (each hop between tasks is a wake-up per message).
pub struct Inbound<T> {
    /// What is left of the batch at hand.
    batch: std::vec::IntoIter<T>,
    source: Source<T>,
}

enum Source<T> {
    Channel(mpsc::Receiver<T>),
    Batches(BoxStream<'static, Vec<T>>),
}

impl<T> From<mpsc::Receiver<T>> for Inbound<T> {
    fn from(rx: mpsc::Receiver<T>) -> Self {
        Self {
            batch: Vec::new().into_iter(),
            source: Source::Channel(rx),
        }
    }
}

impl<T: Send + 'static> Inbound<T> {
    /// Events from a stream of batches; the link ends when the stream does.
    pub fn batches(stream: impl futures::Stream<Item = Vec<T>> + Send + 'static) -> Self {
        Self {
            batch: Vec::new().into_iter(),
            source: Source::Batches(stream.fuse().boxed()),
        }
    }
}

impl<T> Inbound<T> {
    /// The next event, or `None` once the other end is gone. Cancel-safe: an event is
    /// never lost when the future is dropped.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            if let Some(event) = self.batch.next() {
                return Some(event);
            }
            match &mut self.source {
                Source::Channel(rx) => return rx.recv().await,
                Source::Batches(stream) => self.batch = stream.next().await?.into_iter(),
            }
        }
    }

    /// Whether no event can be taken without waiting. Over gRPC this is the end of the
    /// batch at hand (the sender's "whatever was queued"), without looking for the next.
    pub fn is_empty(&self) -> bool {
        self.batch.len() == 0
            && match &self.source {
                Source::Channel(rx) => rx.is_empty(),
                Source::Batches(_) => true,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_come_out_one_event_at_a_time_in_order() {
        let stream = futures::stream::iter(vec![vec![1, 2], vec![], vec![3]]);
        let mut inbound = Inbound::batches(stream);
        assert!(inbound.is_empty());
        assert_eq!(inbound.recv().await, Some(1));
        assert!(!inbound.is_empty(), "2 is still in the batch");
        assert_eq!(inbound.recv().await, Some(2));
        assert!(inbound.is_empty(), "the end of a batch");
        assert_eq!(inbound.recv().await, Some(3));
        assert_eq!(inbound.recv().await, None);
        assert_eq!(inbound.recv().await, None, "ended stays ended");
    }

    #[tokio::test]
    async fn a_channel_is_empty_when_nothing_is_queued() {
        let (tx, rx) = mpsc::channel(4);
        let mut inbound = Inbound::from(rx);
        assert!(inbound.is_empty());
        tx.send(7).await.unwrap();
        assert!(!inbound.is_empty());
        assert_eq!(inbound.recv().await, Some(7));
        drop(tx);
        assert_eq!(inbound.recv().await, None);
    }
}
