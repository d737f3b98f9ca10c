//! `fetch` to allowed outside hosts. A response's body is read as it arrives, one read per
//! pull of its stream in party.js, so a party relays a streamed answer (server-sent
//! events, a model's tokens) as it comes, and memory holds what was read and not pulled,
//! not the whole body. An `AbortSignal` stops a fetch waiting for its response or a read
//! of its body; so does cancelling the body.

use super::fetch::{output_gate, request_parts, response_value, through};
use super::*;
use futures::FutureExt;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a fetch waits for its response's head, and a read for the next bytes of its
/// body (Cloudflare's edge gives an origin 100 s too).
const FETCH_WAIT: Duration = Duration::from_secs(100);
/// A body no read has asked of for this long is dropped, and its connection with it
/// (the party kept the `Response` without reading it to its end).
const BODY_IDLE: Duration = Duration::from_secs(100);
/// Bodies an instance may hold open; past that, the one idle longest is dropped.
const BODIES_PER_INSTANCE: usize = 256;
/// What one read gives at most once it has some bytes: what else has arrived by then.
const READ_AHEAD: usize = 64 * 1024;

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// The fetches of a worker's instances that are waiting for their response's head or
/// have a body still to read, by id (`Shared::open_fetches`). Dropping one stops what
/// waits on it: its `stop` sender goes, and its body with its connection.
#[derive(Default)]
pub(in crate::js) struct OpenFetches {
    by_id: HashMap<u32, OpenFetch>,
    next_id: u32,
}

struct OpenFetch {
    instance: InstanceId,
    /// Held while the request or a read is under way: its dropping stops that.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The body, between reads.
    body: Option<hyper::body::Incoming>,
    /// When a read last gave bytes (or the head came).
    idle_since: Instant,
}

impl OpenFetches {
    /// Registers a fetch of `instance`; returns its id. Bodies left unread past
    /// [`BODY_IDLE`], and the instance's longest idle one past [`BODIES_PER_INSTANCE`],
    /// are dropped.
    fn open(&mut self, instance: InstanceId) -> u32 {
        self.by_id
            .retain(|_, f| f.body.is_none() || f.idle_since.elapsed() < BODY_IDLE);
        let idle_bodies = || {
            self.by_id
                .iter()
                .filter(|(_, f)| f.instance == instance && f.body.is_some())
        };
        if idle_bodies().count() >= BODIES_PER_INSTANCE {
            if let Some(oldest) = idle_bodies()
                .min_by_key(|(_, f)| f.idle_since)
                .map(|(id, _)| *id)
            {
                self.by_id.remove(&oldest);
            }
        }
        let mut id = self.next_id;
        while self.by_id.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        self.by_id.insert(
            id,
            OpenFetch {
                instance,
                stop: None,
                body: None,
                idle_since: Instant::now(),
            },
        );
        id
    }

    /// Stops fetch `id`'s request or read, and drops its body.
    pub(in crate::js) fn cancel(&mut self, id: u32) {
        self.by_id.remove(&id);
    }

    /// Drops what `instance` has open (it goes).
    pub(in crate::js) fn forget(&mut self, instance: InstanceId) {
        self.by_id.retain(|_, f| f.instance != instance);
    }

    /// What stops the work about to begin on fetch `id` (it was cancelled meanwhile: at
    /// once).
    fn stopper(&mut self, id: u32) -> tokio::sync::oneshot::Receiver<()> {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        if let Some(f) = self.by_id.get_mut(&id) {
            f.stop = Some(stop);
        }
        stopped
    }

    /// Puts fetch `id`'s body back between reads; dropped if it was cancelled meanwhile.
    fn put_back(&mut self, id: u32, body: hyper::body::Incoming) {
        if let Some(f) = self.by_id.get_mut(&id) {
            f.stop = None;
            f.body = Some(body);
            f.idle_since = Instant::now();
        }
    }

    /// Takes fetch `id`'s body for a read.
    fn take_body(&mut self, id: u32) -> Result<hyper::body::Incoming, &'static str> {
        let f = self
            .by_id
            .get_mut(&id)
            .ok_or("the response body was cancelled, or left unread too long")?;
        f.body
            .take()
            .ok_or("a read of this response body is under way")
    }
}

