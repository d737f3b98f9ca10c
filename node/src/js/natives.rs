//! The functions JavaScript calls into: `globalThis.__native`. Room functions take the
//! instance handle first and act on that room's event in progress; async ones return a
//! promise that a local task settles, waking the event.

use super::worker::{conn_row, ActiveJob, ConnRef, Shared};
use super::InstanceId;
use crate::message::{Message, Request};
use crate::room::{Connection, Peer};
use crate::storage::ListOptions;
use bytes::Bytes;
use conclave_proto::SocketId;
use rquickjs::function::Opt;
use rquickjs::{
    Array, ArrayBuffer, Context, Ctx, Exception, Function, IntoJs, Object, Persistent, Promise,
    Value,
};
use std::future::Future;
use std::rc::Rc;
use tracing::{debug, error, info, warn};

type JsResult<T> = rquickjs::Result<T>;

/// Defines `__native` in the context.
pub(super) fn install<'js>(ctx: &Ctx<'js>, shared: &Rc<Shared>, context: &Context) -> JsResult<()> {
    let n = Object::new(ctx.clone())?;
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
    install_room(ctx, &n, shared)?;
    install_storage(ctx, &n, shared, context)?;
    install_fetch(ctx, &n, shared, context)?;
    install_http_fetch(ctx, &n, shared, context)?;
    ctx.globals().set("__native", n)?;
    Ok(())
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
            return Err(Exception::throw_dom(
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
    f: impl FnOnce(&mut super::worker::RoomLease) -> R,
) -> JsResult<R> {
    let job = job_of(ctx, shared, instance)?;
    let mut lease = job.lease.borrow_mut();
    let lease = lease
        .as_mut()
        .ok_or_else(|| Exception::throw_internal(ctx, "the room's event has ended"))?;
    Ok(f(lease))
}

/// A connection key from party.js: `"<gateway>.<socket>"`.
pub(super) fn peer_key(peer: Peer) -> String {
    format!("{}.{}", peer.gateway, peer.socket.0)
}

fn peer_of(ctx: &Ctx<'_>, key: &str) -> JsResult<Peer> {
    let parsed = key
        .split_once('.')
        .and_then(|(g, s)| Some((g.parse().ok()?, s.parse().ok()?)));
    let (gateway, socket) =
        parsed.ok_or_else(|| Exception::throw_type(ctx, "not a connection of this room"))?;
    Ok(Peer {
        gateway,
        socket: SocketId(socket),
    })
}

pub(super) fn conn_ref(c: &Connection) -> ConnRef {
    ConnRef {
        key: peer_key(c.peer()),
        id: c.id().to_string(),
        uri: c.uri().to_string(),
        tags: c.tags().to_vec(),
    }
}

fn connection(
    ctx: &Ctx<'_>,
    lease: &super::worker::RoomLease,
    key: &str,
) -> JsResult<Option<Connection>> {
    let peer = peer_of(ctx, key)?;
    let conns = lease.shared.conns();
    Ok(conns
        .get(peer)
        .map(|e| Connection::from_entry(e, &lease.shared)))
}

fn install_room<'js>(ctx: &Ctx<'js>, n: &Object<'js>, shared: &Rc<Shared>) -> JsResult<()> {
    let s = shared.clone();
    n.set(
        "send",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, key: String, data: Value<'js>| {
                let msg = message_of(&ctx, &data)?;
                with_lease(&ctx, &s, h, |lease| {
                    if let Some(c) = connection(&ctx, lease, &key)? {
                        c.send(msg);
                    }
                    Ok::<(), rquickjs::Error>(())
                })?
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "close",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, key: String, code: u16, reason: String| {
                with_lease(&ctx, &s, h, |lease| {
                    if let Some(c) = connection(&ctx, lease, &key)? {
                        c.close(code, &reason);
                    }
                    Ok::<(), rquickjs::Error>(())
                })?
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "broadcast",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, data: Value<'js>, without: Vec<String>| {
                let msg = message_of(&ctx, &data)?;
                with_lease(&ctx, &s, h, |lease| {
                    let without: Vec<&str> = without.iter().map(String::as_str).collect();
                    broadcast(lease, &msg, &without);
                })
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "connection",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, id: String| {
                let found = with_lease(&ctx, &s, h, |lease| {
                    let conns = lease.shared.conns();
                    conns
                        .by_id(&id)
                        .map(|e| conn_ref(&Connection::from_entry(e, &lease.shared)))
                })?;
                match found {
                    Some(c) => conn_row(&ctx, &c),
                    None => Ok(Value::new_null(ctx.clone())),
                }
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "connectionByKey",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, key: String| {
                let found = with_lease(&ctx, &s, h, |lease| {
                    connection(&ctx, lease, &key).map(|c| c.as_ref().map(conn_ref))
                })??;
                match found {
                    Some(c) => conn_row(&ctx, &c),
                    None => Ok(Value::new_null(ctx.clone())),
                }
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "connections",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, tag: Option<String>| {
                let refs = with_lease(&ctx, &s, h, |lease| {
                    let conns = lease.shared.conns();
                    conns
                        .iter()
                        .filter(|e| tag.as_deref().is_none_or(|t| e.tags.iter().any(|x| x == t)))
                        .map(|e| conn_ref(&Connection::from_entry(e, &lease.shared)))
                        .collect::<Vec<_>>()
                })?;
                let rows = Array::new(ctx.clone())?;
                for (i, c) in refs.iter().enumerate() {
                    rows.set(i, conn_row(&ctx, c)?)?;
                }
                Ok::<_, rquickjs::Error>(rows)
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "getState",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, key: String| {
                with_lease(&ctx, &s, h, |lease| {
                    let peer = peer_of(&ctx, &key)?;
                    let conns = lease.shared.conns();
                    Ok::<_, rquickjs::Error>(
                        conns
                            .get(peer)
                            .and_then(|e| e.state.as_ref())
                            .and_then(|v| v.as_str().map(str::to_string)),
                    )
                })?
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "setState",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, key: String, state: String| {
                with_lease(&ctx, &s, h, |lease| {
                    if let Some(c) = connection(&ctx, lease, &key)? {
                        c.set_state(&state)
                            .map_err(|e| Exception::throw_range(&ctx, &e.to_string()))?;
                    }
                    Ok::<(), rquickjs::Error>(())
                })?
            },
        )?,
    )?;
    Ok(())
}

/// `Room::broadcast`, over the lent room.
fn broadcast(lease: &super::worker::RoomLease, msg: &Message, without: &[&str]) {
    crate::room::broadcast_to(&lease.shared, &lease.key, msg, without);
}

/// Returns a promise settled by `fut`'s result, turned into a value by `to_js`; the
/// event of `instance` is woken when it settles.
fn promise_of<'js, T: 'static>(
    ctx: &Ctx<'js>,
    shared: &Rc<Shared>,
    context: &Context,
    instance: InstanceId,
    fut: impl Future<Output = Result<T, String>> + 'static,
    to_js: impl for<'a> FnOnce(&Ctx<'a>, T) -> JsResult<Value<'a>> + 'static,
) -> JsResult<Promise<'js>> {
    let (promise, resolve, reject) = ctx.promise()?;
    let resolve = Persistent::save(ctx, resolve);
    let reject = Persistent::save(ctx, reject);
    let (shared, context) = (shared.clone(), context.clone());
    tokio::task::spawn_local(async move {
        let result = fut.await;
        shared.enter(&context, instance, |ctx| {
            let settle = || -> JsResult<()> {
                match result {
                    Ok(v) => {
                        let v = to_js(&ctx, v)?;
                        resolve.restore(&ctx)?.call::<_, ()>((v,))
                    }
                    Err(e) => {
                        let err = Exception::from_message(ctx.clone(), &e)?;
                        reject.restore(&ctx)?.call::<_, ()>((err,))
                    }
                }
            };
            if let Err(e) = settle() {
                warn!(error = %e, "could not settle a promise");
            }
        });
        if let Some(job) = shared.job(instance) {
            job.wake.notify_one();
        }
    });
    Ok(promise)
}

fn storage_error(ctx: &Ctx<'_>, e: impl std::fmt::Display) -> rquickjs::Error {
    Exception::throw_range(ctx, &e.to_string())
}

fn text_or_null<'a>(ctx: &Ctx<'a>, v: Option<Bytes>) -> JsResult<Value<'a>> {
    match v {
        Some(b) => String::from_utf8_lossy(&b).into_owned().into_js(ctx),
        None => Ok(Value::new_null(ctx.clone())),
    }
}

fn install_storage<'js>(
    ctx: &Ctx<'js>,
    n: &Object<'js>,
    shared: &Rc<Shared>,
    context: &Context,
) -> JsResult<()> {
    let (s, c) = (shared.clone(), context.clone());
    n.set(
        "storageGet",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, keys: Vec<String>| {
                let plan = with_lease(&ctx, &s, h, |lease| {
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    lease.storage.read_plan(&keys)
                })?
                .map_err(|e| storage_error(&ctx, e))?;
                promise_of(
                    &ctx,
                    &s,
                    &c,
                    h,
                    async move { plan.run().await.map_err(|e| e.to_string()) },
                    |ctx, values| {
                        let out = Array::new(ctx.clone())?;
                        for (i, v) in values.into_iter().enumerate() {
                            out.set(i, text_or_null(ctx, v)?)?;
                        }
                        Ok(out.into_value())
                    },
                )
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "storagePut",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, flat: Vec<String>| {
                let entries: Vec<(String, Bytes)> = flat
                    .chunks_exact(2)
                    .map(|kv| (kv[0].clone(), Bytes::from(kv[1].clone().into_bytes())))
                    .collect();
                with_lease(&ctx, &s, h, |lease| lease.storage.put_many(entries))?
                    .map_err(|e| storage_error(&ctx, e))
            },
        )?,
    )?;
    let (s, c) = (shared.clone(), context.clone());
    n.set(
        "storageDelete",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, keys: Vec<String>| {
                // What existed is read before the deletes are buffered; they apply at once.
                let plan = with_lease(&ctx, &s, h, |lease| {
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    let plan = lease.storage.read_plan(&keys)?;
                    lease.storage.delete_many(&keys)?;
                    Ok::<_, crate::storage::StorageError>(plan)
                })?
                .map_err(|e| storage_error(&ctx, e))?;
                promise_of(
                    &ctx,
                    &s,
                    &c,
                    h,
                    async move { plan.run().await.map_err(|e| e.to_string()) },
                    |ctx, found| {
                        let n = found.iter().filter(|v| v.is_some()).count();
                        Ok(Value::new_number(ctx.clone(), n as f64))
                    },
                )
            },
        )?,
    )?;
    let (s, c) = (shared.clone(), context.clone());
    n.set(
        "storageList",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, o: Array<'js>| {
                let opts = list_options(&o)?;
                let plan = with_lease(&ctx, &s, h, |lease| lease.storage.list_plan(&opts))?;
                promise_of(
                    &ctx,
                    &s,
                    &c,
                    h,
                    async move { plan.run().await.map_err(|e| e.to_string()) },
                    |ctx, entries| {
                        let out = Array::new(ctx.clone())?;
                        for (i, (k, v)) in entries.into_iter().enumerate() {
                            out.set(2 * i, k)?;
                            out.set(2 * i + 1, text_or_null(ctx, Some(v))?)?;
                        }
                        Ok(out.into_value())
                    },
                )
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "storageDeleteAll",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, h: InstanceId| {
            with_lease(&ctx, &s, h, |lease| lease.storage.delete_all())
        })?,
    )?;
    let (s, c) = (shared.clone(), context.clone());
    n.set(
        "storageGetAlarm",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, h: InstanceId| {
            let plan = with_lease(&ctx, &s, h, |lease| lease.storage.alarm_plan())?;
            promise_of(
                &ctx,
                &s,
                &c,
                h,
                async move { plan.await.map_err(|e| e.to_string()) },
                |ctx, at| {
                    Ok(match at {
                        Some(ms) => Value::new_number(ctx.clone(), ms as f64),
                        None => Value::new_null(ctx.clone()),
                    })
                },
            )
        })?,
    )?;
    let s = shared.clone();
    n.set(
        "storageSetAlarm",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, at: Option<f64>| {
                with_lease(&ctx, &s, h, |lease| match at {
                    Some(ms) => lease.storage.set_alarm(ms as i64),
                    None => lease.storage.delete_alarm(),
                })
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "storageSavepoint",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, h: InstanceId| {
            let job = job_of(&ctx, &s, h)?;
            let save = with_lease(&ctx, &s, h, |lease| lease.storage.savepoint())?;
            let id = job.next_savepoint.get();
            job.next_savepoint.set(id + 1);
            job.savepoints.borrow_mut().insert(id, save);
            Ok::<_, rquickjs::Error>(id)
        })?,
    )?;
    let s = shared.clone();
    n.set(
        "storageRollback",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, h: InstanceId, id: u32| {
            let job = job_of(&ctx, &s, h)?;
            let save = job.savepoints.borrow().get(&id).cloned();
            if let Some(save) = save {
                with_lease(&ctx, &s, h, |lease| lease.storage.rollback(save))?;
            }
            Ok::<_, rquickjs::Error>(())
        })?,
    )?;
    let s = shared.clone();
    n.set(
        "storageForget",
        Function::new(ctx.clone(), move |h: InstanceId, id: u32| {
            if let Some(job) = s.job(h) {
                job.savepoints.borrow_mut().remove(&id);
            }
        })?,
    )?;
    Ok(())
}

