//! The `conclave` binary's wiring, also usable as a library to run Conclave with your
//! own parties in every role: [`Conclave`] (see `examples/custom-party`).
//!
//! - `app`: [`Conclave`], the command line of every role over a set of party kinds.
//! - [`config`]: flags, environment and the TOML file, resolved into each role's config.
//! - `dev`: [`DevServer`], gateway and node in one process.
//! - `roles`: the cluster roles ([`run_node`], [`run_gateway`], [`run_placement`]).
//! - `edge`: the client-facing server of `dev` and `gateway`; `store`: opening the room
//!   store; `shutdown`: the stop signal; `admin`: a node's admin endpoint; `memory`:
//!   giving freed heap back to the system.
//! - [`telemetry`]: logs and metrics.
#![warn(clippy::unwrap_used)]

mod admin;
mod app;
pub mod config;
mod dev;
mod edge;
pub mod memory;
pub mod project;
mod roles;
mod shutdown;
mod store;
pub mod telemetry;

pub use app::Conclave;
pub use config::{
    DevConfig, DevOpts, FileConfig, GatewayOpts, NodeOpts, PartyKinds, PlacementOpts,
};
pub use dev::DevServer;
pub use roles::{run_gateway, run_node, run_placement};
