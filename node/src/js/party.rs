//! A JavaScript party as the room actor sees it: a [`Party`] whose handlers run on the
//! engine's worker with the room lent to it. Its code outside rooms (the static checks,
//! `onFetch`) is in `party/outside_rooms.rs`.

use super::event::{Event, Failure, HttpParts, Outcome, Thrown};
use super::natives::conn_ref;
use super::shared::UnderWay;
use super::worker::{Command, Job, RoomLease};
use super::{InstanceId, JsEngine, PartyId, PartyTraits, StaticAssets};
use crate::message::{text_response, Message, Request, Response};
use crate::party::{ConnectCheck, InstanceBroken, Party, PartyError, PartyFactory};
use crate::room::{Connection, Room};
use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;
use tracing::warn;

mod outside_rooms;

/// Makes a [`JsParty`] for each room of one loaded party ([`JsEngine::load`]).
pub struct JsPartyFactory {
    engine: Arc<JsEngine>,
    version: Arc<RwLock<Version>>,
    /// `version`'s party, read by every event of every room (`JsParty::outdated`).
    latest_party: Arc<AtomicU64>,
    /// How the static handlers' `lobby.parties` reach rooms: the node's, once it serves
    /// the party ([`PartyFactory::attach`]).
    fetcher: std::sync::OnceLock<crate::room::RoomFetcher>,
}

/// The code a party's rooms run: a loaded party, replaced on reload.
#[derive(Clone)]
struct Version {
    party: PartyId,
    traits: Arc<PartyTraits>,
    /// The project's static files, answered outside rooms (by the main party).
    assets: Option<Arc<StaticAssets>>,
    /// The project's cron triggers, run by the main party's `onCron`.
    crons: Arc<[crate::Cron]>,
}

impl JsPartyFactory {
    pub(super) fn new(
        engine: Arc<JsEngine>,
        party: PartyId,
        traits: Arc<PartyTraits>,
        assets: Option<Arc<StaticAssets>>,
        crons: Arc<[crate::Cron]>,
    ) -> Self {
        Self {
            engine,
            version: Arc::new(RwLock::new(Version {
                party,
                traits,
                assets,
                crons,
            })),
            latest_party: Arc::new(AtomicU64::new(party)),
            fetcher: std::sync::OnceLock::new(),
        }
    }

    /// Switches this party's rooms to the code `fresh` loaded: each room's instance is
    /// replaced at its next event (`onStart` runs again), its sockets stay open.
    pub fn replace_with(&self, fresh: &JsPartyFactory) {
        let v = fresh.current();
        let party = v.party;
        *self.version.write().unwrap_or_else(|e| e.into_inner()) = v;
        self.latest_party.store(party, Ordering::Release);
    }

    fn current(&self) -> Version {
        self.version
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl PartyFactory for JsPartyFactory {
    fn check_connect(
        &self,
        req: ConnectCheck,
    ) -> Option<BoxFuture<'static, Result<ConnectCheck, Response>>> {
        self.connect_check(req)
    }

    fn checks_connections(&self) -> bool {
        self.version
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .traits
            .on_before_connect
    }

    fn check_request(
        &self,
        room: &str,
        req: Request,
    ) -> Option<BoxFuture<'static, Result<Request, Response>>> {
        self.request_check(room, req)
    }

    fn fetch(&self, req: Request) -> Option<BoxFuture<'static, Response>> {
        self.outside_rooms_fetch(req)
    }

    fn crons(&self) -> Arc<[crate::Cron]> {
        let v = self.current();
        if v.traits.on_cron {
            v.crons
        } else {
            Arc::from([])
        }
    }

    fn run_cron(&self, tick: crate::CronTick) -> Option<BoxFuture<'static, Result<(), String>>> {
        self.cron(tick)
    }

    fn attach(&self, fetcher: &crate::room::RoomFetcher) {
        let _ = self.fetcher.set(fetcher.clone());
    }

    fn create(&self) -> Box<dyn Party> {
        let v = self.current();
        Box::new(JsParty {
            engine: self.engine.clone(),
            latest_party: self.latest_party.clone(),
            party: v.party,
            traits: v.traits,
            worker: self.engine.pick_worker(),
            instance: self.engine.next_instance(),
            started: false,
            broken: None,
            hibernate: false,
            under_way: Arc::default(),
            last_event: std::time::Instant::now(),
        })
    }
}

/// One room's server instance, living on one worker.
pub struct JsParty {
    engine: Arc<JsEngine>,
    /// The party's current code; the instance is replaced when it moves on.
    latest_party: Arc<AtomicU64>,
    party: PartyId,
    traits: Arc<PartyTraits>,
    worker: usize,
    instance: InstanceId,
    /// Whether `onStart` ran.
    started: bool,
    /// Why the worker dropped the instance (CPU budget, memory): every later event fails,
    /// as the room drops this one and starts another.
    broken: Option<String>,
    /// The instance's `options.hibernate`.
    hibernate: bool,
    /// What it has under way: its fetches in flight (what awaits them runs in the room when
    /// they settle), the answers it owes requesters, its timers set.
    under_way: Arc<UnderWay>,
    /// When its last event other than a wake began: timers keep it only so long.
    last_event: std::time::Instant,
}

