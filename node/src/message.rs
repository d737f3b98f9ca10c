//! What flows between clients and rooms: WebSocket [`Message`]s, and HTTP [`Request`]s
//! with their [`Response`]s.

use bytes::Bytes;

/// An HTTP request to a room (`on_request`), or between rooms (`fetch`).
pub type Request = http::Request<Bytes>;
/// The answer to a [`Request`].
pub type Response = http::Response<Bytes>;

/// A WebSocket message: text (valid UTF-8) or binary. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    payload: Bytes,
    binary: bool,
}

impl Message {
    /// A text message.
    pub fn text(s: impl Into<String>) -> Self {
        Self {
            payload: Bytes::from(s.into()),
            binary: false,
        }
    }

    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Self {
            payload: b.into(),
            binary: true,
        }
    }

    /// A text message from bytes; `None` if they are not UTF-8.
    pub fn text_from_bytes(b: Bytes) -> Option<Self> {
        std::str::from_utf8(&b).ok()?;
        Some(Self {
            payload: b,
            binary: false,
        })
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        if self.binary {
            None
        } else {
            // Checked at construction.
            std::str::from_utf8(&self.payload).ok()
        }
    }

    pub fn is_binary(&self) -> bool {
        self.binary
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.as_text() {
            Some(t) => write!(f, "Text({t:?})"),
            None => write!(f, "Binary({} bytes)", self.payload.len()),
        }
    }
}

/// A response with `status` (`fallback` if that is not a valid status), `body` and its
/// content type.
fn response(
    status: u16,
    fallback: http::StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response {
    let mut r = http::Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(fallback);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// 405 for a method the party does not serve, with the `Allow` header listing those it
/// does (e.g. `"GET, HEAD"`).
pub fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = text_response(405, "Method not allowed");
    r.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// Whether a request only reads (`GET` or `HEAD`).
pub fn is_read(req: &Request) -> bool {
    matches!(*req.method(), http::Method::GET | http::Method::HEAD)
}

/// A plain-text response (500 if `status` is not a valid status).
pub fn text_response(status: u16, body: &str) -> Response {
    response(
        status,
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "text/plain; charset=utf-8",
        Bytes::from(body.to_string()),
    )
}

/// A JSON response with a status (200 if `status` is not a valid status).
pub fn json_response(status: u16, value: &serde_json::Value) -> Response {
    response(
        status,
        http::StatusCode::OK,
        "application/json",
        Bytes::from(value.to_string()),
    )
}
