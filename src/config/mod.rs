//! Settings: command-line flags, then `CONCLAVE_*` environment variables, then the TOML
//! file (`--config`), then defaults (the rule is in `layer.rs`). Each role's clap `*Opts`
//! plus the [`FileConfig`] resolve into the `*Config` the role runs with.
//!
//! Each default is written once: in the `Default` impls of `GatewayConfig`, `NodeConfig`
//! and `LivenessTiming`, or as a `DEFAULT_*` constant next to the options it belongs to.
//! `--help` shows it (`layer::with_default`), and README.md's settings table is generated
//! from `--help` (a test in `readme.rs` keeps the two equal).
//!
//! Files, each using only those before it: `kinds` (party kinds), `file` (the TOML file,
//! the party table),
//! `layer` (the rule), `storage` and `limits` (option groups), `roles` (each role's
//! options and config), `readme` (tests).

mod file;
mod js;
mod kinds;
mod layer;
mod limits;
#[cfg(test)]
mod readme;
mod redact;
mod roles;
mod storage;

pub use file::{
    default_parties, registry_for, FileAuth, FileConfig, FileLimits, FileParty, StorageKind,
};
pub use js::JsOpts;
pub use kinds::PartyKinds;
pub use limits::{GatewayLimitOpts, NodeLimitOpts};
pub use redact::redact;
pub use roles::{
    DevConfig, DevOpts, GatewayOpts, GatewayRoleConfig, ListenOpts, LivenessOpts, NodeOpts,
    NodeRoleConfig, PlacementOpts, PlacementRoleConfig,
};
pub use storage::{StorageOpts, StorageTarget};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "port = 2000\n[limits]\nmax_frame_bytes = 4096\nmessage_burst = 5\n[parties.secure]\nkind = \"chat\"\n[parties.secure.auth]\nalgorithm = \"HS256\"\nsecret = \"x\"\n",
        )
        .unwrap();
        let opts = DevOpts {
            config: Some(path),
            gateway: GatewayLimitOpts {
                max_frame_bytes: Some(2048),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = opts.resolve().unwrap();
        assert_eq!(c.listen.port(), 2000);
        assert_eq!(c.gateway.max_frame_bytes, 2048);
        assert_eq!(c.gateway.message_burst, 5.0);
        assert_eq!(c.gateway.messages_per_second, 100.0);
        assert_eq!(c.parties["secure"].kind, "chat");
        assert_eq!(c.parties["main"].kind, "relay");
        assert!(c.gateway.auth.contains_key("secure"));
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[parties.x]\nkind = \"nope\"\n").unwrap();
        let e = DevOpts {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{e:#}").contains("unknown kind"), "{e:#}");
        std::fs::write(&path, "prot = 1\n").unwrap();
        let e = DevOpts {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{e:#}").contains("unknown field"), "{e:#}");
    }

    /// A party kind of a binary's own (the relay is enough to tell kinds apart).
    type Echo = conclave_node::parties::Relay;

    #[test]
    fn the_file_may_serve_a_binary_s_own_kinds_under_other_names_with_auth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[parties.todo]\nkind = \"echo\"\n[parties.todo.auth]\nalgorithm = \"HS256\"\nsecret = \"x\"\n",
        )
        .unwrap();
        let kinds = PartyKinds::builtin().with::<Echo>("echo");
        let opts = DevOpts {
            config: Some(path.clone()),
            ..Default::default()
        };
        let c = opts.resolve_with(&kinds).unwrap();
        assert_eq!(c.parties["todo"].kind, "echo");
        assert_eq!(
            c.parties["echo"].kind, "echo",
            "an added kind serves its own name"
        );
        assert!(c.gateway.auth.contains_key("todo"));
        let registry = c.registry_with(&kinds);
        for name in ["todo", "echo", "main", "chat"] {
            assert!(registry.get(name).is_some(), "{name} is not served");
        }
        // A binary without the kind refuses the file for anything that runs parties…
        let e = opts.resolve().unwrap_err();
        assert!(format!("{e:#}").contains("unknown kind \"echo\""), "{e:#}");
        // …but a gateway runs none: it takes the file and checks the tokens.
        let gateway = GatewayOpts {
            config: Some(path),
            nodes: vec!["a=http://127.0.0.1:1".into()],
            ..Default::default()
        };
        assert!(gateway.resolve().unwrap().gateway.auth.contains_key("todo"));
    }

    #[test]
    fn the_nodes_of_a_cluster_may_not_keep_rooms_in_separate_embedded_stores() {
        let static_pair = NodeOpts {
            id: Some("a".into()),
            nodes: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let e = static_pair.resolve().unwrap_err();
        assert!(format!("{e:#}").contains("must share one store"), "{e:#}");
        let shared = NodeOpts {
            storage: StorageOpts {
                postgres_url: Some("postgres://x@127.0.0.1/db".into()),
                ..Default::default()
            },
            ..static_pair
        };
        assert!(shared.resolve().is_ok());
        let alone = NodeOpts {
            id: Some("a".into()),
            ..Default::default()
        };
        assert!(alone.resolve().is_ok(), "a single node may use redb");
        let dynamic = NodeOpts {
            redis_url: Some("redis://127.0.0.1:1".into()),
            placement: vec!["http://127.0.0.1:2".into()],
            ..alone
        };
        let e = dynamic.resolve().unwrap_err();
        assert!(format!("{e:#}").contains("must share one store"), "{e:#}");
    }

    #[test]
    fn a_node_of_a_cluster_needs_its_own_id() {
        let anonymous = NodeOpts {
            redis_url: Some("redis://127.0.0.1:1".into()),
            placement: vec!["http://127.0.0.1:2".into()],
            storage: StorageOpts {
                postgres_url: Some("postgres://x@127.0.0.1/db".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = anonymous.resolve().unwrap_err();
        assert!(format!("{e:#}").contains("needs its own --id"), "{e:#}");
        let named = NodeOpts {
            id: Some("a".into()),
            ..anonymous
        };
        assert!(named.resolve().is_ok());
    }
}
