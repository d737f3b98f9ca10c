//! Members: each reads its socket and counts what arrives, reconnects with the same id
//! when the socket closes or churn asks it to, and in all-to-all publishes on the
//! schedule too. Slow consumers are members that never read.

use super::publishers::Publisher;
use super::shared::Shared;
use super::FanoutPlan;
use crate::client::{Targets, Ws};
use crate::stats::stamp_of;
use futures::stream::SplitStream;
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Member `n` connects with id `{MEMBER_IDS}-{n}`, and reconnects with it.
pub(super) const MEMBER_IDS: &str = "m";

/// One member: reads its socket, publishes if asked.
pub(super) struct Member {
    n: usize,
    room: String,
    /// Notified to make the member reconnect (churn).
    reconnect: Arc<Notify>,
    stream: SplitStream<Ws>,
    /// When members publish (all-to-all).
    publisher: Option<Publisher>,
    /// The messages seen, to count duplicates (failover only).
    seen: Option<HashSet<String>>,
}

impl Member {
    /// Member `n` on its open socket; it publishes to `receivers` members when that is
    /// given.
    pub(super) fn new(n: usize, ws: Ws, receivers: Option<u64>, plan: &FanoutPlan) -> Self {
        let (sink, stream) = ws.split();
        Self {
            n,
            room: plan.room_of(n),
            reconnect: Arc::new(Notify::new()),
            stream,
            publisher: receivers.map(|r| Publisher::new(sink, n, r)),
            seen: plan.failover.is_some().then(HashSet::new),
        }
    }

    /// Notify it to make this member reconnect.
    pub(super) fn reconnect_handle(&self) -> Arc<Notify> {
        self.reconnect.clone()
    }

    /// Runs until aborted, or until its socket closes once the run is stopping.
    pub(super) async fn run(
        mut self,
        targets: Arc<Targets>,
        plan: Arc<FanoutPlan>,
        shared: Arc<Shared>,
    ) {
        let mut next_send = Instant::now();
        loop {
            let rate = plan.rate_at(shared.step());
            let send_at = tokio::time::Instant::from_std(next_send);
            let event = tokio::select! {
                m = self.stream.next() => Some(m),
                _ = self.reconnect.notified() => None,
                _ = tokio::time::sleep_until(send_at), if self.publisher.is_some() && !shared.stopping() => {
                    if let Some(publisher) = self.publisher.as_mut() {
                        publisher.send_next(&plan, &shared).await;
                    }
                    next_send += Duration::from_secs_f64(1.0 / rate);
                    continue;
                }
            };
            match event {
                Some(Some(Ok(Message::Text(t)))) => self.receive(&t, &shared),
                Some(Some(Ok(_))) => {}
                // Closed under us, or asked to reconnect (churn): reconnect with the same id.
                other => {
                    if shared.stopping() {
                        return;
                    }
                    self.reconnect(other.is_some(), &targets, &shared).await;
                }
            }
        }
    }

    /// Counts a delivery in the running step, with its latency when it carries a send
    /// time; a message seen before counts as a duplicate instead.
    fn receive(&mut self, text: &str, shared: &Shared) {
        let now = shared.now_us();
        let step = shared.step();
        let mut latency = None;
        if let Some(sent) = stamp_of(text) {
            if let Some(seen) = self.seen.as_mut() {
                if !seen.insert(text.get(..40).unwrap_or(text).to_string()) {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            latency = Some(now.saturating_sub(sent));
        }
        shared.count_delivery(step, now, latency);
    }

    /// Reconnects with the same id (a publishing member publishes on the new socket).
    async fn reconnect(&mut self, closed_by_server: bool, targets: &Targets, shared: &Shared) {
        if closed_by_server {
            shared.disconnects.fetch_add(1, Ordering::Relaxed);
            // Closed by the server: do not hammer it with reconnects.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let id = format!("{MEMBER_IDS}-{}", self.n);
        match targets.connect(&self.room, &id, self.n).await {
            Ok(ws) => {
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
                let (sink, stream) = ws.split();
                self.stream = stream;
                if let Some(publisher) = self.publisher.as_mut() {
                    publisher.sink = sink;
                }
            }
            Err(_) => {
                shared.reconnect_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Asks a share of the members to reconnect every second.
pub(super) async fn churn_loop(members: Vec<Arc<Notify>>, per_sec: f64, shared: Arc<Shared>) {
    if members.is_empty() {
        return;
    }
    let per_tick = ((members.len() as f64 * per_sec) / 10.0).max(0.0);
    let mut owed = 0.0;
    let mut next = 0usize;
    while !shared.stopping() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        owed += per_tick;
        while owed >= 1.0 {
            members[next % members.len()].notify_one();
            next += 1;
            owed -= 1.0;
        }
    }
}

/// Reads a socket that never read until the server closes it; the close code, if any
/// came within a few seconds (1005 for a close without a code, 1006 for a socket that
/// ended without one).
pub(super) async fn drain_until_close(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => {
                return Some(f.map_or(CloseCode::Status, |f| f.code).into())
            }
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return Some(CloseCode::Abnormal.into()),
            Err(_) => return None,
        }
    }
}
