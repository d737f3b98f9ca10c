//! `fetch` to allowed outside hosts. A response's body is read ahead by a task of its
//! own into a short queue, and handed to party.js one read per pull of its stream: a
//! party relays a streamed answer (server-sent events, a model's tokens) as it comes;
//! memory holds at most the queue of a body no one reads; and a small body is read to
//! its end at once, so its connection goes back to the pool though the party never
//! reads it. An `AbortSignal` stops a fetch waiting for its response or a read of its
//! body; so does cancelling the body.

use super::fetch::{output_gate, request_parts, through};
use super::*;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long a fetch waits for its response's head, and its body's reader for the next
/// bytes (Cloudflare's edge gives an origin 100 s too).
const FETCH_WAIT: Duration = Duration::from_secs(100);
/// A body no read has asked of for this long is dropped, and its connection with it
/// (the party kept the `Response` without reading it to its end).
const BODY_IDLE: Duration = Duration::from_secs(100);
/// How often bodies left idle are looked for, while any fetch is open.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Fetches an instance may have open (waiting for their head, or with a body to read);
/// past that, its body idle longest is dropped, or, with none idle, the fetch refused.
const FETCHES_PER_INSTANCE: usize = 256;
/// Bytes of a body read ahead of the party; also the most one read gives.
const READ_AHEAD: usize = 64 * 1024;
/// The client's read buffer, which holds what came past the read-ahead.
const CLIENT_BUFFER: usize = 64 * 1024;

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// The fetches of a worker's instances that are waiting for their response's head or
/// have a body still to read, by id (`Shared::open_fetches`). Dropping one stops what
/// waits on it: its `stop` sender goes, and its body's reader with its connection.
#[derive(Default)]
pub(in crate::js) struct OpenFetches {
    by_id: HashMap<u32, OpenFetch>,
    next_id: u32,
    /// A task drops idle bodies while any fetch is open.
    sweeping: bool,
}

struct OpenFetch {
    instance: InstanceId,
    /// Held while the request or a read is under way: its dropping stops that.
    stop: Option<oneshot::Sender<()>>,
    /// The body, between reads.
    body: Option<BodyParts>,
    /// When a read last gave bytes (or the head came).
    idle_since: Instant,
}

/// A response body as its reader task queues it: bytes, then the end (the sender gone) or
/// an error.
struct BodyParts {
    parts: mpsc::UnboundedReceiver<Result<Bytes, String>>,
    /// Bytes the reader may queue: a read gives back what it took.
    room: Arc<tokio::sync::Semaphore>,
    /// An error that came after bytes a read gave: the next read's.
    failed: Option<String>,
}

impl OpenFetches {
    /// Registers a fetch of `instance`; returns its id, and what stops its request (its
    /// cancel). Past [`FETCHES_PER_INSTANCE`] open, the instance's body idle longest is
    /// dropped; with none, the fetch refused.
    fn open(&mut self, instance: InstanceId) -> Result<(u32, oneshot::Receiver<()>), String> {
        let open = self
            .by_id
            .values()
            .filter(|f| f.instance == instance)
            .count();
        if open >= FETCHES_PER_INSTANCE {
            let oldest = self
                .by_id
                .iter()
                .filter(|(_, f)| f.instance == instance && f.body.is_some())
                .min_by_key(|(_, f)| f.idle_since)
                .map(|(id, _)| *id);
            let oldest = oldest.ok_or_else(|| {
                format!(
                    "fetch: this room has {FETCHES_PER_INSTANCE} fetches waiting for their answer"
                )
            })?;
            self.by_id.remove(&oldest);
        }
        let mut id = self.next_id;
        while self.by_id.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        let (stop, stopped) = oneshot::channel();
        self.by_id.insert(
            id,
            OpenFetch {
                instance,
                stop: Some(stop),
                body: None,
                idle_since: Instant::now(),
            },
        );
        Ok((id, stopped))
    }

