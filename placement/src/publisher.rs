//! Placement replicas: watch node heartbeats, agree on ring versions through Redis.
//!
//! Each replica polls the heartbeat keys. When the live set differs from the ring stored
//! under [`RING_KEY`], it replaces that ring with version + 1 by compare-and-set; a replica
//! that loses the race reads the winner's. So every replica publishes the same versions.
//! While Redis is unreachable the last ring stays published.

use crate::{LivenessTiming, RING_KEY};
use conclave_proto::RingView;
use redis::aio::ConnectionManager;
use std::collections::BTreeMap;
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

fn encode(v: &RingView) -> String {
    serde_json::json!({"version": v.version, "members": v.members}).to_string()
}

fn decode(s: &str) -> Option<RingView> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    let members = v["members"]
        .as_object()?
        .iter()
        .map(|(k, u)| Some((k.clone(), u.as_str()?.to_string())))
        .collect::<Option<_>>()?;
    Some(RingView {
        version: v["version"].as_u64()?,
        members,
    })
}

/// The live nodes: id → relay URL, from the heartbeat keys.
async fn live_nodes(conn: &mut ConnectionManager) -> redis::RedisResult<BTreeMap<String, String>> {
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
        return Ok(BTreeMap::new());
    }
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    Ok(keys
        .iter()
        .zip(values)
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("conclave:node:")?.to_string();
            let url = serde_json::from_str::<serde_json::Value>(&v?).ok()?["relay_url"]
                .as_str()?
                .to_string();
            Some((id, url))
        })
        .collect())
}

async fn step(conn: &mut ConnectionManager) -> redis::RedisResult<RingView> {
    let members = live_nodes(conn).await?;
    let stored: Option<String> = redis::cmd("GET").arg(RING_KEY).query_async(conn).await?;
    let current = stored.as_deref().and_then(decode).unwrap_or_default();
    if current.members == members && stored.is_some() {
        return Ok(current);
    }
    let next = RingView {
        version: current.version + 1,
        members,
    };
    let winner: String = redis::Script::new(CAS)
        .key(RING_KEY)
        .arg(stored.unwrap_or_default())
        .arg(encode(&next))
        .invoke_async(conn)
        .await?;
    Ok(decode(&winner).unwrap_or(current))
}

/// Publishes rings into `tx` forever.
pub async fn run(redis_url: String, timing: LivenessTiming, tx: watch::Sender<RingView>) {
    let mut conn: Option<ConnectionManager> = None;
    loop {
        let started = tokio::time::Instant::now();
        if conn.is_none() {
            conn = match redis::Client::open(redis_url.as_str()) {
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
        if let Some(c) = conn.as_mut() {
            match tokio::time::timeout(timing.poll * 4, step(c)).await {
                Ok(Ok(view)) => {
                    tx.send_if_modified(|cur| {
                        if view.version > cur.version {
                            info!(version = view.version, nodes = ?view.members.keys().collect::<Vec<_>>(), "ring");
                            *cur = view;
                            true
                        } else {
                            false
                        }
                    });
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot read liveness from Redis; keeping the last ring")
                }
                Err(_) => warn!("Redis did not answer in time; keeping the last ring"),
            }
        }
        tokio::time::sleep_until(started + timing.poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_encoding_round_trips() {
        let v = RingView {
            version: 7,
            members: [("a".to_string(), "http://x:1".to_string())].into(),
        };
        assert_eq!(decode(&encode(&v)), Some(v));
        assert_eq!(decode("garbage"), None);
    }
}
