//! The Conclave gateway: the WebSocket/HTTP edge that PartySocket clients talk to.
//!
//! It accepts `/parties/:party/:room[/*path]` and `/party/:room[/*path]`, authenticates
//! before the upgrade, enforces per-connection limits, and relays frames to the node that
//! owns the room over a relay link. Broadcasts fan out here: the node sends one delivery
//! per room and the gateway writes it to its local sockets.

mod admin;
mod auth;
mod config;
mod limits;
mod link;
mod moves;
mod nodes;
mod route;
mod server;
mod session;
mod socket;

pub use admin::check_admin_token;
pub use auth::{AuthError, JwtAlgorithm, PartyAuth};
pub use config::GatewayConfig;
pub use nodes::{GrpcNodes, NodeConnector};
pub use server::Gateway;
