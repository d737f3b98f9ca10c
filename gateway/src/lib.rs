//! The Conclave gateway: the WebSocket/HTTP edge that PartySocket clients talk to.
//!
//! It accepts `/parties/:party/:room[/*path]` and `/party/:room[/*path]`, authenticates
//! before the upgrade, enforces per-connection limits, and relays frames to the node that
//! owns the room over a relay link. Broadcasts fan out here: the node sends one delivery
//! per room and the gateway writes it to its local sockets.
//!
//! Modules, from the edge inwards: `listener` → `accept` (a connection's first request:
//! room upgrades straight to `upgrade`, anything else to the HTTP server) → `server`
//! (public type, the HTTP entry point) → `upgrade` / `forward` / `admin` → `admission`
//! (home region, admission, 421 retries) and `reattach` (moving sockets between nodes) →
//! `socket` (one client socket's task) → `frames` (its WebSocket framing) → `state` (what
//! all of those share) → `routing` (rings, homes), `pool` (links per node), `sessions`
//! (open sockets) → `link` ⇄ `session` (one relay link; one socket's attachment and replay
//! buffer) → `outbound` (a socket's send queue and close signal).
#![warn(clippy::unwrap_used)]

mod accept;
mod addresses;
mod admin;
mod admission;
mod auth;
#[doc(hidden)]
pub mod bench;
mod close_signal;
mod config;
mod connector;
mod forward;
mod frames;
#[doc(hidden)]
pub mod fuzz;
mod http;
mod keepalive;
mod limits;
mod link;
mod listener;
mod outbound;
mod pool;
mod reattach;
mod route;
mod routing;
mod server;
mod session;
mod sessions;
mod socket;
mod state;
mod upgrade;

pub use admin::check_admin_token;
pub use auth::{AuthError, JwtAlgorithm, JwtRules, PartyAuth};
pub use config::GatewayConfig;
pub use connector::{GrpcNodes, NodeConnector};
pub use listener::{bind, serve_http1};
pub use server::Gateway;
