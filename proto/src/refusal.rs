//! Why a node would not take a socket or answer a request: the HTTP status and body the
//! client gets, and the node's ring version (with 421, the ring under which the room is
//! placed elsewhere, so the gateway knows which ring to wait for before it retries).

use crate::{RingVersion, RoomKey};

/// HTTP 421 Misdirected Request: the room is placed on another node.
pub const MISPLACED: u16 = 421;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub body: String,
    pub ring_version: RingVersion,
}

impl Refusal {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            ring_version: RingVersion(0),
        }
    }

    /// The room is placed on another node under this node's ring `version`.
    pub fn misplaced(room: &RoomKey, version: RingVersion) -> Self {
        Self {
            status: MISPLACED,
            body: format!(
                "Room {room} is placed on another node under ring version {}",
                version.0
            ),
            ring_version: version,
        }
    }

    /// The node that should serve the room cannot be reached.
    pub fn unavailable() -> Self {
        Self::new(503, "The room's node is unavailable")
    }

    /// The node did not answer within the gateway's node timeout.
    pub fn timed_out() -> Self {
        Self::new(504, "The room's node did not answer in time")
    }

    pub fn is_misplaced(&self) -> bool {
        self.status == MISPLACED
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}
