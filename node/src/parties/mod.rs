//! Built-in parties, selectable by kind in the config: relay, chat, presence, counter, yjs.

mod chat;
mod counter;
mod presence;
mod relay;
pub mod yjs;

pub use chat::Chat;
pub use counter::Counter;
pub use presence::Presence;
pub use relay::Relay;
pub use yjs::Yjs;

use crate::party::{Party, PartyFactory};

/// A built-in party by its config name (`relay`, `chat`, `presence`, `counter`, `yjs`).
pub fn builtin(kind: &str) -> Option<Box<dyn PartyFactory>> {
    fn f<P: Party + Default>() -> Box<dyn PartyFactory> {
        Box::new(|| Box::new(P::default()) as Box<dyn Party>)
    }
    Some(match kind {
        "relay" => f::<Relay>(),
        "chat" => f::<Chat>(),
        "presence" => f::<Presence>(),
        "counter" => f::<Counter>(),
        "yjs" => f::<Yjs>(),
        _ => return None,
    })
}

/// The built-in kinds, for help texts and errors.
pub const BUILTIN_KINDS: [&str; 5] = ["relay", "chat", "presence", "counter", "yjs"];

pub use crate::message::{json_response, text_response};
pub use conclave_proto::query_param;
