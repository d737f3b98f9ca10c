//! PartyKit projects: a directory with a `partykit.json`, bundled with esbuild into one
//! versioned [`Bundle`] of JavaScript parties, served by the node's JavaScript engine.
//!
//! `conclave dev` bundles the project at start and again when a file changes;
//! `conclave build` writes the bundle to a file that every node of a cluster loads
//! (`--bundle`), so all of them run the same version.

use anyhow::{bail, Context as _};
use conclave_node::js::{JsEngine, JsPartyFactory, PartySource, StaticAssets};
use conclave_node::PartyRegistry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

mod assets;
mod command;
mod manifest;
mod node_builtins;
mod serving;
mod walk;
pub use assets::{BuiltFile, BundledAssets, BundledFile};
pub use command::BuildCommand;
use manifest::{distinct_schedules, read_manifest, Manifest};
use node_builtins::{find_unenv, node_builtins};
pub use serving::JsParties;
pub use walk::fingerprint;

/// What a project is bundled for: `conclave dev`, or a cluster (`conclave build`, a node's
/// `--project`), whose client code is minified unless partykit.json says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildFor {
    Dev,
    Deploy,
}

/// Every party of a project, bundled: what nodes load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// The project's name in `partykit.json`.
    pub name: String,
    /// A digest of the parties' code and env: nodes of one cluster must agree on it.
    pub version: String,
    pub parties: Vec<BundledParty>,
    /// The project's static files (`serve`), if it serves any.
    #[serde(default)]
    pub assets: Option<BundledAssets>,
    /// The project's cron triggers (`crons`): name, schedule.
    #[serde(default)]
    pub crons: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundledParty {
    pub name: String,
    /// The entry file, relative to the project.
    pub entry: String,
    pub script: String,
    pub env: serde_json::Value,
}

/// Where a node gets its JavaScript parties from.
#[derive(Debug, Clone)]
pub enum PartySourceSpec {
    /// A project directory, bundled at start.
    Project(PathBuf),
    /// A bundle file from `conclave build`.
    Bundle(PathBuf),
}

impl PartySourceSpec {
    /// The bundle: a project's `build.command` run, then its parties bundled; or a
    /// bundle file read.
    pub fn bundle(&self, build_for: BuildFor) -> anyhow::Result<Bundle> {
        match self {
            PartySourceSpec::Project(dir) => {
                if let Some(command) = build_command(dir)? {
                    command.run()?;
                }
                Bundle::build(dir, build_for)
            }
            PartySourceSpec::Bundle(file) => Bundle::read(file),
        }
    }
}

/// The project's `build.command`, if partykit.json has one.
pub fn build_command(dir: &Path) -> anyhow::Result<Option<BuildCommand>> {
    let (_, manifest) = read_manifest(dir)?;
    let b = &manifest.build;
    Ok(BuildCommand::new(
        dir,
        b.command.as_deref(),
        b.cwd.as_deref(),
        b.watch.as_ref(),
    ))
}

impl Bundle {
    /// Bundles every party of the project in `dir` with esbuild (its `build.command` is
    /// the caller's: [`PartySourceSpec::bundle`] runs it first).
    pub fn build(dir: &Path, build_for: BuildFor) -> anyhow::Result<Self> {
        Self::build_noting(dir, build_for, &mut Vec::new())
    }