impl Drop for JsParty {
    fn drop(&mut self) {
        self.engine
            .send(self.worker, Command::Destroy(self.instance));
    }
}

/// How long after its last event (other than a wake) timers set keep a room's instance
/// from hibernating or retiring.
const TIMERS_KEEP_FOR: std::time::Duration = std::time::Duration::from_secs(70);

impl JsParty {
    /// Runs one event on the worker, with the room's storage lent to it.
    async fn run(&mut self, room: &mut Room, event: Event) -> Result<Outcome, Failure> {
        if !matches!(event, Event::Wake) {
            self.last_event = std::time::Instant::now();
        }
        if let Some(why) = &self.broken {
            return Err(Failure::Reset(why.clone()));
        }
        if !self.started && !matches!(event, Event::Start) {
            return Err(Failure::Reset("the instance has not started".into()));
        }
        let lease = Some(RoomLease {
            key: room.key().clone(),
            under_way: self.under_way.clone(),
            storage: room.lend_storage(),
            shared: room.shared().clone(),
            fetcher: room.fetcher().clone(),
        });
        let (reply, rx) = oneshot::channel();
        let job = Job {
            party: self.party,
            instance: self.instance,
            event,
            lease,
            fetcher: None,
            reply,
        };
        if !self.engine.send(self.worker, Command::Run(Box::new(job))) {
            return Err(Failure::Threw("the JavaScript engine stopped".into()));
        }
        let Ok((lease, outcome)) = rx.await else {
            return Err(Failure::Threw(
                "the JavaScript worker dropped the event".into(),
            ));
        };
        if let Some(lease) = lease {
            room.give_back_storage(lease.storage);
        }
        match &outcome {
            Ok(_) => self.started = true,
            Err(Failure::Reset(why)) => {
                // The worker dropped the instance: so does the room, which starts a new
                // one (`onStart`, and `onConnect` for the sockets it inherits) for its next
                // event.
                warn!(room = %room.key(), "{why}; the room's instance starts afresh");
                self.broken = Some(why.clone());
            }
            Err(_) => {}
        }
        outcome
    }

    async fn run_done(&mut self, room: &mut Room, event: Event) -> Result<(), PartyError> {
        match self.run(room, event).await {
            Ok(outcome) => {
                if let Outcome::Started { hibernate } = outcome {
                    self.hibernate = hibernate;
                }
                Ok(())
            }
            Err(e) => {
                if let Failure::Threw(t) = &e {
                    warn!(room = %room.key(), error = %t.trace, "a handler threw");
                }
                Err(party_error(e))
            }
        }
    }
}

#[async_trait]
impl Party for JsParty {
    async fn on_start(&mut self, room: &mut Room) -> Result<(), PartyError> {
        self.run_done(room, Event::Start).await
    }

    fn hibernates(&self) -> bool {
        self.hibernate
    }

    /// Fetches in flight and answers due keep the instance (each ends within its limit);
    /// timers set, and work come due that waits for its wake event, keep it up to
    /// [`TIMERS_KEEP_FOR`] after its last event, as a Durable Object with timers set is not
    /// hibernated, but evicted after 70–140 s without events.
    fn busy(&self) -> bool {
        let u = &self.under_way;
        u.fetches.load(Ordering::Relaxed) > 0
            || u.answers.load(Ordering::Relaxed) > 0
            || ((u.timers.load(Ordering::Relaxed) > 0 || u.due.load(Ordering::Relaxed) > 0)
                && self.last_event.elapsed() < TIMERS_KEEP_FOR)
    }

    /// A party that does not hibernate keeps what it knows of its connections in memory
    /// (from `onConnect`); a new instance rebuilds it for the sockets it inherits, as it
    /// would on PartyKit when they reconnect after the old instance went.
    fn greets_inherited_connections(&self) -> bool {
        !self.hibernate
    }

    /// Reloaded, or reset by the worker (a reset `getConnectionTags` fails no step).
    fn outdated(&self) -> bool {
        self.broken.is_some() || self.latest_party.load(Ordering::Acquire) != self.party
    }

    async fn connection_tags(&mut self, room: &mut Room, conn: &Connection) -> Vec<String> {
        if !self.traits.connection_tags {
            return Vec::new();
        }
        let headers = flat_headers(room.upgrade_headers());
        match self.run(room, Event::Tags(conn_ref(conn), headers)).await {
            Ok(Outcome::Tags(tags)) => tags,
            Ok(_) => Vec::new(),
            Err(e) => {
                warn!(conn = %conn.id(), error = %e, "getConnectionTags failed; no tags");
                Vec::new()
            }
        }
    }

    async fn on_connect(&mut self, room: &mut Room, conn: &Connection) -> Result<(), PartyError> {
        let headers = flat_headers(room.upgrade_headers());
        self.run_done(room, Event::Connect(conn_ref(conn), headers))
            .await
    }

