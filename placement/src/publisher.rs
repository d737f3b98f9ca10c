//! Placement replicas: watch node heartbeats, agree on ring versions through Redis.
//!
//! Each replica polls the heartbeat keys. When the live set differs from the ring stored
//! under [`RING_KEY`], it replaces that ring with version + 1 by compare-and-set; a replica
//! that loses the race reads the winner's. So every replica publishes the same versions.
//! While Redis is unreachable the last ring stays published.

use crate::{left_key, LivenessTiming, RESTORED_KEY, RING_KEY};
use conclave_proto::{ClusterSecret, RingVersion, RingView};
use redis::aio::ConnectionManager;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{info, warn};

/// Replaces the ring only if it is still the one we read.
const CAS: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return current
";

fn encode(v: &RingView, secret: Option<&ClusterSecret>) -> String {
    let mut json =
        serde_json::json!({"version": v.version.0, "members": v.members, "regions": v.regions});
    if let Some(secret) = secret {
        json["sig"] = crate::signed::sign_ring(secret, v).into();
    }
    json.to_string()
}

/// The ring stored as `s`; with a secret, only if it is signed with it (else it is
/// treated as absent and replaced).
fn decode(s: &str, secret: Option<&ClusterSecret>) -> Option<RingView> {
    let view = decode_unsigned(s)?;
    match secret {
        None => Some(view),
        Some(secret) => {
            let v: serde_json::Value = serde_json::from_str(s).ok()?;
            let sig = v["sig"].as_str()?;
            crate::signed::ring_is_signed(secret, &view, sig).then_some(view)
        }
    }
}

fn decode_unsigned(s: &str) -> Option<RingView> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    let members = v["members"]
        .as_object()?
        .iter()
        .map(|(k, u)| Some((k.clone(), u.as_str()?.to_string())))
        .collect::<Option<_>>()?;
    // Rings published before regions existed have none: every node is in the default one.
    let regions = v["regions"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, r)| Some((k.clone(), r.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Some(RingView {
        version: RingVersion(v["version"].as_u64()?),
        members,
        regions,
    })
}

/// The live nodes, from the heartbeat keys: id → relay URL, and id → region for nodes
/// outside the default region.
async fn live_nodes(
    conn: &mut ConnectionManager,
    secret: Option<&ClusterSecret>,
) -> redis::RedisResult<(Members, Regions)> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("conclave:node:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if keys.is_empty() {
        return Ok(Default::default());
    }
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    let mut members = Members::new();
    let mut regions = Regions::new();
    for (k, v) in keys.iter().zip(values) {
        let Some(id) = k.strip_prefix("conclave:node:") else {
            continue;
        };
        let Some(beat) = v.and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok()) else {
            continue;
        };
        let Some(url) = beat["relay_url"].as_str() else {
            continue;
        };
        if secret.is_some_and(|s| !crate::signed::beat_is_signed(s, id, &beat)) {
            warn!(
                node = id,
                "ignoring a heartbeat not signed with the cluster secret"
            );
            continue;
        }
        members.insert(id.to_string(), url.to_string());
        if let Some(region) = beat["region"].as_str() {
            if !region.is_empty() && region != conclave_proto::DEFAULT_REGION {
                regions.insert(id.to_string(), region.to_string());
            }
        }
    }
    Ok((members, regions))
}

type Members = BTreeMap<String, String>;
type Regions = BTreeMap<String, String>;