/// What a read of a body gave.
struct Chunk {
    bytes: Vec<u8>,
    /// The body goes on after these bytes.
    more: Option<hyper::body::Incoming>,
}

/// Reads what `body` has ready now, up to [`READ_AHEAD`] bytes, after `bytes`.
fn read_ready(mut body: hyper::body::Incoming, mut bytes: Vec<u8>) -> Result<Chunk, String> {
    while bytes.len() < READ_AHEAD {
        match body.frame().now_or_never() {
            None => break,
            Some(None) => return Ok(Chunk { bytes, more: None }),
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Some(Err(e))) => return Err(format!("reading the response: {e}")),
        }
    }
    Ok(Chunk {
        bytes,
        more: Some(body),
    })
}

/// Waits for the next bytes of `body` (at most [`FETCH_WAIT`]), with what else has
/// arrived by then.
async fn read_some(mut body: hyper::body::Incoming) -> Result<Chunk, String> {
    loop {
        let frame = tokio::time::timeout(FETCH_WAIT, body.frame())
            .await
            .map_err(|_| {
                format!(
                    "reading the response: no data for {} s",
                    FETCH_WAIT.as_secs()
                )
            })?;
        match frame {
            None => {
                return Ok(Chunk {
                    bytes: Vec::new(),
                    more: None,
                })
            }
            Some(Err(e)) => return Err(format!("reading the response: {e}")),
            Some(Ok(frame)) => {
                // Trailers are not given to the party.
                if let Ok(data) = frame.into_data() {
                    return read_ready(body, data.to_vec());
                }
            }
        }
    }
}

/// Runs `work` until it ends or fetch `id` is stopped (aborted, its body cancelled, its
/// instance gone).
async fn unless_stopped<T>(
    stopped: tokio::sync::oneshot::Receiver<()>,
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

/// `httpFetch(parts)` → `[id, promise of [status, flat headers, first bytes, more]]`;
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
            let id = s.open_fetches.borrow_mut().open(instance);
            let stopped = s.open_fetches.borrow_mut().stopper(id);
            let opened = s.clone();
            let head = async move {
                through(gate).await?;
                let resp = tokio::time::timeout(FETCH_WAIT, client.request(req))
                    .await
                    .map_err(|_| format!("fetch failed: no response within {} s", FETCH_WAIT.as_secs()))?
                    .map_err(|e| format!("fetch failed: {}", crate::error_chain(&e)))?;
                let (head, body) = resp.into_parts();
                let chunk = read_ready(body, Vec::new())?;
                Ok::<_, String>((head, chunk))
            };
            let promise = promise_of(
                &ctx,
                &s,
                &c,
                instance,
                false,
                async move {
                    let got = unless_stopped(stopped, head).await;
                    let mut open = opened.open_fetches.borrow_mut();
                    match got {
                        Ok((head, Chunk { bytes, more: Some(body) })) => {
                            open.put_back(id, body);
                            Ok((head, bytes, true))
                        }
                        Ok((head, Chunk { bytes, more: None })) => {
                            open.cancel(id);
                            Ok((head, bytes, false))
                        }
                        Err(e) => {
                            open.cancel(id);
                            Err(e)
                        }
                    }
                },
                |ctx, (head, bytes, more)| {
                    let v = response_value(ctx, head.status, &head.headers, &bytes)?;
                    if let Some(a) = v.as_array() {
                        a.set(3, more)?;
                    }
                    Ok(v)
                },
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
            let body = s
                .open_fetches
                .borrow_mut()
                .take_body(id)
                .map_err(|e| Exception::throw_type(&ctx, e))?;
            let stopped = s.open_fetches.borrow_mut().stopper(id);
            let read = s.clone();
            promise_of(
                &ctx,
                &s,
                &c,
                instance,
                false,
                async move {
                    let got = unless_stopped(stopped, read_some(body)).await;
                    let mut open = read.open_fetches.borrow_mut();
                    match got {
                        Ok(Chunk {
                            bytes,
                            more: Some(body),
                        }) => {
                            open.put_back(id, body);
                            Ok((bytes, true))
                        }
                        Ok(Chunk { bytes, more: None }) => {
                            open.cancel(id);
                            Ok((bytes, false))
                        }
                        Err(e) => {
                            open.cancel(id);
                            Err(e)
                        }
                    }
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
