//! A JavaScript worker: one OS thread with a current-thread tokio runtime and one QuickJS
//! runtime, serving the events of the rooms placed on it. Events of different rooms
//! interleave at their `await`s; JavaScript itself runs one piece at a time.

use super::natives;
use super::{InstanceId, JsConfig, PartyId, PartySource, PartyTraits};
use crate::message::Message;
use crate::room::{RoomFetcher, RoomShared};
use crate::storage::{Savepoint, Storage};
use conclave_proto::RoomKey;
use rquickjs::promise::PromiseState;
use rquickjs::{
    Array, ArrayBuffer, CatchResultExt, CaughtError, Context, Ctx, Function, Persistent, Runtime,
    Value,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{error, warn};

const WEB_JS: &str = include_str!("web.js");
const CODEC_JS: &str = include_str!("codec.js");
const PARTY_JS: &str = include_str!("party.js");

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
    pub reply: oneshot::Sender<(Option<RoomLease>, Result<Outcome, Failure>)>,
}

/// What JavaScript may touch of a room during one event.
pub(crate) struct RoomLease {
    pub key: RoomKey,
    pub storage: Storage,
    pub shared: Arc<RoomShared>,
    pub fetcher: RoomFetcher,
}

/// A connection as an event names it: `key` names the socket on this node.
#[derive(Clone)]
pub(crate) struct ConnRef {
    pub key: String,
    pub id: String,
    pub uri: String,
    pub tags: Vec<String>,
}

pub(crate) enum Event {
    Start,
    /// With the upgrade request's headers (names and values, alternating).
    Tags(ConnRef, Vec<String>),
    Connect(ConnRef, Vec<String>),
    /// A message from the connection with this key (party.js knows it from its connect).
    Message(String, Message),
    Close(ConnRef, u16, String),
    /// `gone`: the connection already left (a socket error), rather than a handler failing.
    Error {
        conn: ConnRef,
        error: String,
        gone: bool,
    },
    Request {
        method: String,
        url: String,
        headers: Vec<String>,
        body: Option<bytes::Bytes>,
    },
    Alarm,
    /// Timers fired between events; they run at the start of this one.
    Wake,
    /// The static `onBeforeConnect(req, lobby)`, for a socket to `room`.
    BeforeConnect {
        room: String,
        url: String,
        headers: Vec<String>,
    },
    /// The static `onBeforeRequest(req, lobby)`.
    BeforeRequest {
        room: String,
        request: HttpParts,
    },
}

/// An HTTP request or response as it crosses into JavaScript and back.
#[derive(Debug, Clone)]
pub(crate) struct HttpParts {
    /// The method of a request, empty for a response.
    pub method: String,
    /// The URL of a request, empty for a response.
    pub url: String,
    pub status: u16,
    /// Names and values, alternating.
    pub headers: Vec<String>,
    pub body: Option<Vec<u8>>,
}

pub(crate) enum Outcome {
    Done,
    /// `onStart` ran; whether the instance may hibernate (`options.hibernate`).
    Started {
        hibernate: bool,
    },
    Tags(Vec<String>),
    Response(HttpParts),
    /// A check let the request through, as returned (possibly rewritten).
    Proceed(HttpParts),
}

/// A value JavaScript threw: its message (what clients may see: a close reason, a
/// response body) and, for logs, its name and stack too.
#[derive(Debug, Clone)]
pub(crate) struct Thrown {
    pub message: String,
    pub trace: String,
}

impl std::fmt::Display for Thrown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Thrown {
    fn from(message: String) -> Self {
        Self {
            trace: message.clone(),
            message,
        }
    }
}

