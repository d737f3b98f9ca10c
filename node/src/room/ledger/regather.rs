//! A room's sockets coming back after it moved: how long they may still be on their way,
//! and what the room broadcast meanwhile that no record holds.
//!
//! Each gateway re-attaches its sockets on its own schedule, so a socket that comes back
//! first may talk before the others are back (and a new client, or an HTTP request, may
//! reach the room before any of them). A committed step's broadcast is numbered and kept
//! in the ledger's records, and reaches a late socket from there. A step that wrote
//! nothing leaves no record; its broadcasts are held here, in memory and for a short
//! while, and a socket coming back after them gets them in the order they were made.
//!
//! Whether the room comes from another node is not known when it starts here (a room that
//! stored nothing leaves no owner record behind), so every room holds its broadcasts for
//! its first moments on a node, and for as long as sockets are coming back.

use super::record::{continues_delivery, excluded_while_away};
use bytes::Bytes;
use conclave_proto::wire::{node_event, Deliver, NodeEvent, Send};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long after a socket re-attaches others may still be on their way (a gateway tries
/// for `reattach_timeout`, 30 s by default, from when the socket lost its node).
const REGATHER: Duration = Duration::from_secs(30);
/// How long a broadcast of a step that wrote nothing is held for sockets still coming
/// back. Gateways learn of a move at about the same time (the node's `Moved`, a dropped
/// link, a new ring) and retry at most a second apart, so stragglers are seconds behind.
const HOLD_FOR: Duration = Duration::from_secs(10);
/// Most broadcasts and payload bytes a room holds; past them the oldest go. Well inside a
/// gateway's default send queue (1,024 messages, 4 MiB), so that a socket back late is not
/// taken for a slow consumer when it gets them all at once.
const MAX_HELD: usize = 512;
const MAX_HELD_BYTES: usize = 256 << 10;

#[derive(Default)]
pub(super) struct Regather {
    /// Until when sockets may still come back (one came back: others may follow).
    until: Option<Instant>,
    /// Until when broadcasts are held: a while after the room came here, and while sockets
    /// may still come back.
    hold_until: Option<Instant>,
    /// Broadcasts of steps that wrote nothing, made while sockets came back, oldest first.
    held: VecDeque<Held>,
    held_bytes: usize,
}

struct Held {
    /// The room's last numbered output when it was made: where it goes among the numbered
    /// outputs a socket is sent again.
    after_out: u64,
    payload: Bytes,
    binary: bool,
    /// Ids it excluded that were away: a socket coming back under one does not get it.
    exclude_absent: Vec<String>,
    made: Instant,
}

impl Regather {
    /// The room starts on this node: its sockets may be on their way from another.
    pub(super) fn room_came(&mut self, now: Instant) {
        self.hold_until(now + HOLD_FOR);
    }

    /// A socket came back: others may follow for a while.
    pub(super) fn socket_back(&mut self, now: Instant) {
        if !self.open(now) {
            self.until = Some(now + REGATHER);
        }
        self.hold_until(now + REGATHER);
    }

    fn hold_until(&mut self, until: Instant) {
        self.hold_until = Some(self.hold_until.map_or(until, |u| u.max(until)));
    }

    /// Whether sockets may still be coming back.
    pub(super) fn open(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// When the hold ends, if one runs.
    pub(super) fn hold_deadline(&self) -> Option<Instant> {
        self.hold_until
    }

    /// Whether broadcasts are held now; once no socket can still be coming back, lets go
    /// of what it held.
    pub(super) fn holding(&mut self, now: Instant) -> bool {
        match self.hold_until {
            None => false,
            Some(until) if now < until => true,
            Some(_) => {
                self.end_hold();
                false
            }
        }
    }

    /// Stops holding, and lets go of what is held.
    pub(super) fn end_hold(&mut self) {
        self.hold_until = None;
        self.held = VecDeque::new();
        self.held_bytes = 0;
    }

    /// Holds each broadcast in `released` (events on their way to the gateways) that no
    /// record keeps: those whose deliveries are not numbered. A broadcast is one delivery
    /// per gateway link with members, in a row, sharing its payload's buffer.
    pub(super) fn hold_unnumbered(
        &mut self,
        released: &[(crate::links::GatewayId, NodeEvent)],
        last_out: u64,
        now: Instant,
    ) {
        let mut last: Option<(crate::links::GatewayId, &Bytes)> = None;
        for (gateway, event) in released {
            let Some(node_event::Event::Deliver(d)) = &event.event else {
                last = None;
                continue;
            };
            let continues = last.is_some_and(|l| continues_delivery(l, *gateway, &d.payload));
            last = Some((*gateway, &d.payload));
            if d.out_seq == 0 && !continues {
                self.hold(d, last_out, now);
            }
        }
        self.forget_old(now);
    }

    fn hold(&mut self, d: &Deliver, after_out: u64, now: Instant) {
        self.held_bytes += d.payload.len();
        self.held.push_back(Held {
            after_out,
            payload: d.payload.clone(),
            binary: d.binary,
            exclude_absent: d.exclude_absent.clone(),
            made: now,
        });
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(h) = self.held.front() {
            let over = self.held.len() > MAX_HELD || self.held_bytes > MAX_HELD_BYTES;
            if !over && now.duration_since(h.made) <= HOLD_FOR {
                break;
            }
            self.held_bytes -= h.payload.len();
            self.held.pop_front();
        }
    }

    /// Adds to `resend` (the numbered outputs `socket`, connection `id`, is sent again, in
    /// number order) the held broadcasts that did not exclude it, each after the numbered
    /// outputs made before it. For a socket coming back for the first time since the room
    /// came here: it was away for all of them.
    pub(super) fn missed_by(
        &mut self,
        socket: u64,
        id: &str,
        resend: Vec<node_event::Event>,
        now: Instant,
    ) -> Vec<node_event::Event> {
        self.forget_old(now);
        if self.held.is_empty() {
            return resend;
        }
        let mut merged = Vec::with_capacity(resend.len() + self.held.len());
        let mut held = self
            .held
            .iter()
            .filter(|h| !excluded_while_away(&h.exclude_absent, id))
            .peekable();
        for event in resend {
            let n = out_seq(&event);
            while let Some(h) = held.next_if(|h| h.after_out < n) {
                merged.push(h.send_to(socket));
            }
            merged.push(event);
        }
        merged.extend(held.map(|h| h.send_to(socket)));
        merged
    }
}

impl Held {
    fn send_to(&self, socket: u64) -> node_event::Event {
        node_event::Event::Send(Send {
            socket,
            payload: self.payload.clone(),
            binary: self.binary,
            out_seq: 0,
        })
    }
}

/// An output's number (0 for events that are not numbered outputs).
pub(super) fn out_seq(event: &node_event::Event) -> u64 {
    match event {
        node_event::Event::Send(s) => s.out_seq,
        node_event::Event::CloseSocket(c) => c.out_seq,
        node_event::Event::Deliver(d) => d.out_seq,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broadcast(text: &str) -> Vec<(crate::links::GatewayId, NodeEvent)> {
        let event = node_event::Event::Deliver(Deliver {
            payload: Bytes::from(text.to_string()),
            ..Deliver::default()
        });
        vec![(0, NodeEvent { event: Some(event) })]
    }

    fn texts(events: &[node_event::Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                node_event::Event::Send(s) => String::from_utf8(s.payload.to_vec()).unwrap(),
                other => panic!("not a send: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn holds_broadcasts_for_a_while_and_within_bounds() {
        let start = Instant::now();
        let mut r = Regather::default();
        assert!(!r.holding(start));
        r.room_came(start);
        assert!(r.holding(start));
        assert!(!r.open(start), "no socket came back yet");
        r.socket_back(start);
        assert!(r.open(start));
        for i in 0..MAX_HELD + 10 {
            r.hold_unnumbered(&broadcast(&format!("m{i}")), 0, start);
        }
        let missed = texts(&r.missed_by(7, "c7", Vec::new(), start));
        assert_eq!(missed.len(), MAX_HELD, "the oldest go past the count");
        assert_eq!(missed[0], "m10");

        let big = "x".repeat(100 << 10);
        for _ in 0..3 {
            r.hold_unnumbered(&broadcast(&big), 0, start);
        }
        assert!(r.held_bytes <= MAX_HELD_BYTES, "{}", r.held_bytes);

        let later = start + HOLD_FOR + Duration::from_secs(1);
        r.hold_unnumbered(&broadcast("late"), 0, later);
        assert_eq!(texts(&r.missed_by(7, "c7", Vec::new(), later)), ["late"]);
        assert!(r
            .missed_by(7, "c7", Vec::new(), later + HOLD_FOR * 2)
            .is_empty());

        let closed = start + REGATHER + Duration::from_secs(1);
        assert!(
            !r.holding(closed),
            "sockets cannot be on their way any more"
        );
        assert!(r.held.is_empty() && r.held_bytes == 0);

        // A room that no socket comes back to holds for its first moments only.
        let mut r = Regather::default();
        r.room_came(start);
        assert!(r.holding(start + HOLD_FOR - Duration::from_millis(1)));
        assert!(!r.holding(start + HOLD_FOR));
        assert!(r.hold_deadline().is_none());
    }
}
