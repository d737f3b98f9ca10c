//! Built-in parties, selectable by kind in the config: relay, chat, presence, counter.

mod chat;
mod counter;
mod presence;
mod relay;

pub use chat::Chat;
pub use counter::Counter;
pub use presence::Presence;
pub use relay::Relay;

use crate::party::{Party, PartyFactory, Response};
use bytes::Bytes;

/// A built-in party by its config name (`relay`, `chat`, `presence`, `counter`).
pub fn builtin(kind: &str) -> Option<Box<dyn PartyFactory>> {
    fn f<P: Party + Default>() -> Box<dyn PartyFactory> {
        Box::new(|| Box::new(P::default()) as Box<dyn Party>)
    }
    Some(match kind {
        "relay" => f::<Relay>(),
        "chat" => f::<Chat>(),
        "presence" => f::<Presence>(),
        "counter" => f::<Counter>(),
        _ => return None,
    })
}

/// The built-in kinds, for help texts and errors.
pub const BUILTIN_KINDS: [&str; 4] = ["relay", "chat", "presence", "counter"];

/// A JSON response with a status.
pub fn json_response(status: u16, value: &serde_json::Value) -> Response {
    let mut r = http::Response::new(Bytes::from(value.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

pub use conclave_proto::query_param;