    /// Drops bodies left unread past [`BODY_IDLE`]; whether any fetch is still open.
    fn sweep(&mut self) -> bool {
        self.by_id
            .retain(|_, f| f.body.is_none() || f.idle_since.elapsed() < BODY_IDLE);
        !self.by_id.is_empty()
    }

    /// Stops fetch `id`'s request or read, and drops its body.
    pub(in crate::js) fn cancel(&mut self, id: u32) {
        self.by_id.remove(&id);
    }

    /// Drops what `instance` has open (it goes, or its check outside any room ended).
    pub(in crate::js) fn forget(&mut self, instance: InstanceId) {
        if !self.by_id.is_empty() {
            self.by_id.retain(|_, f| f.instance != instance);
        }
    }

    /// What the request or a read of fetch `id` came to: a body to read on is put back
    /// between reads (dropped if the fetch was cancelled meanwhile); at its end, or at an
    /// error, the fetch is done.
    fn settle<T>(
        &mut self,
        id: u32,
        got: Result<(T, Option<BodyParts>), String>,
    ) -> Result<T, String> {
        match got {
            Ok((value, Some(body))) => {
                if let Some(f) = self.by_id.get_mut(&id) {
                    f.stop = None;
                    f.body = Some(body);
                    f.idle_since = Instant::now();
                }
                Ok(value)
            }
            Ok((value, None)) => {
                self.cancel(id);
                Ok(value)
            }
            Err(e) => {
                self.cancel(id);
                Err(e)
            }
        }
    }

    /// Takes fetch `id`'s body for a read, with what stops the read (its cancel).
    fn take_body(&mut self, id: u32) -> Result<(BodyParts, oneshot::Receiver<()>), &'static str> {
        let f = self
            .by_id
            .get_mut(&id)
            .ok_or("the response body was cancelled, or left unread too long")?;
        let body = f
            .body
            .take()
            .ok_or("a read of this response body is under way")?;
        let (stop, stopped) = oneshot::channel();
        f.stop = Some(stop);
        Ok((body, stopped))
    }
}

/// Drops idle bodies every [`SWEEP_EVERY`] while any fetch of the worker is open.
fn keep_sweeping(shared: &Rc<Shared>) {
    if std::mem::replace(&mut shared.open_fetches.borrow_mut().sweeping, true) {
        return;
    }
    let shared = Rc::downgrade(shared);
    tokio::task::spawn_local(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut open = shared.open_fetches.borrow_mut();
            if !open.sweep() {
                open.sweeping = false;
                return;
            }
        }
    });
}

/// Starts reading `body` ahead of the party, into a queue of at most [`READ_AHEAD`]
/// bytes (a part of more waits for the queue to be empty). The reader ends at the body's
/// end, at an error, or when the queue's receiver goes.
fn read_ahead(mut body: hyper::body::Incoming) -> BodyParts {
    let (queue, parts) = mpsc::unbounded_channel();
    let room = Arc::new(tokio::sync::Semaphore::new(READ_AHEAD));
    let taken = room.clone();
    tokio::task::spawn_local(async move {
        loop {
            let frame = tokio::select! {
                () = queue.closed() => return,
                frame = tokio::time::timeout(FETCH_WAIT, body.frame()) => frame,
            };
            let part = match frame {
                Err(_) => Err(format!(
                    "reading the response: no data for {} s",
                    FETCH_WAIT.as_secs()
                )),
                Ok(None) => return,
                Ok(Some(Err(e))) => Err(format!("reading the response: {e}")),
                // Trailers are not given to the party.
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => Ok(data),
                    _ => continue,
                },
            };
            let failed = part.is_err();
            let size = part.as_ref().map_or(0, |b| b.len().min(READ_AHEAD));
            let size = u32::try_from(size).unwrap_or(u32::MAX);
            let queued = tokio::select! {
                () = queue.closed() => return,
                permit = taken.acquire_many(size) => permit,
            };
            // The reader gives the bytes back once it has them.
            queued.expect("the semaphore is never closed").forget();
            if queue.send(part).is_err() || failed {
                return;
            }
        }
    });
    BodyParts {
        parts,
        room,
        failed: None,
    }
}

