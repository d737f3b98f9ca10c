//! WebSocket framing on the server's side of a client connection (RFC 6455): client frames
//! parsed as they arrive (`reader.rs`), server frames encoded whole, once: a broadcast's
//! every recipient writes the same bytes.

mod reader;

pub(crate) use reader::{FrameReader, Incoming};

use bytes::Bytes;
use conclave_proto::close;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// Longest payload of a control frame (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// A whole, unfragmented server frame.
fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let header = FrameHeader {
        opcode,
        mask: None,
        ..FrameHeader::default()
    };
    let length = payload.len() as u64;
    let mut frame = Vec::with_capacity(header.len(length) + payload.len());
    header
        .format(length, &mut frame)
        .expect("formatting into a Vec cannot fail");
    frame.extend_from_slice(payload);
    frame.into()
}

/// A data message as the server sends it; `None` for text that is not UTF-8 (nothing a
/// client could read).
pub(crate) fn message(payload: &[u8], binary: bool) -> Option<Bytes> {
    if binary {
        Some(encode(OpCode::Data(Data::Binary), payload))
    } else {
        std::str::from_utf8(payload).ok()?;
        Some(encode(OpCode::Data(Data::Text), payload))
    }
}

/// The server's close frame: `code` and `reason` (cut to fit a control frame) when the
/// code may be sent, an empty close frame otherwise.
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::new();
    if close::is_sendable(code) {
        payload.extend_from_slice(&code.to_be_bytes());
        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..end]);
    }
    encode(OpCode::Control(Control::Close), &payload)
}

/// The server's keepalive ping (empty).
pub(crate) fn ping() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

/// The answer to a client's ping.
pub(crate) fn pong(payload: &[u8]) -> Bytes {
    encode(OpCode::Control(Control::Pong), payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn server_frames_are_read_back_by_a_client() {
        use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
        let long = "y".repeat(70_000);
        let mut wire = Vec::new();
        wire.extend_from_slice(&super::message(b"hi", false).unwrap());
        wire.extend_from_slice(&super::message(long.as_bytes(), false).unwrap());
        wire.extend_from_slice(&super::message(&[0, 1, 2], true).unwrap());
        wire.extend_from_slice(&pong(b"p"));
        wire.extend_from_slice(&ping());
        wire.extend_from_slice(&close_frame(1000, &"é".repeat(100)));
        let mut ws = WebSocket::from_raw_socket(Cursor::new(wire), Role::Client, None);
        use tokio_tungstenite::tungstenite::Message;
        assert_eq!(ws.read().unwrap(), Message::text("hi"));
        assert_eq!(ws.read().unwrap(), Message::text(long));
        assert_eq!(ws.read().unwrap(), Message::binary(vec![0, 1, 2]));
        assert_eq!(ws.read().unwrap(), Message::Pong(Bytes::from_static(b"p")));
        assert!(matches!(ws.read().unwrap(), Message::Ping(_)));
        match ws.read().unwrap() {
            Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 1000);
                assert!(f.reason.len() <= 123 && f.reason.chars().all(|c| c == 'é'));
            }
            other => panic!("{other:?}"),
        }
        assert!(super::message(&[0xff], false).is_none());
        assert_eq!(&close_frame(close::ABNORMAL, "gone")[..], &[0x88, 0x00]);
    }
}
