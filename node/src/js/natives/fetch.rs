//! HTTP out of a party: to another room (`room.context.parties…fetch`) and to allowed
//! outside hosts (`fetch`).

use super::*;

pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    n: &Object<'js>,
    shared: &Rc<Shared>,
    context: &Context,
) -> JsResult<()> {
    install_room_fetch(ctx, n, shared, context)?;
    install_http_fetch(ctx, n, shared, context)
}

fn install_room_fetch<'js>(
    ctx: &Ctx<'js>,
    n: &Object<'js>,
    shared: &Rc<Shared>,
    context: &Context,
) -> JsResult<()> {
    let (s, c) = (shared.clone(), context.clone());
    n.set(
        "fetchRoom",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, party: String, room: String, parts: Array<'js>| {
                let (method, url, headers, body) = request_parts(&ctx, &parts)?;
                let req = build_request(&method, &url, &headers, body)
                    .map_err(|e| Exception::throw_type(&ctx, &e))?;
                let fetcher = room_fetcher(&ctx, &s, h)?;
                let gate = output_gate(&s, h);
                promise_of(
                    &ctx,
                    &s,
                    &c,
                    h,
                    false,
                    async move {
                        through(gate).await?;
                        fetcher
                            .party(&party)
                            .get(&room)
                            .fetch(req)
                            .await
                            .map_err(|e| e.to_string())
                    },
                    |ctx, resp| response_value(ctx, resp.status(), resp.headers(), resp.body()),
                )
            },
        )?,
    )?;
    Ok(())
}

/// A Durable Object's output gate, for a fetch: while writes the event made have not
/// committed, the request waits for them (for the release of the step that holds them),
/// and is not sent when they are discarded. An event that keeps its room to its end
/// commits only then, so its fetches go at once; so do those it held, once it comes to
/// that (a `blockConcurrencyWhile` or a transaction begins), or it would wait on them
/// while they wait on it.
fn output_gate(shared: &Shared, instance: InstanceId) -> Option<Gate> {
    let job = shared.job(instance)?;
    if job.commits_at_end() {
        return None;
    }
    let lease = job.lease.borrow();
    let lease = lease.as_ref()?;
    if !lease.storage.has_pending_writes() {
        return None;
    }
    let (open, released) = tokio::sync::oneshot::channel();
    lease.shared.hold(Box::new(move || {
        let _ = open.send(());
    }));
    let (way, bypass) = tokio::sync::oneshot::channel();
    job.gated.borrow_mut().push(way);
    Some(Gate { released, bypass })
}

/// What a fetch waits on before it is sent ([`output_gate`]).
struct Gate {
    /// The step holding the writes before it released its outputs (dropped: discarded).
    released: tokio::sync::oneshot::Receiver<()>,
    /// Its event came to commit only at its end.
    bypass: tokio::sync::oneshot::Receiver<()>,
}

/// Waits for the gate, if there is one: an error when the writes it waits on were
/// discarded.
async fn through(gate: Option<Gate>) -> Result<(), String> {
    let Some(Gate { released, bypass }) = gate else {
        return Ok(());
    };
    tokio::select! {
        outcome = released => outcome.map_err(|_| {
            "fetch not sent: the room's writes made before it were discarded (the handler failed, or they did not commit)".to_string()
        }),
        // Its event came to commit only at its end. (Once the event ended, this way is
        // closed and the release is what it waits for.)
        Ok(()) = bypass => Ok(()),
    }
}

/// `[method, url, flat headers, body bytes or null]` from party.js.
/// How an event reaches other rooms: a room's event through its lease, a check outside
/// any room (`lobby.parties`) through the node's.
fn room_fetcher(
    ctx: &Ctx<'_>,
    shared: &Shared,
    instance: InstanceId,
) -> JsResult<crate::RoomFetcher> {
    let job = job_of(ctx, shared, instance)?;
    if let Some(lease) = job.lease.borrow().as_ref() {
        return Ok(lease.fetcher.clone());
    }
    job.fetcher
        .clone()
        .ok_or_else(|| Exception::throw_internal(ctx, "no room can be reached from here"))
}

fn request_parts<'js>(
    ctx: &Ctx<'js>,
    parts: &Array<'js>,
) -> JsResult<(String, String, Vec<String>, Bytes)> {
    let body: Value = parts.get(3)?;
    let body = if body.is_null() || body.is_undefined() {
        Bytes::new()
    } else {
        Bytes::from(bytes_of(ctx, &body)?)
    };
    Ok((parts.get(0)?, parts.get(1)?, parts.get(2)?, body))
}

/// `[status, flat headers, body bytes]`, how party.js takes a response.
fn response_value<'a>(
    ctx: &Ctx<'a>,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
) -> JsResult<Value<'a>> {
    let out = Array::new(ctx.clone())?;
    out.set(0, status.as_u16())?;
    let flat = Array::new(ctx.clone())?;
    for (i, (k, v)) in headers.iter().enumerate() {
        flat.set(2 * i, k.as_str())?;
        flat.set(
            2 * i + 1,
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )?;
    }
    out.set(1, flat)?;
    out.set(2, ArrayBuffer::new_copy(ctx.clone(), body)?)?;
    Ok(out.into_value())
}

fn build_request(
    method: &str,
    url: &str,
    headers: &[String],
    body: Bytes,
) -> Result<Request, String> {
    let mut b = http::Request::builder().method(method).uri(url);
    for kv in headers.chunks_exact(2) {
        b = b.header(kv[0].as_str(), kv[1].as_str());
    }
    b.body(body).map_err(|e| e.to_string())
}

/// Largest response body `fetch` reads, and how long a fetch may take.
const FETCH_MAX_BODY: usize = 16 * 1024 * 1024;
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

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

/// `fetch` to outside HTTP (party.js builds the Request and the Response).
fn install_http_fetch<'js>(
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
            promise_of(
                &ctx,
                &s,
                &c,
                instance,
                false,
                async move {
                    through(gate).await?;
                    let fetched = async {
                        use http_body_util::BodyExt;
                        let resp = client.request(req).await.map_err(|e| crate::error_chain(&e))?;
                        let (parts, body) = resp.into_parts();
                        let body = http_body_util::Limited::new(body, FETCH_MAX_BODY)
                            .collect()
                            .await
                            .map_err(|e| format!("reading the response: {e}"))?
                            .to_bytes();
                        Ok::<_, String>((parts, body))
                    };
                    match tokio::time::timeout(FETCH_TIMEOUT, fetched).await {
                        Ok(r) => r.map_err(|e| format!("fetch failed: {e}")),
                        Err(_) => Err("fetch timed out after 30 s".into()),
                    }
                },
                |ctx, (parts, body)| response_value(ctx, parts.status, &parts.headers, &body),
            )
        })?,
    )?;
    Ok(())
}
