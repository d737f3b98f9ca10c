//! What a worker's natives reach: the events in progress (each with its room lent to the
//! worker), the CPU clock the interrupt handler checks, the timers (`timers.rs`), the
//! answers due (`answers.rs`) and the outside fetches open (`natives/outside.rs`).

use super::answers::LaterAnswers;
use super::event::Failure;
use super::natives::outside::OpenFetches;
use super::timers::{Timer, Timers};
use super::worker::RoomLease;
use super::{InstanceId, JsConfig};
use crate::message::Response;
use crate::room::RoomFetcher;
use crate::storage::Savepoint;
use conclave_proto::RoomKey;
use rquickjs::{Context, Ctx, Function};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// What natives reach: the events in progress, by instance, and the CPU clock.
pub(super) struct Shared {
    pub jobs: RefCell<HashMap<InstanceId, Rc<ActiveJob>>>,
    pub clock: Clock,
    pub started: Instant,
    pub config: JsConfig,
    /// The instance whose JavaScript is running now (logs, timers).
    pub current: Cell<Option<InstanceId>>,
    timers: RefCell<Timers>,
    /// Timers that fired, and promises of natives that settled, after the event that set or
    /// started them ended: they run in a wake event of their room (`run_due`; a wake asks
    /// for one), in the order they came, as their own step.
    due: RefCell<HashMap<InstanceId, DueQueue>>,
    /// Numbers the events, so that what an event started knows whether it is still on.
    next_job: Cell<u64>,
    /// Each instance's room, to wake it.
    rooms: RefCell<HashMap<InstanceId, RoomOf>>,
    /// Savepoint ids, unique on the worker: a transaction whose body outlived its event
    /// cannot name a savepoint of a later one.
    next_savepoint: Cell<u32>,
    /// Where the answers go of requests whose `onRequest` went on after its event.
    answers: RefCell<LaterAnswers>,
    /// Outside fetches waiting for their response, or with a body left to read.
    pub open_fetches: RefCell<OpenFetches>,
}

/// An instance's room: how to wake it, and what the instance has under way, which its
/// room reads ([`crate::Party::busy`]: it does not hibernate meanwhile).
struct RoomOf {
    fetcher: RoomFetcher,
    key: RoomKey,
    under_way: Arc<UnderWay>,
}

/// What an instance has under way outside its events: fetches in flight, answers due to
/// requesters (an `onRequest` that went on after its event), timers set, and work come
/// due that waits for a wake event of its room.
#[derive(Default)]
pub(crate) struct UnderWay {
    pub fetches: AtomicU32,
    pub answers: AtomicU32,
    pub timers: AtomicU32,
    pub due: AtomicU32,
}

impl UnderWay {
    /// Counts one more in `count` (one of this struct's fields) until the guard drops.
    pub(crate) fn start(self: &Arc<Self>, count: fn(&UnderWay) -> &AtomicU32) -> UnderWayGuard {
        count(self).fetch_add(1, Ordering::Relaxed);
        UnderWayGuard {
            under_way: self.clone(),
            count,
        }
    }
}

/// A fetch in flight or an answer due, counted in its instance's [`UnderWay`] (which its
/// room reads: [`crate::Party::busy`]) while it lives.
pub(crate) struct UnderWayGuard {
    under_way: Arc<UnderWay>,
    count: fn(&UnderWay) -> &AtomicU32,
}

impl Drop for UnderWayGuard {
    fn drop(&mut self) {
        (self.count)(&self.under_way).fetch_sub(1, Ordering::Relaxed);
    }
}

/// An instance's deferred work, and when the wake it asked for was asked.
#[derive(Default)]
struct DueQueue {
    work: Vec<Due>,
    asked: Option<Instant>,
}

impl DueQueue {
    /// Asks for a wake event of `room`, to run this work.
    fn ask_wake(&mut self, room: &RoomOf) {
        room.fetcher.wake(room.key.clone());
        self.asked = Some(Instant::now());
    }
}

