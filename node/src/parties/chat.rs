//! chat: `{"type":"message","text":"…"}` (1..=4096 chars) is given an id (increasing per
//! room), `from` and `ts`, persisted, then broadcast to everyone including the sender. A new
//! connection first gets `{"type":"history","messages":[…]}` (the last 100, oldest first).
//! `GET` → `{"messages":[…]}`. The room keeps the last [`KEEP`] messages.

use crate::message::{is_read, json_response, method_not_allowed, Message, Request, Response};
use crate::party::{Party, PartyError};
use crate::room::{Connection, Room};
use crate::storage::{encode_json, ListOptions, StorageError};
use crate::time::now_ms;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const HISTORY: usize = 100;
pub const KEEP: u64 = 1000;
pub const MAX_TEXT_CHARS: usize = 4096;
const NEXT_ID: &str = "next_id";
const MSG_PREFIX: &str = "msg:";

#[derive(Serialize, Deserialize, Clone)]
struct ChatMessage {
    id: u64,
    from: String,
    text: String,
    ts: i64,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

fn msg_key(id: u64) -> String {
    format!("{MSG_PREFIX}{id:020}")
}

async fn history(room: &mut Room) -> Result<Vec<serde_json::Value>, PartyError> {
    let opts = ListOptions {
        prefix: Some(MSG_PREFIX.into()),
        reverse: true,
        limit: Some(HISTORY),
        ..Default::default()
    };
    let mut out = Vec::new();
    for (_, v) in room.storage().list(&opts).await?.into_iter().rev() {
        let m: ChatMessage = serde_json::from_slice(&v)?;
        out.push(
            json!({"type": "message", "id": m.id, "from": m.from, "text": m.text, "ts": m.ts}),
        );
    }
    Ok(out)
}

fn error(conn: &Connection, e: &str) {
    conn.send(Message::text(
        json!({"type": "error", "error": e}).to_string(),
    ));
}

#[derive(Default)]
pub struct Chat;

#[async_trait]
impl Party for Chat {
    async fn on_connect(&mut self, room: &mut Room, conn: &Connection) -> Result<(), PartyError> {
        let messages = history(room).await?;
        conn.send(Message::text(
            json!({"type": "history", "messages": messages}).to_string(),
        ));
        Ok(())
    }

    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        let Some(text) = msg.as_text() else {
            error(conn, "binary messages are not supported");
            return Ok(());
        };
        let incoming: Incoming = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                error(conn, &format!("invalid JSON: {e}"));
                return Ok(());
            }
        };
        if incoming.kind != "message" {
            error(conn, &format!("unknown message type {:?}", incoming.kind));
            return Ok(());
        }
        let text = incoming.text.unwrap_or_default();
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_TEXT_CHARS {
            error(
                conn,
                &format!("text must be 1 to {MAX_TEXT_CHARS} characters, got {chars}"),
            );
            return Ok(());
        }
        let id: u64 = room.storage().get_json(NEXT_ID).await?.unwrap_or(1);
        let m = ChatMessage {
            id,
            from: conn.id().to_string(),
            text,
            ts: now_ms(),
        };
        let stored = room.storage().put_many(vec![
            (msg_key(id), encode_json(&m)?),
            (NEXT_ID.into(), encode_json(&(id + 1))?),
        ]);
        if let Err(e @ StorageError::QuotaExceeded { .. }) = stored {
            error(conn, &e.to_string());
            return Ok(());
        }
        stored?;
        if id > KEEP {
            room.storage().delete(&msg_key(id - KEEP))?;
        }
        let out =
            json!({"type": "message", "id": m.id, "from": m.from, "text": m.text, "ts": m.ts});
        room.broadcast(&Message::text(out.to_string()), &[]);
        Ok(())
    }

    async fn on_request(&mut self, room: &mut Room, req: Request) -> Result<Response, PartyError> {
        if !is_read(&req) {
            return Ok(method_not_allowed("GET, HEAD"));
        }
        let messages = history(room).await?;
        Ok(json_response(200, &json!({"messages": messages})))
    }
}
