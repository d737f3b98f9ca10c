//! Publishing on an open-loop schedule: every message carries its send time (for latency)
//! and its publisher and sequence number (for duplicates), and is counted with the
//! deliveries it should make in the step that is running when it is sent.

use super::shared::Shared;
use super::FanoutPlan;
use crate::client::Ws;
use crate::stats::stamped_payload;
use futures::stream::SplitSink;
use futures::SinkExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Publisher ids of the per-room publishers start here, above any member's (members that
/// publish use their index).
pub(super) const ROOM_PUBLISHER_IDS: usize = 100_000_000;

/// One publishing socket and what it has sent.
pub(super) struct Publisher {
    /// Replaced when the member that owns it reconnects.
    pub(super) sink: SplitSink<Ws, Message>,
    id: usize,
    seq: u64,
    /// Members a message should reach.
    receivers: u64,
}

impl Publisher {
    pub(super) fn new(sink: SplitSink<Ws, Message>, id: usize, receivers: u64) -> Self {
        Self {
            sink,
            id,
            seq: 0,
            receivers,
        }
    }

    /// Sends the next message and counts it in the running step; false when the socket
    /// would not take it (the message is not counted).
    pub(super) async fn send_next(&mut self, plan: &FanoutPlan, shared: &Shared) -> bool {
        let step = shared.step();
        self.seq += 1;
        let payload = tag(
            stamped_payload(shared.now_us(), plan.payload_bytes),
            self.id,
            self.seq,
        );
        if self.sink.send(Message::text(payload)).await.is_err() {
            return false;
        }
        shared.count_sent(step, self.receivers);
        true
    }
}

/// A room's own publisher: sends at the running step's rate until the run stops or its
/// socket fails.
pub(super) async fn publish_loop(
    mut publisher: Publisher,
    plan: Arc<FanoutPlan>,
    shared: Arc<Shared>,
) {
    let mut next = Instant::now();
    while !shared.stopping() {
        tokio::time::sleep_until(next.into()).await;
        if !publisher.send_next(&plan, &shared).await {
            return;
        }
        next += Duration::from_secs_f64(1.0 / plan.rate_at(shared.step()));
    }
}

/// A payload that also names its publisher and sequence number (unique per run).
fn tag(mut payload: String, publisher: usize, seq: u64) -> String {
    let id = format!("-{publisher:08}-{seq:010}");
    let end = (20 + id.len()).min(payload.len());
    if payload.len() >= 20 + id.len() {
        payload.replace_range(20..end, &id);
    } else {
        payload.insert_str(20, &id);
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::stamp_of;

    #[test]
    fn tags_keep_the_stamp_and_make_payloads_unique() {
        let a = tag(stamped_payload(42, 64), 3, 1);
        let b = tag(stamped_payload(42, 64), 3, 2);
        assert_eq!(a.len(), 64);
        assert_eq!(stamp_of(&a), Some(42));
        assert_ne!(a[..40], b[..40]);
        let short = tag(stamped_payload(7, 20), 1, 1);
        assert_eq!(stamp_of(&short), Some(7));
    }
}