/// Work of an instance waiting for its room's next event.
enum Due {
    /// A timer that fired.
    Timer(u32),
    /// A native's promise to settle (the continuations then run within the event).
    Settle(Settle),
}

/// Settles a native's promise in the instance's context.
pub(super) type Settle = Box<dyn for<'js> FnOnce(Ctx<'js>)>;

/// The deadline QuickJS's interrupt handler checks.
#[derive(Default)]
pub(super) struct Clock {
    deadline: Cell<Option<Instant>>,
    interrupted: Cell<bool>,
}

impl Clock {
    fn expired(&self) -> bool {
        let expired = self.deadline.get().is_some_and(|d| Instant::now() >= d);
        if expired {
            self.interrupted.set(true);
        }
        expired
    }
}

/// An event in progress.
pub(super) struct ActiveJob {
    /// Which event of the worker this is ([`Shared::next_job_serial`]).
    pub serial: u64,
    pub lease: RefCell<Option<RoomLease>>,
    /// A check's way to rooms (`lobby.parties`), where there is no lease.
    pub fetcher: Option<crate::room::RoomFetcher>,
    /// Woken whenever something the event waits on settled.
    pub wake: Notify,
    /// CPU time the event's JavaScript has taken so far.
    used: Cell<Duration>,
    failure: RefCell<Option<Failure>>,
    pub savepoints: RefCell<HashMap<u32, Savepoint>>,
    /// Whether the event's JavaScript set a timer.
    pub set_timers: Cell<bool>,
    /// How many `blockConcurrencyWhile` calls of the event have not ended: it stays open
    /// until they have (they nest).
    pub holds: Cell<u32>,
    /// Promises of storage calls the event made that have not settled:
    /// the event lasts until they have, so that what the handler started without awaiting
    /// it (a `.then`, an async timer callback) runs while the room is still its own.
    pub natives_in_flight: Cell<u32>,
    /// An event that keeps its room until its handler is done (`onStart`, `onConnect`,
    /// `getConnectionTags`, `onAlarm`): its writes commit only then.
    pub holds_to_end: bool,
    /// The way through for the fetches this event holds behind its writes (the natives'
    /// `output_gate`), taken when it comes to commit only at its end.
    pub gated: RefCell<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl ActiveJob {
    /// Whether the writes this event made so far commit only when it ends, however long it
    /// waits: what is held behind them cannot wait for them in the meantime.
    pub(super) fn commits_at_end(&self) -> bool {
        self.holds_to_end || self.holds.get() > 0 || !self.savepoints.borrow().is_empty()
    }

    /// The event now commits only at its end (a `blockConcurrencyWhile` or a transaction
    /// began): the fetches it held behind its writes go, or they would wait on it while
    /// it waits on them.
    pub(super) fn open_gates(&self) {
        for way in self.gated.borrow_mut().drain(..) {
            let _ = way.send(());
        }
    }
}

impl Shared {
    pub(super) fn new(config: JsConfig) -> Rc<Self> {
        Rc::new(Self {
            jobs: RefCell::default(),
            clock: Clock::default(),
            started: Instant::now(),
            config,
            current: Cell::new(None),
            timers: RefCell::default(),
            due: RefCell::default(),
            next_job: Cell::new(1),
            rooms: RefCell::default(),
            next_savepoint: Cell::new(1),
            answers: RefCell::default(),
            open_fetches: RefCell::default(),
        })
    }