/// One round: the live set against the stored ring; a changed set is stored as the next
/// version (compare-and-set). `last` is the newest ring this replica has seen: a Redis that
/// lost its data (restarted empty) must not take versions back, or followers would ignore
/// every ring until the count caught up. Until `keep_until`, nodes of `last` that have
/// not renewed yet stay on the ring (they re-announce within a heartbeat of a restart).
async fn step(
    conn: &mut ConnectionManager,
    last: &RingView,
    keep_until: Option<tokio::time::Instant>,
    secret: Option<&ClusterSecret>,
) -> redis::RedisResult<RingView> {
    let (mut members, mut regions) = live_nodes(conn, secret).await?;
    let stored: Option<String> = redis::cmd("GET").arg(RING_KEY).query_async(conn).await?;
    let stored_view = stored.as_deref().and_then(|s| decode(s, secret));
    let current = match &stored_view {
        Some(v) if v.version >= last.version => v.clone(),
        _ => last.clone(),
    };
    if keep_until.is_some_and(|t| tokio::time::Instant::now() < t) {
        for (id, url) in &current.members {
            if !members.contains_key(id) {
                let left: bool = redis::cmd("EXISTS")
                    .arg(left_key(id))
                    .query_async(conn)
                    .await?;
                if left {
                    continue; // drained on purpose: not coming back
                }
                members.insert(id.clone(), url.clone());
                if let Some(r) = current.regions.get(id) {
                    regions.insert(id.clone(), r.clone());
                }
            }
        }
    }
    let same = current.members == members && current.regions == regions;
    if same && stored_view.as_ref() == Some(&current) {
        return Ok(current);
    }
    // A ring missing from Redis (or older than ours) is stored again at our version.
    let next = if same {
        current.clone()
    } else {
        RingView {
            version: next_version(current.version),
            members,
            regions,
        }
    };
    let winner: String = redis::Script::new(CAS)
        .key(RING_KEY)
        .arg(stored.unwrap_or_default())
        .arg(encode(&next, secret))
        .invoke_async(conn)
        .await?;
    Ok(decode(&winner, secret).unwrap_or(current))
}

