//! y-partykit's batches: a client sends a message over 1,000,000 bytes as a text start
//! marker (`y-pk-batch#{"id","type":"start","size","count"}`), `count` binary chunks, and
//! a text end marker with the same id, count and size. (The server answers with whole
//! messages, as y-partykit's does: its provider reads no batches.)

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The largest message a client's batch may carry: it bounds what one connection buffers.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
const SENTINEL: &str = "y-pk-batch";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Marker {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    size: usize,
    count: usize,
}

struct Incoming {
    start: Marker,
    bytes: Vec<u8>,
    chunks: usize,
}

/// Batches being received, by connection id.
#[derive(Default)]
pub struct Batches {
    incoming: HashMap<String, Incoming>,
}

/// Whether a text message belongs to a batch.
pub fn is_marker(text: &str) -> bool {
    text.starts_with(SENTINEL)
}

impl Batches {
    /// A batch marker from `conn`: a start opens its batch, an end closes it and yields the
    /// whole message.
    pub fn marker(&mut self, conn: &str, text: &str) -> Result<Option<Vec<u8>>, String> {
        let marker: Marker = text
            .split_once('#')
            .filter(|(sentinel, _)| *sentinel == SENTINEL)
            .and_then(|(_, json)| serde_json::from_str(json).ok())
            .ok_or_else(|| format!("not a batch marker: {:.80}", text))?;
        match marker.kind.as_str() {
            "start" => {
                if marker.size > MAX_BATCH_BYTES {
                    return Err(format!(
                        "a batch of {} bytes is over {MAX_BATCH_BYTES}",
                        marker.size
                    ));
                }
                self.incoming.insert(
                    conn.to_string(),
                    Incoming {
                        // Grown as chunks arrive: a start marker alone, which costs a
                        // client nothing, must not reserve up to 64 MiB.
                        bytes: Vec::new(),
                        start: marker,
                        chunks: 0,
                    },
                );
                Ok(None)
            }
            "end" => {
                let batch = self
                    .incoming
                    .remove(conn)
                    .ok_or("a batch ended that never started")?;
                let complete = batch.start.id == marker.id
                    && batch.start.count == marker.count
                    && batch.chunks == marker.count
                    && batch.start.size == marker.size
                    && batch.bytes.len() == marker.size;
                if !complete {
                    return Err(format!("batch {} arrived incomplete", marker.id));
                }
                Ok(Some(batch.bytes))
            }
            other => Err(format!("unknown batch marker type {other:?}")),
        }
    }

    /// Whether `conn` is in the middle of a batch (its binary messages are chunks).
    pub fn receiving(&self, conn: &str) -> bool {
        self.incoming.contains_key(conn)
    }

    /// A chunk of `conn`'s open batch ([`Batches::receiving`]).
    pub fn chunk(&mut self, conn: &str, data: &[u8]) -> Result<(), String> {
        let Some(batch) = self.incoming.get_mut(conn) else {
            return Err("a batch chunk outside a batch".into());
        };
        if batch.bytes.len() + data.len() > batch.start.size {
            self.incoming.remove(conn);
            return Err("a batch carried more than it announced".into());
        }
        batch.bytes.extend_from_slice(data);
        batch.chunks += 1;
        Ok(())
    }

    /// Whether no batch is half received.
    pub fn is_empty(&self) -> bool {
        self.incoming.is_empty()
    }

    /// Drops what `conn` had half sent.
    pub fn forget(&mut self, conn: &str) {
        self.incoming.remove(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_received_whole() {
        let data: Vec<u8> = (0..2_500_000u32).map(|i| i as u8).collect();
        let mut b = Batches::default();
        let marker = |kind: &str| {
            format!(
                r#"y-pk-batch#{{"id":"q1","type":"{kind}","size":{},"count":3}}"#,
                data.len()
            )
        };
        assert!(is_marker(&marker("start")));
        assert!(!b.receiving("c"));
        assert_eq!(b.marker("c", &marker("start")).unwrap(), None);
        for chunk in data.chunks(1_000_000) {
            assert!(b.receiving("c"));
            b.chunk("c", chunk).unwrap();
        }
        assert_eq!(b.marker("c", &marker("end")).unwrap().unwrap(), data);
        assert!(
            !b.receiving("c"),
            "a plain message after the batch is whole again"
        );
    }

    #[test]
    fn broken_batches_are_refused() {
        let mut b = Batches::default();
        assert!(b
            .marker(
                "c",
                r#"y-pk-batch#{"id":"x","type":"end","size":1,"count":1}"#
            )
            .is_err());
        let start = r#"y-pk-batch#{"id":"x","type":"start","size":4,"count":1}"#;
        b.marker("c", start).unwrap();
        assert!(b.chunk("c", b"too long").is_err(), "more than announced");
        b.marker("c", start).unwrap();
        b.chunk("c", b"abc").unwrap();
        let end = r#"y-pk-batch#{"id":"x","type":"end","size":4,"count":1}"#;
        assert!(b.marker("c", end).is_err(), "short");
        let huge = format!(
            r#"y-pk-batch#{{"id":"y","type":"start","size":{},"count":1}}"#,
            MAX_BATCH_BYTES + 1
        );
        assert!(b.marker("c", &huge).is_err());
    }
}