    /// For QuickJS's interrupt handler: whether the running event is past its budget.
    pub(super) fn expired(&self) -> bool {
        self.clock.expired()
    }
    /// Runs `f` in `context` for `instance`, then every job it queued, within what is left of
    /// the instance's CPU budget. An interrupt or out-of-memory fails the instance's event.
    pub(super) fn enter<R>(
        &self,
        context: &Context,
        instance: InstanceId,
        f: impl for<'js> FnOnce(Ctx<'js>) -> R,
    ) -> R {
        let job = self.jobs.borrow().get(&instance).cloned();
        let used = job.as_ref().map_or(Duration::ZERO, |j| j.used.get());
        let start = Instant::now();
        let left = self.config.cpu_budget.saturating_sub(used);
        self.clock.deadline.set(Some(start + left));
        self.clock.interrupted.set(false);
        self.current.set(Some(instance));
        let result = context.with(|ctx| {
            let r = f(ctx.clone());
            while ctx.execute_pending_job() {}
            r
        });
        self.clock.deadline.set(None);
        self.current.set(None);
        if let Some(job) = &job {
            job.used.set(used + start.elapsed());
            if self.clock.interrupted.get() {
                let why = format!(
                    "the handler ran longer than its CPU budget of {} ms and was interrupted",
                    self.config.cpu_budget.as_millis()
                );
                job.fail(Failure::Reset(why));
            }
        }
        result
    }

    pub(super) fn next_savepoint_id(&self) -> u32 {
        let id = self.next_savepoint.get();
        self.next_savepoint.set(id.wrapping_add(1).max(1));
        id
    }

    pub(super) fn job(&self, instance: InstanceId) -> Option<Rc<ActiveJob>> {
        self.jobs.borrow().get(&instance).cloned()
    }

    pub(super) fn next_job_serial(&self) -> u64 {
        let serial = self.next_job.get();
        self.next_job.set(serial + 1);
        serial
    }

    /// The serial of the instance's event in progress, if any: what a timer or a native
    /// started then belongs to it.
    pub(super) fn current_job_serial(&self, instance: InstanceId) -> Option<u64> {
        self.jobs.borrow().get(&instance).map(|j| j.serial)
    }

    /// The event in progress of `instance`, if it is the one numbered `serial`.
    fn job_if(&self, instance: InstanceId, serial: Option<u64>) -> Option<Rc<ActiveJob>> {
        self.job(instance).filter(|j| Some(j.serial) == serial)
    }

    /// `blockConcurrencyWhile` takes (`on`) or lets go of the room of the event in
    /// progress, which stays open while it holds it (so the call ends within the same
    /// event). Outside any event (code a storage call ran after its event), there is no
    /// room to hold.
    pub(super) fn hold(&self, instance: InstanceId, on: bool) {
        let Some(job) = self.job(instance) else {
            return;
        };
        if on {
            job.holds.set(job.holds.get() + 1);
            job.open_gates();
        } else {
            job.holds.set(job.holds.get().saturating_sub(1));
            job.wake.notify_one();
        }
    }

