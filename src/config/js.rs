//! JavaScript parties: where a node gets them (a PartyKit project or a bundle) and the
//! limits of the engine that runs them.

use super::layer::with_default;
use crate::project::PartySourceSpec;
use clap::Args;
use conclave_node::js::JsConfig;
use std::path::PathBuf;
use std::time::Duration;

/// JavaScript parties (`dev`, `node`). Each flag also reads `CONCLAVE_<NAME>`.
#[derive(Args, Debug, Default, Clone)]
pub struct JsOpts {
    /// A PartyKit project directory (with partykit.json): its parties are bundled with
    /// esbuild at start and served next to the built-in ones (`dev` also uses the current
    /// directory when it has a partykit.json, and rebuilds when a file changes)
    #[arg(long, env = "CONCLAVE_PROJECT")]
    pub project: Option<PathBuf>,
    /// A bundle written by `conclave build`, instead of --project: every node of a cluster
    /// runs the same version
    #[arg(long, env = "CONCLAVE_BUNDLE", conflicts_with = "project")]
    pub bundle: Option<PathBuf>,
    #[arg(long, env = "CONCLAVE_JS_WORKERS", help = with_default(
        "Threads running JavaScript parties",
        JsConfig::default().workers,
    ))]
    pub js_workers: Option<usize>,
    #[arg(long, env = "CONCLAVE_JS_CPU_BUDGET_MS", help = with_default(
        "CPU time (ms) one event of a JavaScript party may take before it is interrupted \
         and the room's instance starts afresh",
        JsConfig::default().cpu_budget.as_millis(),
    ))]
    pub js_cpu_budget_ms: Option<u64>,
    #[arg(long, env = "CONCLAVE_JS_WAIT_LIMIT_MS", help = with_default(
        "Time (ms) one event of a JavaScript party may hold its room waiting on promises \
         (a handler that never finishes, a long blockConcurrencyWhile) before the room's \
         instance starts afresh",
        JsConfig::default().wait_limit.as_millis(),
    ))]
    pub js_wait_limit_ms: Option<u64>,
    #[arg(long, env = "CONCLAVE_JS_MEMORY_MB", help = with_default(
        "Memory (MiB) each JavaScript thread may allocate for all its rooms",
        JsConfig::default().memory_limit / (1024 * 1024),
    ))]
    pub js_memory_mb: Option<usize>,
    /// Hosts JavaScript parties may `fetch` (host or host:port, comma separated; `*` for
    /// any); without it, `fetch` to outside HTTP is off
    #[arg(long, env = "CONCLAVE_JS_FETCH_ALLOW", value_delimiter = ',')]
    pub js_fetch_allow: Vec<String>,
    /// A PEM file of certificate authorities that `fetch` trusts for https:// besides the
    /// system's (a private CA)
    #[arg(long, env = "CONCLAVE_JS_FETCH_CA")]
    pub js_fetch_ca: Option<PathBuf>,
}

impl JsOpts {
    /// Where JavaScript parties come from; `dev` falls back to the current directory.
    pub fn source(&self, look_in_current_dir: bool) -> Option<PartySourceSpec> {
        if let Some(b) = &self.bundle {
            return Some(PartySourceSpec::Bundle(b.clone()));
        }
        if let Some(p) = &self.project {
            return Some(PartySourceSpec::Project(p.clone()));
        }
        let here = PathBuf::from(".");
        (look_in_current_dir && here.join("partykit.json").exists())
            .then_some(PartySourceSpec::Project(here))
    }

    pub fn engine_config(&self) -> JsConfig {
        let mut c = JsConfig::default();
        if let Some(w) = self.js_workers {
            c.workers = w.max(1);
        }
        if let Some(ms) = self.js_cpu_budget_ms {
            c.cpu_budget = Duration::from_millis(ms.max(1));
        }
        if let Some(ms) = self.js_wait_limit_ms {
            c.wait_limit = Duration::from_millis(ms.max(1));
        }
        if let Some(mb) = self.js_memory_mb {
            c.memory_limit = mb.max(8) * 1024 * 1024;
        }
        c.fetch_allow = self.js_fetch_allow.clone();
        c.fetch_ca = self.js_fetch_ca.clone();
        c
    }
}
