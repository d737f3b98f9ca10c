//! JavaScript parties: PartyKit servers (`partykit/server`, class or object API), bundled
//! to one script, run on QuickJS.
//!
//! A [`JsEngine`] owns a few worker threads, each with its own QuickJS runtime and one
//! context per party; every room of a JS party is one server instance in its worker's
//! context (the isolate-sharing model of Cloudflare). The room's actor stays on tokio like
//! any other: a [`JsParty`](party::JsParty) sends each event to its worker with the room's
//! storage lent to it, and gets the storage back with the result, so the storage gate, the
//! output gate, hibernation, alarms, fencing and hand-off are the actor's as for Rust
//! parties. Engine work never runs on the tokio I/O threads, and each event has a CPU
//! budget after which QuickJS interrupts it.
//!
//! - `worker.rs`: the worker threads, and driving one event's promise to its end.
//! - `event.rs`: one event as it crosses into JavaScript and back, and how it can fail.
//! - `shared.rs`: what the natives reach: events in progress, the CPU clock, timers.
//! - `natives.rs`: the functions JavaScript calls into (`__native`).
//! - `party.rs`: the [`Party`](crate::Party) and [`PartyFactory`](crate::PartyFactory)
//!   the actor sees.
//! - `assets.rs`: the project's static files (`serve`), answered outside rooms.
//! - `web.js`, `crypto.js`, `codec.js`, `party.js`: the globals a PartyKit server expects
//!   (`crypto.js`: `crypto.subtle`'s keys, on the natives in `natives/crypto/`), storage
//!   values with structured-clone semantics, and the PartyKit API over the natives.

mod answers;
mod assets;
mod event;
mod loading;
mod natives;
mod party;
mod shared;
mod timers;
mod worker;

pub use assets::StaticAssets;
pub use party::JsPartyFactory;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use worker::Command;

/// Limits of the JavaScript engine.
#[derive(Clone, Debug)]
pub struct JsConfig {
    /// Worker threads, each running QuickJS for the rooms placed on it.
    pub workers: usize,
    /// CPU time one event may take (its handler and everything it awaits); past it, the
    /// handler is interrupted and the room's instance starts afresh.
    pub cpu_budget: Duration,
    /// How long an event of a room may stay open waiting on promises (a handler that holds
    /// its room, or a `blockConcurrencyWhile`); past it, the room's instance starts afresh,
    /// so a handler awaiting what never comes cannot hold its room for good.
    pub wait_limit: Duration,
    /// How long a room's answer to an HTTP request may take (the requester's wait): a
    /// stream body is read into the answer for no longer.
    pub answer_limit: Duration,
    /// Memory one worker's QuickJS runtime may allocate, for all its rooms.
    pub memory_limit: usize,
    /// Hosts (`host` or `host:port`; `*` for any) that `fetch` may reach. Empty: `fetch`
    /// to outside HTTP is off.
    pub fetch_allow: Vec<String>,
    /// A PEM file of certificate authorities `fetch` trusts for https, besides the system's.
    pub fetch_ca: Option<std::path::PathBuf>,
    /// `fetch`'s TLS configuration, built once by [`JsEngine::start`] from the system's
    /// authorities and `fetch_ca`, and shared by every worker.
    pub fetch_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Whether `/__scheduled__?cron=NAME` runs the main party's `onCron` at once, as
    /// PartyKit's dev server does (`conclave dev` only: anyone could call it).
    pub scheduled_route: bool,
}

/// The TLS client configuration of `fetch`: the system's certificate authorities (as
/// `rustls-native-certs` finds them, `SSL_CERT_FILE` included) and those of `extra_ca`.
/// Fails on an `extra_ca` that cannot be read or holds no certificate.
pub fn fetch_tls_config(
    extra_ca: Option<&std::path::Path>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "fetch: a system certificate authority could not be read");
    }
    let (system, _) = roots.add_parsable_certificates(native.certs);
    if system == 0 {
        tracing::warn!(
            "fetch: the system has no certificate authorities (install ca-certificates): \
             https:// fetches trust only --js-fetch-ca's"
        );
    }
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read the certificates in {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        let (_, refused) = roots.add_parsable_certificates(certs);
        if refused > 0 {
            return Err(format!(
                "{refused} certificates of {} are not usable",
                path.display()
            ));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

impl Default for JsConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            // More threads than cores: a room that loops until its CPU budget stops it
            // holds up only the rooms of its own thread.
            workers: cores.clamp(4, 16),
            cpu_budget: Duration::from_millis(1000),
            // A Durable Object's `blockConcurrencyWhile` resets the object after 30 s.
            wait_limit: Duration::from_secs(30),
            // `NodeConfig::fetch_timeout`'s default.
            answer_limit: Duration::from_secs(100),
            memory_limit: 512 * 1024 * 1024,
            fetch_allow: Vec::new(),
            fetch_ca: None,
            fetch_tls: None,
            scheduled_route: false,
        }
    }
}

