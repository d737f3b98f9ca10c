//! What placement believes from Redis, signed with the cluster secret: a node's heartbeat
//! and the stored ring. Anyone who can write to Redis can write these keys; with a secret,
//! an entry without a valid signature is ignored, so a node that does not hold the secret
//! cannot join the ring and a forged ring is never published.

use conclave_proto::{ClusterSecret, RingView};

fn beat_parts(id: &str, url: &str, incarnation: u64, region: &str) -> [Vec<u8>; 4] {
    [
        id.into(),
        url.into(),
        incarnation.to_string().into(),
        region.into(),
    ]
}

/// The signature of a node's heartbeat.
pub fn sign_beat(
    secret: &ClusterSecret,
    id: &str,
    url: &str,
    incarnation: u64,
    region: &str,
) -> String {
    secret.sign("beat", &beat_parts(id, url, incarnation, region))
}

/// Whether heartbeat `beat` (the JSON stored under node `id`'s key) is signed with `secret`.
pub fn beat_is_signed(secret: &ClusterSecret, id: &str, beat: &serde_json::Value) -> bool {
    let (Some(url), Some(sig)) = (beat["relay_url"].as_str(), beat["sig"].as_str()) else {
        return false;
    };
    let incarnation = beat["incarnation"].as_u64().unwrap_or(0);
    let region = beat["region"].as_str().unwrap_or("");
    secret.verify("beat", &beat_parts(id, url, incarnation, region), sig)
}

/// A ring's content as signed parts: independent of how its JSON is laid out.
fn ring_parts(v: &RingView) -> Vec<Vec<u8>> {
    let mut parts = vec![v.version.0.to_string().into_bytes()];
    parts.extend(
        v.members
            .iter()
            .map(|(id, url)| format!("m {id} {url}").into_bytes()),
    );
    parts.extend(
        v.regions
            .iter()
            .map(|(id, r)| format!("r {id} {r}").into_bytes()),
    );
    parts
}

pub fn sign_ring(secret: &ClusterSecret, v: &RingView) -> String {
    secret.sign("ring", &ring_parts(v))
}

pub fn ring_is_signed(secret: &ClusterSecret, v: &RingView, sig: &str) -> bool {
    secret.verify("ring", &ring_parts(v), sig)
}
