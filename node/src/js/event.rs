//! One event of a room as it crosses into JavaScript and back: what the actor asks for
//! (`Event`), what it gets (`Outcome`, `Failure`), and their conversions to and from the
//! values party.js takes and returns.

use super::{InstanceId, PartyId};
use crate::message::Message;
use rquickjs::{Array, ArrayBuffer, CaughtError, Ctx, Value};

/// A connection as an event names it: `key` names the socket on this node.
#[derive(Clone)]
pub(crate) struct ConnRef {
    pub key: String,
    pub id: String,
    pub uri: String,
    pub tags: Vec<String>,
    /// The stored state (party.js's encoding) of a connection that has left the room: the
    /// handlers of its leaving still read it.
    pub departed_state: Option<String>,
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
    /// The static `onFetch(req, lobby, ctx)`: a request outside /parties/.
    Fetch(HttpParts),
    /// A tick of a cron trigger, for the static `onCron`.
    Cron(crate::CronTick),
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
    /// `onRequest` went on after its event, waiting on something other than storage: its
    /// answer arrives here once the later step that gives it has committed.
    AnswerLater(tokio::sync::oneshot::Receiver<crate::message::Response>),
}

/// A value JavaScript threw: its message (what clients may see: a close reason, a
/// response body) and, for logs, its name and stack too.
#[derive(Debug, Clone)]
pub(crate) struct Thrown {
    pub message: String,
    pub trace: String,
    /// The thrown object's numeric `code`, when it is an HTTP status a response may have
    /// (200–599): what PartyKit answers a throwing `onRequest` with.
    pub status: Option<u16>,
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
            status: None,
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
            Thrown {
                message,
                trace,
                status: status_code(ex.as_object()),
            }
        }
        CaughtError::Value(v) => {
            let mut thrown: Thrown = v
                .as_string()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_else(|| format!("{v:?}"))
                .into();
            thrown.status = v.as_object().and_then(status_code);
            thrown
        }
        CaughtError::Error(e) => e.to_string().into(),
    }
}

/// A thrown object's `code`, if it is a status a response may have.
fn status_code(o: &rquickjs::Object<'_>) -> Option<u16> {
    let code: f64 = o.get("code").ok()?;
    (code.fract() == 0.0 && (200.0..=599.0).contains(&code)).then_some(code as u16)
}

pub(super) fn event_kind(e: &Event) -> &'static str {
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
        Event::Fetch(..) => "fetch",
        Event::Cron(..) => "cron",
    }
}

/// `dispatch(handle, kind, conn, a, b, c, d)` for party.js.
pub(super) fn event_args<'js>(
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
            values.push(match &c.departed_state {
                Some(state) => text(state)?,
                None => null(),
            });
        }
        Event::Error { conn, error, gone } => {
            values.push(conn_row(ctx, &conn)?);
            values.push(text(&error)?);
            values.push(Value::new_bool(ctx.clone(), gone));
            values.push(match &conn.departed_state {
                Some(state) => text(state)?,
                None => null(),
            });
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
            push_request(ctx, &mut values, &request)?;
        }
        Event::Fetch(request) => {
            values.push(null());
            values.push(null());
            push_request(ctx, &mut values, &request)?;
        }
        Event::Cron(tick) => {
            values.push(null());
            values.push(text(&tick.name)?);
            values.push(text(&tick.pattern)?);
            values.push(Value::new_number(ctx.clone(), tick.scheduled_ms));
        }
    }
    let mut args = rquickjs::function::Args::new(ctx.clone(), values.len());
    for v in values {
        args.push_arg(v)?;
    }
    Ok(args)
}

/// A request's method, URL and `[flat headers, body]`, as the static handlers take them.
fn push_request<'js>(
    ctx: &Ctx<'js>,
    values: &mut Vec<Value<'js>>,
    request: &HttpParts,
) -> rquickjs::Result<()> {
    let text = |s: &str| -> rquickjs::Result<Value<'js>> {
        Ok(rquickjs::String::from_str(ctx.clone(), s)?.into_value())
    };
    let null = || Value::new_null(ctx.clone());
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
    Ok(())
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

pub(super) fn outcome_of(kind: &str, v: Value<'_>) -> rquickjs::Result<Outcome> {
    match kind {
        "start" => Ok(Outcome::Started {
            hibernate: v.as_bool().unwrap_or(false),
        }),
        "tags" => {
            let ctx = v.ctx().clone();
            Ok(Outcome::Tags(rquickjs::FromJs::from_js(&ctx, v)?))
        }
        // An `onFetch` that returns nothing (party.js: nothing truthy) leaves the request
        // to the 404 page.
        "fetch" if v.is_null() => Ok(Outcome::Done),
        "request" | "fetch" => Ok(Outcome::Response(http_parts(v)?)),
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
