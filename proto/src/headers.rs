//! Request and response headers in the relay's wire form: a list of name and value.

use crate::wire::Header;
use bytes::Bytes;

/// A map of headers as the relay carries them (gateway to node, and a room's response
/// back).
pub fn wire_headers(headers: &http::HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_string(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
        .collect()
}