impl From<&str> for Thrown {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// Why an event did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Failure {
    /// The handler threw or its promise rejected; the instance is intact.
    #[error("{0}")]
    Threw(Thrown),
    /// The handler ran past its CPU budget, or the runtime ran out of memory: the instance
    /// was dropped.
    #[error("{0}")]
    Reset(String),
    #[error("the party {0} is not loaded on this worker")]
    NotLoaded(PartyId),
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

/// A party loaded in this worker: its context and the entry points of party.js.
struct LoadedParty {
    context: Context,
    dispatch: Persistent<Function<'static>>,
    create: Persistent<Function<'static>>,
    destroy: Persistent<Function<'static>>,
}

struct Worker {
    runtime: Runtime,
    shared: Rc<Shared>,
    parties: RefCell<HashMap<PartyId, Rc<LoadedParty>>>,
    /// Which party each live instance belongs to.
    instances: RefCell<HashMap<InstanceId, PartyId>>,
}

/// What natives reach: the events in progress, by instance, and the CPU clock.
pub(super) struct Shared {
    pub jobs: RefCell<HashMap<InstanceId, Rc<ActiveJob>>>,
    pub clock: Clock,
    pub started: Instant,
    pub config: JsConfig,
    /// The instance whose JavaScript is running now (logs, timers).
    pub current: Cell<Option<InstanceId>>,
    pub timers: RefCell<HashMap<u32, Timer>>,
    next_timer: Cell<u32>,
    /// Timers that fired while their room had no event in progress: they run first thing
    /// in the room's next event (a wake asks for one).
    due: RefCell<HashMap<InstanceId, Vec<u32>>>,
    /// Each instance's room, to wake it.
    rooms: RefCell<HashMap<InstanceId, (RoomFetcher, RoomKey)>>,
}

/// A pending `setTimeout`/`setInterval`.
pub(super) struct Timer {
    instance: InstanceId,
    task: tokio::task::AbortHandle,
}

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
    pub lease: RefCell<Option<RoomLease>>,
    /// Woken whenever something the event waits on settled.
    pub wake: Notify,
    /// CPU time the event's JavaScript has taken so far.
    used: Cell<Duration>,
    failure: RefCell<Option<Failure>>,
    pub savepoints: RefCell<HashMap<u32, Savepoint>>,
    pub next_savepoint: Cell<u32>,
}

impl Shared {
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

    pub(super) fn job(&self, instance: InstanceId) -> Option<Rc<ActiveJob>> {
        self.jobs.borrow().get(&instance).cloned()
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
        let id = self.next_timer.get();
        self.next_timer.set(id.wrapping_add(1).max(1));
        let (shared, context) = (self.clone(), context.clone());
        let task = tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(delay).await;
                shared.fire(&context, instance, id);
                if !repeat {
                    shared.timers.borrow_mut().remove(&id);
                    return;
                }
            }
        });
        let timer = Timer {
            instance,
            task: task.abort_handle(),
        };
        self.timers.borrow_mut().insert(id, timer);
        Some(id)
    }

    pub(super) fn clear_timer(&self, id: u32) {
        if let Some(t) = self.timers.borrow_mut().remove(&id) {
            t.task.abort();
        }
    }

    /// A timer fired: it runs now within the room's event in progress, or first thing in
    /// the room's next event, which a wake asks for.
    fn fire(&self, context: &Context, instance: InstanceId, id: u32) {
        if let Some(job) = self.job(instance) {
            self.run_timers(context, instance, &[id]);
            job.wake.notify_one();
            return;
        }
        let mut due = self.due.borrow_mut();
        let queue = due.entry(instance).or_default();
        let first = queue.is_empty();
        queue.push(id);
        if first {
            if let Some((fetcher, key)) = self.rooms.borrow().get(&instance) {
                fetcher.wake(key.clone());
            }
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

    /// Runs the instance's timers that fired while it had no event in progress.
    fn run_due_timers(&self, context: &Context, instance: InstanceId) {
        let ids = self.due.borrow_mut().remove(&instance);
        if let Some(ids) = ids {
            self.run_timers(context, instance, &ids);
        }
    }

    /// Forgets an instance's timers and room; returns the timer ids for party.js to drop.
    fn forget(&self, instance: InstanceId) -> Vec<u32> {
        self.due.borrow_mut().remove(&instance);
        self.rooms.borrow_mut().remove(&instance);
        let mut timers = self.timers.borrow_mut();
        let ids: Vec<u32> = timers
            .iter()
            .filter(|(_, t)| t.instance == instance)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(t) = timers.remove(id) {
                t.task.abort();
            }
        }
        ids
    }
}

impl ActiveJob {
    fn new(lease: Option<RoomLease>) -> Self {
        Self {
            lease: RefCell::new(lease),
            wake: Notify::new(),
            used: Cell::new(Duration::ZERO),
            failure: RefCell::new(None),
            savepoints: RefCell::default(),
            next_savepoint: Cell::new(1),
        }
    }