/// The body's next bytes, with what else has arrived by then (up to [`READ_AHEAD`]), and
/// whether more may follow. An error after some bytes waits for the next read.
async fn read_some(body: &mut BodyParts) -> Result<(Vec<u8>, bool), String> {
    if let Some(e) = body.failed.take() {
        return Err(e);
    }
    // The reader counted each part as at most READ_AHEAD bytes; what this read takes of
    // them is given back.
    let counted = |part: &Bytes| part.len().min(READ_AHEAD);
    let (mut bytes, mut given) = match body.parts.recv().await {
        None => return Ok((Vec::new(), false)),
        Some(part) => {
            let part = part?;
            (part.to_vec(), counted(&part))
        }
    };
    let mut more = true;
    while bytes.len() < READ_AHEAD {
        match body.parts.try_recv() {
            Ok(Ok(part)) => {
                bytes.extend_from_slice(&part);
                given += counted(&part);
            }
            Ok(Err(e)) => {
                body.failed = Some(e);
                break;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                more = false;
                break;
            }
            Err(mpsc::error::TryRecvError::Empty) => break,
        }
    }
    body.room.add_permits(given);
    Ok((bytes, more))
}

/// Runs `work` until it ends or its fetch is stopped (aborted, its body cancelled, its
/// instance gone).
async fn unless_stopped<T>(
    stopped: oneshot::Receiver<()>,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::select! {
        done = work => done,
        _ = stopped => Err("The operation was aborted".into()),
    }
}

/// The client of one worker's `fetch`es: http, and https verified against the system's
/// certificate authorities and the node's `--js-fetch-ca`.
fn http_client(config: &crate::js::JsConfig) -> Result<HttpClient, String> {
    // Built once by JsEngine::start, which starts every worker.
    let tls = config
        .fetch_tls
        .clone()
        .ok_or("no TLS configuration (the engine builds it at start)")?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(std::sync::Arc::unwrap_or_clone(tls))
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http1_max_buf_size(CLIENT_BUFFER)
            .build(connector),
    )
}

/// Whether `--js-fetch-allow` lets `fetch` reach `uri`.
fn fetch_allowed(allow: &[String], uri: &http::Uri) -> bool {
    let Some(host) = uri.host() else { return false };
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let port = uri.port_u16().unwrap_or(default_port);
    allow.iter().any(|a| {
        a == "*"
            || a.eq_ignore_ascii_case(host)
            || a.eq_ignore_ascii_case(&format!("{host}:{port}"))
    })
}