/// `[start, startAfter, end, prefix, reverse, limit]` from party.js.
fn list_options(o: &Array<'_>) -> JsResult<ListOptions> {
    let limit: f64 = o.get(5)?;
    Ok(ListOptions {
        start: o.get(0)?,
        start_after: o.get(1)?,
        end: o.get(2)?,
        prefix: o.get(3)?,
        reverse: o.get(4)?,
        limit: (limit >= 0.0).then_some(limit as usize),
    })
}

fn install_fetch<'js>(
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
                let fetcher = with_lease(&ctx, &s, h, |lease| lease.fetcher.clone())?;
                promise_of(
                    &ctx,
                    &s,
                    &c,
                    h,
                    async move {
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

/// `[method, url, flat headers, body bytes or null]` from party.js.
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
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

/// Whether `--js-fetch-allow` lets `fetch` reach `uri`.
fn fetch_allowed(allow: &[String], uri: &http::Uri) -> bool {
    let Some(host) = uri.host() else { return false };
    let port = uri.port_u16().unwrap_or(80);
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
    let client: Rc<std::cell::OnceCell<HttpClient>> = Rc::default();
    n.set(
        "httpFetch",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, parts: Array<'js>| {
            let (method, url, headers, body) = request_parts(&ctx, &parts)?;
            let uri: http::Uri = url
                .parse()
                .map_err(|_| Exception::throw_type(&ctx, &format!("fetch: invalid URL {url}")))?;
            if uri.scheme_str() != Some("http") {
                return Err(Exception::throw_type(
                    &ctx,
                    "fetch: only http:// URLs can be fetched from a party (https is not supported yet)",
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
            for kv in headers.chunks_exact(2) {
                b = b.header(kv[0].as_str(), kv[1].as_str());
            }
            let req = b
                .body(http_body_util::Full::new(body))
                .map_err(|e| Exception::throw_type(&ctx, &format!("fetch: {e}")))?;
            let instance = s.current.get().ok_or_else(|| {
                Exception::throw_internal(&ctx, "fetch can only be called while a room's code runs")
            })?;
            let client = client
                .get_or_init(|| {
                    hyper_util::client::legacy::Client::builder(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .build_http()
                })
                .clone();
            promise_of(
                &ctx,
                &s,
                &c,
                instance,
                async move {
                    let fetched = async {
                        use http_body_util::BodyExt;
                        let resp = client.request(req).await.map_err(|e| e.to_string())?;
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
