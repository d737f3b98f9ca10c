//! The room and its connections: send, close, broadcast, look up, connection state.

use super::*;
use crate::js::event::{caught_text, outcome_of, Outcome};
use crate::js::party::{response_of, thrown_answer};
use rquickjs::CaughtError;

pub(super) fn install<'js>(ctx: &Ctx<'js>, n: &Object<'js>, shared: &Rc<Shared>) -> JsResult<()> {
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
                        .filter(|e| tag.as_deref().is_none_or(|t| e.has_tag(t)))
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
                    let conns = lease.shared.conns();
                    Ok::<_, rquickjs::Error>(
                        entry_of(&ctx, &conns, &key)?
                            .and_then(|e| e.state())
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
    // The answer of a request whose `onRequest` went on after its event (party.js,
    // `detach`), held in the step that gives it.
    let s = shared.clone();
    n.set(
        "answer",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, id: u32, parts: Value<'js>| {
                let answer = match outcome_of("request", parts) {
                    Ok(Outcome::Response(parts)) => response_of(parts),
                    _ => Err("onRequest did not return a Response".into()),
                };
                let answer = answer.unwrap_or_else(|e| {
                    warn!(error = %e, "onRequest's answer could not be sent");
                    crate::message::text_response(500, "The room failed to handle the request")
                });
                hold_answer(&ctx, &s, h, id, answer)
            },
        )?,
    )?;
    let s = shared.clone();
    n.set(
        "answerThrown",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, h: InstanceId, id: u32, thrown: Value<'js>| {
                let caught = match thrown.as_object().cloned().and_then(Exception::from_object) {
                    Some(e) => CaughtError::Exception(e),
                    None => CaughtError::Value(thrown),
                };
                hold_answer(&ctx, &s, h, id, thrown_answer(caught_text(&caught)))
            },
        )?,
    )?;
    Ok(())
}

/// Holds `answer` to `instance`'s request `id` in the step running now; without one (the
/// room's event ended), the requester hears of a failure.
fn hold_answer(
    ctx: &Ctx<'_>,
    shared: &Shared,
    instance: InstanceId,
    id: u32,
    answer: crate::message::Response,
) -> JsResult<()> {
    let Some(to) = shared.take_answer(instance, id) else {
        return Ok(()); // its requester gave up, or the instance went
    };
    let held = with_lease(ctx, shared, instance, |lease| {
        lease.shared.hold(Box::new(move || {
            let _ = to.send(answer);
        }))
    });
    if held.is_err() {
        warn!("onRequest answered outside any event of its room (a storage call of it outlived its event); its requester gets 500");
    }
    held
}

/// `Room::broadcast`, over the lent room.
fn broadcast(lease: &RoomLease, msg: &Message, without: &[&str]) {
    crate::room::broadcast_to(&lease.shared, &lease.key, msg, without);
}
