//! Walking a project's files: what `conclave dev` watches and what `serve` reads.

use super::BuiltFile;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The most times one walk reads a directory it has read already, through another
/// symbolic link: links to links can make a tree look far larger than it is.
pub(super) const MAX_REVISITS: usize = 10_000;

/// Calls `visit` with every regular file under `root` (or with `root`, a file) and its
/// metadata, in a fixed order,
/// following symbolic links (a link to a directory the walk is already inside ends
/// there: no cycles), past the entries whose name `keep` refuses. A directory that
/// cannot be read is passed over; the first error of `visit` ends the walk, as does
/// reading directories again through links more than [`MAX_REVISITS`] times.
pub(super) fn walk_files(
    root: &Path,
    keep: impl Fn(&str) -> bool,
    mut visit: impl FnMut(&Path, &std::fs::Metadata) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if let Some(meta) = std::fs::metadata(root).ok().filter(|m| m.is_file()) {
        return visit(root, &meta);
    }
    // Each directory to walk, with the (canonical) directories it is inside.
    let mut stack: Vec<(PathBuf, Rc<Vec<PathBuf>>)> = vec![(root.to_path_buf(), Rc::default())];
    let mut walked: HashSet<PathBuf> = HashSet::new();
    let mut revisits = 0;
    while let Some((dir, outside)) = stack.pop() {
        let Ok(canonical) = dir.canonicalize() else {
            continue;
        };
        if outside.contains(&canonical) {
            continue;
        }
        if !walked.insert(canonical.clone()) {
            revisits += 1;
            if revisits > MAX_REVISITS {
                anyhow::bail!(
                    "{}: symbolic links lead to the same directories over {MAX_REVISITS} times",
                    root.display()
                );
            }
        }
        let inside = Rc::new(outside.iter().cloned().chain([canonical]).collect());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        let mut dirs = Vec::new();
        for e in entries {
            let name = e.file_name();
            if !keep(&name.to_string_lossy()) {
                continue;
            }
            let path = e.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue; // a dangling link
            };
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() {
                visit(&path, &meta)?;
            }
        }
        // Popped from the end: the first name first.
        stack.extend(dirs.into_iter().rev().map(|d| (d, Rc::clone(&inside))));
    }
    Ok(())
}

/// A fingerprint of the files under `root` (or of `root`, a file): paths, sizes,
/// modification times, outside `node_modules` and dot-directories but `.env`, and but for
/// `skip` (what the client build wrote). When the project's changes, `conclave dev`
/// rebuilds; when what `build.command` watches changes, it runs the command again.
pub fn fingerprint(root: &Path, skip: &[BuiltFile]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let watched = |name: &str| !(name.starts_with('.') && name != ".env" || name == "node_modules");
    let walk = walk_files(root, watched, |path, meta| {
        if !skip.iter().any(|b| b.is(path, meta)) {
            path.hash(&mut h);
            meta.len().hash(&mut h);
            meta.modified().ok().hash(&mut h);
        }
        Ok(())
    });
    if let Err(e) = walk {
        // What was walked still counts; the same each time.
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| tracing::warn!("watching the project: {e:#}"));
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_without_cycles_and_only_regular_files_are_visited() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/file"), "x").unwrap();
        std::fs::write(root.join("top"), "y").unwrap();
        // A link back up, and a link to a sibling directory.
        std::os::unix::fs::symlink(root, root.join("a/up")).unwrap();
        std::os::unix::fs::symlink(root.join("a/b"), root.join("linked")).unwrap();
        std::os::unix::fs::symlink(root.join("missing"), root.join("dangling")).unwrap();
        let fifo = root.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let mut visited = Vec::new();
        walk_files(
            root,
            |_| true,
            |path, _| {
                visited.push(path.strip_prefix(root).unwrap().to_path_buf());
                Ok(())
            },
        )
        .unwrap();
        let visited: Vec<&str> = visited.iter().map(|p| p.to_str().unwrap()).collect();
        // a/b under both of its paths; the link back up ends at once.
        assert_eq!(visited, ["top", "a/b/file", "linked/file"]);
    }
}
