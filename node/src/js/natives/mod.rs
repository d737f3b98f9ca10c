//! The functions JavaScript calls into: `globalThis.__native`. Room functions take the
//! instance handle first and act on that room's event in progress; async ones return a
//! promise that a local task settles, waking the event.

use super::event::{conn_row, ConnRef};
use super::shared::{ActiveJob, Shared};
use super::worker::RoomLease;
use super::{InstanceId, StaticAssets};
use crate::message::{Message, Request};
use crate::room::{ConnEntry, ConnTable, Connection};
use crate::storage::ListOptions;
use bytes::Bytes;
use rquickjs::function::Opt;
use rquickjs::{
    Array, ArrayBuffer, Context, Ctx, Exception, Function, IntoJs, Object, Persistent, Promise,
    Value,
};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use tracing::{debug, error, info, warn};

mod crypto;
mod fetch;
pub(super) mod outside;
mod room;
mod storage;

type JsResult<T> = rquickjs::Result<T>;

/// Defines `__native` in the context of a party whose project serves `assets`.
pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    shared: &Rc<Shared>,
    context: &Context,
    assets: Option<Arc<StaticAssets>>,
) -> JsResult<()> {
    let n = Object::new(ctx.clone())?;
    n.set(
        "asset",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, path: String| {
            asset(&ctx, assets.as_deref(), &path)
        })?,
    )?;
    let s = shared.clone();
    n.set(
        "log",
        Function::new(ctx.clone(), move |level: String, text: String| {
            log(&s, &level, &text);
        })?,
    )?;
    let s = shared.clone();
    n.set(
        "now",
        Function::new(ctx.clone(), move || {
            s.started.elapsed().as_secs_f64() * 1000.0
        })?,
    )?;
    n.set("randomBytes", Function::new(ctx.clone(), random_bytes)?)?;
    n.set("digest", Function::new(ctx.clone(), digest)?)?;
    n.set(
        "utf8Encode",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, s: String| {
            ArrayBuffer::new(ctx, s.into_bytes())
        })?,
    )?;
    n.set("utf8Decode", Function::new(ctx.clone(), utf8_decode)?)?;
    let (s, c) = (shared.clone(), context.clone());
    n.set(
        "setTimer",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, ms: f64, repeat: bool| {
            let delay = std::time::Duration::from_secs_f64((ms.max(0.0)) / 1000.0);
            s.set_timer(&c, delay, repeat).ok_or_else(|| {
                Exception::throw_internal(&ctx, "timers can only be set while a room's code runs")
            })
        })?,
    )?;
    let s = shared.clone();
    n.set(
        "clearTimer",
        Function::new(ctx.clone(), move |id: u32| s.clear_timer(id))?,
    )?;
    let s = shared.clone();
    n.set(
        "hold",
        Function::new(ctx.clone(), move |h: InstanceId, on: bool| s.hold(h, on))?,
    )?;
    crypto::install(ctx, &n)?;
    room::install(ctx, &n, shared)?;
    storage::install(ctx, &n, shared, context)?;
    fetch::install(ctx, &n, shared, context)?;
    ctx.globals().set("__native", n)?;
    Ok(())
}

/// `assets.fetch(path)`: the file as `[status, flat headers, bytes]`, or null.
fn asset<'js>(ctx: &Ctx<'js>, assets: Option<&StaticAssets>, path: &str) -> JsResult<Value<'js>> {
    let Some(resp) = assets.and_then(|a| a.fetch(path)) else {
        return Ok(Value::new_null(ctx.clone()));
    };
    let headers = Array::new(ctx.clone())?;
    for (i, (name, value)) in resp.headers().iter().enumerate() {
        headers.set(2 * i, name.as_str())?;
        headers.set(
            2 * i + 1,
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        )?;
    }
    let found = Array::new(ctx.clone())?;
    found.set(0, resp.status().as_u16())?;
    found.set(1, headers)?;
    found.set(2, ArrayBuffer::new_copy(ctx.clone(), resp.body().as_ref())?)?;
    Ok(found.into_value())
}

