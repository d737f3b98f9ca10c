//! Settings: command-line flags, then `CONCLAVE_*` environment variables, then the TOML
//! file (`--config`), then defaults (the rule is in `layer.rs`). Each role's clap `*Opts`
//! plus the [`FileConfig`] resolve into the `*Config` the role runs with.
//!
//! Each default is written once: in the `Default` impls of `GatewayConfig`, `NodeConfig`
//! and `LivenessTiming`, or as a `DEFAULT_*` constant next to the options it belongs to.
//! `--help` shows it (`layer::with_default`), and README.md's settings table is generated
//! from `--help` (a test in `readme.rs` keeps the two equal).
//!
//! Files, each using only those before it: `file` (the TOML file, the party table),
//! `layer` (the rule), `storage` and `limits` (option groups), `roles` (each role's
//! options and config), `readme` (tests).

mod file;
mod layer;
mod limits;
#[cfg(test)]
mod readme;
mod roles;
mod storage;

pub use file::{
    default_parties, registry_for, FileAuth, FileConfig, FileLimits, FileParty, StorageKind,
};
pub use limits::{GatewayLimitOpts, NodeLimitOpts};
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
}
