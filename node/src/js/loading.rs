//! Loading a party into a worker: a new QuickJS context with the natives, the web
//! globals, party.js and the party's bundle evaluated in it, and party.js's entry points
//! kept for the worker to call.

use super::event::caught_text;
use super::natives;
use super::shared::Shared;
use super::{PartySource, PartyTraits};
use rquickjs::{CatchResultExt, Context, Ctx, Function, Persistent, Runtime, Value};
use std::rc::Rc;
use std::sync::Arc;

const STREAMS_JS: &str = include_str!("streams.js");
const WEB_JS: &str = include_str!("web.js");
const CRYPTO_JS: &str = include_str!("crypto.js");
const CODEC_JS: &str = include_str!("codec.js");
const PARTY_JS: &str = include_str!("party.js");

/// A party loaded in this worker: its context and the entry points of party.js.
pub(super) struct LoadedParty {
    pub context: Context,
    pub dispatch: Persistent<Function<'static>>,
    pub create: Persistent<Function<'static>>,
    pub destroy: Persistent<Function<'static>>,
    pub detach: Persistent<Function<'static>>,
}

/// Evaluates the globals, party.js and the party's script in a new context of `runtime`.
pub(super) fn load_party(
    runtime: &Runtime,
    shared: &Rc<Shared>,
    source: &Arc<PartySource>,
) -> Result<(LoadedParty, PartyTraits), String> {
    let context = Context::full(runtime).map_err(|e| e.to_string())?;
    let loaded = context.with(|ctx| -> Result<(LoadedParty, PartyTraits), String> {
        natives::install(&ctx, shared, &context, source.assets.clone())
            .map_err(|e| e.to_string())?;
        for (name, code) in [
            ("streams.js", STREAMS_JS),
            ("web.js", WEB_JS),
            ("crypto.js", CRYPTO_JS),
            ("codec.js", CODEC_JS),
            ("party.js", PARTY_JS),
        ] {
            eval_script(&ctx, name, code)?;
        }
        let conclave: rquickjs::Object = ctx
            .globals()
            .get("__conclave")
            .map_err(|e| e.to_string())?;
        let prepare: Function = conclave.get("prepare").map_err(|e| e.to_string())?;
        prepare
            .call::<_, ()>((
                source.name.as_str(),
                source.env.to_string(),
                shared.config.answer_limit.as_millis() as f64,
            ))
            .catch(&ctx)
            .map_err(|e| caught_text(&e).trace)?;
        eval_script(&ctx, &source.origin, &source.script)?;
        let exported: Value = ctx.globals().get("__party").map_err(|e| e.to_string())?;
        if exported.is_undefined() {
            return Err("the script did not define globalThis.__party (bundle it with esbuild --format=iife --global-name=__party)".into());
        }
        let load: Function = conclave.get("load").map_err(|e| e.to_string())?;
        let traits: String = load
            .call((exported,))
            .catch(&ctx)
            .map_err(|e| caught_text(&e).trace)?;
        let traits: PartyTraits =
            serde_json::from_str(&traits).map_err(|e| e.to_string())?;
        let get = |name: &str| -> Result<Persistent<Function<'static>>, String> {
            let f: Function = conclave.get(name).map_err(|e| e.to_string())?;
            Ok(Persistent::save(&ctx, f))
        };
        let loaded = LoadedParty {
            context: context.clone(),
            dispatch: get("dispatch")?,
            create: get("create")?,
            destroy: get("destroy")?,
            detach: get("detach")?,
        };
        Ok((loaded, traits))
    })?;
    Ok(loaded)
}

fn eval_script(ctx: &Ctx<'_>, name: &str, code: &str) -> Result<(), String> {
    let mut opts = rquickjs::context::EvalOptions::default();
    opts.global = true;
    opts.strict = false;
    opts.filename = Some(name.to_string());
    ctx.eval_with_options::<(), _>(code, opts)
        .catch(ctx)
        .map_err(|e| format!("{name}: {}", caught_text(&e).trace))
}
