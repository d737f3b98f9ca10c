//! The room's ledger: what makes each client frame take effect once, whatever fails. Its
//! records commit in the same transaction as the step they describe, in the room's storage
//! but apart from the party's keys (`Store::ledger`):
//!
//! - `a/<origin>/<socket>` → the last frame of that client socket whose step committed
//!   writes. A frame replayed after a crash, a stall or a lost link is recognised by it
//!   and not handled again. Deleted when the socket closes.
//! - `o/<first>` → the outputs (`Send`, `Deliver`, `CloseSocket`) of one step that
//!   committed writes, numbered per room from `first`. Kept until every gateway link they
//!   went out on confirms them (`Received`); if the node dies first, the next owner sends
//!   them again to each socket as it re-attaches, and the gateway takes each number once
//!   per socket. A broadcast also reaches a socket that was still re-attaching when the
//!   room made it (its gateway then had no member in the room): while sockets come back
//!   after a move ([`regather`]) steps are kept even when confirmed.
//! - `n` → the last output number, when no `o/` record holds it any more.
//!
//! Steps that write nothing leave no record: after a crash they may run again, and so may
//! their messages. While sockets come back after a move, their broadcasts are held in
//! memory for the sockets that come back after them ([`regather`]).

mod record;
mod regather;

use super::conns::{ConnTable, Peer};
use crate::links::GatewayId;
use bytes::Bytes;
use conclave_proto::wire::{node_event, NodeEvent};
use conclave_proto::SocketId;
use prost::Message as _;
pub(crate) use record::SocketRef;
use record::{
    applied_key, outputs_for, parse_socket, same_broadcast, step_key, Output, StoredOutput,
    StoredStep, LAST_OUT_KEY,
};
use regather::Regather;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tracing::warn;

/// How long records are kept for sockets and gateway links that went away without a word:
/// longer than a gateway tries to re-attach a socket (`reattach_timeout`, 30 s) before it
/// closes it.
const RETAIN: Duration = Duration::from_secs(60);
/// How often records of sockets that went away are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Most unconfirmed steps and output bytes a room keeps; past them the oldest are
/// forgotten (a gateway this far behind has lost its sockets to 1013 anyway).
const MAX_KEPT_STEPS: usize = 1024;
const MAX_KEPT_BYTES: usize = 16 << 20;

/// A committed step's outputs, kept until they are confirmed.
struct KeptStep {
    first: u64,
    last: u64,
    outputs: Vec<StoredOutput>,
    /// The gateway links they went out on. Empty for steps found in storage: an earlier
    /// owner sent them, and only [`RETAIN`] tells when they are no longer needed.
    links: Vec<GatewayId>,
    bytes: usize,
    since: Instant,
}

struct Applied {
    seq: u64,
    /// When the socket last showed up (a frame, a re-attach).
    seen: Instant,
}

/// What one commit adds to the ledger, applied once the commit is durable.
pub(crate) struct Sealed {
    last_out: u64,
    step: Option<KeptStep>,
    /// `first` of the kept steps whose records the commit deletes.
    trimmed: Vec<u64>,
    applied: Vec<(SocketRef, u64)>,
    /// Deletes of records of sockets that left, to do again if the commit fails.
    stale: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Ledger {
    /// The last output number given (0: none yet).
    last_out: u64,
    /// Committed steps' outputs not yet confirmed, oldest first.
    kept: VecDeque<KeptStep>,
    /// The highest output number each gateway link confirmed.
    confirmed: HashMap<GatewayId, u64>,
    /// The last frame with writes of each socket that has a record.
    applied: HashMap<SocketRef, Applied>,
    /// Records to delete with the next commit.
    stale: Vec<String>,
    /// The frames the uncommitted steps handled (a batch's, or the running step's).
    frames: Vec<(SocketRef, u64)>,
    /// The gateway process of each link that carried this room's sockets.
    origins: HashMap<GatewayId, u64>,
    last_sweep: Option<Instant>,
    /// Sockets coming back after a move: while they may, no step is forgotten for being
    /// confirmed, and broadcasts of steps that wrote nothing are held for them.
    regather: Regather,
}

impl Ledger {
    /// The ledger as the room's storage holds it (`Store::ledger`), read when the node
    /// claims the room. Unreadable records are skipped with a warning.
    pub(crate) fn load(records: Vec<(String, Bytes)>) -> Self {
        let mut ledger = Ledger::default();
        ledger.merge(records);
        ledger
    }