    pub(super) fn fail(&self, failure: Failure) {
        let mut f = self.failure.borrow_mut();
        if f.is_none() {
            *f = Some(failure);
        }
        self.wake.notify_one();
    }
}

impl Worker {
    fn new(config: JsConfig) -> rquickjs::Result<Self> {
        let runtime = Runtime::new()?;
        runtime.set_memory_limit(config.memory_limit);
        runtime.set_max_stack_size(4 * 1024 * 1024);
        let shared = Rc::new(Shared {
            jobs: RefCell::default(),
            clock: Clock::default(),
            started: Instant::now(),
            config,
            current: Cell::new(None),
            timers: RefCell::default(),
            next_timer: Cell::new(1),
            due: RefCell::default(),
            rooms: RefCell::default(),
        });
        let clock = shared.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || clock.clock.expired())));
        Ok(Self {
            runtime,
            shared,
            parties: RefCell::default(),
            instances: RefCell::default(),
        })
    }

    /// Evaluates the globals, party.js and the party's script in a new context.
    fn load(&self, party: PartyId, source: &Arc<PartySource>) -> Result<PartyTraits, String> {
        let context = Context::full(&self.runtime).map_err(|e| e.to_string())?;
        let loaded = context.with(|ctx| -> Result<(LoadedParty, PartyTraits), String> {
            natives::install(&ctx, &self.shared, &context).map_err(|e| e.to_string())?;
            for (name, code) in [("web.js", WEB_JS), ("codec.js", CODEC_JS), ("party.js", PARTY_JS)] {
                eval_script(&ctx, name, code)?;
            }
            eval_script(&ctx, &source.origin, &source.script)?;
            let conclave: rquickjs::Object = ctx
                .globals()
                .get("__conclave")
                .map_err(|e| e.to_string())?;
            let exported: Value = ctx.globals().get("__party").map_err(|e| e.to_string())?;
            if exported.is_undefined() {
                return Err("the script did not define globalThis.__party (bundle it with esbuild --format=iife --global-name=__party)".into());
            }
            let load: Function = conclave.get("load").map_err(|e| e.to_string())?;
            let traits: String = load
                .call((exported, source.name.as_str(), source.env.to_string()))
                .catch(&ctx)
                .map_err(|e| caught_text(&e).trace)?;
            let traits: PartyTraits =
                serde_json::from_str(&traits).map_err(|e| e.to_string())?;
            let get = |name: &str| -> Result<Persistent<Function<'static>>, String> {
                let f: Function = conclave.get(name).map_err(|e| e.to_string())?;
                Ok(Persistent::save(&ctx, f))
            };
            let loaded = LoadedParty {
                context: context.clone(),
                dispatch: get("dispatch")?,
                create: get("create")?,
                destroy: get("destroy")?,
            };
            Ok((loaded, traits))
        })?;
        let (loaded, traits) = loaded;
        self.parties.borrow_mut().insert(party, Rc::new(loaded));
        Ok(traits)
    }

    fn destroy(&self, instance: InstanceId) {
        let Some(party) = self.instances.borrow_mut().remove(&instance) else {
            return;
        };
        let Some(loaded) = self.parties.borrow().get(&party).cloned() else {
            return;
        };
        let timers = self.shared.forget(instance);
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
            reply,
        } = job;
        let active = Rc::new(ActiveJob::new(lease));
        let lobby = active.lease.borrow().is_none();
        self.shared
            .jobs
            .borrow_mut()
            .insert(instance, active.clone());
        let outcome = self.drive(party, instance, event, &active).await;
        self.shared.jobs.borrow_mut().remove(&instance);
        if matches!(outcome, Err(Failure::Reset(_))) {
            self.destroy(instance);
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
            self.create(&loaded, instance, active)?;
            self.instances.borrow_mut().insert(instance, party);
        }
        self.shared.run_due_timers(&loaded.context, instance);
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
        let promise = match promise.map_err(|e| failure_of(active, e))? {
            Ok(outcome) => {
                if let Some(f) = active.failure.borrow_mut().take() {
                    return Err(f);
                }
                return Ok(outcome);
            }
            Err(promise) => promise,
        };
        loop {
            if let Some(f) = active.failure.borrow_mut().take() {
                return Err(f);
            }
            let settled = loaded
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
                });
            match settled {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => active.wake.notified().await,
                Err(e) => return Err(failure_of(active, e)),
            }
        }
    }

    fn create(
        &self,
        loaded: &LoadedParty,
        instance: InstanceId,
        active: &Rc<ActiveJob>,
    ) -> Result<(), Failure> {
        let room = match active.lease.borrow().as_ref() {
            Some(lease) => {
                let waker = (lease.fetcher.clone(), lease.key.clone());
                self.shared.rooms.borrow_mut().insert(instance, waker);
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

/// A thrown error, or the reset that caused it.
fn failure_of(active: &ActiveJob, error: Thrown) -> Failure {
    if let Some(f) = active.failure.borrow_mut().take() {
        return f;
    }
    if error.message.contains("out of memory") {
        return Failure::Reset(format!("the JavaScript runtime ran out of memory: {error}"));
    }
    Failure::Threw(error)
}

fn eval_script(ctx: &Ctx<'_>, name: &str, code: &str) -> Result<(), String> {
    let mut opts = rquickjs::context::EvalOptions::default();
    opts.global = true;
    opts.strict = false;
    opts.filename = Some(name.to_string());
    ctx.eval_with_options::<(), _>(code, opts)
        .catch(ctx)
        .map_err(|e| format!("{name}: {}", caught_text(&e).trace))
}

/// A thrown value: an Error's message, and its name, message and stack for logs.
pub(super) fn caught_text(e: &CaughtError<'_>) -> Thrown {
    match e {
        CaughtError::Exception(ex) => {
            let message = ex.message().unwrap_or_default();
            let name: String = ex
                .as_object()
                .get::<_, String>("name")
                .unwrap_or_else(|_| "Error".into());
            let trace = match ex.stack() {
                Some(stack) if !stack.trim().is_empty() => {
                    format!("{name}: {message}\n{}", stack.trim_end())
                }
                _ => format!("{name}: {message}"),
            };
            Thrown { message, trace }
        }
        CaughtError::Value(v) => v
            .as_string()
            .and_then(|s| s.to_string().ok())
            .unwrap_or_else(|| format!("{v:?}"))
            .into(),
        CaughtError::Error(e) => e.to_string().into(),
    }
}

fn event_kind(e: &Event) -> &'static str {
    match e {
        Event::Start => "start",
        Event::Tags(..) => "tags",
        Event::Connect(..) => "connect",
        Event::Message(..) => "message",
        Event::Close(..) => "close",
        Event::Error { .. } => "error",
        Event::Request { .. } => "request",
        Event::Alarm => "alarm",
        Event::Wake => "wake",
        Event::BeforeConnect { .. } => "beforeConnect",
        Event::BeforeRequest { .. } => "beforeRequest",
    }
}

/// `dispatch(handle, kind, conn, a, b, c, d)` for party.js.
fn event_args<'js>(
    ctx: &Ctx<'js>,
    instance: InstanceId,
    event: Event,
) -> rquickjs::Result<rquickjs::function::Args<'js>> {
    let kind = event_kind(&event);
    let mut values: Vec<Value<'js>> = Vec::with_capacity(7);
    let null = || Value::new_null(ctx.clone());
    let text = |s: &str| -> rquickjs::Result<Value<'js>> {
        Ok(rquickjs::String::from_str(ctx.clone(), s)?.into_value())
    };
    values.push(Value::new_number(ctx.clone(), instance as f64));
    values.push(text(kind)?);
    match event {
        Event::Start | Event::Alarm | Event::Wake => values.push(null()),
        Event::Tags(c, headers) | Event::Connect(c, headers) => {
            values.push(conn_row(ctx, &c)?);
            values.push(text(&c.uri)?);
            values.push(string_array(ctx, &headers)?);
        }
        Event::Message(key, msg) => {
            values.push(text(&key)?);
            values.push(message_value(ctx, &msg)?);
        }
        Event::Close(c, code, reason) => {
            values.push(conn_row(ctx, &c)?);
            values.push(Value::new_int(ctx.clone(), code.into()));
            values.push(text(&reason)?);
        }
        Event::Error { conn, error, gone } => {
            values.push(conn_row(ctx, &conn)?);
            values.push(text(&error)?);
            values.push(Value::new_bool(ctx.clone(), gone));
        }
        Event::Request {
            method,
            url,
            headers,
            body,
        } => {
            values.push(null());
            values.push(text(&method)?);
            values.push(text(&url)?);
            values.push(string_array(ctx, &headers)?);
            values.push(match body {
                Some(b) => ArrayBuffer::new_copy(ctx.clone(), &b[..])?.into_value(),
                None => null(),
            });
        }
        Event::BeforeConnect { room, url, headers } => {
            values.push(null());
            values.push(text(&room)?);
            values.push(text(&url)?);
            values.push(string_array(ctx, &headers)?);
        }
        Event::BeforeRequest { room, request } => {
            values.push(null());
            values.push(text(&room)?);
            values.push(text(&request.method)?);
            values.push(text(&request.url)?);
            let parts = Array::new(ctx.clone())?;
            parts.set(0, string_array(ctx, &request.headers)?)?;
            parts.set(
                1,
                match &request.body {
                    Some(b) => ArrayBuffer::new_copy(ctx.clone(), &b[..])?.into_value(),
                    None => null(),
                },
            )?;
            values.push(parts.into_value());
        }
    }
    let mut args = rquickjs::function::Args::new(ctx.clone(), values.len());
    for v in values {
        args.push_arg(v)?;
    }
    Ok(args)
}