    /// Like [`Bundle::build`], noting in `written` the files the client build wrote (even
    /// when the bundle then fails).
    pub fn build_noting(
        dir: &Path,
        build_for: BuildFor,
        written: &mut Vec<BuiltFile>,
    ) -> anyhow::Result<Self> {
        let (manifest_path, manifest) = read_manifest(dir)?;
        let Some(main) = &manifest.main else {
            bail!(
                "{}: \"main\" (the main party's file) is missing",
                manifest_path.display()
            );
        };
        let env = serde_json::Value::Object(project_env(dir, &manifest)?);
        for (name, pattern) in &manifest.crons {
            conclave_node::Cron::new(name, pattern).map_err(anyhow::Error::msg)?;
        }
        let esbuild = find_esbuild(dir)?;
        let mut parties = vec![("main".to_string(), main.clone())];
        parties.extend(manifest.parties.clone());
        let mut bundled = Vec::with_capacity(parties.len());
        for (name, entry) in parties {
            let script = run_esbuild(&esbuild, dir, &entry, &manifest)
                .with_context(|| format!("party {name} ({entry})"))?;
            bundled.push(BundledParty {
                name,
                entry,
                script,
                env: env.clone(),
            });
        }
        let assets = match &manifest.serve {
            Some(serve) => BundledAssets::collect(
                dir,
                serve,
                &esbuild,
                &manifest.define,
                build_for == BuildFor::Deploy,
                written,
            )
            .context("serve (the project's static files)")?,
            None => None,
        };
        let name = manifest
            .name
            .clone()
            .unwrap_or_else(|| dir_name(dir).unwrap_or_else(|| "project".into()));
        Ok(Self::versioned(
            name,
            bundled,
            assets,
            distinct_schedules(&manifest.crons),
        ))
    }

    fn versioned(
        name: String,
        parties: Vec<BundledParty>,
        assets: Option<BundledAssets>,
        crons: BTreeMap<String, String>,
    ) -> Self {
        let mut bundle = Self {
            name,
            version: String::new(),
            parties,
            assets,
            crons,
        };
        bundle.version = bundle.digest();
        bundle
    }

    /// A digest of the parties' code and env, the static files and the crons.
    fn digest(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut add = |part: &[u8]| {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        };
        for p in &self.parties {
            for part in [p.name.as_str(), p.script.as_str(), &p.env.to_string()] {
                add(part.as_bytes());
            }
        }
        if let Some(assets) = &self.assets {
            assets.digest_into(&mut add);
        }
        for (name, pattern) in &self.crons {
            add(name.as_bytes());
            add(pattern.as_bytes());
        }
        let digest = h.finalize();
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn read(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the bundle {}", file.display()))?;
        let bundle: Bundle = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bundle from `conclave build`", file.display()))?;
        for (name, pattern) in &bundle.crons {
            conclave_node::Cron::new(name, pattern)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        }
        if bundle.digest() != bundle.version {
            bail!(
                "{}: the bundle's content does not match its version (edited by hand?)",
                file.display()
            );
        }
        Ok(bundle)
    }

    pub fn write(&self, file: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string(self)?;
        std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))
    }

    /// Loads every party into `engine` (a bad script is refused with its error) and adds
    /// them to `registry`, over any party of the same name.
    pub async fn serve(
        &self,
        engine: &Arc<JsEngine>,
        mut registry: PartyRegistry,
    ) -> anyhow::Result<(PartyRegistry, Vec<Arc<JsPartyFactory>>)> {
        let mut factories = Vec::new();
        let assets = self.static_assets().await?;
        for p in &self.parties {
            let factory = Arc::new(engine.load(self.source(p, &assets)).await?);
            registry = registry.with_shared_factory(&p.name, factory.clone());
            factories.push(factory);
        }
        Ok((registry, factories))
    }

    /// Loads the new version of each party into the engine and switches the running
    /// factories to it: each room re-activates on the new code at its next event, without
    /// closing sockets. A party the new bundle lacks keeps its code.
    pub async fn reload(
        &self,
        engine: &Arc<JsEngine>,
        factories: &[Arc<JsPartyFactory>],
        names: &[String],
    ) -> anyhow::Result<()> {
        let mut loaded = Vec::new();
        let assets = self.static_assets().await?;
        for p in &self.parties {
            if let Some(i) = names.iter().position(|n| n == &p.name) {
                loaded.push((i, engine.load(self.source(p, &assets)).await?));
            }
        }
        for (i, fresh) in loaded {
            factories[i].replace_with(&fresh);
        }
        Ok(())
    }

    fn source(&self, p: &BundledParty, assets: &Option<Arc<StaticAssets>>) -> PartySource {
        PartySource {
            name: p.name.clone(),
            origin: p.entry.clone(),
            script: Arc::from(p.script.as_str()),
            env: p.env.clone(),
            assets: assets.clone(),
            crons: self
                .crons
                .iter()
                .filter_map(|(name, pattern)| {
                    // Checked when the bundle was built (or read).
                    conclave_node::Cron::new(name, pattern).ok()
                })
                .collect(),
        }
    }

    /// The static files as the parties serve them: one copy for all of them (their ETags
    /// hashed off the async runtime).
    async fn static_assets(&self) -> anyhow::Result<Option<Arc<StaticAssets>>> {
        let Some(assets) = self.assets.clone() else {
            return Ok(None);
        };
        let served = tokio::task::spawn_blocking(move || assets.to_static()).await?;
        Ok(Some(Arc::new(served)))
    }
}

