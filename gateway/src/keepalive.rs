//! Keepalive for every client socket at once: one task sweeps them all each
//! `ping_interval`, pings those it has not heard from for half an interval, and closes
//! those silent for two intervals (1001) or holding a message unfinished past
//! `message_timeout` (1008). A client that spoke that recently is known to be there:
//! pinging it would cost a write and a read per socket per interval for nothing. (Half,
//! not a whole interval: a client that spoke just under an interval before one sweep and
//! then fell quiet must still be pinged in time to answer before the silence limit, even
//! when the next sweep runs a little late.) So is a client whose TCP stack acknowledged
//! what the server sent it within half an interval (a member that only receives), unless
//! it has a ping unanswered: its stack acknowledges pings too, so after a ping only an
//! answer counts. That stands in for at most [`PINGS_SKIPPED`] pings in a row: behind a
//! proxy that ends TCP (a TLS-terminating load balancer) the acknowledgements are the
//! proxy's, so every client is still pinged end to end now and then. A timer per socket
//! cost each open socket its own timer entry and a boxed sleep.

use crate::session::Session;
use crate::state::GatewayState;
use conclave_proto::close;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{OnceLock, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Pings a quiet client's TCP acknowledgements may stand in for in a row: at the default
/// 15 s interval, a member that only receives is pinged once a minute.
const PINGS_SKIPPED: u8 = 3;

/// Sockets swept between yields to the runtime.
const SWEEP_SLICE: usize = 256;

/// Milliseconds since this process's first call (never 0, which marks "none").
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| Instant::now() - Duration::from_millis(1));
    epoch.elapsed().as_millis() as u64
}

/// What the sweep reads of one socket, written by the socket's task as it reads.
pub(crate) struct Liveness {
    /// When the client was last heard from.
    heard_ms: AtomicU64,
    /// Since when it has had a message (or frame) begun and not finished; 0: none.
    unfinished_ms: AtomicU64,
    /// A ping went out that nothing the client sent has followed yet.
    pinged: AtomicBool,
    /// Pings its TCP acknowledgements stood in for since the last ping.
    skipped: AtomicU8,
}

impl Liveness {
    pub fn new() -> Self {
        Self {
            heard_ms: AtomicU64::new(now_ms()),
            unfinished_ms: AtomicU64::new(0),
            pinged: AtomicBool::new(false),
            skipped: AtomicU8::new(0),
        }
    }

    /// The client sent something; `unfinished_since` is its reader's.
    pub fn heard(&self, unfinished_since: Option<Instant>) {
        let now = now_ms();
        self.heard_ms.store(now, Ordering::Relaxed);
        let since = unfinished_since.map_or(0, |t| {
            now.saturating_sub(t.elapsed().as_millis() as u64).max(1)
        });
        self.unfinished_ms.store(since, Ordering::Relaxed);
        self.pinged.store(false, Ordering::Relaxed);
    }

    /// The client's TCP stack acknowledged what was sent to it: it is there, as if heard.
    fn acknowledged(&self) {
        self.heard_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the sweep must ping the client: not heard from for half an interval.
    fn needs_ping(&self, ping_interval: Duration) -> bool {
        let quiet = now_ms().saturating_sub(self.heard_ms.load(Ordering::Relaxed));
        quiet >= ping_interval.as_millis() as u64 / 2
    }

    /// Why the socket must close, if it must.
    fn verdict(
        &self,
        ping_interval: Duration,
        message_timeout: Duration,
    ) -> Option<(u16, &'static str)> {
        let now = now_ms();
        let silent = now.saturating_sub(self.heard_ms.load(Ordering::Relaxed));
        if silent > 2 * ping_interval.as_millis() as u64 {
            return Some((close::GOING_AWAY, "Keepalive timeout"));
        }
        let since = self.unfinished_ms.load(Ordering::Relaxed);
        if since != 0 && now.saturating_sub(since) > message_timeout.as_millis() as u64 {
            return Some((close::POLICY_VIOLATION, "Message not finished in time"));
        }
        None
    }
}

/// Checks one socket: closes it if it must; if it has been quiet, lets go of the buffer
/// space it kept while it talked and pings it, unless its TCP stack has acknowledged what
/// the server sent it lately (no ping of ours waiting for an answer, and not too many
/// pings skipped in a row).
fn sweep_one(session: &Session, ping_interval: Duration, message_timeout: Duration) {
    let live = &session.liveness;
    match live.verdict(ping_interval, message_timeout) {
        Some((code, reason)) => session.out.close().trigger(code, reason),
        None if live.needs_ping(ping_interval) => {
            session.release_idle_buffers();
            let skipped = live.skipped.load(Ordering::Relaxed);
            if !live.pinged.load(Ordering::Relaxed)
                && skipped < PINGS_SKIPPED
                && session.out.acknowledged_within(ping_interval / 2)
            {
                live.skipped.store(skipped + 1, Ordering::Relaxed);
                live.acknowledged();
            } else {
                live.skipped.store(0, Ordering::Relaxed);
                live.pinged.store(true, Ordering::Relaxed);
                session.out.enqueue_control(crate::frames::ping());
            }
        }
        None => {}
    }
}

/// Sweeps the gateway's sockets each `ping_interval` while the gateway lives.
pub(crate) async fn run(state: Weak<GatewayState>) {
    let Some(interval) = state.upgrade().map(|s| s.config.ping_interval) else {
        return;
    };
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let (ping_interval, message_timeout) =
            (state.config.ping_interval, state.config.message_timeout);
        for (i, session) in state.sessions.all().into_iter().enumerate() {
            sweep_one(&session, ping_interval, message_timeout);
            // Tens of thousands of pings are written here: others get the worker between.
            if i % SWEEP_SLICE == SWEEP_SLICE - 1 {
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silent_clients_and_unfinished_messages_are_told_apart() {
        let (ping, timeout) = (Duration::from_secs(15), Duration::from_secs(60));
        let live = Liveness::new();
        assert_eq!(live.verdict(ping, timeout), None);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(live.verdict(ping, timeout).map(|v| v.0), Some(1001));
        // A message begun, then only pings, each heard.
        let begun = Instant::now();
        live.heard(Some(begun));
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(14)).await;
            live.heard(Some(begun));
            assert_eq!(live.verdict(ping, timeout), None, "56 s at most");
        }
        tokio::time::advance(Duration::from_secs(14)).await;
        live.heard(Some(begun));
        assert_eq!(live.verdict(ping, timeout).map(|v| v.0), Some(1008));
        live.heard(None);
        assert_eq!(live.verdict(ping, timeout), None, "finished at last");
    }

    #[tokio::test(start_paused = true)]
    async fn only_clients_quiet_for_half_an_interval_need_a_ping() {
        let ping = Duration::from_secs(15);
        let live = Liveness::new();
        assert!(!live.needs_ping(ping));
        tokio::time::advance(Duration::from_millis(7_499)).await;
        assert!(!live.needs_ping(ping));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(live.needs_ping(ping), "quiet for half an interval");
        live.heard(None);
        assert!(!live.needs_ping(ping));
    }
}
