//! Key layout, tuple-encoded so that names are never used raw and byte order equals the
//! order of the user's string keys:
//!
//! - `("r", party, room, "k", key)` → value
//! - `("r", party, room, "a")`      → alarm time (i64 ms, big-endian)
//! - `("r", party, room, "o")`      → owner record (JSON [`super::Owner`])
//! - `("alarms", due_ms, party, room)` → empty: the global index of due alarms

use super::ListOptions;
use conclave_proto::RoomKey;
use foundationdb_tuple::{pack, unpack};

pub fn kv_prefix(room: &RoomKey) -> Vec<u8> {
    pack(&("r", room.party.as_str(), room.room.as_str(), "k"))
}

pub fn kv_key(prefix: &[u8], key: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&pack(&key));
    k
}

/// The user key of an encoded kv key under `prefix`.
pub fn user_key(prefix: &[u8], encoded: &[u8]) -> Option<String> {
    unpack::<String>(encoded.get(prefix.len()..)?).ok()
}

/// The encoding of `s` as a tuple element without its terminator: every key that starts
/// with `s` encodes to bytes that start with this.
pub fn string_prefix(prefix: &[u8], s: &str) -> Vec<u8> {
    let mut k = kv_key(prefix, s);
    k.pop(); // the 0x00 terminator
    k
}

/// The smallest byte string greater than every string starting with `p`.
pub fn strinc(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xff {
            v.push(last + 1);
            return v;
        }
    }
    vec![0xff; p.len() + 1]
}

pub fn owner_key(room: &RoomKey) -> Vec<u8> {
    pack(&("r", room.party.as_str(), room.room.as_str(), "o"))
}

pub fn encode_owner(o: &super::Owner) -> Vec<u8> {
    serde_json::to_vec(o).unwrap_or_default()
}

pub fn decode_owner(v: &[u8]) -> Option<super::Owner> {
    serde_json::from_slice(v).ok()
}

/// An alarm time as stored under [`alarm_key`].
pub fn encode_alarm(at_ms: i64) -> [u8; 8] {
    at_ms.to_be_bytes()
}

pub fn decode_alarm(v: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(v.try_into().ok()?))
}

pub fn alarm_key(room: &RoomKey) -> Vec<u8> {
    pack(&("r", room.party.as_str(), room.room.as_str(), "a"))
}

pub fn alarm_index_key(due_ms: i64, room: &RoomKey) -> Vec<u8> {
    pack(&("alarms", due_ms, room.party.as_str(), room.room.as_str()))
}

/// Sorts after every index entry due before `due_ms` and before every other.
pub fn alarm_index_bound(due_ms: i64) -> Vec<u8> {
    pack(&("alarms", due_ms))
}

/// Where a scan of due alarms starts: the index start, or just after `after`'s entry.
pub fn alarm_scan_start(after: Option<&(RoomKey, i64)>) -> Vec<u8> {
    match after {
        Some((room, due)) => {
            let mut k = alarm_index_key(*due, room);
            k.push(0);
            k
        }
        None => alarm_index_prefix(),
    }
}

pub fn alarm_index_prefix() -> Vec<u8> {
    pack(&("alarms",))
}

/// `(due_ms, room)` of an alarm index key.
pub fn parse_alarm_index(k: &[u8]) -> Option<(i64, RoomKey)> {
    let (_, due, party, room) = unpack::<(String, i64, String, String)>(k).ok()?;
    Some((due, RoomKey::new(&party, &room).ok()?))
}

/// The byte range `[lo, hi)` that holds every key `opts` can match (a superset; exact
/// bounds are re-checked per key).
pub fn list_range(prefix: &[u8], opts: &ListOptions) -> (Vec<u8>, Vec<u8>) {
    let mut lo = prefix.to_vec();
    let mut hi = strinc(prefix);
    if let Some(p) = &opts.prefix {
        let sp = string_prefix(prefix, p);
        lo = lo.max(sp.clone());
        hi = hi.min(strinc(&sp));
    }
    if let Some(s) = opts.start.as_ref().or(opts.start_after.as_ref()) {
        lo = lo.max(kv_key(prefix, s));
    }
    if let Some(e) = &opts.end {
        hi = hi.min(kv_key(prefix, e));
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_order_matches_string_order_and_prefixes() {
        let room = RoomKey::new("main", "r/../x").unwrap();
        let p = kv_prefix(&room);
        let mut keys = vec!["b", "a\u{0}", "a", "", "ab", "é", "a\u{0}b"];
        let mut encoded: Vec<Vec<u8>> = keys.iter().map(|k| kv_key(&p, k)).collect();
        keys.sort();
        encoded.sort();
        let decoded: Vec<String> = encoded.iter().map(|e| user_key(&p, e).unwrap()).collect();
        assert_eq!(decoded, keys);
        let sp = string_prefix(&p, "a");
        for k in ["a", "a\u{0}", "ab", "a\u{0}b"] {
            assert!(kv_key(&p, k).starts_with(&sp), "{k:?}");
        }
        assert!(!kv_key(&p, "b").starts_with(&sp));
        // Rooms never share a prefix, whatever their names.
        let other = kv_prefix(&RoomKey::new("main", "r").unwrap());
        assert!(!p.starts_with(&other) && !other.starts_with(&p));
        let idx = alarm_index_key(42, &room);
        assert_eq!(parse_alarm_index(&idx), Some((42, room)));
    }
}
