//! A JavaScript worker: one OS thread with a current-thread tokio runtime and one QuickJS
//! runtime, serving the events of the rooms placed on it. Events of different rooms
//! interleave at their `await`s; JavaScript itself runs one piece at a time.

use super::event::{
    caught_text, event_args, event_kind, outcome_of, Event, Failure, Outcome, Thrown,
};
use super::loading::{load_party, LoadedParty};
use super::shared::{ActiveJob, Shared};
use super::{InstanceId, JsConfig, PartyId, PartySource, PartyTraits};
use crate::room::{RoomFetcher, RoomShared};
use crate::storage::Storage;
use conclave_proto::RoomKey;
use rquickjs::promise::PromiseState;
use rquickjs::{CatchResultExt, CaughtError, Persistent, Promise, Runtime, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

/// How long an event stays open, after its handler is done, for the storage calls the
/// handler started without awaiting them: well inside the gateway's wait for the room's
/// answer (10 s).
const NATIVES_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// How long code outside any room (the static checks, `onFetch`) may wait on promises
/// before it fails: inside the gateway's wait for the node's answer (10 s), so the client
/// hears why. (A room's events end with their room; these would stay on the worker.)
const OUTSIDE_ROOMS_LIMIT: std::time::Duration = std::time::Duration::from_secs(8);

pub(crate) enum Command {
    Load {
        party: PartyId,
        source: Arc<PartySource>,
        reply: oneshot::Sender<Result<PartyTraits, String>>,
    },
    Run(Box<Job>),
    Destroy(InstanceId),
}

/// One event of one room, with the room lent to the worker while it runs.
pub(crate) struct Job {
    pub party: PartyId,
    pub instance: InstanceId,
    pub event: Event,
    /// `None` for the checks that run outside any room (`onBeforeConnect`,
    /// `onBeforeRequest`).
    pub lease: Option<RoomLease>,
    /// For a check outside any room: how `lobby.parties` reaches rooms (a room's event has
    /// its lease's).
    pub fetcher: Option<RoomFetcher>,
    pub reply: oneshot::Sender<(Option<RoomLease>, Result<Outcome, Failure>)>,
}

/// What JavaScript may touch of a room during one event.
pub(crate) struct RoomLease {
    pub key: RoomKey,
    /// What the instance has under way ([`crate::Party::busy`]).
    pub under_way: Arc<super::shared::UnderWay>,
    pub storage: Storage,
    pub shared: Arc<RoomShared>,
    pub fetcher: RoomFetcher,
}

pub(super) fn spawn(
    index: usize,
    config: JsConfig,
) -> std::io::Result<mpsc::UnboundedSender<Command>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name(format!("conclave-js-{index}"))
        .stack_size(16 * 1024 * 1024)
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "JavaScript worker could not start");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, serve(config, rx));
        })?;
    Ok(tx)
}

async fn serve(config: JsConfig, mut rx: mpsc::UnboundedReceiver<Command>) {
    let worker = match Worker::new(config) {
        Ok(w) => Rc::new(w),
        Err(e) => {
            error!(error = %e, "QuickJS could not start");
            return;
        }
    };
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Load {
                party,
                source,
                reply,
            } => {
                let _ = reply.send(worker.load(party, &source));
            }
            Command::Run(job) => {
                tokio::task::spawn_local(worker.clone().run(*job));
            }
            Command::Destroy(instance) => worker.destroy(instance),
        }
    }
}

struct Worker {
    runtime: Runtime,
    shared: Rc<Shared>,
    parties: RefCell<HashMap<PartyId, Rc<LoadedParty>>>,
    /// Which party each live instance belongs to.
    instances: RefCell<HashMap<InstanceId, PartyId>>,
}

