//! The Conclave node: hosts room actors, runs party code, owns room storage.
//!
//! - [`Party`] is what a room's code implements; [`Room`] and [`Connection`] are what it
//!   gets to work with. [`PartyRegistry`] maps party names to party implementations.
//! - [`Node`] hosts rooms and speaks the relay protocol to gateways.
//! - [`storage`] is the transactional key-value interface and its backends.
//!
//! Inside, from the bottom up: `message`, `links`, `time`, `config` and `storage` depend on
//! nothing else here; `room` (the party-facing API) and `party` build on them; `cluster` is
//! this node's view of the ring; `mailbox` and `rooms` are what reaches a room and which
//! rooms are live; `actor` runs one room; `host` wires these together, and `gateway_link`,
//! `alarms` and `node` drive it.

#![warn(clippy::unwrap_used)]

mod actor;
mod alarms;
#[doc(hidden)]
pub mod bench;
mod cluster;
mod config;
mod crons;
#[doc(hidden)]
pub mod fuzz;
mod gateway_bounds;
mod gateway_link;
mod host;
pub mod js;
mod links;
mod mailbox;
mod message;
mod node;
mod panics;
pub mod parties;
mod party;
mod room;
mod rooms;
pub mod storage;
mod time;

pub use async_trait::async_trait;
pub use config::NodeConfig;
pub use crons::{Cron, CronTick};
pub use message::{Message, Request, Response};
pub use node::Node;
pub use party::{
    ConnectCheck, ConnectRequest, InstanceBroken, Party, PartyError, PartyFactory, PartyRegistry,
    Rejection,
};
pub use room::{
    Connection, FetchError, PartyStub, Room, RoomFetcher, RoomStub, StateError,
    MAX_CONNECTION_STATE_BYTES, MAX_SEND_BYTES,
};
pub use storage::{ListOptions, Storage, StorageError, StorageQuota, Usage};
/// The Yjs implementation the `yjs` party kind is built on, for code that builds on it.
pub use yrs;

/// An error with its causes, for messages: a client's own text often names none ("client
/// error (Connect)"), and the cause is what tells a TLS failure or a refused connection
/// apart.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
