//! A relay link is a pair of bounded, ordered event queues between one gateway and one node.
//! Order matters: everything a node sends to a socket arrives in the order it was sent,
//! which is how "messages from `on_connect` arrive before any later broadcast" holds.

use crate::wire::{GatewayEvent, NodeEvent};
use tokio::sync::mpsc;

/// Events in flight per direction before the sender waits (backpressure, bounded memory).
pub const LINK_CAPACITY: usize = 65_536;

/// The gateway's end of a link to one node.
pub struct GatewaySide {
    pub to_node: mpsc::Sender<GatewayEvent>,
    pub from_node: mpsc::Receiver<NodeEvent>,
}

/// The node's end of a link to one gateway.
pub struct NodeSide {
    pub from_gateway: mpsc::Receiver<GatewayEvent>,
    pub to_gateway: mpsc::Sender<NodeEvent>,
}

/// A link whose two ends live in the same process (`conclave dev`, tests).
pub fn in_process_link(capacity: usize) -> (GatewaySide, NodeSide) {
    let (to_node, from_gateway) = mpsc::channel(capacity);
    let (to_gateway, from_node) = mpsc::channel(capacity);
    (
        GatewaySide { to_node, from_node },
        NodeSide {
            from_gateway,
            to_gateway,
        },
    )
}
