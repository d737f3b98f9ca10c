//! relay: every message goes unchanged to every other connection of the room.
//! `GET` → `{"party","room","connections"}`; `POST` → the body is broadcast to everyone.

use super::json_response;
use crate::party::{Message, Party, PartyError, Request, Response};
use crate::room::{text_response, Connection, Room};
use async_trait::async_trait;

#[derive(Default)]
pub struct Relay;

#[async_trait]
impl Party for Relay {
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
            http::Method::GET => Ok(json_response(
                200,
                &serde_json::json!({"party": room.party(), "room": room.id(), "connections": room.connection_count()}),
            )),
            http::Method::POST => {
                let body = req.into_body();
                let msg =
                    Message::text_from_bytes(body.clone()).unwrap_or_else(|| Message::binary(body));
                room.broadcast(&msg, &[]);
                Ok(text_response(200, "OK"))
            }
            _ => Ok(text_response(405, "Method not allowed")),
        }
    }
}
