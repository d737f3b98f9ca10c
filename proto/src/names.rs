//! Typed ids. Party and room names are opaque UTF-8 chosen by clients: they are validated
//! here once, and everywhere else (storage keys, logs, metrics labels) they are encoded,
//! never used raw.

use std::fmt;
use std::sync::Arc;

/// Longest party name accepted, in bytes.
pub const MAX_PARTY_LEN: usize = 64;
/// Longest room name accepted, in bytes.
pub const MAX_ROOM_LEN: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{0} name is empty")]
    Empty(&'static str),
    #[error("{what} name is {len} bytes; the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} name is not valid UTF-8 after percent-decoding")]
    NotUtf8(&'static str),
    #[error("{0} name contains a control character")]
    Control(&'static str),
}

fn check(what: &'static str, s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty(what));
    }
    if s.len() > max {
        return Err(NameError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(NameError::Control(what));
    }
    Ok(())
}

/// Percent-decodes one path segment into a name.
fn decode(what: &'static str, raw: &str) -> Result<String, NameError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| NameError::NotUtf8(what))
}

macro_rules! name_type {
    ($name:ident, $what:literal, $max:ident) => {
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates an already-decoded name.
            pub fn new(s: &str) -> Result<Self, NameError> {
                check($what, s, $max)?;
                Ok(Self(Arc::from(s)))
            }
            /// Percent-decodes a URL path segment, then validates it.
            pub fn from_path_segment(raw: &str) -> Result<Self, NameError> {
                Self::new(&decode($what, raw)?)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
    };
}

name_type!(PartyName, "party", MAX_PARTY_LEN);
name_type!(RoomName, "room", MAX_ROOM_LEN);

/// One room: a party name and a room name. Exactly one actor per key in a cluster.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RoomKey {
    pub party: PartyName,
    pub room: RoomName,
}

impl RoomKey {
    pub fn new(party: &str, room: &str) -> Result<Self, NameError> {
        Ok(Self {
            party: PartyName::new(party)?,
            room: RoomName::new(room)?,
        })
    }

    pub fn to_wire(&self) -> crate::wire::RoomRef {
        crate::wire::RoomRef {
            party: self.party.to_string(),
            room: self.room.to_string(),
        }
    }

    pub fn from_wire(r: &crate::wire::RoomRef) -> Result<Self, NameError> {
        Self::new(&r.party, &r.room)
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.party, self.room)
    }
}

/// One physical client socket on one gateway; unique for the gateway's lifetime, so two
/// sockets that share a connection id (`_pk`) during a reconnect are still told apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SocketId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_decoded_and_bounded() {
        assert_eq!(
            RoomName::from_path_segment("a%20b").unwrap().as_str(),
            "a b"
        );
        assert_eq!(
            RoomName::from_path_segment("x%2Fy").unwrap().as_str(),
            "x/y"
        );
        assert_eq!(RoomName::new(""), Err(NameError::Empty("room")));
        assert!(matches!(
            RoomName::new(&"r".repeat(MAX_ROOM_LEN + 1)),
            Err(NameError::TooLong { .. })
        ));
        assert_eq!(
            RoomName::from_path_segment("%FF"),
            Err(NameError::NotUtf8("room"))
        );
        assert_eq!(PartyName::new("a\u{0}b"), Err(NameError::Control("party")));
    }
}
