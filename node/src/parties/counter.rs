//! counter: `incr` adds one to a persisted value, `get` reads it; either way the sender gets
//! `{"type":"count","value":N}` only after the value is durable. `GET` → `{"value":N}`.
//! The cluster tests use it as a linearizability probe.

use crate::message::{is_read, json_response, method_not_allowed, Message, Request, Response};
use crate::party::{Party, PartyError};
use crate::room::{Connection, Room};
use async_trait::async_trait;
use serde_json::json;

const KEY: &str = "value";

#[derive(Default)]
pub struct Counter;

#[async_trait]
impl Party for Counter {
    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        let value: i64 = room.storage().get_json(KEY).await?.unwrap_or(0);
        let reply = match msg.as_text() {
            Some("incr") => {
                room.storage().put_json(KEY, &(value + 1))?;
                json!({"type": "count", "value": value + 1})
            }
            Some("get") => json!({"type": "count", "value": value}),
            _ => json!({"type": "error", "error": "send \"incr\" or \"get\""}),
        };
        conn.send(Message::text(reply.to_string()));
        Ok(())
    }

    async fn on_request(&mut self, room: &mut Room, req: Request) -> Result<Response, PartyError> {
        if !is_read(&req) {
            return Ok(method_not_allowed("GET, HEAD"));
        }
        let value: i64 = room.storage().get_json(KEY).await?.unwrap_or(0);
        Ok(json_response(200, &json!({"value": value})))
    }
}
