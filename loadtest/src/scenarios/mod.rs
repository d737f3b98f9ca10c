pub mod connect_storm;
pub mod fanout;
pub mod idle_hold;
pub mod messaging;
