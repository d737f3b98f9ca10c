//! Node.js's built-in modules in a project's bundle: unenv's polyfills, found in the
//! project's `node_modules`, as PartyKit's build maps them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Node.js's built-in modules (`module.builtinModules` of Node.js 20, without `node:`).
#[rustfmt::skip]
const NODE_BUILTINS: &[&str] = &[
    "_http_agent", "_http_client", "_http_common", "_http_incoming", "_http_outgoing",
    "_http_server", "_stream_duplex", "_stream_passthrough", "_stream_readable",
    "_stream_transform", "_stream_wrap", "_stream_writable", "_tls_common", "_tls_wrap",
    "assert", "assert/strict", "async_hooks", "buffer", "child_process", "cluster", "console",
    "constants", "crypto", "dgram", "diagnostics_channel", "dns", "dns/promises", "domain",
    "events", "fs", "fs/promises", "http", "http2", "https", "inspector",
    "inspector/promises", "module", "net", "os", "path", "path/posix", "path/win32",
    "perf_hooks", "process", "punycode", "querystring", "readline", "readline/promises",
    "repl", "stream", "stream/consumers", "stream/promises", "stream/web", "string_decoder",
    "sys", "timers", "timers/promises", "tls", "trace_events", "tty", "url", "util",
    "util/types", "v8", "vm", "wasi", "worker_threads", "zlib",
];

/// The unenv module standing in for a built-in, as unenv's `nodeless` preset (which
/// PartyKit's build uses) maps it: its own module, a sibling for the few that share one,
/// else its mock, whose every property and call gives another mock (nothing happens).
fn unenv_module(unenv: &Path, builtin: &str) -> PathBuf {
    let node = unenv.join("runtime/node");
    let own = node.join(builtin).join("index.mjs");
    if own.is_file() {
        return own;
    }
    match builtin {
        "path/posix" | "path/win32" => node.join("path/index.mjs"),
        "inspector/promises" => node.join("inspector/index.mjs"),
        "sys" => node.join("util/index.mjs"),
        _ => unenv.join("runtime/mock/proxy.mjs"),
    }
}

/// The unenv package with the layout of the versions partykit uses
/// (`runtime/node/<module>/index.mjs`), looked for from the project up: in each
/// `node_modules`, unenv itself, then partykit's own (npm nests it there when another
/// version sits at the top), then the one beside the real partykit (where pnpm keeps it).
/// Every PartyKit project has one, as `partykit` depends on it. The aliases are absolute
/// paths, so the copy need not be the one a bare `unenv` import would find.
pub(super) fn find_unenv(dir: &Path) -> Option<PathBuf> {
    let usable = |unenv: PathBuf| {
        unenv
            .join("runtime/node/buffer/index.mjs")
            .is_file()
            .then_some(unenv)
    };
    let start = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    start.ancestors().find_map(|d| {
        let modules = d.join("node_modules");
        let partykit = modules.join("partykit");
        let beside = partykit
            .canonicalize()
            .ok()
            .and_then(|real| real.parent().map(|p| p.join("unenv")));
        [
            Some(modules.join("unenv")),
            Some(partykit.join("node_modules/unenv")),
            beside,
        ]
        .into_iter()
        .flatten()
        .find_map(usable)
    })
}

/// Whether the npm package `name` is installed at the top of a `node_modules` of the
/// project or a directory above, where npm puts every package unless two versions
/// conflict. (pnpm keeps dependencies of dependencies in its store only: there a package's
/// own polyfill of a built-in is unenv's too.)
fn npm_package_installed(dir: &Path, name: &str) -> bool {
    let start = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    start.ancestors().any(|d| {
        d.join("node_modules")
            .join(name)
            .join("package.json")
            .is_file()
    })
}

/// With unenv, Node.js's built-ins bundle as its modules: `node:<module>` always, a bare
/// `<module>` unless an npm package of that name is installed (`events`, `buffer`,
/// `string_decoder`, … are polyfills the project chose, and bundled before). Aliases are
/// absolute paths, so a `require` and an `import` get the same copy.
pub(super) fn node_builtins(
    cmd: &mut Command,
    dir: &Path,
    project_aliases: &BTreeMap<String, String>,
) {
    let Some(unenv) = find_unenv(dir) else {
        return;
    };
    for builtin in NODE_BUILTINS {
        let target = unenv_module(&unenv, builtin);
        let prefixed = format!("node:{builtin}");
        if !project_aliases.contains_key(&prefixed) {
            cmd.arg(format!("--alias:{prefixed}={}", target.display()));
        }
        let package = builtin.split('/').next().unwrap_or(builtin);
        if !npm_package_installed(dir, package) && !project_aliases.contains_key(*builtin) {
            cmd.arg(format!("--alias:{builtin}={}", target.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    #[test]
    fn unenv_is_found_where_esbuild_or_pnpm_puts_it() {
        // npm: the nearest node_modules/unenv, with partykit's layout.
        let npm = tempfile::tempdir().unwrap();
        let project = npm.path().join("app");
        std::fs::create_dir_all(&project).unwrap();
        assert_eq!(find_unenv(&project), None);
        touch(
            &npm.path()
                .join("node_modules/unenv/runtime/node/buffer/index.mjs"),
        );
        let found = find_unenv(&project).unwrap();
        assert!(found.ends_with("node_modules/unenv"), "{found:?}");
        assert!(unenv_module(&found, "path/posix").ends_with("runtime/node/path/index.mjs"));
        assert!(unenv_module(&found, "repl").ends_with("runtime/mock/proxy.mjs"));
        // A nearer unenv of another layout is passed over for the usable one above.
        touch(&project.join("node_modules/unenv/package.json"));
        assert_eq!(find_unenv(&project), Some(found.clone()));
        // npm nests partykit's own unenv when another version holds the top.
        touch(
            &project.join("node_modules/partykit/node_modules/unenv/runtime/node/buffer/index.mjs"),
        );
        let nested = find_unenv(&project).unwrap();
        assert!(
            nested.ends_with("partykit/node_modules/unenv"),
            "{nested:?}"
        );

        // pnpm: unenv only beside partykit in its store.
        let pnpm = tempfile::tempdir().unwrap();
        let store = pnpm
            .path()
            .join("node_modules/.pnpm/partykit@0.0.115/node_modules");
        touch(&store.join("partykit/package.json"));
        touch(&store.join("unenv/runtime/node/buffer/index.mjs"));
        std::os::unix::fs::symlink(
            store.join("partykit"),
            pnpm.path().join("node_modules/partykit"),
        )
        .unwrap();
        let found = find_unenv(pnpm.path()).unwrap();
        assert!(
            found.ends_with("partykit@0.0.115/node_modules/unenv"),
            "{found:?}"
        );

        assert!(!npm_package_installed(pnpm.path(), "string_decoder"));
        touch(&pnpm.path().join("node_modules/string_decoder/package.json"));
        assert!(npm_package_installed(pnpm.path(), "string_decoder"));
    }
}