fn dir_name(dir: &Path) -> Option<String> {
    dir.canonicalize()
        .ok()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// `room.env`: `vars` from partykit.json, then `.env` (`KEY=VALUE` lines) over them.
fn project_env(
    dir: &Path,
    manifest: &Manifest,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut env = manifest.vars.clone();
    let dotenv = dir.join(".env");
    if let Ok(text) = std::fs::read_to_string(&dotenv) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((k, v)) = line.split_once('=') else {
                bail!("{}: not KEY=VALUE: {line}", dotenv.display());
            };
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            env.insert(
                k.trim().to_string(),
                serde_json::Value::String(v.to_string()),
            );
        }
    }
    Ok(env)
}

/// esbuild: `CONCLAVE_ESBUILD`, else `node_modules/.bin/esbuild` in the project or a
/// directory above it, else `esbuild` on the PATH.
fn find_esbuild(dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("CONCLAVE_ESBUILD") {
        return Ok(PathBuf::from(p));
    }
    let start = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    for d in start.ancestors() {
        let candidate = d.join("node_modules/.bin/esbuild");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("esbuild"))
            .find(|p| p.exists())
    });
    on_path.context(
        "esbuild was not found: install it in the project (`npm install --save-dev esbuild`), \
         put it on the PATH, or set CONCLAVE_ESBUILD",
    )
}

