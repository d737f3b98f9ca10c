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
//! `layer` (the rule), `storage`, `limits` and `cluster` (option groups), `roles` (each
//! role's options and config), `readme` (tests).

mod cluster;
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

pub use cluster::{LivenessOpts, SecretOpts};
pub use file::{
    default_parties, registry_for, FileAuth, FileCluster, FileConfig, FileGateway, FileLimits,
    FileNode, FileParty, FilePlacement, StorageKind,
};
pub use js::JsOpts;
pub use kinds::PartyKinds;
pub use limits::{GatewayLimitOpts, NodeLimitOpts};
pub use redact::redact;
pub use roles::{
    DevConfig, DevOpts, GatewayOpts, GatewayRoleConfig, ListenOpts, NodeOpts, NodeRoleConfig,
    PlacementOpts, PlacementRoleConfig,
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

    /// Every cluster setting can come from the one file; flags (and so their variables)
    /// override it.
    #[test]
    fn cluster_settings_come_from_the_file_and_flags_override_them() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "a-secret-of-the-cluster-settings-test").unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                r#"
postgres_url = "postgres://conclave@db/conclave"
[cluster]
region = "eu"
redis_url = "redis://redis:6379"
placement = ["http://placement-1:7300", "http://placement-2:7300"]
cluster_secret_file = "{}"
heartbeat_ms = 400
heartbeat_ttl_ms = 1600
[limits]
room_answer_timeout_ms = 20000
[node]
id = "n1"
advertise_url = "http://n1:7100"
relay_listen = "0.0.0.0:7100"
http_listen = "0.0.0.0:7101"
[gateway]
ops_listen = "0.0.0.0:7400"
drain_delay_ms = 3000
[placement]
listen = "0.0.0.0:7300"
http_listen = "0.0.0.0:7301"
"#,
                secret.display()
            ),
        )
        .unwrap();
        let config = Some(path);
        let placement = vec!["http://placement-1:7300", "http://placement-2:7300"];

        let node = NodeOpts {
            config: config.clone(),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(node.id, "n1");
        assert_eq!(node.node.region, "eu");
        assert_eq!(node.placement, placement);
        assert_eq!(node.redis.unwrap().url, "redis://redis:6379");
        assert_eq!(node.advertise_url.as_deref(), Some("http://n1:7100"));
        assert_eq!(node.relay_listen.to_string(), "0.0.0.0:7100");
        assert_eq!(node.http_listen.to_string(), "0.0.0.0:7101");
        assert_eq!(node.liveness.heartbeat.as_millis(), 400);
        assert_eq!(node.liveness.ttl.as_millis(), 1600);
        assert!(node.auth.secret.is_some());
        assert!(matches!(node.storage, StorageTarget::Postgres { .. }));
        // A room's answer takes as long at the nodes as at the gateways.
        assert_eq!(node.node.fetch_timeout.as_millis(), 20000);
        assert_eq!(node.js_engine.answer_limit.as_millis(), 20000);

        let flagged = NodeOpts {
            config: config.clone(),
            id: Some("n2".into()),
            region: Some("us".into()),
            placement: vec!["http://elsewhere:7300".into()],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(flagged.id, "n2");
        assert_eq!(flagged.node.region, "us");
        assert_eq!(flagged.placement, ["http://elsewhere:7300"]);

        let gateway = GatewayOpts {
            config: config.clone(),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(gateway.gateway.region, "eu");
        assert_eq!(gateway.placement, placement);
        assert_eq!(gateway.ops_listen.to_string(), "0.0.0.0:7400");
        assert_eq!(gateway.drain_delay.as_millis(), 3000);
        assert_eq!(gateway.gateway.answer_timeout.as_millis(), 20000);
        assert!(gateway.auth.secret.is_some());

        let placement = PlacementOpts {
            config,
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(placement.redis.url, "redis://redis:6379");
        assert_eq!(placement.listen.to_string(), "0.0.0.0:7300");
        assert_eq!(placement.http_listen.to_string(), "0.0.0.0:7301");
        assert_eq!(placement.liveness.heartbeat.as_millis(), 400);
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
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{e:#}").contains("unknown field"), "{e:#}");
        // A node checks the rooms' answer time it reads, as a gateway does.
        std::fs::write(&path, "[limits]\nroom_answer_timeout_ms = 0\n").unwrap();
        let e = NodeOpts {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{e:#}").contains("room_answer_timeout_ms"), "{e:#}");
    }

    #[test]
    fn storage_quotas_layer_flags_over_the_file_and_parties_over_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[limits]\nmax_room_storage_bytes = 5000\nmax_party_storage_keys = 70\n[parties.small]\nkind = \"counter\"\n[parties.small.storage]\nmax_room_bytes = 10\nmax_party_keys = 0\n",
        )
        .unwrap();
        let opts = DevOpts {
            config: Some(path),
            node: NodeLimitOpts {
                max_room_storage_keys: Some(9),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = opts.resolve().unwrap();
        let all = conclave_node::StorageQuota {
            room_bytes: Some(5000),
            room_keys: Some(9),
            party_bytes: None,
            party_keys: Some(70),
        };
        assert_eq!(c.node.storage_quota("chat"), all);
        // Its own bounds; 0 lifts one; the rest as for every party.
        let small = conclave_node::StorageQuota {
            room_bytes: Some(10),
            party_keys: None,
            ..all
        };
        assert_eq!(c.node.storage_quota("small"), small);
        // The defaults: 256 MiB and a million keys per room, nothing per party.
        let d = DevOpts::default().resolve().unwrap().node.storage_quota;
        assert_eq!(d, conclave_node::StorageQuota::default());
        assert_eq!(
            (d.room_bytes, d.room_keys, d.party_bytes),
            (Some(256 << 20), Some(1_000_000), None)
        );
    }

    #[test]
    fn yjs_settings_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let resolve = |text: &str| {
            std::fs::write(&path, text).unwrap();
            DevOpts {
                config: Some(path.clone()),
                ..Default::default()
            }
            .resolve()
        };
        let c = resolve(
            "[parties.docs]\nkind = \"yjs\"\n[parties.docs.yjs]\npersist = \"snapshot\"\nmaxUpdates = 50\n[parties.docs.yjs.callback]\nurl = \"http://127.0.0.1:9/x\"\ndebounce_wait_ms = 100\nobjects = { t = \"Text\" }\n",
        )
        .unwrap();
        let yjs = c.parties["docs"].yjs.as_ref().unwrap();
        assert_eq!(
            yjs.persist,
            conclave_node::parties::yjs::Persistence::Snapshot
        );
        assert_eq!(yjs.max_updates, 50);
        assert_eq!(yjs.callback.as_ref().unwrap().debounce_max_wait_ms, 10_000);
        for (text, error) in [
            (
                "[parties.c]\nkind = \"chat\"\n[parties.c.yjs]\n",
                "is for kind \"yjs\"",
            ),
            (
                "[parties.d]\nkind = \"yjs\"\n[parties.d.yjs]\nmax_updates = 0\n",
                "max_updates",
            ),
            (
                "[parties.d]\nkind = \"yjs\"\n[parties.d.yjs.callback]\nurl = \"https://x/\"\n",
                "http://",
            ),
            (
                "[parties.d]\nkind = \"yjs\"\n[parties.d.yjs]\nsnapshots = true\n",
                "unknown field",
            ),
        ] {
            let e = resolve(text).unwrap_err();
            assert!(format!("{e:#}").contains(error), "{text}: {e:#}");
        }
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
