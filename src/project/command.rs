//! `build.command` in partykit.json: a shell command PartyKit runs before it bundles the
//! project (code generation, a front end's own build). It runs before the first bundle of
//! `conclave dev`, `conclave build` and a node's `--project`; `conclave dev` runs it again
//! whenever a file under `build.watch` (by default `src`) changes, as `partykit dev` does.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The command, where it runs, and what `conclave dev` watches to run it again.
#[derive(Debug, Clone)]
pub struct BuildCommand {
    command: String,
    cwd: PathBuf,
    watch: PathBuf,
}

impl BuildCommand {
    /// The project's command in `dir`, if partykit.json has one (`cwd` and `watch` are
    /// relative to the project).
    pub(super) fn new(
        dir: &Path,
        command: Option<&str>,
        cwd: Option<&str>,
        watch: Option<&str>,
    ) -> Option<Self> {
        let command = command?.trim();
        if command.is_empty() {
            return None;
        }
        Some(Self {
            command: command.to_string(),
            cwd: cwd.map_or_else(|| dir.to_path_buf(), |c| dir.join(c)),
            watch: dir.join(watch.unwrap_or("src")),
        })
    }

    /// Runs the command through the shell, its output going where ours goes; fails when
    /// it cannot start or exits with a failure.
    pub fn run(&self) -> anyhow::Result<()> {
        tracing::info!(command = %self.command, "running partykit.json's build.command");
        let status = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .current_dir(&self.cwd)
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

    /// A fingerprint of what `conclave dev` watches to run the command again.
    pub fn watched(&self) -> u64 {
        super::fingerprint(&self.watch, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_runs_in_its_directory_and_a_failure_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("web")).unwrap();
        let writes =
            BuildCommand::new(dir.path(), Some("echo made > out.txt"), Some("web"), None).unwrap();
        writes.run().unwrap();
        let made = std::fs::read_to_string(dir.path().join("web/out.txt")).unwrap();
        assert_eq!(made, "made\n");
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
        let before = c.watched();
        std::fs::write(dir.path().join("elsewhere.txt"), "x").unwrap();
        assert_eq!(c.watched(), before);
        std::fs::write(dir.path().join("src/a.ts"), "x").unwrap();
        assert_ne!(c.watched(), before);
    }
}
