//! A server with parties of its own, next to the built-in parties: `reminders`, and
//! `notes` (a Yjs document built on through the yjs party's Rust API: see `notes.rs`).
//!
//! `reminders` shows alarms: a client sends `{"in_ms": 500, "text": "stand up"}`; the room
//! stores the reminder and sets its alarm; when the alarm fires (even after a restart, even
//! if the room hibernated in between) every connection gets `{"type":"reminder","text"}`
//! and the reminder is recorded as fired. `GET` → `{"pending":[…],"fired":[…]}`.
//!
//! Run it like `conclave`: `cargo run -p custom-party -- dev --port 1999`, or as a cluster
//! (`custom-party node …`, `custom-party gateway …`; every node on one shared store).

mod notes;

use conclave_node::parties::yjs::Yjs;
use conclave_node::{async_trait, Connection, Message, Party, PartyError, Request, Response, Room};
use serde_json::{json, Value};

#[derive(Default)]
struct Reminders;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[async_trait]
impl Party for Reminders {
    async fn on_message(
        &mut self,
        room: &mut Room,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), PartyError> {
        let req: Value = serde_json::from_str(msg.as_text().unwrap_or("null"))?;
        let (Some(in_ms), Some(text)) = (req["in_ms"].as_i64(), req["text"].as_str()) else {
            conn.send(Message::text(
                json!({"type": "error", "error": "send {\"in_ms\":N,\"text\":\"…\"}"}).to_string(),
            ));
            return Ok(());
        };
        let at = now_ms() + in_ms.max(0);
        let mut pending: Vec<Value> = room
            .storage()
            .get_json("pending")
            .await?
            .unwrap_or_default();
        pending.push(json!({"at": at, "text": text}));
        pending.sort_by_key(|r| r["at"].as_i64());
        room.storage().put_json("pending", &pending)?;
        room.storage()
            .set_alarm(pending[0]["at"].as_i64().unwrap_or(at));
        conn.send(Message::text(
            json!({"type": "scheduled", "at": at}).to_string(),
        ));
        Ok(())
    }

    async fn on_alarm(&mut self, room: &mut Room) -> Result<(), PartyError> {
        let now = now_ms();
        let pending: Vec<Value> = room
            .storage()
            .get_json("pending")
            .await?
            .unwrap_or_default();
        let (due, later): (Vec<Value>, Vec<Value>) = pending
            .into_iter()
            .partition(|r| r["at"].as_i64() <= Some(now));
        let mut fired: Vec<Value> = room.storage().get_json("fired").await?.unwrap_or_default();
        for r in &due {
            room.broadcast(
                &Message::text(json!({"type": "reminder", "text": r["text"]}).to_string()),
                &[],
            );
            fired.push(r.clone());
        }
        room.storage().put_json("fired", &fired)?;
        room.storage().put_json("pending", &later)?;
        if let Some(next) = later.first().and_then(|r| r["at"].as_i64()) {
            room.storage().set_alarm(next);
        }
        Ok(())
    }

    async fn on_request(&mut self, room: &mut Room, _req: Request) -> Result<Response, PartyError> {
        let pending: Value = room
            .storage()
            .get_json("pending")
            .await?
            .unwrap_or(json!([]));
        let fired: Value = room.storage().get_json("fired").await?.unwrap_or(json!([]));
        Ok(conclave_node::parties::json_response(
            200,
            &json!({"pending": pending, "fired": fired}),
        ))
    }
}

/// The whole `conclave` command line, with `reminders` added to the party kinds: run it as
/// `custom-party dev`, or as a cluster with `custom-party node …` and `custom-party
/// gateway …` like `conclave`. The party `reminders` serves it by default; TOML entries
/// may name the kind `reminders` for other party names.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conclave::Conclave::new()
        .party::<Reminders>("reminders")
        .party::<Yjs<notes::Notes>>("notes")
        .main()
        .await
}
