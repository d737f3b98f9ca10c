//! `room.storage` over the room's lent storage: reads as detached plans settled by local
//! tasks, writes buffered at once.

use super::*;

fn storage_error(ctx: &Ctx<'_>, e: impl std::fmt::Display) -> rquickjs::Error {
    Exception::throw_range(ctx, &e.to_string())
}

fn text_or_null<'a>(ctx: &Ctx<'a>, v: Option<Bytes>) -> JsResult<Value<'a>> {
    match v {
        Some(b) => String::from_utf8_lossy(&b).into_owned().into_js(ctx),
        None => Ok(Value::new_null(ctx.clone())),
    }
}

pub(super) fn install<'js>(
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
                    true,
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
                    true,
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
                    true,
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
                true,
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
            let id = s.next_savepoint_id();
            job.savepoints.borrow_mut().insert(id, save);
            job.open_gates();
            Ok::<_, rquickjs::Error>(id)
        })?,
    )?;
    let s = shared.clone();
    n.set(
        "storageRollback",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, h: InstanceId, id: u32| {
            let job = job_of(&ctx, &s, h)?;
            let save = job.savepoints.borrow().get(&id).cloned();
            match save {
                Some(save) => with_lease(&ctx, &s, h, |lease| lease.storage.rollback(save))?,
                None => {
                    return Err(Exception::throw_message(
                        &ctx,
                        "this transaction began in an earlier event of the room, whose writes have committed: it cannot be rolled back",
                    ))
                }
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
