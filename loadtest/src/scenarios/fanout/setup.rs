//! Set-up and stop: the members connect (spread over the rooms, several handshakes at a
//! time) and their tasks start, then one publisher per room unless the members publish
//! themselves, then churn if asked. `Running` holds what runs until the steps are over.

use super::members::{churn_loop, drain_until_close, Member, MEMBER_IDS};
use super::publishers::{publish_loop, Publisher, ROOM_PUBLISHER_IDS};
use super::shared::Shared;
use super::FanoutPlan;
use crate::client::{open_many, Opened, Targets, Ws};
use crate::progress_bar;
use futures::StreamExt;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How connecting went, members and publishers together.
pub(super) struct Connects {
    pub(super) failures: usize,
    pub(super) first_error: Option<String>,
    /// Members' handshake times, µs.
    pub(super) handshake_us: Histogram<u64>,
}

/// The run's tasks, and the slow consumers' sockets (open, never read).
pub(super) struct Running {
    tasks: Vec<JoinHandle<()>>,
    slow_sockets: Vec<Ws>,
    connects: Connects,
}

/// Connects the members and the publishers and starts them.
pub(super) async fn start(
    plan: &Arc<FanoutPlan>,
    targets: &Arc<Targets>,
    shared: &Arc<Shared>,
) -> anyhow::Result<Running> {
    let opened = connect_members(plan, targets).await?;
    let receivers = receivers_per_room(plan, &opened.sockets);
    let mut running = Running {
        tasks: Vec::new(),
        slow_sockets: Vec::new(),
        connects: Connects {
            failures: opened.failures,
            first_error: opened.first_error,
            handshake_us: opened.handshake_us,
        },
    };
    let reconnects = running.start_members(opened.sockets, &receivers, plan, targets, shared);
    if !plan.all_publish {
        running
            .start_publishers(&receivers, plan, targets, shared)
            .await;
    }
    if plan.churn_per_sec > 0.0 {
        tokio::spawn(churn_loop(reconnects, plan.churn_per_sec, shared.clone()));
    }
    Ok(running)
}

/// Opens every member's socket; fails only when none could connect (the others are
/// reported).
async fn connect_members(plan: &FanoutPlan, targets: &Arc<Targets>) -> anyhow::Result<Opened> {
    let total = plan.total_members();
    let bar = progress_bar(total as u64, "connecting members");
    let opened = open_many(
        targets,
        total,
        plan.concurrency,
        MEMBER_IDS,
        |n| plan.room_of(n),
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    anyhow::ensure!(
        !opened.sockets.is_empty(),
        "no member could connect: {}",
        opened.first_error.clone().unwrap_or_default()
    );
    Ok(opened)
}

/// Per room, the members a message in the room should reach: those that connected and
/// read, less the sender when members publish (the relay party excludes the sender).
/// Members that failed to connect are reported, not expected to receive.
fn receivers_per_room(plan: &FanoutPlan, sockets: &[(usize, Ws)]) -> Vec<u64> {
    let mut reading = vec![0u64; plan.rooms];
    for (n, _) in sockets {
        if !plan.is_slow(*n) {
            reading[n / plan.members] += 1;
        }
    }
    reading
        .into_iter()
        .map(|r| r.saturating_sub(plan.all_publish as u64))
        .collect()
}

impl Running {
    /// Starts a task per reading member and keeps the slow consumers' sockets; returns
    /// the handles that make members reconnect.
    fn start_members(
        &mut self,
        sockets: Vec<(usize, Ws)>,
        receivers: &[u64],
        plan: &Arc<FanoutPlan>,
        targets: &Arc<Targets>,
        shared: &Arc<Shared>,
    ) -> Vec<Arc<Notify>> {
        let mut reconnects = Vec::new();
        for (n, ws) in sockets {
            if plan.is_slow(n) {
                self.slow_sockets.push(ws);
                continue;
            }
            let publishes_to = plan.all_publish.then(|| receivers[n / plan.members]);
            let member = Member::new(n, ws, publishes_to, plan);
            reconnects.push(member.reconnect_handle());
            self.tasks.push(tokio::spawn(member.run(
                targets.clone(),
                plan.clone(),
                shared.clone(),
            )));
        }
        reconnects
    }

    /// Connects one publisher per room and starts it. A publisher that cannot connect is
    /// counted and reported: its room gets no messages.
    async fn start_publishers(
        &mut self,
        receivers: &[u64],
        plan: &Arc<FanoutPlan>,
        targets: &Arc<Targets>,
        shared: &Arc<Shared>,
    ) {
        let total = plan.total_members();
        for (r, &receivers) in receivers.iter().enumerate() {
            let room = plan.room_of(r * plan.members);
            let ws = match targets.connect(&room, &format!("pub-{r}"), total + r).await {
                Ok(ws) => ws,
                Err(e) => {
                    self.connects.failures += 1;
                    self.connects
                        .first_error
                        .get_or_insert_with(|| e.to_string());
                    continue;
                }
            };
            let (sink, _stream) = ws.split();
            let publisher = Publisher::new(sink, ROOM_PUBLISHER_IDS + r, receivers);
            let task = publish_loop(publisher, plan.clone(), shared.clone());
            self.tasks.push(tokio::spawn(task));
        }
    }

    /// Publishers stop; in-flight messages land; then the readers stop. Returns how
    /// connecting went and, with slow consumers, the close code the first one got.
    pub(super) async fn stop(mut self, shared: &Shared) -> (Connects, Option<Option<u16>>) {
        shared.stop();
        tokio::time::sleep(Duration::from_secs(1)).await;
        for t in &self.tasks {
            t.abort();
        }
        let slow_closed = match self.slow_sockets.first_mut() {
            Some(ws) => Some(drain_until_close(ws).await),
            None => None,
        };
        (self.connects, slow_closed)
    }
}
