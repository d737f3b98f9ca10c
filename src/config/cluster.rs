//! What the cluster roles share: liveness timing, how a role proves it belongs to the
//! cluster (secret, mutual TLS), Redis and placement addresses, region names, and the rule
//! that an internal listener beyond loopback needs a proof.

use super::file::FileConfig;
use super::layer::{millis, with_default};
use anyhow::{bail, Context};
use clap::Args;
use conclave_placement::{LivenessTiming, RedisTarget};
use conclave_proto::{ClusterAuth, ClusterSecret, RoleTls};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Liveness timing (nodes and placement must agree). Each flag also reads `CONCLAVE_<NAME>`.
#[derive(Args, Debug, Default, Clone)]
pub struct LivenessOpts {
    #[arg(long, env = "CONCLAVE_HEARTBEAT_MS", help = with_default(
        "How often a node renews its heartbeat in Redis, in ms",
        LivenessTiming::default().heartbeat.as_millis(),
    ))]
    pub heartbeat_ms: Option<u64>,
    #[arg(long, env = "CONCLAVE_HEARTBEAT_TTL_MS", help = with_default(
        "How long a heartbeat lives; a node that cannot renew fences itself at 3/4 of it",
        LivenessTiming::default().ttl.as_millis(),
    ))]
    pub heartbeat_ttl_ms: Option<u64>,
}

impl LivenessOpts {
    pub fn resolve(&self, file: &FileConfig) -> anyhow::Result<LivenessTiming> {
        let d = LivenessTiming::default();
        let t = LivenessTiming::from_heartbeat_and_ttl(
            millis(self.heartbeat_ms.or(file.cluster.heartbeat_ms)).unwrap_or(d.heartbeat),
            millis(self.heartbeat_ttl_ms.or(file.cluster.heartbeat_ttl_ms)).unwrap_or(d.ttl),
        );
        t.check()
            .map_err(|e| anyhow::anyhow!("liveness timing: {e}"))?;
        Ok(t)
    }
}

/// Placement replica URLs: from the flag (or its variable), else from `[cluster]`.
pub(super) fn placement_urls(flag: &[String], file: &FileConfig) -> Vec<String> {
    if flag.is_empty() {
        file.cluster.placement.clone().unwrap_or_default()
    } else {
        flag.to_vec()
    }
}

/// Redis at `url`, with the CA certificates in `ca_file` for TLS.
/// Redis at `url`, verified against the CA file of the flag, else of `[cluster]`.
pub(super) fn redis_of(
    url: &str,
    flag_ca_file: Option<&PathBuf>,
    file: &FileConfig,
) -> anyhow::Result<RedisTarget> {
    let ca_file = flag_ca_file.or(file.cluster.redis_ca_file.as_ref());
    redis_target(url, ca_file.map(PathBuf::as_path))
}

fn redis_target(url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<RedisTarget> {
    let ca_pem = match ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read the Redis CA file {}", path.display()))?,
        ),
        None => None,
    };
    if ca_pem.is_some() && !url.starts_with("rediss://") {
        bail!("--redis-ca-file is for TLS: use a rediss:// URL");
    }
    Ok(RedisTarget {
        url: url.to_string(),
        ca_pem,
    })
}

/// How a role proves it belongs to its cluster on internal links: the cluster secret
/// (`conclave_proto::secret`), mutual TLS (`conclave_proto::auth`), or both.
#[derive(Args, Debug, Default, Clone)]
pub struct SecretOpts {
    /// File holding the cluster secret (at least 16 bytes; the same for every role). The
    /// secret itself may instead be in the environment variable CONCLAVE_CLUSTER_SECRET
    /// (never on the command line, where the process list shows it)
    #[arg(long, env = "CONCLAVE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// This role's certificate (PEM) for mutual TLS on internal links (with --tls-key and
    /// --tls-ca). A node's must name its id, placement's `placement`
    #[arg(long, env = "CONCLAVE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM)
    #[arg(long, env = "CONCLAVE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM): peers' certificates must chain to it
    #[arg(long, env = "CONCLAVE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, env = "CONCLAVE_TLS_RELOAD_MS", help = with_default(
        "How often the three TLS files are read again: a changed, valid set is used from \
         the next connection on, without a restart",
        conclave_proto::DEFAULT_TLS_RELOAD.as_millis(),
    ))]
    pub tls_reload_ms: Option<u64>,
}