fn log(shared: &Shared, level: &str, text: &str) {
    let room = shared
        .current
        .get()
        .and_then(|i| shared.job(i))
        .and_then(|j| j.lease.borrow().as_ref().map(|l| l.key.to_string()))
        .unwrap_or_default();
    match level {
        "error" => error!(target: "party", room = %room, "{text}"),
        "warn" => warn!(target: "party", room = %room, "{text}"),
        "debug" => debug!(target: "party", room = %room, "{text}"),
        _ => info!(target: "party", room = %room, "{text}"),
    }
}

fn random_bytes(ctx: Ctx<'_>, n: usize) -> JsResult<ArrayBuffer<'_>> {
    if n > 65536 {
        return Err(Exception::throw_range(
            &ctx,
            "at most 65536 random bytes at once",
        ));
    }
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)
        .map_err(|e| Exception::throw_internal(&ctx, &format!("no randomness: {e}")))?;
    ArrayBuffer::new(ctx, buf)
}

fn digest<'js>(ctx: Ctx<'js>, algorithm: String, data: Value<'js>) -> JsResult<ArrayBuffer<'js>> {
    use sha2::Digest;
    let bytes = bytes_of(&ctx, &data)?;
    let out: Vec<u8> = match algorithm.as_str() {
        "SHA-1" => sha1::Sha1::digest(&bytes).to_vec(),
        "SHA-256" => sha2::Sha256::digest(&bytes).to_vec(),
        "SHA-384" => sha2::Sha384::digest(&bytes).to_vec(),
        "SHA-512" => sha2::Sha512::digest(&bytes).to_vec(),
        other => {
            return Err(dom_exception(
                &ctx,
                "NotSupportedError",
                &format!("Unrecognized algorithm name {other}"),
            ))
        }
    };
    ArrayBuffer::new(ctx, out)
}

fn utf8_decode<'js>(ctx: Ctx<'js>, data: Value<'js>, fatal: Opt<bool>) -> JsResult<String> {
    let bytes = bytes_of(&ctx, &data)?;
    if fatal.0.unwrap_or(false) {
        String::from_utf8(bytes)
            .map_err(|_| Exception::throw_type(&ctx, "The encoded data was not valid utf-8"))
    } else {
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Throws `new DOMException(message, name)` with the context's own DOMException (web.js's:
/// the engine's intrinsic one is not in our contexts, so `Exception::throw_dom` would throw
/// an object without a prototype).
fn dom_exception(ctx: &Ctx<'_>, name: &str, message: &str) -> rquickjs::Error {
    let made = ctx
        .globals()
        .get::<_, rquickjs::Constructor>("DOMException")
        .and_then(|c| c.construct::<_, Value>((message, name)));
    match made {
        Ok(e) => ctx.throw(e),
        Err(e) => e,
    }
}

/// The bytes of an ArrayBuffer (copied).
fn bytes_of<'js>(ctx: &Ctx<'js>, v: &Value<'js>) -> JsResult<Vec<u8>> {
    let buf = ArrayBuffer::from_value(v.clone())
        .ok_or_else(|| Exception::throw_type(ctx, "expected an ArrayBuffer"))?;
    // SAFETY: the bytes are copied at once, before any JavaScript could detach the buffer.
    Ok(unsafe { buf.as_bytes() }
        .map(<[u8]>::to_vec)
        .unwrap_or_default())
}

/// A message from JavaScript: a string, or an ArrayBuffer for binary.
fn message_of<'js>(ctx: &Ctx<'js>, v: &Value<'js>) -> JsResult<Message> {
    if let Some(s) = v.as_string() {
        return Ok(Message::text(s.to_string()?));
    }
    Ok(Message::binary(bytes_of(ctx, v)?))
}

/// The event in progress for `instance`, or a thrown error.
fn job_of(ctx: &Ctx<'_>, shared: &Shared, instance: InstanceId) -> JsResult<Rc<ActiveJob>> {
    shared.job(instance).ok_or_else(|| {
        Exception::throw_internal(
            ctx,
            "this room has no event in progress: room and connection calls must come from a handler, or a promise it awaits",
        )
    })
}

fn with_lease<R>(
    ctx: &Ctx<'_>,
    shared: &Shared,
    instance: InstanceId,
    f: impl FnOnce(&mut RoomLease) -> R,
) -> JsResult<R> {
    let job = job_of(ctx, shared, instance)?;
    let mut lease = job.lease.borrow_mut();
    let lease = lease
        .as_mut()
        .ok_or_else(|| Exception::throw_internal(ctx, "the room's event has ended"))?;
    Ok(f(lease))
}

