//! Fault injection on a relay link, in-process: the gateway's end and the node's end are
//! joined by two forwarding tasks the test controls, the way chitchat's
//! `ChannelTransport` lets a test remove a link.
//!
//! - `cut`: both directions end, as when the node's process dies (kill -9).
//! - `stall` / `resume`: forwarding stops in both directions and events queue, as for a
//!   stopped process or a partition; `resume` delivers them in order.
//! - `drop_acks`: the node's acknowledgements are lost on the way, as for a node that
//!   dies between handling a frame and acknowledging it.
//! - `lose_outputs`: everything the node's rooms send is lost on the way (messages, closes,
//!   acknowledgements), as for a node that dies right after its commits land.

use conclave_proto::wire::{node_event, NodeEvent};
use conclave_proto::{in_process_link, GatewaySide, Inbound, NodeSide, LINK_CAPACITY};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The test's handle on one faulty link.
#[derive(Clone)]
pub struct LinkFaults {
    inner: Arc<Faults>,
}

struct Faults {
    cut: watch::Sender<bool>,
    stalled: watch::Sender<bool>,
    drop_acks: AtomicBool,
    lose_outputs: AtomicBool,
    /// Acknowledgements that reached the gateway.
    acks_passed: watch::Sender<u64>,
    /// The socket of the latest acknowledgement that passed.
    last_acked_socket: std::sync::atomic::AtomicU64,
    /// Straight to the gateway's end, as if from the node; let go when the link ends.
    to_gateway: std::sync::Mutex<Option<mpsc::Sender<NodeEvent>>>,
}

/// A relay link with a fault injector between its ends.
pub fn faulty_link() -> (GatewaySide, NodeSide, LinkFaults) {
    let (gateway, inner_node) = in_process_link(LINK_CAPACITY);
    let (inner_gateway, node) = in_process_link(LINK_CAPACITY);
    let faults = LinkFaults {
        inner: Arc::new(Faults {
            cut: watch::Sender::new(false),
            stalled: watch::Sender::new(false),
            drop_acks: AtomicBool::new(false),
            lose_outputs: AtomicBool::new(false),
            acks_passed: watch::Sender::new(0),
            last_acked_socket: std::sync::atomic::AtomicU64::new(0),
            to_gateway: std::sync::Mutex::new(Some(inner_node.to_gateway.clone())),
        }),
    };
    tokio::spawn(forward(
        inner_node.from_gateway,
        inner_gateway.to_node,
        faults.clone(),
        |_| Fate::Forward,
    ));
    let f = faults.clone();
    tokio::spawn(forward(
        inner_gateway.from_node,
        inner_node.to_gateway,
        faults.clone(),
        move |ev| f.fate(ev),
    ));
    (gateway, node, faults)
}

/// What becomes of one event.
enum Fate {
    Forward,
    /// An acknowledgement for this socket: forwarded, and counted once the gateway has it.
    ForwardAck(u64),
    Drop,
}

/// Forwards events one by one while the link is not stalled, until it is cut or either
/// end goes away.
async fn forward<E>(
    mut from: Inbound<E>,
    to: mpsc::Sender<E>,
    faults: LinkFaults,
    fate: impl Fn(&E) -> Fate,
) {
    let mut cut = faults.inner.cut.subscribe();
    let mut stalled = faults.inner.stalled.subscribe();
    loop {
        let ev = tokio::select! {
            _ = cut.wait_for(|cut| *cut) => return,
            ev = from.recv() => match ev {
                Some(ev) => ev,
                None => return,
            },
        };
        tokio::select! {
            _ = cut.wait_for(|cut| *cut) => return,
            _ = stalled.wait_for(|stalled| !*stalled) => {}
        }
        let fate = fate(&ev);
        if matches!(fate, Fate::Drop) {
            continue;
        }
        tokio::select! {
            _ = cut.wait_for(|cut| *cut) => return,
            sent = to.send(ev) => if sent.is_err() { return },
        }
        if let Fate::ForwardAck(socket) = fate {
            let last = &faults.inner.last_acked_socket;
            last.store(socket, Ordering::SeqCst);
            faults.inner.acks_passed.send_modify(|p| *p += 1);
        }
    }
}

impl LinkFaults {
    /// Ends both directions: events in flight are lost.
    pub fn cut(&self) {
        self.inner.cut.send_replace(true);
    }

    /// Ends the link as a reset connection does: events in flight are lost, and both ends
    /// see it end (after [`LinkFaults::cut`] alone the gateway's end waits on).
    pub fn end(&self) {
        self.cut();
        self.inner.to_gateway.lock().unwrap().take();
    }

    /// Stops forwarding; events queue until [`LinkFaults::resume`].
    pub fn stall(&self) {
        self.inner.stalled.send_replace(true);
    }

    pub fn resume(&self) {
        self.inner.stalled.send_replace(false);
    }

    /// Loses (`true`) or passes on the node's acknowledgements from now on.
    pub fn drop_acks(&self, drop: bool) {
        self.inner.drop_acks.store(drop, Ordering::SeqCst);
    }

    /// Loses (`true`) or passes on what the node's rooms send from now on.
    pub fn lose_outputs(&self, lose: bool) {
        self.inner.lose_outputs.store(lose, Ordering::SeqCst);
    }

    /// The gateway's id for the socket of the latest acknowledgement that passed.
    pub fn last_acked_socket(&self) -> u64 {
        self.inner.last_acked_socket.load(Ordering::SeqCst)
    }

    /// Sends `event` to the gateway as if the node had.
    pub async fn inject(&self, event: node_event::Event) {
        let event = NodeEvent { event: Some(event) };
        let to_gateway = self.inner.to_gateway.lock().unwrap().clone();
        to_gateway
            .expect("the link ended")
            .send(event)
            .await
            .unwrap();
    }

    /// Waits until `n` acknowledgements in all have reached the gateway.
    pub async fn acks_passed(&self, n: u64) {
        let mut passed = self.inner.acks_passed.subscribe();
        tokio::time::timeout(Duration::from_secs(5), passed.wait_for(|p| *p >= n))
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} acknowledgements reached the gateway"))
            .unwrap();
    }

    /// Whether a node event goes on to the gateway.
    fn fate(&self, ev: &NodeEvent) -> Fate {
        use node_event::Event;
        let output = matches!(
            ev.event,
            Some(Event::Send(_) | Event::Deliver(_) | Event::CloseSocket(_) | Event::Ack(_))
        );
        if output && self.inner.lose_outputs.load(Ordering::SeqCst) {
            return Fate::Drop;
        }
        match ev.event {
            Some(node_event::Event::Ack(_)) if self.inner.drop_acks.load(Ordering::SeqCst) => {
                Fate::Drop
            }
            Some(node_event::Event::Ack(ref a)) => Fate::ForwardAck(a.socket),
            _ => Fate::Forward,
        }
    }
}
