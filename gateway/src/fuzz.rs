//! Entry points for the fuzz targets in `fuzz/` (not an API): each runs one parser of
//! client input over arbitrary bytes and panics only where an invariant breaks.

use crate::auth::{JwtAlgorithm, JwtRules, PartyAuth};
use crate::route::parse_room_path;
use crate::upgrade::handshake;
use conclave_proto::{query_param, RoomKey};
use std::sync::OnceLock;

/// The longest `_pk` the fuzzed handshake allows.
const MAX_CONN_ID_BYTES: usize = 256;

/// A request target (`/parties/p/r/…?query`) as a client sends it: the room it names, its
/// query parameters and the WebSocket handshake over it.
pub fn request_target(data: &[u8]) {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Ok(key) = parse_room_path(path) {
        let again = RoomKey::new(key.party.as_str(), key.room.as_str());
        assert!(again.is_ok(), "a parsed room's names are not valid names");
    }
    for name in ["_pk", "_region", "token"] {
        let _ = query_param(query, name);
    }
    let Ok(req) = http::Request::builder()
        .uri(target)
        .header(http::header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
        .header(http::header::SEC_WEBSOCKET_VERSION, "13")
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, target)
        .body(axum::body::Body::empty())
    else {
        return;
    };
    if let Ok(hs) = handshake(&req, MAX_CONN_ID_BYTES) {
        let id = hs.conn_id;
        assert!(id.len() <= MAX_CONN_ID_BYTES, "a _pk over the bound");
        assert!(
            !id.chars().any(char::is_control),
            "a _pk with control characters"
        );
    }
}

/// A bearer token checked by a party that requires HS256, an audience, an issuer and a
/// bound id.
pub fn jwt(data: &[u8]) {
    static AUTH: OnceLock<PartyAuth> = OnceLock::new();
    let auth = AUTH.get_or_init(|| {
        let rules = JwtRules {
            issuer: Some("issuer".into()),
            audience: Some("audience".into()),
            allow_no_exp: false,
            bind_id_to: Some("sub".into()),
        };
        PartyAuth::new(JwtAlgorithm::HS256, "fuzz-secret", rules).expect("a valid rule set")
    });
    let token = String::from_utf8_lossy(data);
    let _ = auth.check(Some(&token), "party", "room", Some("id"));
}

/// The bytes of a client's WebSocket connection after the upgrade, as the gateway parses
/// them: the first byte picks how the rest is cut into reads. However it is cut, the same
/// messages come out, none over the size limit, and nothing follows a close or a violation.
pub fn client_frames(data: &[u8]) {
    use crate::frames::{FrameReader, Incoming};
    const MAX_MESSAGE: usize = 4096;
    let Some((&cut, wire)) = data.split_first() else {
        return;
    };
    let now = tokio::time::Instant::now();
    let read = |chunk: usize| {
        let mut reader = FrameReader::new(MAX_MESSAGE);
        let mut out = Vec::new();
        for piece in wire.chunks(chunk.max(1)) {
            reader.read(piece, now, &mut out);
        }
        out
    };
    let whole = read(wire.len());
    assert_eq!(
        read(cut as usize),
        whole,
        "cutting the reads changed the messages"
    );
    for (i, event) in whole.iter().enumerate() {
        match event {
            Incoming::Message { payload, binary } => {
                assert!(payload.len() <= MAX_MESSAGE, "a message over the limit");
                assert!(
                    *binary || std::str::from_utf8(payload).is_ok(),
                    "text not UTF-8"
                );
            }
            Incoming::Ping(payload) => assert!(payload.len() <= 125, "a long ping"),
            Incoming::Close { .. } | Incoming::Violation { .. } => {
                assert_eq!(i + 1, whole.len(), "something read after the end")
            }
            Incoming::Pong => {}
        }
    }
}
