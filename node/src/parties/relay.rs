//! relay: every message goes unchanged to every other connection of the room.
//! `GET` → `{"party","room","connections"}` (plus `"tagged": N` for `?tag=`); `POST` → the
//! body is broadcast to everyone. A connection's tags come from `?tags=a,b`.

use crate::message::{
    json_response, method_not_allowed, text_response, Message, Request, Response,
};
use crate::party::{Party, PartyError};
use crate::room::{Connection, Room};
use async_trait::async_trait;
use conclave_proto::query_param;

#[derive(Default)]
pub struct Relay;

#[async_trait]
impl Party for Relay {
    async fn connection_tags(&mut self, _room: &mut Room, conn: &Connection) -> Vec<String> {
        query_param(conn.uri(), "tags")
            .map(|t| t.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }

    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        room.broadcast(&msg, &[conn.id()]);
        Ok(())
    }

    async fn on_request(&mut self, room: &mut Room, req: Request) -> Result<Response, PartyError> {
        match *req.method() {
            http::Method::GET => {
                let mut info = serde_json::json!({"party": room.party(), "room": room.id(), "connections": room.connection_count()});
                if let Some(tag) = query_param(&req.uri().to_string(), "tag") {
                    info["tagged"] = room.connections(Some(&tag)).len().into();
                }
                Ok(json_response(200, &info))
            }
            http::Method::POST => {
                let body = req.into_body();
                let msg =
                    Message::text_from_bytes(body.clone()).unwrap_or_else(|| Message::binary(body));
                room.broadcast(&msg, &[]);
                Ok(text_response(200, "OK"))
            }
            _ => Ok(method_not_allowed("GET, POST")),
        }
    }
}
