//! HTTP out of a party to another room (`room.context.parties…fetch`), and the output
//! gate every request out of a party passes (outside hosts: `outside.rs`).

use super::*;

pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    n: &Object<'js>,
    shared: &Rc<Shared>,
    context: &Context,
) -> JsResult<()> {
    install_room_fetch(ctx, n, shared, context)?;
    super::outside::install(ctx, n, shared, context)
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
pub(super) fn output_gate(shared: &Shared, instance: InstanceId) -> Option<Gate> {
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
pub(super) struct Gate {
    /// The step holding the writes before it released its outputs (dropped: discarded).
    released: tokio::sync::oneshot::Receiver<()>,
    /// Its event came to commit only at its end.
    bypass: tokio::sync::oneshot::Receiver<()>,
}

/// Waits for the gate, if there is one: an error when the writes it waits on were
/// discarded.
pub(super) async fn through(gate: Option<Gate>) -> Result<(), String> {
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

/// `[method, url, flat headers, body bytes or null]` from party.js.
pub(super) fn request_parts<'js>(
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