    /// Takes in records read from storage; returns the outputs of steps it did not know
    /// of (they committed although this node saw their commit fail).
    pub(crate) fn merge(&mut self, records: Vec<(String, Bytes)>) -> Landed {
        let now = Instant::now();
        let known = self.last_out;
        let mut landed = Vec::new();
        for (key, value) in records {
            if let Some(socket) = key.strip_prefix("a/").and_then(parse_socket) {
                let Some(seq) = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                else {
                    warn!(key, "unreadable ledger record");
                    continue;
                };
                let e = self
                    .applied
                    .entry(socket)
                    .or_insert(Applied { seq, seen: now });
                e.seq = e.seq.max(seq);
            } else if let Some(first) = key.strip_prefix("o/").and_then(|f| f.parse().ok()) {
                let Ok(step) = StoredStep::decode(value) else {
                    warn!(key, "unreadable ledger record");
                    continue;
                };
                if first <= known || step.outputs.is_empty() {
                    continue; // this actor made it, and keeps it already (or trimmed it)
                }
                let last = first + step.outputs.len() as u64 - 1;
                self.last_out = self.last_out.max(last);
                landed.extend(step.outputs.iter().cloned());
                self.keep(KeptStep {
                    first,
                    last,
                    bytes: step
                        .outputs
                        .iter()
                        .filter_map(|o| o.output.as_ref())
                        .map(Output::bytes)
                        .sum(),
                    outputs: step.outputs,
                    links: Vec::new(),
                    since: now,
                });
            } else if key == LAST_OUT_KEY {
                if let Some(n) = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    self.last_out = self.last_out.max(n);
                }
            }
        }
        Landed(landed)
    }

    fn keep(&mut self, step: KeptStep) {
        let at = self.kept.partition_point(|k| k.first < step.first);
        self.kept.insert(at, step);
    }

    /// The last output number so far: a new socket takes only outputs after it.
    pub(crate) fn last_out(&self) -> u64 {
        self.last_out
    }

    /// The running step handles frame `seq` of `socket`.
    pub(crate) fn begin_frame(&mut self, socket: SocketRef, seq: u64) {
        match self.frames.iter_mut().find(|(s, _)| *s == socket) {
            Some(frame) => frame.1 = frame.1.max(seq),
            None => self.frames.push((socket, seq)),
        }
    }

    /// The steps of the frames begun so far committed, or were discarded.
    pub(crate) fn end_frames(&mut self) {
        self.frames.clear();
    }

    /// The last frame of `socket` whose step committed writes (0: none).
    pub(crate) fn applied(&self, socket: SocketRef) -> u64 {
        self.applied.get(&socket).map_or(0, |a| a.seq)
    }

    /// `socket` (connection `id`) re-attached here: its last applied frame, and the kept
    /// outputs it was sent (the gateway drops those it has already). `first_time`: it was
    /// not in the room here before, so it also missed every broadcast the room holds for
    /// sockets coming back.
    pub(crate) fn resumed(
        &mut self,
        socket: SocketRef,
        id: &str,
        first_time: bool,
    ) -> (u64, Vec<node_event::Event>) {
        let now = Instant::now();
        self.regather.socket_back(now);
        let applied = match self.applied.get_mut(&socket) {
            Some(a) => {
                a.seen = now;
                a.seq
            }
            None => 0,
        };
        let mut resend = outputs_for(self.kept.iter().flat_map(|k| &k.outputs), socket, id);
        if first_time {
            resend = self.regather.missed_by(socket.socket, id, resend, now);
        }
        (applied, resend)
    }

    /// The room starts on this node (it claimed it): sockets of its may be on their way
    /// from the node that had it.
    pub(crate) fn room_came(&mut self) {
        self.regather.room_came(Instant::now());
    }

    /// The time, if broadcasts are held now (sockets may still be coming back after a
    /// move). Reads the clock only while a hold runs.
    fn holding_now(&mut self) -> Option<Instant> {
        self.regather.hold_deadline()?;
        let now = Instant::now();
        self.regather.holding(now).then_some(now)
    }

    #[cfg(test)]
    pub(crate) fn holds_broadcasts(&mut self) -> bool {
        self.holding_now().is_some()
    }

    /// When broadcasts stop being held, if they are held: then call [`Ledger::end_hold`].
    pub(crate) fn hold_deadline(&self) -> Option<Instant> {
        self.regather.hold_deadline()
    }

    /// The hold is over: what is held is let go.
    pub(crate) fn end_hold(&mut self) {
        self.regather.end_hold();
    }

    /// Events on their way to the gateways: while sockets may still be coming back after
    /// a move, the broadcasts no record keeps are held for them.
    pub(crate) fn released(&mut self, events: &[(GatewayId, NodeEvent)]) {
        if let Some(now) = self.holding_now() {
            self.regather.hold_unnumbered(events, self.last_out, now);
        }
    }

