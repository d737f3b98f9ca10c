pub mod connect_storm;
mod connections;
pub mod fanout;
pub mod idle_hold;
pub mod messaging;