    /// Starts a timer for the instance whose JavaScript is running; party.js keeps the
    /// callback under the returned id and runs it from `fireTimer`.
    pub(super) fn set_timer(
        self: &Rc<Self>,
        context: &Context,
        delay: Duration,
        repeat: bool,
    ) -> Option<u32> {
        let instance = self.current.get()?;
        match self.job(instance) {
            Some(job) => job.set_timers.set(true),
            // Code of a check that has ended (a promise it left settling): its timers
            // could never run, and nothing would forget them.
            None if !self.rooms.borrow().contains_key(&instance) => return None,
            None => {}
        }
        let id = self.timers.borrow_mut().next_id();
        let creator = self.current_job_serial(instance);
        let (shared, context) = (self.clone(), context.clone());
        let task = tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(delay).await;
                shared.fire(&context, instance, id, creator);
                if !repeat {
                    shared.timers.borrow_mut().remove(id);
                    return;
                }
            }
        });
        let under_way = self
            .rooms
            .borrow()
            .get(&instance)
            .map(|r| r.under_way.clone());
        let timer = Timer::new(instance, task.abort_handle(), under_way);
        self.timers.borrow_mut().insert(id, timer);
        Some(id)
    }

    pub(super) fn clear_timer(&self, id: u32) {
        if let Some(t) = self.timers.borrow_mut().remove(id) {
            t.stop();
        }
    }

    /// A timer fired: it runs now within the event that set it, if that is still in
    /// progress, or else in a wake event of the room, which it asks for: not within another
    /// event, whose step (its commit, its CPU budget) is that event's own.
    fn fire(&self, context: &Context, instance: InstanceId, id: u32, creator: Option<u64>) {
        if let Some(job) = self.job_if(instance, creator) {
            self.run_timers(context, instance, &[id]);
            job.wake.notify_one();
            return;
        }
        // Without a room to run it in (a check's, after the check ended), it never runs.
        self.defer(instance, Due::Timer(id));
    }

    /// A native's promise settles: now, within the event that started it, if that is still
    /// in progress, or, for a `deferrable` one (a fetch: what it read is not the room's),
    /// in a wake event of the room, which it asks for, so that what it runs then (the rest
    /// of a handler that went on after its event, a `.then` no handler awaited) may use the
    /// room, as its own step. A storage call's settles at once when its own event ended
    /// before it (past the grace, or reset): within whatever event is in progress, or
    /// outside any, where what it runs cannot use the room. A check's settles at once: it
    /// has no room.
    pub(super) fn settle(
        &self,
        context: &Context,
        instance: InstanceId,
        deferrable: bool,
        creator: Option<u64>,
        settle: Settle,
    ) {
        if deferrable
            && self.job_if(instance, creator).is_none()
            && self.rooms.borrow().contains_key(&instance)
        {
            self.defer(instance, Due::Settle(settle));
            return;
        }
        self.enter(context, instance, settle);
        if let Some(job) = self.job(instance) {
            job.wake.notify_one();
        }
    }

    /// Keeps `work` for a wake event of the instance's room, and asks for one. Dropped when
    /// the instance has no room.
    fn defer(&self, instance: InstanceId, work: Due) {
        let rooms = self.rooms.borrow();
        let Some(room) = rooms.get(&instance) else {
            return;
        };
        let mut due = self.due.borrow_mut();
        let queue = due.entry(instance).or_default();
        // An interval that fires again before the wake: once is enough.
        if let Due::Timer(id) = &work {
            if queue
                .work
                .iter()
                .any(|w| matches!(w, Due::Timer(t) if t == id))
            {
                return;
            }
        }
        if queue.work.is_empty() {
            queue.ask_wake(room);
        }
        queue.work.push(work);
        room.under_way.due.fetch_add(1, Ordering::Relaxed);
        drop(due);
        // An event in progress may be waiting on this work (`Worker::drive`).
        if let Some(job) = self.job(instance) {
            job.wake.notify_one();
        }
    }

    /// Whether work waits for a wake event of the instance's room.
    pub(super) fn has_due(&self, instance: InstanceId) -> bool {
        let due = self.due.borrow();
        !due.is_empty() && due.get(&instance).is_some_and(|q| !q.work.is_empty())
    }

    /// Asks for a wake event again when the one asked for has not come for a while (its
    /// dispatch failed): what waits for it would wait for good.
    pub(super) fn wake_again_if_late(&self, instance: InstanceId) {
        let mut due = self.due.borrow_mut();
        let Some(queue) = due.get_mut(&instance) else {
            return;
        };
        let late = queue
            .asked
            .is_some_and(|at| at.elapsed() > Duration::from_secs(1));
        if !late || queue.work.is_empty() {
            return;
        }
        if let Some(room) = self.rooms.borrow().get(&instance) {
            queue.ask_wake(room);
        }
    }

    fn run_timers(&self, context: &Context, instance: InstanceId, ids: &[u32]) {
        self.enter(context, instance, |ctx| {
            let fire = ctx
                .globals()
                .get::<_, rquickjs::Object>("__conclave")
                .and_then(|c| c.get::<_, Function>("fireTimer"));
            if let Ok(fire) = fire {
                for id in ids {
                    let _ = fire.call::<_, ()>((*id,));
                }
            }
        });
    }

    /// Runs what fired or settled for the instance after the event that set it ended (in a
    /// wake event).
    pub(super) fn run_due(&self, context: &Context, instance: InstanceId) {
        let Some(queue) = self.due.borrow_mut().remove(&instance) else {
            return;
        };
        if let Some(room) = self.rooms.borrow().get(&instance) {
            let ran = u32::try_from(queue.work.len()).unwrap_or(u32::MAX);
            room.under_way.due.fetch_sub(ran, Ordering::Relaxed);
        }
        for w in queue.work {
            match w {
                Due::Timer(id) => self.run_timers(context, instance, &[id]),
                Due::Settle(settle) => self.enter(context, instance, settle),
            }
        }
    }

    /// Where a wake for `instance`'s timers goes.
    pub(super) fn remember_room(
        &self,
        instance: InstanceId,
        fetcher: RoomFetcher,
        key: RoomKey,
        under_way: Arc<UnderWay>,
    ) {
        let room = RoomOf {
            fetcher,
            key,
            under_way,
        };
        self.rooms.borrow_mut().insert(instance, room);
    }

    /// A fetch of `instance` starts: counted until it settles (the guard's drop), so that
    /// its room keeps the instance for what it runs then.
    pub(super) fn fetch_started(&self, instance: InstanceId) -> Option<UnderWayGuard> {
        let rooms = self.rooms.borrow();
        Some(rooms.get(&instance)?.under_way.start(|u| &u.fetches))
    }

    /// Forgets an instance's timers and room; returns the timer ids for party.js to drop
    /// (those that fired and wait for the room's next event too).
    pub(super) fn forget(&self, instance: InstanceId) -> Vec<u32> {
        self.answers.borrow_mut().forget(instance);
        self.open_fetches.borrow_mut().forget(instance);
        let due = self.due.borrow_mut().remove(&instance).unwrap_or_default();
        if let Some(room) = self.rooms.borrow_mut().remove(&instance) {
            let dropped = u32::try_from(due.work.len()).unwrap_or(u32::MAX);
            room.under_way.due.fetch_sub(dropped, Ordering::Relaxed);
        }
        let mut ids = self.timers.borrow_mut().remove_instance(instance);
        ids.extend(due.work.into_iter().filter_map(|w| match w {
            Due::Timer(id) => Some(id),
            Due::Settle(_) => None,
        }));
        ids
    }

    /// An id for the answer `instance` will give a request after its event, and where the
    /// answer will arrive.
    pub(super) fn answer_later(&self, instance: InstanceId) -> (u32, oneshot::Receiver<Response>) {
        self.answers.borrow_mut().later(instance)
    }

    /// Where `instance`'s answer `id` goes, once.
    pub(super) fn take_answer(
        &self,
        instance: InstanceId,
        id: u32,
    ) -> Option<oneshot::Sender<Response>> {
        self.answers.borrow_mut().take(instance, id)
    }
}

impl ActiveJob {
    pub(super) fn new(
        serial: u64,
        lease: Option<RoomLease>,
        fetcher: Option<crate::room::RoomFetcher>,
        holds_to_end: bool,
    ) -> Self {
        Self {
            holds_to_end,
            gated: RefCell::default(),
            serial,
            lease: RefCell::new(lease),
            fetcher,
            wake: Notify::new(),
            used: Cell::new(Duration::ZERO),
            failure: RefCell::new(None),
            savepoints: RefCell::default(),
            set_timers: Cell::new(false),
            holds: Cell::new(0),
            natives_in_flight: Cell::new(0),
        }
    }

    /// Why the event failed, if something failed it (a reset) while it ran.
    pub(super) fn take_failure(&self) -> Option<Failure> {
        self.failure.borrow_mut().take()
    }

    pub(super) fn fail(&self, failure: Failure) {
        let mut f = self.failure.borrow_mut();
        if f.is_none() {
            *f = Some(failure);
        }
        self.wake.notify_one();
    }
}
