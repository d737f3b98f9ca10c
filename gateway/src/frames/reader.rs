//! Client frames, parsed as bytes arrive, straight from the read (nothing is kept for an
//! idle socket: only a frame cut by the end of a read is). The checks are the protocol's:
//! masked frames only, no reserved bits or opcodes, control frames final and at most 125
//! bytes, continuations only inside a fragmented message, valid close codes and UTF-8 text,
//! messages within the size limit (checked from the header, before the payload is read).

use super::MAX_CONTROL_PAYLOAD;
use bytes::Bytes;
use conclave_proto::close;
use std::io::Cursor;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// What a client sent, one complete message or control frame at a time.
#[derive(Debug, PartialEq)]
pub(crate) enum Incoming {
    Message {
        payload: Bytes,
        binary: bool,
    },
    Ping(Bytes),
    Pong,
    /// The client's close frame; `code` is 1005 when it carried none.
    Close {
        code: u16,
        reason: String,
    },
    /// The client broke the protocol or a limit: the socket closes with `code`. Nothing
    /// after it is read.
    Violation {
        code: u16,
        reason: &'static str,
    },
}

/// A fragmented message being put together.
struct Assembling {
    binary: bool,
    payload: Vec<u8>,
}

/// Parses a client's frames from the bytes read off its connection.
pub(crate) struct FrameReader {
    max_message: usize,
    /// What the reads so far left unfinished; `None`, nothing allocated, between
    /// messages (an idle socket's reader is a few words).
    unfinished: Option<Box<Unfinished>>,
    /// A close frame or a violation was read: what follows is ignored.
    done: bool,
}

#[derive(Default)]
struct Unfinished {
    /// The start of a frame cut off by the end of a read.
    partial: Vec<u8>,
    message: Option<Assembling>,
    /// Since when the client has had a message (or a frame) begun and not finished.
    since: Option<Instant>,
}

