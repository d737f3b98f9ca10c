//! The alarm scheduler: finds due alarms in storage's global index and runs them in their
//! rooms, waking hibernated rooms. At-least-once: an alarm leaves storage only in the same
//! commit as its successful `on_alarm`; failures retry with exponential backoff from 2 s.

use crate::host::Host;
use crate::mailbox::{AlarmOutcome, RoomEvent};
use crate::time::now_ms;
use conclave_proto::RoomKey;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

const FIRST_RETRY: Duration = Duration::from_secs(2);
/// How soon an alarm whose handler did not run is tried again.
const NOT_RUN_RETRY: Duration = Duration::from_secs(1);
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

type Done = (RoomKey, AlarmOutcome);

/// Runs the scheduler until the host is gone.
pub(crate) async fn run(host: Weak<Host>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut scheduler = Scheduler {
        running: HashSet::new(),
        in_region: HashMap::new(),
        retries: HashMap::new(),
        done: done_tx,
        cursor: None,
        still_due: HashSet::new(),
    };
    loop {
        let Some(host) = host.upgrade() else { return };
        let now = now_ms();
        scheduler.start_due(&host, now).await;
        let sleep = match host.store.next_alarm().await {
            Ok(Some(at)) if at <= now => BUSY_SLEEP,
            Ok(Some(at)) => Duration::from_millis((at - now) as u64).min(MAX_SLEEP),
            Ok(None) => MAX_SLEEP,
            Err(_) => MAX_SLEEP,
        };
        let notified = host.alarms_changed.notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(sleep) => {}
            Some((room, outcome)) = done_rx.recv() => scheduler.finished(room, outcome),
        }
    }
}

struct Scheduler {
    /// Rooms whose alarm is running now.
    running: HashSet<RoomKey>,
    /// Rooms whose alarms showed up here, by whether their home region is this node's.
    in_region: HashMap<RoomKey, bool>,
    retries: HashMap<RoomKey, Retry>,
    /// Where a running alarm reports how it went.
    done: mpsc::UnboundedSender<Done>,
    /// Where the next pass goes on in the index: after this entry when the last pass
    /// stopped short of the end (more due alarms than one pass looks at), else from the
    /// start.
    cursor: Option<(RoomKey, i64)>,
    /// Rooms backing off whose alarm was still due, seen since the index was last looked
    /// at from its start.
    still_due: HashSet<RoomKey>,
}

impl Scheduler {
    /// Pages through the due alarms and starts those this node runs. Other nodes' or
    /// regions' overdue alarms (a node or a region that is down) must not hide this
    /// node's: a pass looks at up to `MAX_PAGES` pages, and the next goes on where it
    /// stopped, until the end of the index, then starts over.
    async fn start_due(&mut self, host: &Arc<Host>, now: i64) {
        let mut after = self.cursor.take();
        for _ in 0..MAX_PAGES {
            let page = match host.store.due_alarms(now, after.clone(), BATCH).await {
                Ok(page) => page,
                Err(e) => {
                    warn!(error = %e, "cannot read due alarms");
                    self.cursor = after;
                    return;
                }
            };
            let full = page.len() == BATCH;
            if let Some(last) = page.last() {
                after = Some(last.clone());
            }
            for (room, _) in page {
                if self.retries.contains_key(&room) {
                    self.still_due.insert(room.clone());
                }
                if let Some(attempt) = self.attempt_due(host, &room).await {
                    self.start(host, room, attempt);
                }
            }
            if !full {
                // The whole index was seen: backoffs of alarms no longer due go.
                let still_due = std::mem::take(&mut self.still_due);
                self.forget_retries_not_due(&still_due);
                return;
            }
        }
        self.cursor = after;
    }

    /// Forgets the backoff of rooms whose alarm is no longer due: deleted or replaced by the
    /// party, or run by the room's new owner after a hand-off. Otherwise each would stay for
    /// the life of the process, and a later alarm of the room would inherit its attempts.
    fn forget_retries_not_due(&mut self, still_due: &HashSet<RoomKey>) {
        self.retries
            .retain(|room, _| still_due.contains(room) || self.running.contains(room));
    }

    /// The attempt to run `room`'s due alarm as, unless it is not this node's to run now.
    async fn attempt_due(&mut self, host: &Host, room: &RoomKey) -> Option<u32> {
        // Every node sees the shared index; each runs its own rooms' alarms.
        if self.running.contains(room) || !host.cluster.places_here(room) {
            return None;
        }
        // The index is shared by every region; run only rooms homed in ours.
        if !self.homed_here(host, room).await? {
            return None;
        }
        match self.retries.get(room) {
            Some(r) if r.not_before > Instant::now() => None,
            Some(r) => Some(r.attempt),
            None => Some(0),
        }
    }

    /// Whether `room`'s home region is this node's (`None`: storage could not say).
    async fn homed_here(&mut self, host: &Host, room: &RoomKey) -> Option<bool> {
        if let Some(&ours) = self.in_region.get(room) {
            return Some(ours);
        }
        let owner = host.store.owner(room).await.ok()?;
        let ours = owner.is_none_or(|o| o.home() == host.cluster.region());
        if self.in_region.len() >= MAX_REGION_CACHE {
            self.in_region.clear();
        }
        self.in_region.insert(room.clone(), ours);
        Some(ours)
    }

    /// Runs `room`'s alarm in the room; its outcome comes back through `done`.
    fn start(&mut self, host: &Arc<Host>, room: RoomKey, attempt: u32) {
        self.running.insert(room.clone());
        let (reply, rx) = oneshot::channel();
        let done = self.done.clone();
        let host = host.clone();
        tokio::spawn(async move {
            let outcome = match host
                .dispatch(&room, RoomEvent::Alarm { attempt, reply })
                .await
            {
                Ok(_) => rx.await.unwrap_or(AlarmOutcome::Failed),
                Err(e) => {
                    warn!(%room, error = %e, "alarm for a party this node does not serve");
                    AlarmOutcome::Failed
                }
            };
            let _ = done.send((room, outcome));
        });
    }

    /// A room's alarm ran: done, or to retry after a backoff (a failure counts as one of
    /// its attempts; an attempt that could not run does not, and is tried again soon).
    fn finished(&mut self, room: RoomKey, outcome: AlarmOutcome) {
        self.running.remove(&room);
        let attempts = self.retries.get(&room).map_or(0, |r| r.attempt);
        let (attempt, wait) = match outcome {
            AlarmOutcome::Done => {
                self.retries.remove(&room);
                return;
            }
            AlarmOutcome::Failed => (attempts + 1, FIRST_RETRY * 2u32.saturating_pow(attempts)),
            AlarmOutcome::NotRun => (attempts, NOT_RUN_RETRY),
        };
        let not_before = Instant::now() + wait;
        // Still due: kept when the pass that reaches the index's end forgets the rest.
        self.still_due.insert(room.clone());
        self.retries.insert(
            room,
            Retry {
                attempt,
                not_before,
            },
        );
    }
}