    /// A handler that throws: its writes and messages are dropped and the error is logged;
    /// the connection stays open and `onError` does not run, as on PartyKit (where a
    /// throw in `onMessage` is only logged), so a client that sent something a handler
    /// chokes on is not disconnected for it.
    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        let key = super::natives::conn_key(conn);
        match self.run(room, Event::Message(key, msg)).await {
            Ok(_) => Ok(()),
            Err(Failure::Threw(error)) => {
                warn!(conn = %conn.id(), error = %error.trace, "onMessage threw; its writes and messages were discarded");
                room.discard();
                Ok(())
            }
            Err(e) => Err(party_error(e)),
        }
    }

    async fn on_close(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        code: u16,
        reason: &str,
    ) -> Result<(), PartyError> {
        let event = Event::Close(conn_ref(conn), code, reason.to_string());
        self.run_done(room, event).await
    }

    async fn on_error(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        error: &str,
    ) -> Result<(), PartyError> {
        let event = Event::Error {
            conn: conn_ref(conn),
            error: error.to_string(),
            gone: true,
        };
        self.run_done(room, event).await
    }

    /// A throw answers with the error's message, and the status its `code` names (500
    /// without one), as PartyKit does. A handler that waits on something other than
    /// storage answers from a later step (`Outcome::AnswerLater`), while its requester
    /// waits.
    async fn on_request(&mut self, room: &mut Room, req: Request) -> Result<Response, PartyError> {
        let event = request_event(req);
        match self.run(room, event).await {
            Ok(Outcome::Response(r)) => response_of(r),
            Ok(Outcome::AnswerLater(answer)) => {
                // Awaited as long as its requester waits (`fetch_timeout`, the gateway's
                // `answer_timeout`): the handler does not hold the room meanwhile.
                let due = self.under_way.start(|u| &u.answers);
                room.answer_later(Box::pin(async move {
                    let _due = due;
                    answer.await.unwrap_or_else(|_| {
                        // The step that gave it was discarded, or the instance went.
                        text_response(500, "The room failed to handle the request")
                    })
                }));
                // Not sent: the room answers with the later answer.
                Ok(text_response(202, ""))
            }
            Ok(_) => Err("onRequest did not return a Response".into()),
            Err(Failure::Threw(error)) => {
                room.discard();
                Ok(thrown_answer(error))
            }
            Err(e) => Err(party_error(e)),
        }
    }

    async fn on_alarm(&mut self, room: &mut Room) -> Result<(), PartyError> {
        self.run_done(room, Event::Alarm).await
    }

    async fn on_wake(&mut self, room: &mut Room) -> Result<(), PartyError> {
        if !self.started || self.outdated() {
            return Ok(()); // the instance whose timers fired is gone, or going
        }
        self.run_done(room, Event::Wake).await
    }
}

/// A failed event as the room takes it: a reset instance is broken, so that the room
/// drops it and starts another.
fn party_error(failure: Failure) -> PartyError {
    match failure {
        Failure::Reset(why) => Box::new(InstanceBroken(why)),
        other => other.into(),
    }
}

/// A request as party.js builds it: an absolute URL, as Cloudflare gives it.
fn request_event(req: Request) -> Event {
    let (parts, body) = req.into_parts();
    Event::Request {
        method: parts.method.as_str().to_string(),
        url: absolute_url(&parts.uri, &parts.headers),
        headers: flat_headers(Some(&parts.headers)),
        body: (!body.is_empty()).then_some(body),
    }
}

fn absolute_url(uri: &http::Uri, headers: &http::HeaderMap) -> String {
    if uri.scheme().is_some() {
        return uri.to_string();
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("http://{host}{path}")
}

pub(super) fn response_of(r: HttpParts) -> Result<Response, PartyError> {
    let mut b = http::Response::builder().status(r.status);
    for kv in r.headers.chunks_exact(2) {
        b = b.header(kv[0].as_str(), kv[1].as_str());
    }
    Ok(b.body(r.body.map(Bytes::from).unwrap_or_default())?)
}

fn flat_headers(headers: Option<&http::HeaderMap>) -> Vec<String> {
    let mut out = Vec::with_capacity(headers.map_or(0, |h| h.len() * 2));
    for (k, v) in headers.into_iter().flatten() {
        out.push(k.as_str().to_string());
        out.push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    out
}

fn header_map(flat: &[String]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for kv in flat.chunks_exact(2) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(kv[0].as_bytes()),
            http::HeaderValue::from_str(&kv[1]),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// What a throwing `onRequest` answers with: the error's message, and the status its
/// `code` names (500 without one), as PartyKit does.
pub(super) fn thrown_answer(error: Thrown) -> Response {
    let status = error
        .status
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    warn!(error = %error.trace, %status, "onRequest threw");
    answer(status, thrown_message(error))
}

/// What a throwing `onRequest` or `onFetch` answers with: its message, or PartyKit's text
/// for an error without one.
fn thrown_message(error: Thrown) -> String {
    if error.message.is_empty() {
        "Uncaught exception when making a request".to_string()
    } else {
        error.message
    }
}

/// A response of `status` with `body` and no headers.
fn answer(status: http::StatusCode, body: String) -> Response {
    let mut resp = http::Response::new(Bytes::from(body));
    *resp.status_mut() = status;
    resp
}
