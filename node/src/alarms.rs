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
/// Pages of due alarms looked at per pass.
const MAX_PAGES: usize = 64;
/// Rooms whose home region the scheduler remembers.
const MAX_REGION_CACHE: usize = 100_000;

struct Retry {
    attempt: u32,
    not_before: Instant,
}

pub(crate) async fn run(host: Weak<HostInner>) {
    let mut running: HashSet<RoomKey> = HashSet::new();
    // Rooms whose alarms showed up here, by whether their home region is this node's.
    let mut in_region: HashMap<RoomKey, bool> = HashMap::new();
    let mut retries: HashMap<RoomKey, Retry> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(RoomKey, AlarmOutcome)>();
    loop {
        let Some(h) = host.upgrade() else { return };
        let now = now_ms();
        // Page through the due alarms: other nodes' overdue alarms (a node that is down)
        // must not hide this node's.
        let mut after = None;
        for _ in 0..MAX_PAGES {
            let page = match h.store.due_alarms(now, after.clone(), BATCH).await {
                Ok(page) => page,
                Err(e) => {
                    warn!(error = %e, "cannot read due alarms");
                    break;
                }
            };
            let full = page.len() == BATCH;
            after = page.last().cloned();
            for (room, _) in page {
                // Every node sees the shared index; each runs its own rooms' alarms.
                if running.contains(&room) || !h.places_here(&room) {
                    continue;
                }
                // The index is shared by every region; run only rooms homed in ours.
                if !in_region.contains_key(&room) {
                    let ours = match h.store.owner(&room).await {
                        Ok(owner) => owner.is_none_or(|o| o.home() == h.config.region),
                        Err(_) => continue,
                    };
                    if in_region.len() >= MAX_REGION_CACHE {
                        in_region.clear();
                    }
                    in_region.insert(room.clone(), ours);
                }
                if in_region.get(&room) == Some(&false) {
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
            if !full {
                break;
            }
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
