//! `notes`: a Yjs document per room, edited by the unchanged `y-partykit` and
//! `y-partyserver` providers, that party code builds on through the yjs party's Rust API
//! ([`YjsHooks`]):
//!
//! - a new room's document is seeded with a title in its `"t"` text (`on_load`);
//! - connections that open with `?view=1` only read (`read_only`);
//! - updates over 64 KiB are refused (`accept_update`);
//! - y-partyserver's custom messages: `length` is answered with the text's length,
//!   `shout:…` goes to everyone else (`on_custom_message`);
//! - `GET` answers the text; `POST` appends its body to it, as an edit every client sees
//!   (`on_request` and [`Document::change`]).

use conclave_node::parties::yjs::{Document, Update, YjsHooks};
use conclave_node::parties::{query_param, text_response};
use conclave_node::yrs::{Doc, GetString, ReadTxn, Text, Transact, WriteTxn};
use conclave_node::{async_trait, Connection, PartyError, Request, Response, Room};

/// The title a new document starts with.
pub const TITLE: &str = "Notes\n";
/// The largest update a client may send.
const MAX_UPDATE_BYTES: usize = 64 * 1024;

#[derive(Default)]
pub struct Notes;

fn text_of(doc: &Doc) -> String {
    let txn = doc.transact();
    txn.get_text("t")
        .map(|t| t.get_string(&txn))
        .unwrap_or_default()
}

#[async_trait]
impl YjsHooks for Notes {
    async fn on_load(&mut self, room: &mut Room, doc: &mut Document) -> Result<(), PartyError> {
        if doc.doc().transact().get_text("t").is_none() {
            doc.change(room, |txn| {
                txn.get_or_insert_text("t").insert(txn, 0, TITLE)
            })?;
        }
        Ok(())
    }

    async fn read_only(&mut self, _room: &mut Room, conn: &Connection) -> bool {
        query_param(conn.uri(), "view").as_deref() == Some("1")
    }

    fn accept_update(
        &mut self,
        _conn: &Connection,
        _doc: &Doc,
        _update: &Update,
        encoded_bytes: usize,
    ) -> bool {
        encoded_bytes <= MAX_UPDATE_BYTES
    }

    async fn on_custom_message(
        &mut self,
        room: &mut Room,
        doc: &mut Document,
        conn: &Connection,
        message: &str,
    ) -> Result<(), PartyError> {
        if message == "length" {
            let length = text_of(doc.doc()).chars().count();
            doc.send_custom(conn, &format!("length:{length}"));
        } else if let Some(shout) = message.strip_prefix("shout:") {
            doc.broadcast_custom(room, &format!("shout:{shout}"), &[conn.id()]);
        }
        Ok(())
    }

    async fn on_request(
        &mut self,
        room: &mut Room,
        doc: &mut Document,
        req: Request,
    ) -> Result<Response, PartyError> {
        if req.method().as_str() == "POST" {
            let line = String::from_utf8_lossy(req.body()).into_owned();
            doc.change(room, |txn| {
                let text = txn.get_or_insert_text("t");
                let end = text.len(txn);
                text.insert(txn, end, &line);
            })?;
        }
        Ok(text_response(200, &text_of(doc.doc())))
    }
}
