//! presence: each connection has a name (`?name=`) and a status (`{"type":"status",
//! "status":"…"}`); on every join, leave and status change everyone gets
//! `{"type":"presence","users":{"<id>":{"name","status"}}}`. The data lives in connection
//! state, so it survives hibernation.

use crate::message::Message;
use crate::party::{Party, PartyError};
use crate::room::{Connection, Room};
use async_trait::async_trait;
use conclave_proto::query_param;
use serde::{Deserialize, Serialize};
use serde_json::json;

const MAX_FIELD_CHARS: usize = 256;

#[derive(Serialize, Deserialize, Clone, Default)]
struct User {
    name: String,
    status: String,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    status: Option<String>,
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_FIELD_CHARS).collect()
}

fn announce(room: &Room) {
    let mut users = serde_json::Map::new();
    for c in room.connections(None) {
        let u: User = c.state().unwrap_or_default();
        users.insert(
            c.id().to_string(),
            json!({"name": u.name, "status": u.status}),
        );
    }
    room.broadcast(
        &Message::text(json!({"type": "presence", "users": users}).to_string()),
        &[],
    );
}

#[derive(Default)]
pub struct Presence;

#[async_trait]
impl Party for Presence {
    async fn on_connect(&mut self, room: &mut Room, conn: &Connection) -> Result<(), PartyError> {
        let name = query_param(conn.uri(), "name")
            .map(|n| clip(&n))
            .unwrap_or_else(|| conn.id().to_string());
        conn.set_state(&User {
            name,
            status: "online".into(),
        })?;
        announce(room);
        Ok(())
    }

    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        let parsed = msg
            .as_text()
            .and_then(|t| serde_json::from_str::<Incoming>(t).ok());
        match parsed {
            Some(Incoming { kind, status: Some(status) }) if kind == "status" => {
                let mut user: User = conn.state().unwrap_or_default();
                user.status = clip(&status);
                conn.set_state(&user)?;
                announce(room);
            }
            _ => conn.send(Message::text(
                json!({"type": "error", "error": "expected {\"type\":\"status\",\"status\":\"…\"}"}).to_string(),
            )),
        }
        Ok(())
    }

    async fn on_close(
        &mut self,
        room: &mut Room,
        _conn: &Connection,
        _code: u16,
        _reason: &str,
    ) -> Result<(), PartyError> {
        announce(room);
        Ok(())
    }

    async fn on_error(
        &mut self,
        room: &mut Room,
        _conn: &Connection,
        _error: &str,
    ) -> Result<(), PartyError> {
        announce(room);
        Ok(())
    }
}