/// Bundles one entry file into a script that leaves its module in `globalThis.__party`.
fn run_esbuild(
    esbuild: &Path,
    dir: &Path,
    entry: &str,
    manifest: &Manifest,
) -> anyhow::Result<String> {
    let mut cmd = Command::new(esbuild);
    let aliases = &manifest.build.alias;
    node_builtins(&mut cmd, dir, aliases);
    for (from, to) in aliases {
        cmd.arg(format!("--alias:{from}={to}"));
    }
    cmd.current_dir(dir).arg(entry).args([
        "--bundle",
        "--format=iife",
        "--global-name=__party",
        "--platform=neutral",
        "--target=es2022",
        "--conditions=partykit,workerd,worker,browser",
        "--main-fields=browser,module,main",
        "--log-level=warning",
        "--charset=utf8",
    ]);
    for (k, v) in &manifest.define {
        cmd.arg(format!("--define:{k}={v}"));
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", esbuild.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("built into node") && find_unenv(dir).is_none() {
            "\n(Node.js built-ins bundle as unenv's polyfills, and no unenv with its \
             runtime/node modules is in the project's node_modules: the `partykit` package \
             brings one, `npm install --save-dev partykit`)"
        } else {
            ""
        };
        bail!("esbuild failed:\n{}{hint}", stderr.trim_end());
    }
    String::from_utf8(out.stdout).context("esbuild's output is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(name: &str, script: &str) -> BundledParty {
        BundledParty {
            name: name.into(),
            entry: format!("src/{name}.ts"),
            script: script.into(),
            env: serde_json::json!({"A": "1"}),
        }
    }

    #[test]
    fn env_is_vars_then_dotenv_over_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "# comment\nA=from-dotenv\nexport B=\"quoted\"\nC='single'\n\n",
        )
        .unwrap();
        let manifest: Manifest =
            serde_json::from_str(r#"{"main":"x.ts","vars":{"A":"from-vars","D":4}}"#).unwrap();
        let env = project_env(dir.path(), &manifest).unwrap();
        assert_eq!(
            serde_json::Value::Object(env),
            serde_json::json!({"A": "from-dotenv", "B": "quoted", "C": "single", "D": 4})
        );
        std::fs::write(dir.path().join(".env"), "not a pair\n").unwrap();
        let err = project_env(dir.path(), &manifest).unwrap_err().to_string();
        assert!(err.contains("not KEY=VALUE"), "{err}");
    }

    #[test]
    fn a_bundle_version_follows_its_content_and_a_tampered_file_is_refused() {
        let one = Bundle::versioned(
            "app".into(),
            vec![party("main", "a")],
            None,
            BTreeMap::new(),
        );
        let same = Bundle::versioned(
            "app".into(),
            vec![party("main", "a")],
            None,
            BTreeMap::new(),
        );
        let other = Bundle::versioned(
            "app".into(),
            vec![party("main", "b")],
            None,
            BTreeMap::new(),
        );
        assert_eq!(one.version, same.version);
        assert_ne!(one.version, other.version);
        assert_eq!(one.version.len(), 12);
        // The static files are part of the version, and cross a bundle file whole.
        let served = |page: &'static [u8]| {
            let assets = BundledAssets {
                path: "public".into(),
                single_page_app: false,
                browser_ttl: None,
                files: vec![BundledFile {
                    path: "index.html".into(),
                    content: bytes::Bytes::from_static(page),
                }],
                built: Vec::new(),
            };
            Bundle::versioned(
                "app".into(),
                vec![party("main", "a")],
                Some(assets),
                BTreeMap::new(),
            )
        };
        let page = served(b"<h1>\xff</h1>");
        assert_ne!(page.version, one.version);
        assert_ne!(page.version, served(b"<h2></h2>").version);
        let nightly = BTreeMap::from([("nightly".to_string(), "0 3 * * *".to_string())]);
        let cron = Bundle::versioned("app".into(), vec![party("main", "a")], None, nightly);
        assert_ne!(cron.version, one.version);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("page.bundle.json");
        page.write(&file).unwrap();
        let read = Bundle::read(&file).unwrap();
        assert_eq!(read.version, page.version);
        assert_eq!(
            read.assets.unwrap().files[0].content.as_ref(),
            b"<h1>\xff</h1>"
        );
        let file = dir.path().join("app.bundle.json");
        one.write(&file).unwrap();
        assert_eq!(Bundle::read(&file).unwrap().version, one.version);
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("\"a\"", "\"evil\"");
        std::fs::write(&file, text).unwrap();
        let err = Bundle::read(&file).unwrap_err().to_string();
        assert!(err.contains("does not match its version"), "{err}");
    }

    #[test]
    fn a_cron_that_is_no_schedule_fails_the_bundle_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("partykit.json"),
            r#"{"main":"x.ts","crons":{"nightly":"at three"}}"#,
        )
        .unwrap();
        let err = format!(
            "{:#}",
            Bundle::build(dir.path(), BuildFor::Dev).unwrap_err()
        );
        assert!(err.contains("cron nightly"), "{err}");
    }

    #[test]
    fn a_project_without_main_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("partykit.json"), r#"{"name":"x"}"#).unwrap();
        let err = Bundle::build(dir.path(), BuildFor::Dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"main\""), "{err}");
        let err = Bundle::build(&dir.path().join("missing"), BuildFor::Dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