/// One party's code: a script that leaves the server module in `globalThis.__party`
/// (esbuild `--format=iife --global-name=__party`), and the `room.env` its rooms see.
#[derive(Clone, Debug)]
pub struct PartySource {
    /// The party's name, for logs and errors.
    pub name: String,
    /// Where the script came from (a file name), for stack traces.
    pub origin: String,
    pub script: Arc<str>,
    /// `room.env`, a JSON object.
    pub env: serde_json::Value,
    /// The project's static files (`serve` in partykit.json), if it serves any: the main
    /// party answers requests outside rooms with them, and every party's
    /// `assets.fetch(path)` reads them.
    pub assets: Option<Arc<StaticAssets>>,
    /// The project's cron triggers (`crons` in partykit.json): the main party's `onCron`
    /// runs them.
    pub crons: Arc<[crate::Cron]>,
}

/// What a loaded party's module declares.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartyTraits {
    #[serde(rename = "getConnectionTags")]
    pub connection_tags: bool,
    pub on_before_connect: bool,
    pub on_before_request: bool,
    pub on_fetch: bool,
    pub on_cron: bool,
}

/// Identifies a loaded party across the workers.
pub(crate) type PartyId = u64;
/// One room's server instance.
pub(crate) type InstanceId = u64;

/// The JavaScript engine of a node: worker threads running QuickJS.
pub struct JsEngine {
    workers: Vec<mpsc::UnboundedSender<Command>>,
    config: JsConfig,
    next_party: AtomicU64,
    next_instance: AtomicU64,
    /// Spreads new rooms over the workers.
    next_worker: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
pub enum JsError {
    #[error("party {party}: {error}")]
    Load { party: String, error: String },
    #[error("the JavaScript engine stopped")]
    Stopped,
    #[error("could not start a JavaScript worker: {0}")]
    Start(std::io::Error),
    #[error("fetch's certificate authorities: {0}")]
    FetchCa(String),
}

impl JsEngine {
    /// Starts the worker threads.
    pub fn start(mut config: JsConfig) -> Result<Arc<Self>, JsError> {
        // Once, here: a bad --js-fetch-ca fails the start, not each fetch, and no worker
        // reads the system's certificates on its own thread.
        if config.fetch_tls.is_none() {
            config.fetch_tls =
                Some(fetch_tls_config(config.fetch_ca.as_deref()).map_err(JsError::FetchCa)?);
        }
        let workers = (0..config.workers.max(1))
            .map(|i| worker::spawn(i, config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(JsError::Start)?;
        Ok(Arc::new(Self {
            workers,
            config,
            next_party: AtomicU64::new(1),
            next_instance: AtomicU64::new(1),
            next_worker: AtomicUsize::new(0),
        }))
    }

    pub fn config(&self) -> &JsConfig {
        &self.config
    }

    /// Loads a party's script on every worker. A script that does not evaluate, or does
    /// not export a PartyKit server, is refused with the error.
    pub async fn load(self: &Arc<Self>, source: PartySource) -> Result<JsPartyFactory, JsError> {
        let party = self.next_party.fetch_add(1, Ordering::Relaxed);
        let source = Arc::new(source);
        let mut replies = Vec::new();
        for w in &self.workers {
            let (reply, rx) = oneshot::channel();
            w.send(Command::Load {
                party,
                source: source.clone(),
                reply,
            })
            .map_err(|_| JsError::Stopped)?;
            replies.push(rx);
        }
        let mut traits = PartyTraits::default();
        for rx in replies {
            traits = rx
                .await
                .map_err(|_| JsError::Stopped)?
                .map_err(|error| JsError::Load {
                    party: source.name.clone(),
                    error,
                })?;
        }
        if source.name == "main" && !source.crons.is_empty() && !traits.on_cron {
            tracing::warn!("partykit.json has crons, but the main party has no onCron to run them");
        }
        if traits.on_fetch && source.name != "main" {
            tracing::warn!(
                party = %source.name,
                "static onFetch is only called on the main party, as PartyKit does"
            );
        }
        Ok(JsPartyFactory::new(
            self.clone(),
            party,
            Arc::new(traits),
            source.assets.clone(),
            source.crons.clone(),
        ))
    }

    fn next_instance(&self) -> InstanceId {
        self.next_instance.fetch_add(1, Ordering::Relaxed)
    }

    fn pick_worker(&self) -> usize {
        self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len()
    }

    fn send(&self, worker: usize, cmd: Command) -> bool {
        self.workers[worker].send(cmd).is_ok()
    }
}