impl FrameReader {
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            unfinished: None,
            done: false,
        }
    }

    fn unfinished(&mut self) -> &mut Unfinished {
        self.unfinished.get_or_insert_with(Box::default)
    }

    fn message(&self) -> Option<&Assembling> {
        self.unfinished.as_ref()?.message.as_ref()
    }

    /// Parses `data`, the next bytes from the client, into `out`.
    pub fn read(&mut self, data: &[u8], now: Instant, out: &mut Vec<Incoming>) {
        if self.done {
            return;
        }
        let buffered = self
            .unfinished
            .as_mut()
            .map(|u| std::mem::take(&mut u.partial))
            .filter(|partial| !partial.is_empty());
        match buffered {
            None => {
                let used = self.parse(data, out);
                if !self.done && used < data.len() {
                    self.unfinished().partial = data[used..].to_vec();
                }
            }
            Some(mut buf) => {
                buf.extend_from_slice(data);
                let used = self.parse(&buf, out);
                if used < buf.len() && !self.done {
                    buf.drain(..used);
                    self.unfinished().partial = buf;
                }
            }
        }
        let finished = self
            .unfinished
            .as_ref()
            .is_none_or(|u| u.partial.is_empty() && u.message.is_none());
        if self.done || finished {
            self.unfinished = None;
        } else {
            self.unfinished().since.get_or_insert(now);
        }
    }

    /// How long the client has left a message or frame unfinished, if it has.
    pub fn unfinished_since(&self) -> Option<Instant> {
        self.unfinished.as_ref()?.since
    }

    /// Parses every complete frame at the start of `data`; returns the bytes used.
    fn parse(&mut self, data: &[u8], out: &mut Vec<Incoming>) -> usize {
        let mut used = 0;
        while !self.done {
            let mut cursor = Cursor::new(&data[used..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(_) => {
                    self.violate(out, close::PROTOCOL_ERROR, "Reserved opcode");
                    break;
                }
            };
            let header_len = cursor.position() as usize;
            if let Err((code, reason)) = self.check(&header, length) {
                self.violate(out, code, reason);
                break;
            }
            // Checked against the message limit above, so it fits.
            let length = length as usize;
            let start = used + header_len;
            if data.len() - start < length {
                break;
            }
            used = start + length;
            self.frame(&header, &data[start..used], out);
        }
        used
    }

    /// What the header alone breaks, before its payload is read.
    fn check(&self, h: &FrameHeader, length: u64) -> Result<(), (u16, &'static str)> {
        let protocol = |reason| Err((close::PROTOCOL_ERROR, reason));
        if h.rsv1 || h.rsv2 || h.rsv3 {
            return protocol("Reserved bits set (no extension was negotiated)");
        }
        if h.mask.is_none() {
            return protocol("Unmasked frame from a client");
        }
        match h.opcode {
            OpCode::Control(_) if !h.is_final || length > MAX_CONTROL_PAYLOAD as u64 => {
                protocol("Fragmented or oversized control frame")
            }
            OpCode::Control(_) => Ok(()),
            OpCode::Data(Data::Continue) if self.message().is_none() => {
                protocol("Continuation frame outside a fragmented message")
            }
            OpCode::Data(Data::Text | Data::Binary) if self.message().is_some() => {
                protocol("New message inside a fragmented message")
            }
            OpCode::Data(_) => {
                let so_far = self.message().map_or(0, |m| m.payload.len() as u64);
                if so_far.saturating_add(length) > self.max_message as u64 {
                    return Err((close::MESSAGE_TOO_BIG, "Message too big"));
                }
                Ok(())
            }
        }
    }

    /// One complete frame whose header passed [`Self::check`].
    fn frame(&mut self, h: &FrameHeader, masked: &[u8], out: &mut Vec<Incoming>) {
        let mask = h.mask.unwrap_or_default();
        match h.opcode {
            OpCode::Data(kind @ (Data::Text | Data::Binary)) => {
                let binary = kind == Data::Binary;
                let mut payload = masked.to_vec();
                unmask(&mut payload, mask);
                if h.is_final {
                    self.complete(binary, payload, out);
                } else {
                    self.unfinished().message = Some(Assembling { binary, payload });
                }
            }
            OpCode::Data(_) => {
                let Some(message) = self.unfinished.as_mut().and_then(|u| u.message.as_mut())
                else {
                    return;
                };
                let from = message.payload.len();
                message.payload.extend_from_slice(masked);
                unmask(&mut message.payload[from..], mask);
                if h.is_final {
                    if let Some(m) = self.unfinished.as_mut().and_then(|u| u.message.take()) {
                        self.complete(m.binary, m.payload, out);
                    }
                }
            }
            OpCode::Control(control) => {
                let mut payload = masked.to_vec();
                unmask(&mut payload, mask);
                match control {
                    Control::Ping => out.push(Incoming::Ping(payload.into())),
                    Control::Pong => out.push(Incoming::Pong),
                    _ => self.closed(&payload, out),
                }
            }
        }
    }

    fn complete(&mut self, binary: bool, payload: Vec<u8>, out: &mut Vec<Incoming>) {
        if !binary && std::str::from_utf8(&payload).is_err() {
            return self.violate(out, close::INVALID_PAYLOAD, "Invalid UTF-8 in text message");
        }
        // A finished message starts the clock again for the next one.
        if let Some(u) = self.unfinished.as_mut() {
            u.since = None;
        }
        out.push(Incoming::Message {
            payload: payload.into(),
            binary,
        });
    }

    fn closed(&mut self, payload: &[u8], out: &mut Vec<Incoming>) {
        self.done = true;
        let (code, reason) = match payload {
            [] => (close::NO_STATUS, ""),
            [_] => return self.violate(out, close::PROTOCOL_ERROR, "Close frame of one byte"),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !may_be_received(code) {
                    return self.violate(out, close::PROTOCOL_ERROR, "Invalid close code");
                }
                match std::str::from_utf8(reason) {
                    Ok(reason) => (code, reason),
                    Err(_) => {
                        return self.violate(
                            out,
                            close::INVALID_PAYLOAD,
                            "Invalid UTF-8 in close reason",
                        )
                    }
                }
            }
        };
        out.push(Incoming::Close {
            code,
            reason: reason.to_string(),
        });
    }

    fn violate(&mut self, out: &mut Vec<Incoming>, code: u16, reason: &'static str) {
        self.done = true;
        out.push(Incoming::Violation { code, reason });
    }
}