/// Environment variable holding the cluster secret itself.
pub const CLUSTER_SECRET_ENV: &str = "CONCLAVE_CLUSTER_SECRET";

impl SecretOpts {
    pub fn resolve(&self, file: &FileConfig) -> anyhow::Result<ClusterAuth> {
        let c = &file.cluster;
        let secret_file = self
            .cluster_secret_file
            .as_ref()
            .or(c.cluster_secret_file.as_ref());
        let text =
            match secret_file {
                Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the cluster secret {}", path.display())
                })?),
                None => std::env::var(CLUSTER_SECRET_ENV).ok(),
            };
        let secret = text.map(|t| ClusterSecret::new(&t)).transpose()?;
        let (cert, key, ca) = (
            self.tls_cert.as_ref().or(c.tls_cert.as_ref()),
            self.tls_key.as_ref().or(c.tls_key.as_ref()),
            self.tls_ca.as_ref().or(c.tls_ca.as_ref()),
        );
        let tls = match (cert, key, ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => {
                let reload = millis(self.tls_reload_ms.or(c.tls_reload_ms))
                    .unwrap_or(conclave_proto::DEFAULT_TLS_RELOAD);
                if reload.is_zero() {
                    bail!("--tls-reload-ms must be above 0");
                }
                Some(
                    RoleTls::load(cert, key, ca)
                        .map_err(anyhow::Error::msg)?
                        .reloading_every(reload),
                )
            }
            _ => bail!("mutual TLS needs all three of --tls-cert, --tls-key and --tls-ca"),
        };
        Ok(ClusterAuth { secret, tls })
    }
}

/// Refuses an internal listener (relay, placement) reachable beyond this host without a
/// cluster secret: anyone who reached it could act as a gateway or follow the ring.
pub(super) fn internal_listener(
    addr: SocketAddr,
    auth: &ClusterAuth,
    flag: &str,
) -> anyhow::Result<()> {
    if !auth.is_some() && !addr.ip().is_loopback() {
        bail!(
            "{flag} {addr} is reachable from other hosts, but no cluster secret is set and no \
             TLS: anyone who reaches it could act as a member of the cluster. Give every role \
             the same secret (--cluster-secret-file or {CLUSTER_SECRET_ENV}) or certificates \
             (--tls-cert, --tls-key, --tls-ca), or listen on a loopback address"
        );
    }
    Ok(())
}

/// A region name: 1–64 characters of `[A-Za-z0-9._-]`.
pub(super) fn valid_region(r: &str) -> anyhow::Result<String> {
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("region {r:?}: use 1-64 characters of letters, digits, '.', '_' and '-'");
    }
    Ok(r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_listener_beyond_loopback_needs_the_cluster_secret() {
        let open: SocketAddr = "0.0.0.0:7100".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7100".parse().unwrap();
        let none = ClusterAuth::default();
        let err = internal_listener(open, &none, "--relay-listen").unwrap_err();
        assert!(err.to_string().contains("no cluster secret"), "{err}");
        assert!(internal_listener(local, &none, "--relay-listen").is_ok());
        let auth = ClusterAuth {
            secret: Some(ClusterSecret::new("0123456789abcdef").unwrap()),
            tls: None,
        };
        assert!(internal_listener(open, &auth, "--relay-listen").is_ok());
    }

    #[test]
    fn a_secret_file_is_read_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "short\n").unwrap();
        let opts = SecretOpts {
            cluster_secret_file: Some(file.clone()),
            ..Default::default()
        };
        assert!(opts.resolve(&FileConfig::default()).is_err());
        std::fs::write(&file, "long-enough-cluster-secret\n").unwrap();
        assert!(opts
            .resolve(&FileConfig::default())
            .unwrap()
            .secret
            .is_some());
    }
}
