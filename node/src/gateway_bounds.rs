//! What a node takes from a gateway. A gateway checks its clients' input itself, but the
//! node does not rely on that: a faulty or compromised gateway must not be able to panic a
//! link, exhaust the node's memory, or leave connections behind in rooms. Each bound is
//! the one gateways apply to their clients (or the protocol's own), so a correct gateway
//! never meets them.

use crate::room::MAX_CONNECTION_STATE_BYTES;
use conclave_proto::wire::{Admit, Header};
use conclave_proto::Refusal;

/// Headers on one request (hyper's limit, which gateways keep).
const MAX_HEADERS: usize = 100;
/// Bytes of header names and values on one request.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A connection id (`_pk`): the gateway's own bound.
const MAX_CONN_ID_BYTES: usize = 256;
/// A request URI (the longest `http::Uri` parses).
const MAX_URI_BYTES: usize = 65_534;
/// A W3C `traceparent` is 55 bytes; anything much longer is not one.
const MAX_TRACE_PARENT_BYTES: usize = 128;
/// A close frame's reason (RFC 6455: 125 bytes less the code).
pub(crate) const MAX_CLOSE_REASON_BYTES: usize = 123;
/// The error text of a failed socket.
const MAX_CLOSE_ERROR_BYTES: usize = 1024;
/// Tags `connection_tags` may add to a connection's id (a moving socket carries its id and
/// these), and their longest length.
pub(crate) const MAX_EXTRA_TAGS: usize = 9;
pub(crate) const MAX_TAG_BYTES: usize = 256;

/// Refuses headers past the count or size a gateway lets through (431).
pub(crate) fn check_headers(headers: &[Header]) -> Result<(), Refusal> {
    let bytes: usize = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(Refusal::new(431, "Request header fields too large"));
    }
    Ok(())
}

/// Refuses an admission whose connection id, URI, headers or carried state no gateway
/// would send.
pub(crate) fn check_admit(a: &Admit) -> Result<(), Refusal> {
    let control = a.conn_id.chars().any(char::is_control);
    if a.conn_id.is_empty() || a.conn_id.len() > MAX_CONN_ID_BYTES || control {
        return Err(Refusal::new(400, "Invalid connection id"));
    }
    if a.uri.len() > MAX_URI_BYTES {
        return Err(Refusal::new(414, "URI too long"));
    }
    check_headers(&a.headers)?;
    if let Some(r) = &a.resume {
        let tags_ok = r.tags.len() <= 1 + MAX_EXTRA_TAGS
            && r.tags
                .iter()
                .all(|t| !t.is_empty() && t.len() <= MAX_TAG_BYTES)
            && r.tags.first().is_none_or(|t| *t == a.conn_id);
        if !tags_ok || r.state.len() > MAX_CONNECTION_STATE_BYTES {
            return Err(Refusal::new(400, "Invalid resumed connection"));
        }
    }
    Ok(())
}

/// A trace parent worth keeping: none when empty or too long to be one.
pub(crate) fn trace_parent(value: String) -> Option<Box<str>> {
    (!value.is_empty() && value.len() <= MAX_TRACE_PARENT_BYTES).then(|| value.into())
}

/// A client's close code as a party may see it: a code a close frame can carry
/// (1000–4999), else 1006 (abnormal closure).
pub(crate) fn close_code(code: u32) -> u16 {
    match u16::try_from(code) {
        Ok(code @ 1000..=4999) => code,
        _ => conclave_proto::close::ABNORMAL,
    }
}

/// A close frame's reason, cut to what a close frame can carry.
pub(crate) fn close_reason(reason: String) -> String {
    truncate(reason, MAX_CLOSE_REASON_BYTES)
}

/// A failed socket's error text, cut to a bound.
pub(crate) fn close_error(error: String) -> String {
    truncate(error, MAX_CLOSE_ERROR_BYTES)
}

fn truncate(mut text: String, max: usize) -> String {
    let end = cut(&text, max).len();
    text.truncate(end);
    text
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::wire::Resume;

    fn admit() -> Admit {
        Admit {
            conn_id: "alice".into(),
            uri: "/parties/main/x".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_admission_no_gateway_would_send_is_refused() {
        assert!(check_admit(&admit()).is_ok());
        let bad = |edit: fn(&mut Admit)| {
            let mut a = admit();
            edit(&mut a);
            check_admit(&a).unwrap_err().status
        };
        assert_eq!(bad(|a| a.conn_id.clear()), 400);
        assert_eq!(bad(|a| a.conn_id = "x".repeat(257)), 400);
        assert_eq!(bad(|a| a.conn_id = "a\nb".into()), 400);
        assert_eq!(bad(|a| a.uri = "/".repeat(70_000)), 414);
        let many = |a: &mut Admit| {
            a.headers = (0..30_000)
                .map(|i| Header {
                    name: format!("x-h{i}"),
                    value: "v".into(),
                })
                .collect()
        };
        assert_eq!(bad(many), 431);
        let big = |a: &mut Admit| {
            a.headers = vec![Header {
                name: "x-big".into(),
                value: vec![b'v'; 70_000].into(),
            }]
        };
        assert_eq!(bad(big), 431);
        let forged = |a: &mut Admit| {
            a.resume = Some(Resume {
                tags: vec!["bob".into()],
                ..Default::default()
            })
        };
        assert_eq!(bad(forged), 400, "a resume must carry its own id first");
        let heavy = |a: &mut Admit| {
            a.resume = Some(Resume {
                tags: vec!["alice".into()],
                state: vec![b'x'; MAX_CONNECTION_STATE_BYTES + 1].into(),
                ..Default::default()
            })
        };
        assert_eq!(bad(heavy), 400);
        let tagged = |a: &mut Admit| {
            a.resume = Some(Resume {
                tags: std::iter::once("alice".to_string())
                    .chain((0..MAX_EXTRA_TAGS + 1).map(|i| format!("t{i}")))
                    .collect(),
                ..Default::default()
            })
        };
        assert_eq!(bad(tagged), 400);
    }

    #[test]
    fn close_codes_and_texts_are_bounded() {
        assert_eq!(close_code(1000), 1000);
        assert_eq!(close_code(4999), 4999);
        assert_eq!(close_code(66_536), 1006, "no wrapping into 1000");
        assert_eq!(close_code(999), 1006);
        assert_eq!(close_reason("é".repeat(100)).len(), 122);
        assert_eq!(close_error("x".repeat(5000)).len(), 1024);
        assert!(trace_parent(String::new()).is_none());
        assert!(trace_parent("x".repeat(500)).is_none());
    }
}