/// The version after `current`. A first version (no replica knows an earlier ring: a new
/// cluster, or Redis and every replica restarted together) is the wall clock in
/// milliseconds, so that it is above whatever gateways and nodes still hold from before:
/// they ignore every ring not newer than theirs.
fn next_version(current: RingVersion) -> RingVersion {
    if current.0 > 0 {
        return current.next();
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    RingVersion(now_ms.max(1))
}

/// How a replica's reading of Redis goes, for its readiness and for its followers.
#[derive(Clone)]
pub struct ReplicaHealth {
    /// Whether the last poll of Redis succeeded (placement's `/readyz`).
    last_poll_ok: Arc<AtomicBool>,
    /// Whether a poll succeeded within a TTL. While not, nodes may have come and gone
    /// unseen, and the replica turns its followers away ([`crate::grpc::placement_service`]).
    current: watch::Sender<bool>,
}

impl Default for ReplicaHealth {
    fn default() -> Self {
        Self {
            last_poll_ok: Arc::default(),
            current: watch::Sender::new(false),
        }
    }
}

impl ReplicaHealth {
    /// Whether the last poll of Redis succeeded.
    pub fn last_poll_ok(&self) -> bool {
        self.last_poll_ok.load(Ordering::Relaxed)
    }

    /// Follows whether the replica's rings are current.
    pub fn current(&self) -> watch::Receiver<bool> {
        self.current.subscribe()
    }
}

/// Publishes rings into `tx` forever; with a cluster secret, believing only signed
/// heartbeats and rings. `health` follows how its polls of Redis go.
pub async fn run(
    redis: crate::RedisTarget,
    timing: LivenessTiming,
    tx: watch::Sender<RingView>,
    secret: Option<ClusterSecret>,
    health: ReplicaHealth,
) {
    let redis_ok = &health.last_poll_ok;
    let mut last_ok: Option<tokio::time::Instant> = None;
    let mut conn: Option<ConnectionManager> = None;
    let mut keep_until: Option<tokio::time::Instant> = None;
    loop {
        let started = tokio::time::Instant::now();
        if conn.is_none() {
            conn = match redis.client() {
                Ok(c) => tokio::time::timeout(timing.poll * 4, ConnectionManager::new(c))
                    .await
                    .ok()
                    .and_then(Result::ok),
                Err(e) => {
                    warn!(error = %e, "invalid Redis URL");
                    None
                }
            };
        }
        if conn.is_none() {
            redis_ok.store(false, Ordering::Relaxed);
        }
        if let Some(c) = conn.as_mut() {
            let last = tx.borrow().clone();
            // Whether Redis lost the ring is known before a ring is built from heartbeats,
            // or the round fails: right after a restart, the first command may fail and
            // the next one find only the nodes that have announced themselves again.
            let round = async {
                if keep_until.is_none() {
                    keep_until = restoring_until(c, &last, timing.ttl).await?;
                }
                step(c, &last, keep_until, secret.as_ref()).await
            };
            match tokio::time::timeout(timing.poll * 4, round).await {
                Ok(Ok(view)) => {
                    redis_ok.store(true, Ordering::Relaxed);
                    last_ok = Some(tokio::time::Instant::now());
                    metrics::gauge!("conclave_placement_redis_up").set(1.0);
                    tx.send_if_modified(|cur| {
                        if view.version > cur.version {
                            metrics::gauge!("conclave_ring_version").set(view.version.0 as f64);
                            info!(version = view.version.0, nodes = ?view.members.keys().collect::<Vec<_>>(), "ring");
                            *cur = view;
                            true
                        } else {
                            false
                        }
                    });
                }
                Ok(Err(e)) => {
                    redis_ok.store(false, Ordering::Relaxed);
                    metrics::gauge!("conclave_placement_redis_up").set(0.0);
                    warn!(error = %e, "cannot read liveness from Redis; keeping the last ring")
                }
                Err(_) => {
                    redis_ok.store(false, Ordering::Relaxed);
                    metrics::gauge!("conclave_placement_redis_up").set(0.0);
                    warn!("Redis did not answer in time; keeping the last ring")
                }
            }
        }
        if keep_until.is_some_and(|t| tokio::time::Instant::now() >= t) {
            keep_until = None;
        }
        let current = last_ok.is_some_and(|t| t.elapsed() < timing.ttl);
        health.current.send_if_modified(|was| {
            if *was == current {
                return false;
            }
            if !current {
                warn!("no poll of Redis for a TTL; turning followers away to the other replicas");
            }
            *was = current;
            true
        });
        tokio::time::sleep_until(started + timing.poll).await;
    }
}

/// Until when the nodes of the ring stay on it while they announce themselves again after
/// Redis lost its data (a restart): this replica finds the ring gone though it published
/// one (`last`), and marks a TTL for every replica ([`RESTORED_KEY`]), or another replica
/// marked one. `None` when neither.
async fn restoring_until(
    conn: &mut ConnectionManager,
    last: &RingView,
    ttl: std::time::Duration,
) -> redis::RedisResult<Option<tokio::time::Instant>> {
    let (ring_exists, marked_ms): (bool, i64) = redis::pipe()
        .cmd("EXISTS")
        .arg(RING_KEY)
        .cmd("PTTL")
        .arg(RESTORED_KEY)
        .query_async(conn)
        .await?;
    let now = tokio::time::Instant::now();
    if let Ok(ms) = u64::try_from(marked_ms) {
        // Marked by the replica that noticed (or by us, earlier).
        return Ok(Some(now + std::time::Duration::from_millis(ms)));
    }
    if ring_exists || last.version.0 == 0 {
        return Ok(None);
    }
    warn!("the ring is gone from Redis (restarted empty?); keeping its nodes for a TTL");
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let marked: redis::RedisResult<()> = redis::cmd("SET")
        .arg(RESTORED_KEY)
        .arg(1)
        .arg("PX")
        .arg(ttl_ms)
        .arg("NX")
        .query_async(conn)
        .await;
    if let Err(e) = marked {
        warn!(error = %e, "cannot mark the ring's restoring window for the other replicas");
    }
    Ok(Some(now + ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_encoding_round_trips() {
        let v = RingView {
            version: RingVersion(7),
            members: [
                ("a".to_string(), "http://x:1".to_string()),
                ("b".to_string(), "http://x:2".to_string()),
            ]
            .into(),
            regions: [("b".to_string(), "eu".to_string())].into(),
        };
        assert_eq!(decode(&encode(&v, None), None), Some(v.clone()));
        assert_eq!(decode("garbage", None), None);
        let secret = ClusterSecret::new("a-secret-of-the-cluster").unwrap();
        let signed = encode(&v, Some(&secret));
        assert_eq!(decode(&signed, Some(&secret)), Some(v.clone()));
        assert_eq!(decode(&encode(&v, None), Some(&secret)), None, "unsigned");
        let forged = signed.replace("http://x:1", "http://evil:1");
        assert_eq!(decode(&forged, Some(&secret)), None, "forged");
        // A ring stored before regions existed: every node in the default region.
        let old = decode(r#"{"version":3,"members":{"a":"http://x:1"}}"#, None).unwrap();
        assert_eq!(old.region_of("a"), conclave_proto::DEFAULT_REGION);
        assert_eq!(v.ring_for("eu").nodes(), ["b"]);
        assert_eq!(v.rings().region("default").nodes(), ["a"]);
    }
}