    /// The socket left with its gateway's link, and may yet come back over a new one (the
    /// gateway re-attaches for longer than this node waits): the frames it had applied
    /// stay applied until it has been gone for [`RETAIN`], as for a socket that left while
    /// the room was elsewhere.
    pub(crate) fn gone_quiet(&mut self, socket: SocketRef) {
        if let Some(a) = self.applied.get_mut(&socket) {
            a.seen = Instant::now();
        }
    }

    /// Undoes [`Ledger::closed`] for a socket whose close did not commit (its record,
    /// of frames applied up to `seq`, is kept; 0: it had none).
    pub(crate) fn not_closed(&mut self, socket: SocketRef, seq: u64) {
        let key = applied_key(socket);
        self.stale.retain(|k| *k != key);
        if seq != 0 {
            self.applied.insert(
                socket,
                Applied {
                    seq,
                    seen: Instant::now(),
                },
            );
        }
    }

    /// The socket closed: its record goes with the next commit.
    pub(crate) fn closed(&mut self, socket: SocketRef) {
        if self.applied.remove(&socket).is_some() {
            self.stale.push(applied_key(socket));
        }
    }

    /// Gateway link `gateway` has every output of this room up to `out_seq`.
    pub(crate) fn confirm(&mut self, gateway: GatewayId, out_seq: u64) {
        // No gateway confirms an output not numbered yet; a number past the last would
        // let it forget outputs it has not had.
        let out_seq = out_seq.min(self.last_out);
        let c = self.confirmed.entry(gateway).or_default();
        *c = (*c).max(out_seq);
    }

    /// Prepares `commit` for the step: numbers the outputs in `outbox` and adds their
    /// record, the frame's record, and deletes of records no longer needed. Apply the
    /// result with [`Ledger::committed`] once the commit is durable.
    pub(crate) fn seal(
        &mut self,
        ledger_writes: &mut Vec<(String, Option<Bytes>)>,
        outbox: &mut [(GatewayId, NodeEvent)],
        conns: &ConnTable,
    ) -> Sealed {
        let now = Instant::now();
        let step = self.number(outbox, conns, now);
        if let Some(step) = &step {
            let record = StoredStep {
                outputs: step.outputs.clone(),
            };
            ledger_writes.push((step_key(step.first), Some(record.encode_to_vec().into())));
        }
        let applied = self.frames.clone();
        for (socket, seq) in &applied {
            ledger_writes.push((applied_key(*socket), Some(seq.to_string().into())));
        }
        let trimmed = self.trimmable(now);
        for first in &trimmed {
            ledger_writes.push((step_key(*first), None));
        }
        let newest_goes = self.kept.back().is_some_and(|k| trimmed.contains(&k.first));
        if step.is_none() && newest_goes {
            ledger_writes.push((LAST_OUT_KEY.into(), Some(self.last_out.to_string().into())));
        }
        self.sweep(conns, now);
        let stale = std::mem::take(&mut self.stale);
        ledger_writes.extend(stale.iter().map(|k| (k.clone(), None)));
        Sealed {
            last_out: step.as_ref().map_or(self.last_out, |s| s.last),
            step,
            trimmed,
            applied,
            stale,
        }
    }

    /// Numbers the outputs of the step (those to sockets still in the room) from
    /// `last_out + 1`, in the outbox and in the step record.
    fn number(
        &mut self,
        outbox: &mut [(GatewayId, NodeEvent)],
        conns: &ConnTable,
        now: Instant,
    ) -> Option<KeptStep> {
        let mut next = self.last_out;
        let mut outputs = Vec::new();
        let mut links: Vec<GatewayId> = Vec::new();
        // The broadcast the last delivery belonged to: its number, link and payload.
        let mut last_delivery: Option<(u64, GatewayId, Bytes)> = None;
        for (gateway, event) in outbox.iter_mut() {
            let gateway = *gateway;
            let mut broadcast = 0;
            let socket_origin = |socket: u64| {
                let peer = Peer {
                    gateway,
                    socket: SocketId(socket),
                };
                conns.get(peer).map(|e| e.origin)
            };
            let (origin, output) = match event.event.as_mut() {
                Some(node_event::Event::Send(s)) => match socket_origin(s.socket) {
                    Some(o) => {
                        s.out_seq = next + 1;
                        (o, Output::Send(s.clone()))
                    }
                    None => continue,
                },
                Some(node_event::Event::CloseSocket(c)) => match socket_origin(c.socket) {
                    Some(o) => {
                        c.out_seq = next + 1;
                        (o, Output::Close(c.clone()))
                    }
                    None => continue,
                },
                Some(node_event::Event::Deliver(d)) => match self.origin_of(gateway, conns) {
                    Some(o) => {
                        d.out_seq = next + 1;
                        broadcast = same_broadcast(&last_delivery, gateway, &d.payload)
                            .unwrap_or(d.out_seq);
                        last_delivery = Some((broadcast, gateway, d.payload.clone()));
                        (o, Output::Deliver(d.clone()))
                    }
                    None => continue,
                },
                _ => continue,
            };
            next += 1;
            if !links.contains(&gateway) {
                links.push(gateway);
            }
            if broadcast == 0 {
                last_delivery = None;
            }
            outputs.push(StoredOutput {
                origin,
                output: Some(output),
                broadcast,
            });
        }
        (!outputs.is_empty()).then(|| KeptStep {
            first: self.last_out + 1,
            last: next,
            bytes: outputs
                .iter()
                .filter_map(|o| o.output.as_ref())
                .map(Output::bytes)
                .sum(),
            outputs,
            links,
            since: now,
        })
    }