/// A connection's key in party.js: `"<origin>.<socket>.<id>"`, the socket's identity
/// rather than the link it is on, so that a `Connection` object the party keeps reaches
/// its socket after the gateway re-attached it over a new link (and the room's cache
/// holds one object per socket).
pub(super) fn conn_key(c: &Connection) -> String {
    format!("{:x}.{}.{}", c.origin(), c.socket_id().0, c.id())
}

/// The entry of the connection `key` names, if it is still in the room.
fn entry_of<'a>(ctx: &Ctx<'_>, conns: &'a ConnTable, key: &str) -> JsResult<Option<&'a ConnEntry>> {
    let mut parts = key.splitn(3, '.');
    let parsed = (|| {
        let origin = u64::from_str_radix(parts.next()?, 16).ok()?;
        let socket: u64 = parts.next()?.parse().ok()?;
        Some((origin, socket, parts.next()?))
    })();
    let (origin, socket, id) =
        parsed.ok_or_else(|| Exception::throw_type(ctx, "not a connection of this room"))?;
    Ok(conns.by_identity(id, origin, conclave_proto::SocketId(socket)))
}

pub(super) fn conn_ref(c: &Connection) -> ConnRef {
    ConnRef {
        key: conn_key(c),
        id: c.id().to_string(),
        uri: c.uri().to_string(),
        tags: c.tag_list(),
        departed_state: c
            .departed_state()
            .and_then(|v| v.as_str())
            .map(str::to_string),
    }
}

fn connection(ctx: &Ctx<'_>, lease: &RoomLease, key: &str) -> JsResult<Option<Connection>> {
    let conns = lease.shared.conns();
    Ok(entry_of(ctx, &conns, key)?.map(|e| Connection::from_entry(e, &lease.shared)))
}

/// Returns a promise settled by `fut`'s result, turned into a value by `to_js`; the
/// event of `instance` is woken when it settles. With `event_waits` (storage calls: they
/// settle in moments), the event running when the call is made lasts until it has
/// settled, awaited or not; not for fetches, which may take long or never end (a polling
/// loop would hold every event open).
fn promise_of<'js, T: 'static>(
    ctx: &Ctx<'js>,
    shared: &Rc<Shared>,
    context: &Context,
    instance: InstanceId,
    event_waits: bool,
    fut: impl Future<Output = Result<T, String>> + 'static,
    to_js: impl for<'a> FnOnce(&Ctx<'a>, T) -> JsResult<Value<'a>> + 'static,
) -> JsResult<Promise<'js>> {
    let (promise, resolve, reject) = ctx.promise()?;
    let resolve = Persistent::save(ctx, resolve);
    let reject = Persistent::save(ctx, reject);
    let (shared, context) = (shared.clone(), context.clone());
    // The event waits for this promise to settle (and what it runs then) before it ends.
    let event = shared.job(instance).filter(|_| event_waits);
    let creator = shared.current_job_serial(instance);
    // A fetch: the event's own pending work, and its room's (`Party::busy`) until what it
    // settles has run, in this event or a wake event.
    let in_flight = if event_waits {
        None
    } else {
        shared.fetch_started(instance)
    };
    if let Some(event) = &event {
        event
            .natives_in_flight
            .set(event.natives_in_flight.get() + 1);
    }
    tokio::task::spawn_local(async move {
        let result = fut.await;
        let settle = move |ctx: Ctx<'_>| {
            let _in_flight = in_flight;
            let settled = match result {
                Ok(v) => to_js(&ctx, v).and_then(|v| resolve.restore(&ctx)?.call::<_, ()>((v,))),
                Err(e) => Exception::from_message(ctx.clone(), &e)
                    .and_then(|err| reject.restore(&ctx)?.call::<_, ()>((err,))),
            };
            if let Err(e) = settled {
                warn!(error = %e, "could not settle a promise");
            }
        };
        // While that event lasts it is the instance's job, woken when it has settled; a
        // fetch that outlived its event settles in the room's next one (`Shared::settle`).
        if let Some(event) = &event {
            event
                .natives_in_flight
                .set(event.natives_in_flight.get().saturating_sub(1));
        }
        shared.settle(&context, instance, !event_waits, creator, Box::new(settle));
    });
    Ok(promise)
}
