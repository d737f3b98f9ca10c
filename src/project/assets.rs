//! `serve` in partykit.json: the project's static files, and the client code PartyKit
//! builds into them (`serve.build`) with esbuild. They travel in the [`Bundle`](super::Bundle),
//! so every node of a cluster answers them as `conclave dev` does.

use anyhow::{bail, Context as _};
use bytes::Bytes;
use conclave_node::js::StaticAssets;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files above this are left out (with a warning): an answer crosses the relay link of its
/// node whole, between the frames of every room of that node, and every node holds every
/// file in memory.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// All the files together: more fails the build, naming the limit.
const MAX_TOTAL_BYTES: u64 = 128 * 1024 * 1024;

/// `serve`: a directory's path, or the object with it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ServeSection {
    Path(String),
    Options(Box<ServeOptions>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServeOptions {
    path: Option<String>,
    /// Seconds a browser may keep a file without asking again.
    #[serde(rename = "browserTTL")]
    browser_ttl: Option<f64>,
    #[serde(default)]
    single_page_app: bool,
    build: Option<ClientBuild>,
    include: Option<serde_json::Value>,
    exclude: Option<serde_json::Value>,
}

/// `serve.build`: an entry's path, or esbuild's options for the client code.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ClientBuild {
    Entry(String),
    Options(ClientBuildOptions),
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ClientBuildOptions {
    /// None: nothing to build (PartyKit skips the build too).
    entry: Option<Entries>,
    bundle: Option<bool>,
    splitting: Option<bool>,
    outdir: Option<String>,
    minify: Option<bool>,
    format: Option<String>,
    sourcemap: Option<bool>,
    #[serde(default)]
    define: BTreeMap<String, String>,
    #[serde(default)]
    external: Vec<String>,
    #[serde(default)]
    loader: BTreeMap<String, String>,
    #[serde(default)]
    alias: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Entries {
    One(String),
    Many(Vec<String>),
}

/// The served files as a bundle carries them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundledAssets {
    /// The served directory, relative to the project (for logs).
    pub path: String,
    pub single_page_app: bool,
    pub browser_ttl: Option<u64>,
    pub files: Vec<BundledFile>,
    /// The files `serve.build` wrote: `conclave dev` does not rebuild for them.
    #[serde(skip)]
    pub built: Vec<BuiltFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundledFile {
    /// The file's path in the served directory, `/` between its parts.
    pub path: String,
    #[serde(with = "base64_bytes")]
    pub content: Bytes,
}

impl BundledAssets {
    /// Builds the client code (`serve.build`), then reads every file of the served
    /// directory but dot-files and `node_modules`, as PartyKit serves them.
    /// `define`: partykit.json's `define`, which the client build gets too.
    /// `deploy`: built for a cluster (`conclave build`, a node's `--project`), where the
    /// client code is minified unless `minify` says otherwise, as PartyKit's deploy does.
    /// The files the client build wrote are added to `written` at once, even when
    /// reading the directory then fails.
    pub(super) fn collect(
        dir: &Path,
        serve: &ServeSection,
        esbuild: &Path,
        define: &BTreeMap<String, String>,
        deploy: bool,
        written: &mut Vec<BuiltFile>,
    ) -> anyhow::Result<Option<Self>> {
        let default_options;
        let options = match serve {
            ServeSection::Path(path) => {
                default_options = ServeOptions {
                    path: Some(path.clone()),
                    ..Default::default()
                };
                &default_options
            }
            ServeSection::Options(o) => o,
        };
        let Some(path) = &options.path else {
            tracing::warn!("partykit.json's serve has no path: no static files are served");
            return Ok(None);
        };
        for (key, set) in [("include", &options.include), ("exclude", &options.exclude)] {
            if set.is_some() {
                tracing::warn!(
                    "partykit.json's serve.{key} is not supported (nor by PartyKit yet): every file is served"
                );
            }
        }
        let built = match &options.build {
            Some(build) => build_client(dir, path, build, esbuild, define, deploy)?,
            None => Vec::new(),
        };
        written.extend(built.iter().cloned());
        let root = dir.join(path);
        if !root.is_dir() {
            // PartyKit fails to start here; the parties can serve without their site (a
            // front end built by a separate step, not built yet), so this only warns.
            tracing::warn!(
                "partykit.json's serve.path {} is not a directory: no static files are served",
                root.display()
            );
            return Ok(None);
        }
        let files = read_files(&root)?;
        Ok(Some(Self {
            path: path.clone(),
            single_page_app: options.single_page_app,
            browser_ttl: options.browser_ttl.map(|s| s.max(0.0) as u64),
            files,
            built,
        }))
    }

    /// The files as the nodes serve them (sharing the bundle's bytes).
    pub fn to_static(&self) -> StaticAssets {
        StaticAssets::new(
            self.files
                .iter()
                .map(|f| (f.path.clone(), f.content.clone())),
            self.single_page_app,
            self.browser_ttl,
        )
    }

    /// Gives `add` what the bundle's version digests of them: every setting and file.
    pub(super) fn digest_into(&self, add: &mut impl FnMut(&[u8])) {
        add(self.path.as_bytes());
        add(if self.single_page_app { b"spa" } else { b"" });
        add(&self.browser_ttl.map_or(-1, |t| t as i128).to_le_bytes());
        for f in &self.files {
            add(f.path.as_bytes());
            add(&f.content);
        }
    }
}

/// A file the client build wrote: its device and inode (esbuild rewrites its outputs in
/// place), and its canonical path (an inode is used again once its file is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltFile {
    id: (u64, u64),
    path: PathBuf,
}

impl BuiltFile {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            id: file_id(&meta),
            path: path.canonicalize().ok()?,
        })
    }

    /// Whether the file at `path` (with `meta`) is this one.
    pub(super) fn is(&self, path: &Path, meta: &std::fs::Metadata) -> bool {
        self.id == file_id(meta) && path.canonicalize().is_ok_and(|p| p == self.path)
    }
}

fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Runs esbuild over `serve.build`'s entries, as PartyKit builds them: into `outdir` (by
/// default `dist` in the served directory), bundled, split, as ES modules with source maps,
/// minified for a deploy, unless told otherwise. `PARTYKIT_HOST` is `location.host` (the
/// server that served the page) unless `define` says otherwise. Returns the files written.
fn build_client(
    dir: &Path,
    served: &str,
    build: &ClientBuild,
    esbuild: &Path,
    define: &BTreeMap<String, String>,
    deploy: bool,
) -> anyhow::Result<Vec<BuiltFile>> {
    let options = match build {
        ClientBuild::Entry(entry) => ClientBuildOptions {
            entry: Some(Entries::One(entry.clone())),
            ..Default::default()
        },
        ClientBuild::Options(o) => o.clone(),
    };
    let Some(entries) = &options.entry else {
        return Ok(Vec::new());
    };
    let outdir = options
        .outdir
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(served).join("dist"));
    let format = options.format.as_deref().unwrap_or("esm");
    let mut cmd = Command::new(esbuild);
    cmd.current_dir(dir);
    match entries {
        Entries::One(e) => {
            cmd.arg(e);
        }
        Entries::Many(es) => {
            cmd.args(es);
        }
    }
    // In a directory of its own, which no one else can have made.
    let scratch = tempfile::Builder::new()
        .prefix("conclave-client-build")
        .tempdir()
        .context("cannot make a temporary directory for esbuild's metafile")?;
    let metafile = scratch.path().join("meta.json");
    cmd.arg(format!("--metafile={}", metafile.display()));
    cmd.arg(format!("--outdir={}", outdir.display()))
        .arg(format!("--format={format}"))
        .arg("--log-level=warning");
    if options.bundle.unwrap_or(true) {
        cmd.arg("--bundle");
    }
    // esbuild splits ES modules only.
    if options.splitting.unwrap_or(true) && format == "esm" {
        cmd.arg("--splitting");
    }
    if options.minify.unwrap_or(deploy) {
        cmd.arg("--minify");
    }
    if options.sourcemap.unwrap_or(true) {
        cmd.arg("--sourcemap");
    }
    let mut defines = BTreeMap::from([("PARTYKIT_HOST".to_string(), "location.host".to_string())]);
    defines.extend(define.clone());
    defines.extend(options.define);
    for (k, v) in defines {
        cmd.arg(format!("--define:{k}={v}"));
    }
    for e in options.external {
        cmd.arg(format!("--external:{e}"));
    }
    for (ext, loader) in options.loader {
        cmd.arg(format!("--loader:{ext}={loader}"));
    }
    for (from, to) in options.alias {
        cmd.arg(format!("--alias:{from}={to}"));
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", esbuild.display()));
    let written = std::fs::read(&metafile);
    let out = out?;
    let said = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("esbuild failed on serve.build:\n{}", said.trim_end());
    }
    if !said.trim().is_empty() {
        tracing::warn!("esbuild on serve.build:\n{}", said.trim_end());
    }
    // The files it wrote, from its metafile (paths relative to the project).
    #[derive(Deserialize)]
    struct Metafile {
        outputs: BTreeMap<String, serde_json::Value>,
    }
    let meta: Metafile = serde_json::from_slice(&written.context("esbuild wrote no metafile")?)
        .context("esbuild's metafile")?;
    Ok(meta
        .outputs
        .keys()
        .filter_map(|f| BuiltFile::of(&dir.join(f)))
        .collect())
}

