//! `partykit.json`: the parts of it Conclave reads, and how.

use super::{assets, command};
use anyhow::Context as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The parts of `partykit.json` Conclave reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Manifest {
    #[serde(default)]
    pub name: Option<String>,
    pub main: Option<String>,
    #[serde(default)]
    pub parties: BTreeMap<String, String>,
    #[serde(default)]
    pub vars: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub define: BTreeMap<String, String>,
    #[serde(default)]
    pub build: BuildSection,
    /// In the file's order: of names with the same schedule, the first names its runs.
    #[serde(default, deserialize_with = "in_order")]
    pub crons: Vec<(String, String)>,
    pub serve: Option<assets::ServeSection>,
}

/// An object's entries in the order the file has them.
fn in_order<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of names and cron schedules")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries: Vec<(String, String)> = Vec::new();
            while let Some((name, value)) = map.next_entry::<String, String>()? {
                // A name given twice keeps its place and takes the later value, as
                // JSON.parse has it.
                match entries.iter_mut().find(|(n, _)| *n == name) {
                    Some(entry) => entry.1 = value,
                    None => entries.push((name, value)),
                }
            }
            Ok(entries)
        }
    }
    d.deserialize_map(Entries)
}

/// The crons to run: one per schedule, as Cloudflare runs each distinct schedule once (a
/// tick's `controller.name` is then the first name with it, as PartyKit looks it up).
pub(super) fn distinct_schedules(crons: &[(String, String)]) -> BTreeMap<String, String> {
    let mut kept: Vec<&(String, String)> = Vec::new();
    for cron in crons {
        match kept.iter().find(|(_, pattern)| *pattern == cron.1) {
            Some((first, _)) => tracing::warn!(
                "crons {first:?} and {:?} have the same schedule ({:?}): it runs once, as {first:?}, as on PartyKit",
                cron.0, cron.1
            ),
            None => kept.push(cron),
        }
    }
    kept.into_iter().cloned().collect()
}

/// `build` in `partykit.json`: `alias` (esbuild's, over the built-ins' aliases), and the
/// `command` run before bundling (in `cwd`; again in `conclave dev` when `watch` changes).
#[derive(Debug, Default, Deserialize)]
pub(super) struct BuildSection {
    #[serde(default)]
    pub alias: BTreeMap<String, String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub watch: Option<command::Watched>,
}

pub(super) fn read_manifest(dir: &Path) -> anyhow::Result<(PathBuf, Manifest)> {
    let manifest_path = dir.join("partykit.json");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid partykit.json", manifest_path.display()))?;
    Ok((manifest_path, manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crons_with_the_same_schedule_run_once_named_by_the_first_in_the_file() {
        let manifest: Manifest = serde_json::from_str(
            r#"{"main":"x.ts","crons":{"zeta":"*/5 * * * *","alpha":"*/5 * * * *","beta":"0 * * * *"}}"#,
        )
        .unwrap();
        let kept: Vec<(String, String)> = distinct_schedules(&manifest.crons).into_iter().collect();
        assert_eq!(
            kept,
            [
                ("beta".to_string(), "0 * * * *".to_string()),
                ("zeta".to_string(), "*/5 * * * *".to_string()),
            ]
        );
        let twice: Manifest = serde_json::from_str(
            r#"{"main":"x.ts","crons":{"a":"0 1 * * *","b":"0 2 * * *","a":"0 2 * * *"}}"#,
        )
        .unwrap();
        let kept: Vec<(String, String)> = distinct_schedules(&twice.crons).into_iter().collect();
        assert_eq!(kept, [("a".to_string(), "0 2 * * *".to_string())]);
        let none: Manifest = serde_json::from_str(r#"{"main":"x.ts"}"#).unwrap();
        assert!(none.crons.is_empty());
        let err = serde_json::from_str::<Manifest>(r#"{"main":"x.ts","crons":["* * * * *"]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("an object of names and cron schedules"),
            "{err}"
        );
    }
}
