//! URL shapes clients use: `/parties/:party/:room[/*path]` and the legacy
//! `/party/:room[/*path]` (party `main`), with percent-decoded, validated names.

use conclave_proto::{NameError, PartyName, RoomKey, RoomName};

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RouteError {
    NotARoom,
    BadName(NameError),
}

/// The room a request path addresses.
pub(crate) fn parse_room_path(path: &str) -> Result<RoomKey, RouteError> {
    let mut segments = path.trim_start_matches('/').split('/');
    let (party, room) = match segments.next() {
        Some("parties") => (segments.next(), segments.next()),
        Some("party") => (Some("main"), segments.next()),
        _ => return Err(RouteError::NotARoom),
    };
    let (Some(party), Some(room)) = (party, room) else {
        return Err(RouteError::NotARoom);
    };
    if party.is_empty() || room.is_empty() {
        return Err(RouteError::NotARoom);
    }
    let party = PartyName::from_path_segment(party).map_err(RouteError::BadName)?;
    let room = RoomName::from_path_segment(room).map_err(RouteError::BadName)?;
    Ok(RoomKey { party, room })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_url_shapes_and_trailing_paths() {
        let k = parse_room_path("/parties/chat/lobby/sub/path").unwrap();
        assert_eq!((k.party.as_str(), k.room.as_str()), ("chat", "lobby"));
        let k = parse_room_path("/party/r%20one").unwrap();
        assert_eq!((k.party.as_str(), k.room.as_str()), ("main", "r one"));
        assert_eq!(parse_room_path("/parties/chat"), Err(RouteError::NotARoom));
        assert_eq!(parse_room_path("/parties//x"), Err(RouteError::NotARoom));
        assert_eq!(parse_room_path("/other/x/y"), Err(RouteError::NotARoom));
        assert!(matches!(
            parse_room_path("/parties/main/%FF"),
            Err(RouteError::BadName(_))
        ));
    }
}
