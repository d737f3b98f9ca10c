//! Request headers from the relay's wire form (a list of name and value) to the `http`
//! crate's map that parties see; `conclave_proto::wire_headers` goes the other way.

use conclave_proto::wire::Header;

/// The request headers a gateway sent, as a map. A value that is the whole of its own
/// allocation (the in-process link's) is kept as it is; any other (a slice of a decoded
/// relay batch) is copied, so that headers a party keeps never keep a batch's buffer.
pub(crate) fn header_map(headers: Vec<Header>) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for h in headers {
        let value = match h.value.try_into_mut() {
            Ok(own) if own.capacity() == own.len() => {
                http::HeaderValue::from_maybe_shared(own.freeze())
            }
            Ok(part_of_more) => http::HeaderValue::from_bytes(&part_of_more),
            Err(shared) => http::HeaderValue::from_bytes(&shared),
        };
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(h.name.as_bytes()), value) {
            // Bounded before (check_headers); `try_append` cannot panic past capacity.
            let _ = map.try_append(n, v);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::header_map;
    use bytes::Bytes;
    use conclave_proto::wire::Header;

    fn header(name: &str, value: Bytes) -> Header {
        Header {
            name: name.to_string(),
            value,
        }
    }

    /// A value that is its own allocation is kept; a slice of a larger buffer is copied,
    /// even when nothing else holds that buffer any more, so a kept header never keeps a
    /// decoded relay batch alive.
    #[test]
    fn header_values_keep_their_own_bytes_and_copy_slices_of_batches() {
        let own = Bytes::from(b"text/plain".to_vec());
        let own_at = own.as_ptr();
        let batch = Bytes::from(vec![b'x'; 64 * 1024]);
        let slice = batch.slice(100..110);
        let slice_at = slice.as_ptr();
        drop(batch);
        let map = header_map(vec![header("accept", own), header("x-from-batch", slice)]);
        assert_eq!(map["accept"].as_bytes().as_ptr(), own_at);
        assert_eq!(map["accept"], "text/plain");
        assert_ne!(map["x-from-batch"].as_bytes().as_ptr(), slice_at);
        assert_eq!(map["x-from-batch"], "xxxxxxxxxx");
    }
}
