//! Entry points for the benches in `benches/` (not an API): the hot functions of the
//! client socket, callable from outside the crate.

use crate::frames::FrameReader;
use bytes::Bytes;

/// Parses `wire` (client frames) as one read; returns the events it held.
pub fn parse_client_frames(wire: &[u8], max_message: usize) -> usize {
    let mut reader = FrameReader::new(max_message);
    let mut events = Vec::new();
    reader.read(wire, tokio::time::Instant::now(), &mut events);
    events.len()
}

/// A message as the server sends it, encoded once for every recipient.
pub fn encode_message(payload: &[u8], binary: bool) -> Option<Bytes> {
    crate::frames::message(payload, binary)
}