fn string_array<'js>(ctx: &Ctx<'js>, items: &[String]) -> rquickjs::Result<Value<'js>> {
    let a = Array::new(ctx.clone())?;
    for (i, v) in items.iter().enumerate() {
        a.set(i, v.as_str())?;
    }
    Ok(a.into_value())
}

/// `[method, url, status, flat headers, body]` from party.js (method and url empty for a
/// response).
fn http_parts(v: Value<'_>) -> rquickjs::Result<HttpParts> {
    let parts = v
        .into_array()
        .ok_or_else(|| rquickjs::Error::new_from_js("value", "HTTP parts"))?;
    let status: f64 = parts.get(2)?;
    let body: Value = parts.get(4)?;
    // SAFETY: copied at once, before any JavaScript runs.
    let body = ArrayBuffer::from_value(body).map(|b| {
        unsafe { b.as_bytes() }
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    });
    Ok(HttpParts {
        method: parts.get(0)?,
        url: parts.get(1)?,
        status: status as u16,
        headers: parts.get(3)?,
        body,
    })
}

impl HttpParts {
    fn empty() -> Self {
        Self {
            method: String::new(),
            url: String::new(),
            status: 0,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Whether a check returned nothing: the request goes on as it was.
    pub(crate) fn is_unchanged(&self) -> bool {
        self.method.is_empty() && self.status == 0
    }
}

/// `[key, id, uri, tags]`, how party.js knows a connection.
pub(super) fn conn_row<'js>(ctx: &Ctx<'js>, c: &ConnRef) -> rquickjs::Result<Value<'js>> {
    let row = Array::new(ctx.clone())?;
    row.set(0, c.key.as_str())?;
    row.set(1, c.id.as_str())?;
    row.set(2, c.uri.as_str())?;
    row.set(3, c.tags.clone())?;
    Ok(row.into_value())
}

