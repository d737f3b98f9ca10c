//! The `conclave` binary's wiring, also usable as a library to embed Conclave with your
//! own parties (see `examples/custom-party`).

pub mod admin;
pub mod config;
pub mod dev;
pub mod roles;
pub mod telemetry;

pub use config::{DevOpts, FileConfig, GatewayOpts, NodeOpts, PlacementOpts};
pub use dev::{DevConfig, DevServer};