/// Every file under `root` but dot-files and `node_modules`, by path relative to it.
fn read_files(root: &Path) -> anyhow::Result<Vec<BundledFile>> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let served = |name: &str| !name.starts_with('.') && name != "node_modules";
    super::walk::walk_files(root, served, |path, meta| {
        let relative = path
            .strip_prefix(root)
            .expect("walked from root")
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if meta.len() > MAX_FILE_BYTES {
            tracing::warn!(
                file = %path.display(),
                bytes = meta.len(),
                "a static file over 4 MiB is not served: serve it from elsewhere"
            );
            return Ok(());
        }
        total += meta.len();
        if total > MAX_TOTAL_BYTES {
            bail!(
                "the served files under {} are over 128 MiB together: serve large files from elsewhere",
                root.display()
            );
        }
        let content =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        files.push(BundledFile {
            path: relative,
            content: content.into(),
        });
        Ok(())
    })?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A file's bytes in the bundle's JSON: base64.
mod base64_bytes {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_but_dot_files_and_node_modules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, text) in [
            ("index.html", "home"),
            ("a/b/deep.txt", "deep"),
            (".env", "secret"),
            (".git/config", "git"),
            ("a/.hidden", "hidden"),
            ("node_modules/x/index.js", "dependency"),
            ("a/node_modules.txt", "a file of that name"),
        ] {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        let files = read_files(root).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/b/deep.txt", "a/node_modules.txt", "index.html"]);
        assert_eq!(files[0].content.as_ref(), b"deep");
    }

    #[test]
    fn serve_takes_a_path_or_its_options_and_passes_over_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("public")).unwrap();
        std::fs::write(dir.path().join("public/index.html"), "home").unwrap();
        let no_esbuild = Path::new("/nonexistent/esbuild");
        let collect = |json: &str| {
            let serve: ServeSection = serde_json::from_str(json).unwrap();
            BundledAssets::collect(
                dir.path(),
                &serve,
                no_esbuild,
                &BTreeMap::new(),
                false,
                &mut Vec::new(),
            )
        };
        let plain = collect(r#""public""#).unwrap().unwrap();
        assert_eq!((plain.files.len(), plain.single_page_app), (1, false));
        let spa = collect(r#"{"path": "public", "singlePageApp": true, "browserTTL": 60}"#)
            .unwrap()
            .unwrap();
        assert_eq!((spa.single_page_app, spa.browser_ttl), (true, Some(60)));
        assert!(collect(r#"{"singlePageApp": true}"#).unwrap().is_none());
        // A directory that is not there (a front end not built yet): no site, no failure.
        assert!(collect(r#""static""#).unwrap().is_none());
        // A build with no entry builds nothing, as on PartyKit.
        let unbuilt = collect(r#"{"path": "public", "build": {"minify": true}}"#).unwrap();
        assert!(unbuilt.unwrap().built.is_empty());
        // A build that cannot run fails the bundle, naming the cause.
        let err = collect(r#"{"path": "public", "build": "src/client.ts"}"#).unwrap_err();
        assert!(format!("{err:#}").contains("cannot run"), "{err:#}");
    }
}
