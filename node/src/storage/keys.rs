//! Key layout, tuple-encoded so that names are never used raw and byte order equals the
//! order of the user's string keys:
//!
//! - `("r", party, room, "k", key)` → value
//! - `("r", party, room, "a")`      → alarm time (i64 ms, big-endian)
//! - `("r", party, room, "o")`      → owner record (JSON [`Owner`])
//! - `("r", party, room, "x", name)` → the runtime's ledger records of the room (which
//!   frames its steps applied, the outputs of committed steps): apart from the party's keys,
//!   so `delete_all` and `list` never touch them
//! - `("alarms", due_ms, party, room)` → empty: the global index of due alarms
//! - `("usage", party, room)` → what the room's keys take ([`Usage`](super::Usage)),
//!   present while it holds a key: a party's rooms are one range

use super::store::{AlarmScan, ListOptions, Owner};
use bytes::Bytes;
use conclave_proto::RoomKey;
use foundationdb_tuple::{pack, unpack};

pub fn kv_prefix(room: &RoomKey) -> Vec<u8> {
    pack(&("r", room.party.as_str(), room.room.as_str(), "k"))
}

/// The prefix of the room's ledger records; a record's key is [`kv_key`] under it.
pub fn ledger_prefix(room: &RoomKey) -> Vec<u8> {
    pack(&("r", room.party.as_str(), room.room.as_str(), "x"))
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

/// The prefix of every key of the room (its keys, ledger, alarm and owner record).
pub fn room_prefix(room: &RoomKey) -> Vec<u8> {
    pack(&("r", room.party.as_str(), room.room.as_str()))
}

pub fn owner_key(room: &RoomKey) -> Vec<u8> {
    pack(&("r", room.party.as_str(), room.room.as_str(), "o"))
}

pub fn encode_owner(o: &Owner) -> Vec<u8> {
    serde_json::to_vec(o).unwrap_or_default()
}

pub fn decode_owner(v: &[u8]) -> Option<Owner> {
    serde_json::from_slice(v).ok()
}

pub fn usage_key(room: &RoomKey) -> Vec<u8> {
    pack(&("usage", room.party.as_str(), room.room.as_str()))
}

/// The range of the usage records of the rooms of `party`, after the room `after` if given.
pub fn party_usage_range(party: &str, after: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let prefix = pack(&("usage", party));
    let end = strinc(&prefix);
    match after {
        Some(room) => {
            let mut lo = pack(&("usage", party, room));
            lo.push(0); // just past that room's record
            (lo, end)
        }
        None => (prefix, end),
    }
}

/// The room name of a usage record's key.
pub fn parse_usage_key(k: &[u8]) -> Option<String> {
    let (_, _, room) = unpack::<(String, String, String)>(k).ok()?;
    Some(room)
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

/// The byte range `[lo, hi)` of the alarm index entries `scan` selects (`limit` aside).
pub fn alarm_scan_range(scan: &AlarmScan) -> (Vec<u8>, Vec<u8>) {
    let lo = match &scan.after {
        // Just after that entry.
        Some((room, due)) => {
            let mut k = alarm_index_key(*due, room);
            k.push(0);
            k
        }
        None => pack(&("alarms",)),
    };
    let hi = match scan.due_by {
        // Sorts after every entry due at or before `due_by`, and before every other.
        Some(due_by) => pack(&("alarms", due_by.saturating_add(1))),
        None => strinc(&pack(&("alarms",))),
    };
    (lo, hi)
}

/// `(room, due_ms)` of an alarm index key.
pub fn parse_alarm_index(k: &[u8]) -> Option<(RoomKey, i64)> {
    let (_, due, party, room) = unpack::<(String, i64, String, String)>(k).ok()?;
    Some((RoomKey::new(&party, &room).ok()?, due))
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

// Values split into chunks (the FoundationDB backend): chunk `n` of the value of `key` is
// `kv_key(prefix, key) + pack(n)`.

/// The range holding exactly the chunks of the value under `kv_key`: chunk numbers are
/// tuple-encoded non-negative integers (type codes 0x14..=0x1c). A longer user key that
/// starts with the same string continues with 0xff instead, so it is never in the range.
#[cfg_attr(not(feature = "fdb"), allow(dead_code))]
pub fn chunk_range(kv_key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut lo = kv_key.to_vec();
    lo.push(0x14);
    let mut hi = kv_key.to_vec();
    hi.push(0x1d);
    (lo, hi)
}

/// The key of chunk `n` of a value stored under `kv_key`.
#[cfg_attr(not(feature = "fdb"), allow(dead_code))]
pub fn chunk_key(kv_key: &[u8], n: usize) -> Vec<u8> {
    let mut k = kv_key.to_vec();
    k.extend_from_slice(&pack(&(n as i64)));
    k
}

/// `(user key, chunk number)` of a chunk key under `prefix`.
#[cfg_attr(not(feature = "fdb"), allow(dead_code))]
pub fn parse_chunk_key(prefix: &[u8], k: &[u8]) -> Option<(String, i64)> {
    unpack::<(String, i64)>(k.get(prefix.len()..)?).ok()
}

/// Joins a value's chunks, in chunk order.
#[cfg_attr(not(feature = "fdb"), allow(dead_code))]
pub fn join_chunks(mut chunks: Vec<(i64, Bytes)>) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().map(|(_, b)| b).unwrap_or_default();
    }
    chunks.sort_by_key(|(n, _)| *n);
    let mut out = bytes::BytesMut::with_capacity(chunks.iter().map(|(_, b)| b.len()).sum());
    for (_, b) in chunks {
        out.extend_from_slice(&b);
    }
    out.freeze()
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
        assert_eq!(parse_alarm_index(&idx), Some((room, 42)));
    }

    #[test]
    fn an_alarm_scan_includes_its_due_time_and_starts_after_its_cursor() {
        let a = RoomKey::new("main", "a").unwrap();
        let b = RoomKey::new("main", "b").unwrap();
        let inside = |scan: &AlarmScan, due, room| {
            let (lo, hi) = alarm_scan_range(scan);
            let k = alarm_index_key(due, room);
            lo <= k && k < hi
        };
        let due_by = AlarmScan {
            after: None,
            due_by: Some(100),
            limit: 10,
        };
        assert!(inside(&due_by, 100, &a));
        assert!(inside(&due_by, -5, &a));
        assert!(!inside(&due_by, 101, &a));
        let after_a = AlarmScan {
            after: Some((a.clone(), 100)),
            ..due_by
        };
        assert!(!inside(&after_a, 100, &a));
        assert!(inside(&after_a, 100, &b));
        let all = AlarmScan {
            after: None,
            due_by: None,
            limit: 1,
        };
        assert!(inside(&all, i64::MAX, &b));
        // Nothing but the index is in its range.
        let (lo, hi) = alarm_scan_range(&all);
        let data = kv_key(&kv_prefix(&a), "x");
        assert!(!(lo <= data && data < hi));
    }

    #[test]
    fn a_values_chunk_range_holds_its_chunks_and_no_other_key() {
        let prefix = pack(&("r", "main", "room", "k"));
        let a = kv_key(&prefix, "a");
        let (lo, hi) = chunk_range(&a);
        for n in [0, 1, 2, 255, 256, 70_000] {
            let k = chunk_key(&a, n);
            assert!(lo <= k && k < hi, "chunk {n}");
            assert_eq!(parse_chunk_key(&prefix, &k), Some(("a".into(), n as i64)));
        }
        for other in ["a\u{0}", "a\u{0}b", "ab", "b", ""] {
            let k = chunk_key(&kv_key(&prefix, other), 0);
            assert!(!(lo <= k && k < hi), "{other:?} is inside a's chunk range");
        }
    }

    #[test]
    fn chunks_join_in_order_whatever_order_they_come_in() {
        let chunks = vec![
            (2, Bytes::from_static(b"c")),
            (0, Bytes::from_static(b"a")),
            (1, Bytes::from_static(b"b")),
        ];
        assert_eq!(join_chunks(chunks), Bytes::from_static(b"abc"));
    }
}