/// `httpFetch(parts)` → `[id, promise of [status, flat headers]]`;
/// `fetchRead(id)` → a promise of `[the body's next bytes, more]`;
/// `fetchCancel(id)` stops the request or read, and drops the body.
pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    n: &Object<'js>,
    shared: &Rc<Shared>,
    context: &Context,
) -> JsResult<()> {
    let (s, c) = (shared.clone(), context.clone());
    let client: Rc<std::cell::OnceCell<Result<HttpClient, String>>> = Rc::default();
    n.set(
        "httpFetch",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, parts: Array<'js>| {
            let (method, url, headers, body) = request_parts(&ctx, &parts)?;
            let uri: http::Uri = url
                .parse()
                .map_err(|_| Exception::throw_type(&ctx, &format!("fetch: invalid URL {url}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                return Err(Exception::throw_type(
                    &ctx,
                    "fetch: only http:// and https:// URLs can be fetched from a party",
                ));
            }
            if !fetch_allowed(&s.config.fetch_allow, &uri) {
                let host = uri.authority().map_or("", |a| a.as_str());
                return Err(Exception::throw_type(
                    &ctx,
                    &format!("fetch: {host} is not allowed (start the node with --js-fetch-allow {host})"),
                ));
            }
            let mut b = http::Request::builder().method(method.as_str()).uri(uri);
            // A party's own Host would reach another site behind an allowed one (a shared
            // proxy routes by it); fetch forbids it, and the URL's host is sent instead.
            for kv in headers
                .chunks_exact(2)
                .filter(|kv| !kv[0].eq_ignore_ascii_case("host"))
            {
                b = b.header(kv[0].as_str(), kv[1].as_str());
            }
            let req = b
                .body(http_body_util::Full::new(body))
                .map_err(|e| Exception::throw_type(&ctx, &format!("fetch: {e}")))?;
            let instance = s.current.get().ok_or_else(|| {
                Exception::throw_internal(&ctx, "fetch can only be called while a room's code runs")
            })?;
            let client = client
                .get_or_init(|| http_client(&s.config))
                .clone()
                .map_err(|e| Exception::throw_type(&ctx, &format!("fetch: {e}")))?;
            let gate = output_gate(&s, instance);
            let (id, stopped) = s
                .open_fetches
                .borrow_mut()
                .open(instance)
                .map_err(|e| Exception::throw_type(&ctx, &e))?;
            keep_sweeping(&s);
            let opened = s.clone();
            let head = async move {
                through(gate).await?;
                let resp = tokio::time::timeout(FETCH_WAIT, client.request(req))
                    .await
                    .map_err(|_| {
                        format!("fetch failed: no response within {} s", FETCH_WAIT.as_secs())
                    })?
                    .map_err(|e| format!("fetch failed: {}", crate::error_chain(&e)))?;
                let (head, body) = resp.into_parts();
                Ok::<_, String>((head, body))
            };
            let promise = promise_of(
                &ctx,
                &s,
                &c,
                instance,
                false,
                async move {
                    let got = unless_stopped(stopped, head)
                        .await
                        .map(|(head, body)| (head, Some(read_ahead(body))));
                    opened.open_fetches.borrow_mut().settle(id, got)
                },
                |ctx, head| head_value(ctx, &head),
            )?;
            let out = Array::new(ctx.clone())?;
            out.set(0, id)?;
            out.set(1, promise)?;
            Ok(out)
        })?,
    )?;
    let (s, c) = (shared.clone(), context.clone());
    n.set(
        "fetchRead",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, id: u32| {
            let instance = s.current.get().ok_or_else(|| {
                Exception::throw_internal(
                    &ctx,
                    "a response body can only be read while a room's code runs",
                )
            })?;
            let (mut body, stopped) = s
                .open_fetches
                .borrow_mut()
                .take_body(id)
                .map_err(|e| Exception::throw_type(&ctx, e))?;
            let read = s.clone();
            promise_of(
                &ctx,
                &s,
                &c,
                instance,
                false,
                async move {
                    let got = unless_stopped(stopped, read_some(&mut body))
                        .await
                        .map(|(bytes, more)| ((bytes, more), more.then_some(body)));
                    read.open_fetches.borrow_mut().settle(id, got)
                },
                |ctx, (bytes, more)| {
                    let out = Array::new(ctx.clone())?;
                    out.set(0, ArrayBuffer::new_copy(ctx.clone(), bytes)?)?;
                    out.set(1, more)?;
                    Ok(out.into_value())
                },
            )
        })?,
    )?;
    let s = shared.clone();
    n.set(
        "fetchCancel",
        Function::new(ctx.clone(), move |id: u32| {
            s.open_fetches.borrow_mut().cancel(id)
        })?,
    )?;
    Ok(())
}

/// `[status, flat headers]`. A header's bytes are its characters, as fetch reads them (a
/// ByteString): a UTF-8 value comes as its bytes, not as the text they spell.
fn head_value<'a>(ctx: &Ctx<'a>, head: &http::response::Parts) -> JsResult<Value<'a>> {
    let flat = Array::new(ctx.clone())?;
    for (i, (k, v)) in head.headers.iter().enumerate() {
        flat.set(2 * i, k.as_str())?;
        let latin1: String = v.as_bytes().iter().map(|&b| char::from(b)).collect();
        flat.set(2 * i + 1, latin1)?;
    }
    let out = Array::new(ctx.clone())?;
    out.set(0, head.status.as_u16())?;
    out.set(1, flat)?;
    Ok(out.into_value())
}
