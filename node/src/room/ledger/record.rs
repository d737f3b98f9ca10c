//! The ledger's records as stored: their keys, their encoding, and which of a step's
//! outputs go to one socket (`mod.rs` keeps the books: numbering, confirmations, trimming).

use crate::links::GatewayId;
use bytes::Bytes;
use conclave_proto::wire::{node_event, CloseSocket, Deliver, Send};
use std::collections::HashSet;

/// A client socket across its moves: the gateway process and the socket's id there.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct SocketRef {
    pub origin: u64,
    pub socket: u64,
}

/// The outputs of one committed step, as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StoredStep {
    #[prost(message, repeated, tag = "1")]
    pub outputs: Vec<StoredOutput>,
}

/// One numbered output and the gateway process it went to.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StoredOutput {
    #[prost(uint64, tag = "1")]
    pub origin: u64,
    #[prost(oneof = "Output", tags = "2, 3, 4")]
    pub output: Option<Output>,
    /// For a delivery: the number of the first delivery of its broadcast (one per gateway
    /// link with members); 0 otherwise.
    #[prost(uint64, tag = "5")]
    pub broadcast: u64,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(super) enum Output {
    #[prost(message, tag = "2")]
    Send(Send),
    #[prost(message, tag = "3")]
    Deliver(Deliver),
    #[prost(message, tag = "4")]
    Close(CloseSocket),
}

impl Output {
    /// This output as the event for one socket of its gateway (connection `id`), if it was
    /// for that socket.
    pub(super) fn for_socket(&self, socket: u64, id: &str) -> Option<node_event::Event> {
        match self {
            Output::Send(s) if s.socket == socket => Some(node_event::Event::Send(s.clone())),
            Output::Close(c) if c.socket == socket => {
                Some(node_event::Event::CloseSocket(c.clone()))
            }
            Output::Deliver(d)
                if !d.exclude.contains(&socket) && !excluded_while_away(&d.exclude_absent, id) =>
            {
                Some(delivered_to(d, socket))
            }
            _ => None,
        }
    }

    pub(super) fn bytes(&self) -> usize {
        match self {
            Output::Send(s) => s.payload.len(),
            Output::Deliver(d) => {
                let away: usize = d.exclude_absent.iter().map(String::len).sum();
                d.payload.len() + 8 * d.exclude.len() + away
            }
            Output::Close(c) => c.reason.len(),
        }
    }
}

pub(super) fn applied_key(s: SocketRef) -> String {
    format!("a/{:016x}/{:016x}", s.origin, s.socket)
}

pub(super) fn step_key(first: u64) -> String {
    format!("o/{first:020}")
}

pub(super) const LAST_OUT_KEY: &str = "n";

/// Whether a delivery to `gateway` of `payload` continues the broadcast of the delivery
/// before it (`broadcast_to` queues one per link, in ascending link order, sharing the
/// payload's buffer): that broadcast's number if so.
pub(super) fn same_broadcast(
    last: &Option<(u64, GatewayId, Bytes)>,
    gateway: GatewayId,
    payload: &Bytes,
) -> Option<u64> {
    let (broadcast, last_gateway, last_payload) = last.as_ref()?;
    continues_delivery((*last_gateway, last_payload), gateway, payload).then_some(*broadcast)
}

/// Whether a delivery to `gateway` of `payload` belongs to the same broadcast as the
/// delivery `last` (its link and payload) queued just before it.
pub(super) fn continues_delivery(
    (last_gateway, last_payload): (GatewayId, &Bytes),
    gateway: GatewayId,
    payload: &Bytes,
) -> bool {
    let shared = last_payload.as_ptr() == payload.as_ptr() && last_payload.len() == payload.len();
    last_gateway < gateway && shared
}

/// Whether connection `id` is among the ids a broadcast excluded while they were away
/// (its `exclude_absent`).
pub(super) fn excluded_while_away(exclude_absent: &[String], id: &str) -> bool {
    exclude_absent.iter().any(|away| away == id)
}

/// The events that carry `outputs` to `socket`, connection `id` (those that were for it).
/// A broadcast none of whose deliveries went to the socket's gateway was made while the
/// socket was away re-attaching (a socket that joined later took only later numbers, and
/// its gateway drops it): the socket gets it too, unless it excluded the connection.
pub(super) fn outputs_for<'a>(
    outputs: impl Iterator<Item = &'a StoredOutput>,
    socket: SocketRef,
    id: &str,
) -> Vec<node_event::Event> {
    let outputs: Vec<&StoredOutput> = outputs.collect();
    let reached_its_gateway: HashSet<u64> = outputs
        .iter()
        .filter(|o| o.broadcast != 0 && o.origin == socket.origin)
        .map(|o| o.broadcast)
        .collect();
    // A broadcast reaches a gateway once per link of it with members: while the gateway
    // re-attached its sockets over a new link, both may have had one. The socket gets it
    // once, and not at all if one of them excluded it (it was on the other link then).
    let excluded_from: HashSet<u64> = outputs
        .iter()
        .filter(|o| o.broadcast != 0 && o.origin == socket.origin)
        .filter(
            |o| matches!(&o.output, Some(Output::Deliver(d)) if d.exclude.contains(&socket.socket)),
        )
        .map(|o| o.broadcast)
        .collect();
    let mut had = HashSet::new();
    let mut missed = HashSet::new();
    outputs
        .iter()
        .filter_map(|o| {
            if o.origin == socket.origin {
                let repeat = o.broadcast != 0
                    && (excluded_from.contains(&o.broadcast) || !had.insert(o.broadcast));
                if repeat {
                    return None;
                }
                return o.output.as_ref()?.for_socket(socket.socket, id);
            }
            let first_of_missed = o.broadcast != 0
                && !reached_its_gateway.contains(&o.broadcast)
                && missed.insert(o.broadcast);
            match &o.output {
                Some(Output::Deliver(d))
                    if first_of_missed && !excluded_while_away(&d.exclude_absent, id) =>
                {
                    Some(delivered_to(d, socket.socket))
                }
                _ => None,
            }
        })
        .collect()
}

/// Delivery `d` as the send that carries it to one socket of a gateway.
fn delivered_to(d: &Deliver, socket: u64) -> node_event::Event {
    node_event::Event::Send(Send {
        socket,
        payload: d.payload.clone(),
        binary: d.binary,
        out_seq: d.out_seq,
    })
}

pub(super) fn parse_socket(s: &str) -> Option<SocketRef> {
    let (origin, socket) = s.split_once('/')?;
    Some(SocketRef {
        origin: u64::from_str_radix(origin, 16).ok()?,
        socket: u64::from_str_radix(socket, 16).ok()?,
    })
}
