//! The JavaScript parties a process serves: started from a project or a bundle, and in
//! `conclave dev` rebuilt and reloaded when the project changes (with its
//! `build.command` run again when what it watches changes).

use super::{
    build_command, fingerprint, BuildCommand, BuildFor, BuiltFile, Bundle, PartySourceSpec,
};
use conclave_node::js::{JsConfig, JsEngine, JsPartyFactory};
use conclave_node::PartyRegistry;
use std::path::PathBuf;
use std::sync::Arc;

/// `conclave_js_bundle{project, version}`: 1 for the bundle this process serves, so an
/// operator sees which version each node of a cluster runs.
fn report_version(bundle: &Bundle, value: f64) {
    metrics::gauge!(
        "conclave_js_bundle",
        "project" => bundle.name.clone(),
        "version" => bundle.version.clone()
    )
    .set(value);
}

/// The JavaScript parties a process serves, and what reloading them needs.
pub struct JsParties {
    engine: Arc<JsEngine>,
    pub bundle: Bundle,
    factories: Vec<Arc<JsPartyFactory>>,
}

impl JsParties {
    /// Bundles (or reads) the parties, starts the engine and adds them to `registry`.
    pub async fn start(
        spec: &PartySourceSpec,
        build_for: BuildFor,
        config: JsConfig,
        registry: PartyRegistry,
    ) -> anyhow::Result<(PartyRegistry, Self)> {
        crate::telemetry::metrics(); // installed before the version gauge is set
        let bundle = spec.bundle(build_for)?;
        let engine = JsEngine::start(config)?;
        let (registry, factories) = bundle.serve(&engine, registry).await?;
        tracing::info!(
            project = %bundle.name,
            version = %bundle.version,
            parties = ?bundle.parties.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            "JavaScript parties loaded"
        );
        report_version(&bundle, 1.0);
        Ok((
            registry,
            Self {
                engine,
                bundle,
                factories,
            },
        ))
    }

    pub fn names(&self) -> Vec<String> {
        self.bundle.parties.iter().map(|p| p.name.clone()).collect()
    }

    /// One look at the project, off the async runtime (it walks the tree): its
    /// fingerprint, and its `build.command` with what that watches (an error while
    /// partykit.json does not parse). `None` if the look itself failed.
    async fn look(
        dir: PathBuf,
        skip: Vec<BuiltFile>,
    ) -> Option<(u64, anyhow::Result<(Option<BuildCommand>, Option<u64>)>)> {
        let looked = tokio::task::spawn_blocking(move || {
            let command = build_command(&dir).map(|c| {
                let watched = c.as_ref().map(|c| c.watched(&skip));
                (c, watched)
            });
            (fingerprint(&dir, &skip), command)
        })
        .await;
        looked
            .map_err(|e| tracing::error!("watching the project: {e}"))
            .ok()
    }

    /// Rebuilds the project in `dir` whenever a file changes and switches the rooms to the
    /// new code; a build or load that fails is logged and the previous version serves on.
    pub async fn watch(mut self, dir: PathBuf) {
        // What the client build writes is no change of the project's.
        let mut skip: Vec<BuiltFile> = self
            .bundle
            .assets
            .iter()
            .flat_map(|a| a.built.iter().cloned())
            .collect();
        // `build.command` (which ran before the first bundle) runs again when what it
        // watches changes, or partykit.json changes it: its own output then changes the
        // project, which rebuilds.
        let (mut command, mut command_saw): (Option<BuildCommand>, _) = (None, None);
        let mut seen = 0;
        if let Some((project, named)) = Self::look(dir.clone(), skip.clone()).await {
            seen = project;
            if let Ok((c, watched)) = named {
                (command, command_saw) = (c, watched);
            }
        }
        if let Some(c) = &command {
            c.warn_of_globs();
        }
        // Whether the last run was the second for one change (see below).
        let mut ran_again = false;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let Some((now, named)) = Self::look(dir.clone(), skip.clone()).await else {
                continue;
            };
            // A partykit.json that does not parse (mid-edit) leaves the command as it was.
            if let Ok((now_command, now_watched)) = named {
                let changed = now_command != command || now_watched != command_saw;
                if now_command != command {
                    if let Some(c) = &now_command {
                        c.warn_of_globs();
                    }
                }
                (command, command_saw) = (now_command, now_watched);
                if let (Some(c), true) = (&command, changed) {
                    let (c, run_skip) = (c.clone(), skip.clone());
                    let ran = tokio::task::spawn_blocking(move || (c.run(), c.watched(&run_skip)));
                    match ran.await {
                        Ok((outcome, after)) => {
                            if let Err(e) = outcome {
                                tracing::error!("{e:#}");
                            }
                            // What changed under `watch` while it ran may be its own
                            // output or an edit saved meanwhile: it runs once more then,
                            // so that no edit is lost, and what it wrote there itself
                            // does not run it again after that.
                            if after != now_watched.unwrap_or_default() && !ran_again {
                                ran_again = true;
                            } else {
                                ran_again = false;
                                command_saw = Some(after);
                            }
                        }
                        Err(e) => tracing::error!("build.command: {e}"),
                    }
                    // The next look sees what it wrote, and rebuilds once.
                    continue;
                }
            }
            if now == seen {
                continue;
            }
            seen = now;
            let build_dir = dir.clone();
            let rebuilt = tokio::task::spawn_blocking(move || {
                let mut written = Vec::new();
                let bundle = Bundle::build_noting(&build_dir, BuildFor::Dev, &mut written);
                (bundle, written)
            })
            .await;
            let (outcome, written) = match rebuilt {
                Ok((Ok(b), written)) => (Ok(b), written),
                Ok((Err(e), written)) => (Err(format!("{e:#}")), written),
                Err(e) => (Err(e.to_string()), Vec::new()),
            };
            // What the client build wrote is no change of the project's: all of it after a
            // build, and what a failed one wrote before it failed.
            let bundle = match outcome {
                Ok(b) => {
                    skip = written;
                    b
                }
                Err(e) => {
                    if !written.is_empty() {
                        skip = written;
                    }
                    tracing::error!("rebuild failed; the previous version keeps serving: {e}");
                    continue;
                }
            };
            if bundle.version == self.bundle.version {
                continue;
            }
            let names = self.names();
            match bundle.reload(&self.engine, &self.factories, &names).await {
                Ok(()) => {
                    tracing::info!(version = %bundle.version, "reloaded the project");
                    report_version(&self.bundle, 0.0);
                    report_version(&bundle, 1.0);
                    println!("reloaded {} (version {})", bundle.name, bundle.version);
                    self.bundle = bundle;
                }
                Err(e) => {
                    tracing::error!("reload failed; the previous version keeps serving: {e:#}")
                }
            }
        }
    }
}
