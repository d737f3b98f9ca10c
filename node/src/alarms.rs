//! The alarm scheduler: finds due alarms in storage's global index and runs them in their
//! rooms, waking hibernated rooms. At-least-once: an alarm leaves storage only in the same
//! commit as its successful `on_alarm`; failures retry with exponential backoff from 2 s.

use crate::host::HostInner;
use crate::room::{AlarmOutcome, RoomEvent};
use crate::time::now_ms;
use conclave_proto::RoomKey;
use std::collections::{HashMap, HashSet};
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest sleep between looks at the index (alarm changes also wake the scheduler).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Sleep while due alarms are all running or backing off.
const BUSY_SLEEP: Duration = Duration::from_millis(100);
const BATCH: usize = 256;

struct Retry {
    attempt: u32,
    not_before: Instant,
}

pub(crate) async fn run(host: Weak<HostInner>) {
    let mut running: HashSet<RoomKey> = HashSet::new();
    let mut retries: HashMap<RoomKey, Retry> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(RoomKey, AlarmOutcome)>();
    loop {
        let Some(h) = host.upgrade() else { return };
        let now = now_ms();
        match h.store.due_alarms(now, BATCH).await {
            Ok(due) => {
                for (room, _) in due {
                    if running.contains(&room) {
                        continue;
                    }
                    let attempt = match retries.get(&room) {
                        Some(r) if r.not_before > Instant::now() => continue,
                        Some(r) => r.attempt,
                        None => 0,
                    };
                    running.insert(room.clone());
                    let (reply, rx) = oneshot::channel();
                    let done = done_tx.clone();
                    let host = h.clone();
                    tokio::spawn(async move {
                        let outcome = match host
                            .dispatch(&room, RoomEvent::Alarm { attempt, reply })
                            .await
                        {
                            Ok(()) => rx.await.unwrap_or(AlarmOutcome::Failed),
                            Err(e) => {
                                warn!(%room, error = %e, "alarm for a party this node does not serve");
                                AlarmOutcome::Failed
                            }
                        };
                        let _ = done.send((room, outcome));
                    });
                }
            }
            Err(e) => warn!(error = %e, "cannot read due alarms"),
        }
        let sleep = match h.store.next_alarm().await {
            Ok(Some(at)) if at <= now => BUSY_SLEEP,
            Ok(Some(at)) => Duration::from_millis((at - now) as u64).min(MAX_SLEEP),
            Ok(None) => MAX_SLEEP,
            Err(_) => MAX_SLEEP,
        };
        let notified = h.alarms_changed.notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(sleep) => {}
            Some((room, outcome)) = done_rx.recv() => {
                running.remove(&room);
                match outcome {
                    AlarmOutcome::Done => { retries.remove(&room); }
                    AlarmOutcome::Failed => {
                        let attempt = retries.get(&room).map_or(0, |r| r.attempt) + 1;
                        let backoff = FIRST_RETRY * 2u32.saturating_pow(attempt - 1);
                        retries.insert(room, Retry { attempt, not_before: Instant::now() + backoff });
                    }
                }
            }
        }
    }
}
