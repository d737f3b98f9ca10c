//! The Conclave node: hosts room actors, runs party code, owns room storage.
//!
//! - [`Party`] is what a room's code implements; [`Room`] and [`Connection`] are what it
//!   gets to work with. [`PartyRegistry`] maps party names to party implementations.
//! - [`Node`] hosts rooms and speaks the relay protocol to gateways.
//! - [`storage`] is the transactional key-value interface and its backends.

mod alarms;
mod config;
mod host;
mod node;
pub mod parties;
mod party;
mod room;
pub mod storage;
mod time;

pub use async_trait::async_trait;
pub use config::NodeConfig;
pub use node::Node;
pub use party::{
    ConnectRequest, Message, Party, PartyError, PartyFactory, PartyRegistry, Rejection, Request,
    Response,
};
pub use room::{
    Connection, FetchError, PartyStub, Room, RoomFetcher, RoomStub, StateError,
    MAX_CONNECTION_STATE_BYTES,
};
pub use storage::{ListOptions, Storage, StorageError};
