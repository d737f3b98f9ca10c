//! How deep the room's document nests shared types, item by item: which depth of type each
//! client's content sits in. yrs deletes and garbage-collects a type's content recursively,
//! one call per level: a client that nested 100,000 maps (an 880 KB update) and then
//! deleted the outer one overflowed the stack and aborted the process. yrs does not say
//! where an item is, so the room keeps it here, from every update it applies (checked
//! before, by [`super::client_update::check`], which refuses a type nested past
//! [`MAX_TYPE_DEPTH`]).
//!
//! Depth 1 is a root type's content. Content this does not know (a block the document
//! collected, or an update that could not be read through) counts as depth 1: not knowing
//! never refuses a client's update; yrs collects content that hangs off collected content.

use std::collections::HashMap;

/// How deep shared types may nest (a root type's content is at depth 1).
pub(crate) const MAX_TYPE_DEPTH: u16 = 256;

/// Per client, its content's depths as spans of clocks in clock order.
#[derive(Default)]
pub(crate) struct Nesting {
    clients: HashMap<u64, Vec<Span>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Span {
    pub start: u32,
    pub end: u32,
    /// 0 where the content is in no type (collected).
    pub depth: u16,
}

impl Nesting {
    /// The depth of the type holding the content at `clock` of `client`, if known.
    pub fn depth_of(&self, client: u64, clock: u32) -> Option<u16> {
        let spans = self.clients.get(&client)?;
        let i = spans.partition_point(|s| s.end <= clock);
        spans
            .get(i)
            .filter(|s| s.start <= clock && s.depth > 0)
            .map(|s| s.depth)
    }

    /// Adds a client's new content (spans in clock order; what it already has is cut off).
    pub fn add(&mut self, client: u64, spans: impl IntoIterator<Item = Span>) {
        let known = self.clients.entry(client).or_default();
        for mut span in spans {
            if let Some(last) = known.last_mut() {
                span.start = span.start.max(last.end);
                if span.end <= span.start {
                    continue;
                }
                if last.end == span.start && last.depth == span.depth {
                    last.end = span.end;
                    continue;
                }
            }
            known.push(span);
        }
    }

    /// Learns how an update about to be applied to a document holding `known` nests (one
    /// stored, or party code's change). One it cannot read through
    /// ([`super::client_update::check`] refuses it) is left unknown.
    pub fn learn(&mut self, update: &[u8], known: &yrs::StateVector) {
        if let Ok(checked) = super::client_update::check(update, known, self) {
            checked.applied(self);
        }
    }

    /// Spans held, for tests and metrics.
    #[cfg(test)]
    pub fn spans(&self) -> usize {
        self.clients.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_and_overlaps_are_cut() {
        let mut n = Nesting::default();
        let span = |start, end, depth| Span { start, end, depth };
        n.add(1, [span(0, 5, 1), span(5, 9, 1), span(9, 10, 2)]);
        assert_eq!(n.spans(), 2);
        n.add(1, [span(8, 12, 3), span(12, 14, 0)]);
        assert_eq!(n.depth_of(1, 4), Some(1));
        assert_eq!(n.depth_of(1, 9), Some(2));
        assert_eq!(n.depth_of(1, 10), Some(3));
        assert_eq!(n.depth_of(1, 12), None, "collected");
        assert_eq!(n.depth_of(1, 14), None, "past the end");
        assert_eq!(n.depth_of(2, 0), None, "unknown client");
        // A gap (content not read through) is unknown.
        n.add(1, [span(20, 21, 4)]);
        assert_eq!(n.depth_of(1, 16), None);
        assert_eq!(n.depth_of(1, 20), Some(4));
    }
}
