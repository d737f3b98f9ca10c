//! Entry points for the fuzz targets in `fuzz/` (not an API): each runs one decoder of
//! input a node takes from outside over arbitrary bytes and panics only where an invariant
//! breaks.

use crate::gateway_bounds::{self, check_admit, check_headers};
use crate::storage::{keys, ListOptions};
use conclave_proto::wire::{gateway_event, GatewayBatch, GatewayEvent};
use conclave_proto::RoomKey;
use prost::Message as _;

/// Relay events as a gateway sends them (a batch, or one event), decoded and put through
/// the bounds a node applies before anything reaches a room.
pub fn relay_events(data: &[u8]) {
    if let Ok(batch) = GatewayBatch::decode(data) {
        batch.events.into_iter().for_each(bound_event);
    }
    if let Ok(event) = GatewayEvent::decode(data) {
        bound_event(event);
    }
}

fn bound_event(event: GatewayEvent) {
    use gateway_event::Event;
    let room = |r: Option<&conclave_proto::wire::RoomRef>| r.map(RoomKey::from_wire);
    match event.event {
        Some(Event::Admit(a)) => {
            let _ = room(a.room.as_ref());
            if check_admit(&a).is_ok() {
                let _ = crate::gateway_link::header_map(a.headers);
            }
            let _ = gateway_bounds::trace_parent(a.trace_parent);
        }
        Some(Event::Frame(f)) => {
            let _ = gateway_bounds::trace_parent(f.trace_parent);
            let _ = crate::message::Message::text_from_bytes(f.payload);
        }
        Some(Event::Closed(c)) => {
            let code = gateway_bounds::close_code(c.code);
            assert!(code >= 1000, "a close code below 1000 reached a room");
            let reason = gateway_bounds::close_reason(c.reason);
            assert!(reason.len() <= gateway_bounds::MAX_CLOSE_REASON_BYTES);
            let _ = gateway_bounds::close_error(c.error);
        }
        Some(Event::HttpRequest(r)) => {
            let _ = room(r.room.as_ref());
            if check_headers(&r.headers).is_ok() {
                let _ = crate::gateway_link::header_map(r.headers);
            }
        }
        _ => {}
    }
}

/// Storage keys: a party, room and user key taken from the bytes encode to keys that
/// decode back to them, and alarm index keys parse or are refused.
pub fn storage_keys(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{1}');
    let (party, room, key, other) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let _ = keys::parse_alarm_index(data);
    let Ok(room_key) = RoomKey::new(party, room) else {
        return;
    };
    let prefix = keys::kv_prefix(&room_key);
    let encoded = keys::kv_key(&prefix, key);
    assert_eq!(keys::user_key(&prefix, &encoded).as_deref(), Some(key));
    // Byte order is the order of the user's keys.
    let other_encoded = keys::kv_key(&prefix, other);
    assert_eq!(
        encoded.cmp(&other_encoded),
        key.cmp(other),
        "{key:?} vs {other:?}"
    );
    let opts = ListOptions {
        prefix: Some(other.to_string()),
        start: Some(key.to_string()),
        ..ListOptions::default()
    };
    let (lo, hi) = keys::list_range(&prefix, &opts);
    if opts.contains(key) {
        assert!(
            lo <= encoded && encoded < hi,
            "a listed key outside its range"
        );
    }
    let due = data.len() as i64 - 64;
    let index = keys::alarm_index_key(due, &room_key);
    assert_eq!(keys::parse_alarm_index(&index), Some((room_key, due)));
}

/// A client message to a Yjs room (see `parties::yjs`).
pub fn y_websocket(data: &[u8]) {
    crate::parties::yjs::fuzz_client_message(data);
}
