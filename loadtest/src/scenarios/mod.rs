pub mod hot_room;
pub mod idle_hold;
