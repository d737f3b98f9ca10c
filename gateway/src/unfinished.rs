//! When a client started a message it has not finished. tungstenite assembles a message
//! from its fragments out of sight, so a client that sends a first fragment and then only
//! pings held up to the message limit of memory for as long as it liked. [`Watched`] reads
//! the frame headers of the bytes as they arrive and keeps, in [`UnfinishedSince`], since
//! when a data message (or a frame's header) has been incomplete; the writer closes the
//! socket once that lasts past `GatewayConfig::message_timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::io::InspectReader;

/// Since when (ms after `origin`, plus one; 0: nothing unfinished) the client has had a
/// message or a frame header incomplete. Shared by the reader's stream and the writer.
pub(crate) struct UnfinishedSince {
    origin: Instant,
    since: AtomicU64,
}

impl UnfinishedSince {
    pub fn new(origin: Instant) -> Arc<Self> {
        Arc::new(Self {
            origin,
            since: AtomicU64::new(0),
        })
    }

    /// How long the client's current message has been unfinished, if it has one.
    pub fn for_how_long(&self) -> Option<std::time::Duration> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let now = self.origin.elapsed().as_millis() as u64 + 1;
                Some(std::time::Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }

    fn set(&self, unfinished: bool) {
        let was = self.since.load(Ordering::Relaxed);
        if unfinished && was == 0 {
            let now = self.origin.elapsed().as_millis() as u64 + 1;
            self.since.store(now, Ordering::Relaxed);
        } else if !unfinished && was != 0 {
            self.since.store(0, Ordering::Relaxed);
        }
    }
}

/// The frame headers of a client's byte stream (RFC 6455 5.2), enough to tell whether a
/// data message is complete; payloads are skipped, not kept.
#[derive(Default)]
struct FrameHeaders {
    header: [u8; 14],
    /// Bytes of the current header gathered so far.
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// The current frame is a data frame and carries FIN.
    final_data: bool,
    /// A data message started and its final frame has not ended yet.
    in_message: bool,
}

impl FrameHeaders {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = (bytes.len() as u64).min(self.payload_left);
                self.payload_left -= n;
                bytes = &bytes[n as usize..];
                if self.payload_left == 0 {
                    self.frame_ended();
                }
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have == self.header_len() {
                self.header_read();
            }
        }
    }

    /// The current header's length, as far as its first two bytes tell.
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn header_read(&mut self) {
        let (b0, b1) = (self.header[0], self.header[1]);
        let opcode = b0 & 0x0f;
        let fin = b0 & 0x80 != 0;
        self.payload_left = match b1 & 0x7f {
            126 => u16::from_be_bytes([self.header[2], self.header[3]]) as u64,
            127 => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(len)
            }
            n => n as u64,
        };
        self.have = 0;
        // Data frames: continuation 0, text 1, binary 2 (3-7 are reserved: tungstenite
        // refuses them). Control frames may come between a message's fragments.
        let data = opcode < 8;
        self.final_data = data && fin;
        if data && !fin {
            self.in_message = true;
        }
        if data {
            self.in_message |= self.payload_left > 0;
        }
        if self.payload_left == 0 {
            self.frame_ended();
        }
    }

    fn frame_ended(&mut self) {
        if self.final_data {
            self.in_message = false;
            self.final_data = false;
        }
    }

    fn unfinished(&self) -> bool {
        self.in_message || self.have > 0
    }
}

/// A client's connection, its reads watched for unfinished messages.
pub(crate) type Watched<S> = InspectReader<S, Box<dyn FnMut(&[u8]) + Send>>;

/// Watches `io`'s reads, keeping `since` up to date.
pub(crate) fn watched<S: tokio::io::AsyncRead>(io: S, since: Arc<UnfinishedSince>) -> Watched<S> {
    let mut headers = FrameHeaders::default();
    let watch = move |read: &[u8]| {
        headers.feed(read);
        since.set(headers.unfinished());
    };
    InspectReader::new(io, Box::new(watch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b0: u8, payload_len: usize) -> Vec<u8> {
        let mut f = vec![b0];
        match payload_len {
            0..=125 => f.push(0x80 | payload_len as u8),
            126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', payload_len));
        f
    }

    #[test]
    fn a_message_is_unfinished_from_its_first_byte_to_its_last_fragment() {
        let mut h = FrameHeaders::default();
        let whole = frame(0x81, 300);
        h.feed(&whole[..1]);
        assert!(h.unfinished(), "half a header");
        h.feed(&whole[1..100]);
        assert!(h.unfinished(), "half a payload");
        h.feed(&whole[100..]);
        assert!(!h.unfinished(), "a whole text frame");

        h.feed(&frame(0x01, 10)); // text, not final
        assert!(h.unfinished());
        h.feed(&frame(0x89, 4)); // a ping in between
        assert!(h.unfinished(), "a ping does not finish a message");
        h.feed(&frame(0x00, 70_000)); // continuation, not final
        assert!(h.unfinished());
        let last = frame(0x80, 5); // final continuation
        h.feed(&last);
        assert!(!h.unfinished());

        // Frames split anywhere and joined anyhow end the same.
        let mut stream = frame(0x02, 200_000);
        stream.extend(frame(0x8a, 0));
        stream.extend(frame(0x82, 0));
        for chunk in stream.chunks(7) {
            h.feed(chunk);
        }
        assert!(!h.unfinished());
    }
}
