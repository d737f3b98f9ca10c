//! README.md's settings tables, generated from `--help` and the TOML file's fields — one
//! for `conclave dev`, one for the cluster roles' `[cluster]`, `[node]`, `[gateway]` and
//! `[placement]` keys — and the test that keeps the README equal to them. To rewrite the
//! README: `UPDATE_README=1 cargo test -p conclave --lib readme`.

use super::file::{FileCluster, FileConfig, FileGateway, FileLimits, FileNode, FilePlacement};
use super::roles::{DevOpts, GatewayOpts, NodeOpts, PlacementOpts};
use clap::Args;
use conclave_gateway::GatewayConfig;
use serde::de::{self, Deserialize, Deserializer, Visitor};

const START: &str = "<!-- settings table: generated from --help, see src/config/readme.rs -->\n";
const END: &str = "<!-- end of settings table -->";
const CLUSTER_START: &str =
    "<!-- cluster settings table: generated from --help, see src/config/readme.rs -->\n";
const CLUSTER_END: &str = "<!-- end of cluster settings table -->";

/// Top-level TOML keys that are tables: `[limits]` is in the dev table, the role sections
/// in the cluster table, parties and nodes in the README's prose.
const TABLES: [&str; 7] = [
    "limits",
    "parties",
    "nodes",
    "cluster",
    "node",
    "gateway",
    "placement",
];

/// The cluster roles' sections of the TOML file: each key has the flag of its name on the
/// roles that read it.
fn cluster_table() -> String {
    let roles: [(&str, clap::Command); 3] = [
        ("node", NodeOpts::augment_args(clap::Command::new("node"))),
        (
            "gateway",
            GatewayOpts::augment_args(clap::Command::new("gateway")),
        ),
        (
            "placement",
            PlacementOpts::augment_args(clap::Command::new("placement")),
        ),
    ];
    let sections = [
        ("cluster", field_names::<FileCluster>()),
        ("node", field_names::<FileNode>()),
        ("gateway", field_names::<FileGateway>()),
        ("placement", field_names::<FilePlacement>()),
    ];
    let mut rows = vec![
        "| TOML key / flag | env | read by | default |".to_string(),
        "| --- | --- | --- | --- |".to_string(),
    ];
    for (section, keys) in sections {
        for key in keys {
            let long = key.replace('_', "-");
            let readers: Vec<_> = roles
                .iter()
                .filter(|(role, _)| section == "cluster" || section == *role)
                .filter_map(|(role, cmd)| {
                    let arg = cmd.get_arguments().find(|a| a.get_long() == Some(&long))?;
                    Some((*role, arg.clone()))
                })
                .collect();
            let (_, arg) = readers
                .first()
                .unwrap_or_else(|| panic!("[{section}] {key} has no flag --{long}"));
            let env = arg
                .get_env()
                .map_or(String::new(), |e| format!("`{}`", e.to_string_lossy()));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let who: Vec<_> = readers.iter().map(|(role, _)| *role).collect();
            rows.push(format!(
                "| `[{section}] {key}` / `--{long}` | {env} | {} | {} |",
                who.join(", "),
                cell(default_in(&help))
            ));
        }
    }
    rows.join("\n") + "\n"
}

/// The defaults of the TOML keys that have no flag.
fn file_only_default(key: &str) -> Option<String> {
    match key {
        "max_http_body_bytes" => Some(GatewayConfig::default().max_http_body_bytes.to_string()),
        _ => None,
    }
}

/// The table: every `conclave dev` flag with its TOML key, environment variable and
/// default, then the TOML keys without a flag.
fn settings_table() -> String {
    let top = field_names::<FileConfig>();
    let limits = field_names::<FileLimits>();
    let mut rows = vec![
        "| setting (flag / TOML) | env | default |".to_string(),
        "| --- | --- | --- |".to_string(),
    ];
    let mut flagged = Vec::new();
    for arg in DevOpts::augment_args(clap::Command::new("dev")).get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let key = long.replace('-', "_");
        let toml = if limits.contains(&key.as_str()) {
            format!(" / `limits.{key}`")
        } else if top.contains(&key.as_str()) {
            format!(" / `{key}`")
        } else {
            String::new()
        };
        let env = arg
            .get_env()
            .map_or(String::new(), |e| format!("`{}`", e.to_string_lossy()));
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        rows.push(format!(
            "| `--{long}`{toml} | {env} | {} |",
            cell(default_in(&help))
        ));
        flagged.push(key);
    }
    for key in top.iter().filter(|k| !TABLES.contains(k)) {
        assert!(
            flagged.contains(&key.to_string()),
            "TOML key {key} has no flag"
        );
    }
    for key in limits.iter().filter(|k| !flagged.contains(&k.to_string())) {
        let default = file_only_default(key)
            .unwrap_or_else(|| panic!("limits.{key} has no flag: give its default here"));
        rows.push(format!("| `limits.{key}` | | {} |", cell(Some(&default))));
    }
    rows.join("\n") + "\n"
}

/// The `X` of a help text ending in ` [default: X]`.
fn default_in(help: &str) -> Option<&str> {
    help.strip_suffix(']')?
        .rsplit_once(" [default: ")
        .map(|(_, d)| d)
}

/// A default as the README shows it: a value in code style, a rule in words.
fn cell(default: Option<&str>) -> String {
    match default {
        None => "—".to_string(),
        Some(d) if d.contains(' ') => d.to_string(),
        Some(d) => format!("`{d}`"),
    }
}

/// The field names of a struct, as serde hands them to its deserializer.
fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// Checks (or, with UPDATE_README, rewrites) the README's table between `start` and `end`.
fn check_table(start: &str, end: &str, table: String) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let (before, rest) = readme
        .split_once(start)
        .unwrap_or_else(|| panic!("README.md lacks the line {start:?}"));
    let (current, after) = rest
        .split_once(end)
        .unwrap_or_else(|| panic!("README.md lacks the line {end:?}"));
    // Blank lines around the table keep the markers out of it in Markdown.
    let table = format!("\n{table}\n");
    if current == table {
        return;
    }
    if std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(path, format!("{before}{start}{table}{end}{after}")).unwrap();
        return;
    }
    panic!(
        "README.md's table after {start:?} is not the one `--help` documents; rewrite it \
         with `UPDATE_README=1 cargo test -p conclave --lib readme`. Expected:\n{table}"
    );
}

/// One test for both tables: two tests rewriting README.md at once would race.
#[test]
fn readme_lists_every_setting_with_its_default() {
    check_table(START, END, settings_table());
    check_table(CLUSTER_START, CLUSTER_END, cluster_table());
}

#[test]
fn help_texts_end_in_their_default() {
    assert_eq!(default_in("Port [default: 1999]"), Some("1999"));
    assert_eq!(default_in("Redis URL"), None);
    assert!(field_names::<FileLimits>().contains(&"max_http_body_bytes"));
}