/// Close codes a peer may send (RFC 6455 7.4: not 1004–1006 or 1015, nothing unassigned
/// below 3000).
fn may_be_received(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Removes (or applies) a client's frame mask.
fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Each chunk is 8 bytes, so the rest starts at a multiple of 4, where the mask does.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    /// A frame as a client sends it (masked), encoded by tungstenite.
    fn client_frame(opcode: OpCode, payload: &[u8], is_final: bool) -> Vec<u8> {
        let header = FrameHeader {
            is_final,
            opcode,
            mask: Some([0x37, 0xfa, 0x21, 0x3d]),
            ..FrameHeader::default()
        };
        let frame = Frame::from_payload(header, Bytes::copy_from_slice(payload));
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    fn text(s: &str) -> Vec<u8> {
        client_frame(OpCode::Data(Data::Text), s.as_bytes(), true)
    }

    fn read_all(reader: &mut FrameReader, data: &[u8]) -> Vec<Incoming> {
        let mut out = Vec::new();
        reader.read(data, Instant::now(), &mut out);
        out
    }

    fn message(s: &str, binary: bool) -> Incoming {
        Incoming::Message {
            payload: Bytes::copy_from_slice(s.as_bytes()),
            binary,
        }
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_cut() {
        let long = "x".repeat(70_000);
        let mut wire = text("hello");
        wire.extend(client_frame(OpCode::Data(Data::Binary), b"bin", true));
        wire.extend(client_frame(OpCode::Data(Data::Text), b"frag", false));
        wire.extend(client_frame(OpCode::Control(Control::Ping), b"p", true));
        wire.extend(client_frame(OpCode::Data(Data::Continue), b"mented", true));
        wire.extend(text(&long));
        let expected = vec![
            message("hello", false),
            message("bin", true),
            Incoming::Ping(Bytes::from_static(b"p")),
            message("fragmented", false),
            message(&long, false),
        ];
        for cut in [1, 2, 3, 7, 13, 1000, wire.len()] {
            let mut reader = FrameReader::new(1 << 20);
            let mut got = Vec::new();
            for piece in wire.chunks(cut) {
                got.extend(read_all(&mut reader, piece));
            }
            assert_eq!(got, expected, "cut every {cut} bytes");
            assert!(reader.unfinished_since().is_none());
            assert!(reader.unfinished.is_none(), "an idle reader holds nothing");
        }
    }

    #[test]
    fn a_message_begun_and_not_finished_is_timed_from_its_first_byte() {
        let mut reader = FrameReader::new(1 << 20);
        let wire = text("hello");
        let t0 = Instant::now();
        let mut out = Vec::new();
        reader.read(&wire[..3], t0, &mut out);
        reader.read(
            &wire[3..4],
            t0 + std::time::Duration::from_secs(1),
            &mut out,
        );
        assert_eq!(reader.unfinished_since(), Some(t0));
        reader.read(&wire[4..], t0, &mut out);
        assert_eq!(reader.unfinished_since(), None);
        let first = client_frame(OpCode::Data(Data::Text), b"a", false);
        reader.read(&first, t0, &mut out);
        let ping = client_frame(OpCode::Control(Control::Ping), b"", true);
        reader.read(&ping, t0 + std::time::Duration::from_secs(5), &mut out);
        assert_eq!(
            reader.unfinished_since(),
            Some(t0),
            "pings do not finish it"
        );
    }

    fn violation(wire: &[u8], max: usize) -> Option<(u16, &'static str)> {
        let mut reader = FrameReader::new(max);
        read_all(&mut reader, wire)
            .into_iter()
            .find_map(|i| match i {
                Incoming::Violation { code, reason } => Some((code, reason)),
                _ => None,
            })
    }

    #[test]
    fn protocol_breaks_and_limits_are_violations() {
        let code = |wire: &[u8]| violation(wire, 100).map(|(c, _)| c);
        // Unmasked, reserved bits, reserved opcode.
        assert_eq!(code(&[0x81, 0x01, b'a']), Some(1002));
        let mut rsv = text("a");
        rsv[0] |= 0x40;
        assert_eq!(code(&rsv), Some(1002));
        assert_eq!(code(&[0x83, 0x80, 0, 0, 0, 0]), Some(1002));
        // Control frames: fragmented, too long.
        let ping = client_frame(OpCode::Control(Control::Ping), b"", false);
        assert_eq!(code(&ping), Some(1002));
        let big = client_frame(OpCode::Control(Control::Ping), &[0; 126], true);
        assert_eq!(code(&big), Some(1002));
        // Continuation out of place; a new message inside a fragmented one.
        let cont = client_frame(OpCode::Data(Data::Continue), b"a", true);
        assert_eq!(code(&cont), Some(1002));
        let mut two = client_frame(OpCode::Data(Data::Text), b"a", false);
        two.extend(text("b"));
        assert_eq!(code(&two), Some(1002));
        // Text that is not UTF-8, also across fragments.
        let bad = client_frame(OpCode::Data(Data::Text), &[0xc3, 0x28], true);
        assert_eq!(code(&bad), Some(1007));
        let mut split = client_frame(OpCode::Data(Data::Text), &[0xe2, 0x82], false);
        split.extend(client_frame(OpCode::Data(Data::Continue), &[0xac], true));
        assert_eq!(
            code(&split),
            None,
            "a character split across fragments is fine"
        );
        // Over the message limit: a frame, or fragments adding up; known from the header.
        let header_only = &client_frame(OpCode::Data(Data::Binary), &[0; 101], true)[..8];
        assert_eq!(code(header_only), Some(1009));
        let mut parts = client_frame(OpCode::Data(Data::Binary), &[0; 60], false);
        parts.extend(client_frame(OpCode::Data(Data::Continue), &[0; 60], true));
        assert_eq!(code(&parts), Some(1009));
        let huge_length = [
            0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
        ];
        assert_eq!(code(&huge_length), Some(1009));
    }

    #[test]
    fn close_frames_carry_a_valid_code_and_reason() {
        let close = |payload: &[u8]| {
            let mut reader = FrameReader::new(100);
            let mut wire = client_frame(OpCode::Control(Control::Close), payload, true);
            wire.extend(text("after the close"));
            read_all(&mut reader, &wire)
        };
        let closed = |code, reason: &str| {
            vec![Incoming::Close {
                code,
                reason: reason.into(),
            }]
        };
        assert_eq!(close(b""), closed(1005, ""));
        assert_eq!(close(&[0x03, 0xe8, b'o', b'k']), closed(1000, "ok"));
        assert_eq!(close(&[0x0f, 0xa0]), closed(4000, ""));
        let violation = |code| {
            vec![Incoming::Violation {
                code,
                reason: match code {
                    1007 => "Invalid UTF-8 in close reason",
                    _ => "",
                },
            }]
        };
        assert!(matches!(
            close(&[3])[..],
            [Incoming::Violation { code: 1002, .. }]
        ));
        for reserved in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
            let got = close(&reserved.to_be_bytes());
            assert!(
                matches!(got[..], [Incoming::Violation { code: 1002, .. }]),
                "{reserved}: {got:?}"
            );
        }
        assert_eq!(close(&[0x03, 0xe8, 0xff]), violation(1007));
    }

    #[test]
    fn unmasking_matches_the_byte_by_byte_rule() {
        let mask = [1, 2, 3, 4];
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }
}
