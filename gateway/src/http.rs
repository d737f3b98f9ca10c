//! Small HTTP pieces the entry points share.

use axum::response::{IntoResponse, Response};
use conclave_proto::Refusal;
use http::{header, HeaderMap, StatusCode};

/// A plain-text response.
pub(crate) fn plain(status: u16, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// A node's (or the gateway's own) refusal, as the client sees it.
pub(crate) fn refused(r: Refusal) -> Response {
    plain(r.status, r.body)
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The URL the room sees, with PartyKit's `http://` scheme.
pub(crate) fn room_uri<B>(req: &http::Request<B>) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // Built by hand: one allocation, no formatting machinery (once per connection).
    let mut uri = String::with_capacity(7 + host.len() + pq.len());
    uri.push_str("http://");
    uri.push_str(host);
    uri.push_str(pq);
    uri
}