    fn origin_of(&mut self, gateway: GatewayId, conns: &ConnTable) -> Option<u64> {
        if let Some(o) = self.origins.get(&gateway) {
            return Some(*o);
        }
        let origin = conns.iter().find(|e| e.gateway == gateway)?.origin;
        self.origins.insert(gateway, origin);
        Some(origin)
    }

    /// The kept steps whose records may go: confirmed by every link they went out on, or
    /// older than [`RETAIN`]; past the caps, the oldest too.
    fn trimmable(&self, now: Instant) -> Vec<u64> {
        let regathering = self.regather.open(now);
        let confirmed = |k: &KeptStep| {
            !regathering
                && !k.links.is_empty()
                && k.links
                    .iter()
                    .all(|g| self.confirmed.get(g).is_some_and(|c| *c >= k.last))
        };
        let mut out = Vec::new();
        let (mut steps, mut bytes) = (
            self.kept.len(),
            self.kept.iter().map(|k| k.bytes).sum::<usize>(),
        );
        for k in &self.kept {
            let over = steps > MAX_KEPT_STEPS || bytes > MAX_KEPT_BYTES;
            if over || confirmed(k) || now.duration_since(k.since) > RETAIN {
                if over && !confirmed(k) {
                    warn!(first = k.first, "the room's gateways are far behind: outputs kept for a crash are forgotten");
                    metrics::counter!("conclave_room_outputs_forgotten_total").increment(1);
                }
                out.push(k.first);
                steps -= 1;
                bytes -= k.bytes;
            }
        }
        out
    }

    /// Every so often: forgets the records of sockets that have not been seen for
    /// [`RETAIN`] and are not in the room (they left while the room was elsewhere).
    fn sweep(&mut self, conns: &ConnTable, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.last_sweep = Some(now);
        // A link id is not given out again (a reused slot comes with a new generation): one
        // that carries none of the room's sockets now never will (a gateway that
        // reconnects comes back on a new link).
        self.origins
            .retain(|link, _| conns.iter().any(|e| e.gateway == *link));
        let old: Vec<SocketRef> = self
            .applied
            .iter()
            .filter(|(_, a)| now.duration_since(a.seen) > RETAIN)
            .map(|(s, _)| *s)
            .collect();
        if old.is_empty() {
            return;
        }
        let present: std::collections::HashSet<SocketRef> = conns
            .iter()
            .map(crate::room::ConnEntry::socket_ref)
            .collect();
        for socket in old {
            if present.contains(&socket) {
                if let Some(a) = self.applied.get_mut(&socket) {
                    a.seen = now;
                }
            } else {
                self.applied.remove(&socket);
                self.stale.push(applied_key(socket));
            }
        }
    }

    /// The commit `sealed` was prepared for is durable.
    pub(crate) fn committed(&mut self, sealed: Sealed) {
        self.last_out = sealed.last_out;
        self.kept.retain(|k| !sealed.trimmed.contains(&k.first));
        if let Some(step) = sealed.step {
            self.kept.push_back(step);
        }
        let links: Vec<GatewayId> = self
            .kept
            .iter()
            .flat_map(|k| k.links.iter().copied())
            .collect();
        self.confirmed.retain(|g, _| links.contains(g));
        for (socket, seq) in sealed.applied {
            self.applied.insert(
                socket,
                Applied {
                    seq,
                    seen: Instant::now(),
                },
            );
        }
    }

    /// The commit `sealed` was prepared for failed: its deletes wait for the next one.
    pub(crate) fn not_committed(&mut self, sealed: Sealed) {
        self.stale.extend(sealed.stale);
    }
}

/// Outputs of steps that committed although this node saw their commit fail
/// ([`Ledger::merge`]), to send to the sockets they were for.
pub(crate) struct Landed(Vec<StoredOutput>);

impl Landed {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The events that carry them to `socket`, connection `id`.
    pub(crate) fn for_socket(&self, socket: SocketRef, id: &str) -> Vec<node_event::Event> {
        outputs_for(self.0.iter(), socket, id)
    }
}

#[cfg(test)]
mod tests;