/// A message as JavaScript sees it: a string, or an ArrayBuffer.
pub(super) fn message_value<'js>(ctx: &Ctx<'js>, msg: &Message) -> rquickjs::Result<Value<'js>> {
    match msg.as_text() {
        Some(t) if !msg.is_binary() => Ok(rquickjs::String::from_str(ctx.clone(), t)?.into_value()),
        _ => Ok(ArrayBuffer::new_copy(ctx.clone(), &msg.payload()[..])?.into_value()),
    }
}

fn outcome_of(kind: &str, v: Value<'_>) -> rquickjs::Result<Outcome> {
    match kind {
        "start" => Ok(Outcome::Started {
            hibernate: v.as_bool().unwrap_or(false),
        }),
        "tags" => {
            let ctx = v.ctx().clone();
            Ok(Outcome::Tags(rquickjs::FromJs::from_js(&ctx, v)?))
        }
        "request" => Ok(Outcome::Response(http_parts(v)?)),
        "beforeConnect" | "beforeRequest" => {
            if v.is_null() || v.is_undefined() {
                return Ok(Outcome::Proceed(HttpParts::empty()));
            }
            let parts = http_parts(v)?;
            Ok(if parts.method.is_empty() {
                Outcome::Response(parts)
            } else {
                Outcome::Proceed(parts)
            })
        }
        _ => Ok(Outcome::Done),
    }
}
