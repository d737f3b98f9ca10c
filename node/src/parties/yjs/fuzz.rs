//! For the fuzz targets (`conclave_node::fuzz`): what a room does with one client message,
//! up to the room — the y-partykit batch markers when it is text, else the y-websocket
//! messages decoded, updates trimmed and applied, awareness applied, state vectors
//! answered — on a fresh document.

use super::batch::{self, Batches};
use super::integrate::{from_client, integrate, Refused};
use super::{bounds, Document, YjsOptions};
use yrs::sync::{Message as YMessage, MessageReader, SyncMessage};
use yrs::updates::decoder::DecoderV1;
use yrs::{ReadTxn, Transact};

pub(crate) fn fuzz_client_message(data: &[u8]) {
    let mut document = Document::new(YjsOptions::default());
    if let Ok(text) = std::str::from_utf8(data) {
        if batch::is_marker(text) {
            let mut batches = Batches::default();
            for line in text.lines() {
                let _ = if batch::is_marker(line) {
                    batches.marker("conn", line).map(drop)
                } else {
                    batches.chunk("conn", line.as_bytes())
                };
            }
            return;
        }
    }
    if bounds::check_declared_counts(data).is_err() {
        return;
    }
    let mut decoder = DecoderV1::from(data);
    for message in MessageReader::new(&mut decoder) {
        let Ok(message) = message else { return };
        match message {
            YMessage::Sync(SyncMessage::SyncStep1(sv)) => {
                let _ = document.doc().transact().encode_state_as_update_v1(&sv);
            }
            YMessage::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
                let checked = from_client(&document.doc().transact(), &document.nesting, update);
                let Ok((update, checked)) = checked else {
                    continue;
                };
                // libFuzzer aborts on any panic, even a caught one: quiet the hook.
                let hook = std::panic::take_hook();
                std::panic::set_hook(Box::new(|_| {}));
                let integrated = integrate(document.doc(), update);
                std::panic::set_hook(hook);
                match integrated {
                    Ok(_) => checked.applied(&mut document.nesting),
                    // As the room does: the instance is dropped, the step discarded.
                    Err(Refused::Broken(_)) => document = Document::new(YjsOptions::default()),
                    Err(Refused::Invalid(_)) => {}
                }
            }
            YMessage::Awareness(update) => {
                let _ = document.awareness.apply_update(update);
            }
            YMessage::AwarenessQuery => {
                let _ = document.awareness.update();
            }
            YMessage::Auth(_) | YMessage::Custom(..) => {}
        }
    }
}
