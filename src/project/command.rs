//! `build.command` in partykit.json: a shell command PartyKit runs before it bundles the
//! project (code generation, a front end's own build). It runs before the first bundle of
//! `conclave dev`, `conclave build` and a node's `--project`; `conclave dev` runs it again
//! whenever a file under `build.watch` (a path or a list of them, by default `src`)
//! changes, as `partykit dev` does.

use anyhow::{bail, Context as _};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `build.watch`: one path or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum Watched {
    One(String),
    Many(Vec<String>),
}

/// The command, where it runs, and what `conclave dev` watches to run it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCommand {
    command: String,
    cwd: PathBuf,
    watch: Vec<PathBuf>,
}

impl BuildCommand {
    /// The project's command in `dir`, if partykit.json has one (`cwd` and `watch` are
    /// relative to the project).
    pub(super) fn new(
        dir: &Path,
        command: Option<&str>,
        cwd: Option<&str>,
        watch: Option<&Watched>,
    ) -> Option<Self> {
        let command = command?.trim();
        if command.is_empty() {
            return None;
        }
        Some(Self {
            command: command.to_string(),
            cwd: cwd.map_or_else(|| dir.to_path_buf(), |c| dir.join(c)),
            watch: match watch {
                None => vec![dir.join("src")],
                Some(Watched::One(w)) => vec![dir.join(w)],
                Some(Watched::Many(ws)) => ws.iter().map(|w| dir.join(w)).collect(),
            },
        })
    }

    /// Runs the command through the shell, with nothing to read (a prompt fails rather
    /// than waits), its output going to our standard error (our standard output is for
    /// what we say); fails when it cannot start or exits with a failure.
    pub fn run(&self) -> anyhow::Result<()> {
        tracing::info!(command = %self.command, "running partykit.json's build.command");
        let status = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .with_context(|| {
                format!(
                    "cannot run build.command {:?} in {}",
                    self.command,
                    self.cwd.display()
                )
            })?;
        if !status.success() {
            bail!("build.command {:?} failed ({status})", self.command);
        }
        Ok(())
    }

    /// A fingerprint of what `conclave dev` watches to run the command again: each watched
    /// directory's files, or the watched file, but for `skip` (what the client build
    /// wrote, which is no reason to run it).
    pub fn watched(&self, skip: &[super::BuiltFile]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for w in &self.watch {
            super::fingerprint(w, skip).hash(&mut h);
        }
        h.finish()
    }

    /// Warns of watched paths `conclave dev` cannot watch: globs (PartyKit's watcher
    /// takes them; here they name no file).
    pub fn warn_of_globs(&self) {
        for w in &self.watch {
            if w.to_string_lossy().contains(['*', '?', '[', '{']) {
                tracing::warn!(
                    watch = %w.display(),
                    "build.watch: globs are not expanded; name directories or files"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_runs_in_its_directory_reading_nothing_and_a_failure_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("web")).unwrap();
        let writes =
            BuildCommand::new(dir.path(), Some("echo made > out.txt"), Some("web"), None).unwrap();
        writes.run().unwrap();
        let made = std::fs::read_to_string(dir.path().join("web/out.txt")).unwrap();
        assert_eq!(made, "made\n");
        // A command that reads its input gets nothing (and does not wait for it).
        let reads = BuildCommand::new(dir.path(), Some("cat > in.txt"), None, None).unwrap();
        reads.run().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("in.txt")).unwrap(),
            ""
        );
        let fails = BuildCommand::new(dir.path(), Some("exit 3"), None, None).unwrap();
        let err = fails.run().unwrap_err().to_string();
        assert!(err.contains("\"exit 3\" failed"), "{err}");
        assert!(BuildCommand::new(dir.path(), Some("  "), None, None).is_none());
        assert!(BuildCommand::new(dir.path(), None, None, None).is_none());
    }

    #[test]
    fn what_it_watches_is_src_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let c = BuildCommand::new(dir.path(), Some("true"), None, None).unwrap();
        let before = c.watched(&[]);
        std::fs::write(dir.path().join("elsewhere.txt"), "x").unwrap();
        assert_eq!(c.watched(&[]), before);
        std::fs::write(dir.path().join("src/a.ts"), "x").unwrap();
        assert_ne!(c.watched(&[]), before);
        // A list of places, as partykit.json may give, a file among them.
        let many: Watched = serde_json::from_str(r#"["data", "schema.json"]"#).unwrap();
        let c = BuildCommand::new(dir.path(), Some("true"), None, Some(&many)).unwrap();
        let before = c.watched(&[]);
        std::fs::write(dir.path().join("src/b.ts"), "x").unwrap();
        assert_eq!(c.watched(&[]), before);
        std::fs::write(dir.path().join("schema.json"), "{}").unwrap();
        let with_schema = c.watched(&[]);
        assert_ne!(with_schema, before);
        std::fs::write(dir.path().join("schema.json"), "{\"a\": 1}").unwrap();
        assert_ne!(c.watched(&[]), with_schema);
    }
}