impl Worker {
    fn new(config: JsConfig) -> rquickjs::Result<Self> {
        let runtime = Runtime::new()?;
        runtime.set_memory_limit(config.memory_limit);
        runtime.set_max_stack_size(4 * 1024 * 1024);
        let shared = Shared::new(config);
        let clock = shared.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || clock.expired())));
        Ok(Self {
            runtime,
            shared,
            parties: RefCell::default(),
            instances: RefCell::default(),
        })
    }

    /// Loads `source` into a new context of this worker's runtime.
    fn load(&self, party: PartyId, source: &Arc<PartySource>) -> Result<PartyTraits, String> {
        let (loaded, traits) = load_party(&self.runtime, &self.shared, source)?;
        self.parties.borrow_mut().insert(party, Rc::new(loaded));
        Ok(traits)
    }

    fn destroy(&self, instance: InstanceId) {
        let Some(party) = self.instances.borrow_mut().remove(&instance) else {
            return;
        };
        self.forget(party, instance);
    }

    /// Stops an instance's timers (here and party.js's callbacks) and forgets its room.
    fn forget(&self, party: PartyId, instance: InstanceId) {
        let timers = self.shared.forget(instance);
        let Some(loaded) = self.parties.borrow().get(&party).cloned() else {
            return;
        };
        loaded.context.with(|ctx| {
            if let Ok(f) = loaded.destroy.clone().restore(&ctx) {
                let _ = f.call::<_, ()>((instance, timers));
            }
        });
    }

    async fn run(self: Rc<Self>, job: Job) {
        let Job {
            party,
            instance,
            event,
            lease,
            fetcher,
            reply,
        } = job;
        // These keep their room until they are done, so their writes commit only then.
        let holds_to_end = matches!(
            event,
            Event::Start | Event::Tags(..) | Event::Connect(..) | Event::Alarm
        );
        let active = Rc::new(ActiveJob::new(
            self.shared.next_job_serial(),
            lease,
            fetcher,
            holds_to_end,
        ));
        let lobby = outside_rooms(&active);
        self.shared
            .jobs
            .borrow_mut()
            .insert(instance, active.clone());
        let outcome = self.drive(party, instance, event, &active).await;
        self.shared.jobs.borrow_mut().remove(&instance);
        if matches!(outcome, Err(Failure::Reset(_))) {
            self.destroy(instance);
        }
        // A check outside any room has no instance to go on: the timers it set (a fetch's
        // `AbortSignal.timeout`, a race with `setTimeout`) end with it, or nothing would.
        if lobby && active.set_timers.get() {
            self.forget(party, instance);
        }
        // Nor can anything read the bodies it fetched (a Response it returned was read
        // whole before its answer went); their connections go now.
        if lobby {
            self.shared.open_fetches.borrow_mut().forget(instance);
        }
        let lease = active.lease.borrow_mut().take();
        if lobby && matches!(outcome, Err(Failure::Reset(_))) {
            warn!("a check outside the room was interrupted");
        }
        let _ = reply.send((lease, outcome));
    }

    async fn drive(
        &self,
        party: PartyId,
        instance: InstanceId,
        event: Event,
        active: &Rc<ActiveJob>,
    ) -> Result<Outcome, Failure> {
        let loaded = self
            .parties
            .borrow()
            .get(&party)
            .cloned()
            .ok_or(Failure::NotLoaded(party))?;
        let kind = event_kind(&event);
        if matches!(event, Event::Start) && !self.instances.borrow().contains_key(&instance) {
            if let Err(e) = self.create(&loaded, instance, active) {
                // Never listed, so never destroyed: what the constructor set up goes now.
                self.forget(party, instance);
                return Err(e);
            }
            self.instances.borrow_mut().insert(instance, party);
        }
        // What fired or settled after the event that started it ended runs in a wake
        // event, as a step of its own.
        if matches!(event, Event::Wake) {
            self.shared.run_due(&loaded.context, instance);
        } else {
            self.shared.wake_again_if_late(instance);
        }
        let promise =
            self.shared.enter(&loaded.context, instance, |ctx| {
                let f = loaded
                    .dispatch
                    .clone()
                    .restore(&ctx)
                    .map_err(|e| e.to_string())?;
                let args = event_args(&ctx, instance, event).map_err(|e| e.to_string())?;
                let v: Value = f.call_arg(args).catch(&ctx).map_err(|e| caught_text(&e))?;
                match v.into_promise() {
                    Some(p) => Ok::<_, Thrown>(Err(Persistent::save(&ctx, p))),
                    // Handled at once, without a promise.
                    None => Ok(Ok(outcome_of(kind, Value::new_null(ctx.clone()))
                        .map_err(|e| e.to_string())?)),
                }
            });
        // The handler's outcome once it is done (or failed: a throw before its first await
        // too), and its promise while it is not.
        let (mut outcome, promise): (Option<Result<Outcome, Failure>>, _) = match promise {
            Ok(Ok(outcome)) => (Some(Ok(outcome)), None),
            Ok(Err(promise)) => (None, Some(promise)),
            Err(thrown) => (Some(Err(failure_of(active, thrown))), None),
        };
        // A handler of these that waits on something other than the room (a fetch, a
        // timer, another event) lets its room go on meanwhile, as a Durable Object's input
        // gate opens then: its event ends there, with what it wrote and sent so far, and
        // the rest runs in wake events of the room (`Shared::settle`). Not while it waits
        // on storage, inside a transaction (whose savepoints are the event's) or while its
        // `blockConcurrencyWhile` holds the room. A request is answered from the step in
        // which its handler ends (`Outcome::AnswerLater`). The others keep the room until
        // they are done: a connection is admitted, and an alarm retried or not, once its
        // handler is.
        let outside = outside_rooms(active);
        let may_go_on = matches!(kind, "message" | "close" | "error" | "request") && !outside;
        // Once the handler is done, how long the native calls it left running may keep
        // the event open.
        let mut natives_deadline = None;
        // How long the event may wait on promises: code outside rooms within the
        // gateway's wait; a room's event within the wait limit, past which its instance
        // goes (its handler is half done), so that nothing holds the room for good.
        // A cron answers no one waiting: it gets the rooms' limit.
        let wait_limit = if outside && kind != "cron" {
            OUTSIDE_ROOMS_LIMIT
        } else {
            self.shared.config.wait_limit
        };
        let wait_deadline = tokio::time::Instant::now() + wait_limit;
        loop {
            if let Some(f) = active.take_failure() {
                return Err(f);
            }
            // A `blockConcurrencyWhile` of this event, or a transaction of it (its
            // savepoints are this event's), holds the room: the event waits for its end,
            // within the wait limit, even once its handler is done or has failed.
            let held = active.holds.get() > 0 || !active.savepoints.borrow().is_empty();
            if let Some(promise) = promise.as_ref().filter(|_| outcome.is_none()) {
                match self.settled(&loaded, promise, kind) {
                    Ok(Some(o)) => outcome = Some(Ok(o)),
                    Ok(None) => {}
                    Err(e) => outcome = Some(Err(failure_of(active, e))),
                }
            }
            // A reset (out of memory) ends the event at once: the instance is gone.
            if let Some(Err(Failure::Reset(_))) = &outcome {
                return outcome.take().expect("matched above");
            }
            if outcome.is_some() && !held {
                let deadline = *natives_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + NATIVES_GRACE);
                if active.natives_in_flight.get() == 0 {
                    return outcome.take().expect("checked above");
                }
                if tokio::time::timeout_at(deadline, active.wake.notified())
                    .await
                    .is_err()
                {
                    warn!(
                        in_flight = active.natives_in_flight.get(),
                        "calls the handler did not await are still running; ending the event"
                    );
                    return outcome.take().expect("checked above");
                }
                continue;
            }
            if let Some(promise) = promise.as_ref().filter(|_| may_go_on && outcome.is_none()) {
                if !held && active.natives_in_flight.get() == 0 {
                    let outcome = self.detach(&loaded, instance, promise, kind);
                    return match active.take_failure() {
                        Some(f) => Err(f),
                        None => Ok(outcome),
                    };
                }
            }
            // Waiting, and not held: what came due for earlier events (a fetch `onStart`
            // began, a promise another handler left) runs within this event, which may be
            // waiting on it (an `onConnect` awaiting it would otherwise never end). A held
            // event keeps it out, as a Durable Object's `blockConcurrencyWhile` does.
            if !held && self.shared.has_due(instance) {
                self.shared.run_due(&loaded.context, instance);
                continue;
            }
            if tokio::time::timeout_at(wait_deadline, active.wake.notified())
                .await
                .is_err()
            {
                let limit = wait_limit.as_millis();
                if outside {
                    let handler = handler_name(kind);
                    let limit = wait_limit.as_secs();
                    return Err(Failure::Threw(Thrown::from(format!(
                        "{handler} did not finish within {limit} s"
                    ))));
                }
                let holder = if active.holds.get() > 0 {
                    "blockConcurrencyWhile"
                } else if !active.savepoints.borrow().is_empty() {
                    "a storage transaction"
                } else {
                    handler_name(kind)
                };
                return Err(Failure::Reset(format!(
                    "{holder} held the room longer than {limit} ms (--js-wait-limit-ms)"
                )));
            }
        }
    }

    /// Leaves a handler that goes on after its event to finish in the room's later
    /// events; a failure then is logged. A request's answer is then held in the step that
    /// gives it, and arrives once that step commits (`Outcome::AnswerLater`).
    fn detach(
        &self,
        loaded: &LoadedParty,
        instance: InstanceId,
        promise: &Persistent<Promise<'static>>,
        kind: &'static str,
    ) -> Outcome {
        let (answer, outcome) = if kind == "request" {
            let (id, answer) = self.shared.answer_later(instance);
            (Some(id), Outcome::AnswerLater(answer))
        } else {
            (None, Outcome::Done)
        };
        self.shared.enter(&loaded.context, instance, |ctx| {
            let detached = loaded.detach.clone().restore(&ctx).and_then(|f| {
                let p = promise.clone().restore(&ctx)?;
                f.call::<_, ()>((instance, p, kind, answer))
            });
            if let Err(e) = detached {
                warn!(error = %e, "could not leave a handler to finish later");
            }
        });
        outcome
    }

    /// The outcome of the event's handler once its promise settled (`None`: pending).
    fn settled(
        &self,
        loaded: &LoadedParty,
        promise: &Persistent<Promise<'static>>,
        kind: &'static str,
    ) -> Result<Option<Outcome>, Thrown> {
        loaded
            .context
            .with(|ctx| -> Result<Option<Outcome>, Thrown> {
                let p = promise.clone().restore(&ctx).map_err(|e| e.to_string())?;
                match p.state() {
                    PromiseState::Pending => Ok(None),
                    PromiseState::Resolved => {
                        let v: Value = p
                            .result()
                            .unwrap_or_else(|| Ok(Value::new_null(ctx.clone())))
                            .map_err(|e| e.to_string())?;
                        Ok(Some(outcome_of(kind, v).map_err(|e| e.to_string())?))
                    }
                    PromiseState::Rejected => {
                        let r: rquickjs::Result<Value> = p
                            .result()
                            .unwrap_or_else(|| Ok(Value::new_null(ctx.clone())));
                        Err(caught_text(&r.catch(&ctx).err().unwrap_or(
                            CaughtError::Value(Value::new_undefined(ctx.clone())),
                        )))
                    }
                }
            })
    }

    fn create(
        &self,
        loaded: &LoadedParty,
        instance: InstanceId,
        active: &Rc<ActiveJob>,
    ) -> Result<(), Failure> {
        let room = match active.lease.borrow().as_ref() {
            Some(lease) => {
                self.shared.remember_room(
                    instance,
                    lease.fetcher.clone(),
                    lease.key.clone(),
                    lease.under_way.clone(),
                );
                lease.key.room.to_string()
            }
            None => return Err(Failure::Threw("no room to start".into())),
        };
        self.shared
            .enter(&loaded.context, instance, |ctx| -> Result<(), Thrown> {
                let f = loaded
                    .create
                    .clone()
                    .restore(&ctx)
                    .map_err(|e| e.to_string())?;
                f.call::<_, ()>((instance, room))
                    .catch(&ctx)
                    .map_err(|e| caught_text(&e))
            })
            .map_err(|e| failure_of(active, e))
    }
}

/// The party's handler an event runs, for errors.
fn handler_name(kind: &'static str) -> &'static str {
    match kind {
        "start" => "onStart",
        "tags" => "getConnectionTags",
        "connect" => "onConnect",
        "message" => "onMessage",
        "close" => "onClose",
        "error" => "onError",
        "request" => "onRequest",
        "alarm" => "onAlarm",
        "beforeConnect" => "onBeforeConnect",
        "beforeRequest" => "onBeforeRequest",
        "fetch" => "onFetch",
        "cron" => "onCron",
        other => other,
    }
}

/// Whether the event is code outside any room (no room lent to it).
fn outside_rooms(active: &ActiveJob) -> bool {
    active.lease.borrow().is_none()
}

/// A thrown error, or the reset that caused it.
fn failure_of(active: &ActiveJob, error: Thrown) -> Failure {
    if let Some(f) = active.take_failure() {
        return f;
    }
    if error.message.contains("out of memory") {
        return Failure::Reset(format!("the JavaScript runtime ran out of memory: {error}"));
    }
    Failure::Threw(error)
}
