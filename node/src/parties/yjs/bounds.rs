//! The counts a y-websocket message declares, checked against its size before yrs decodes
//! it. yrs reserves room for a declared count up front; the reservation is fallible, but a
//! hash table that fits in memory is cleared at once, so a 14-byte message whose state
//! vector declared 198 million entries made the room reserve 4.5 GB and write 268 MB of it
//! (found by the `y_websocket` fuzz target). Every entry takes at least a byte per field, so a count
//! past what the rest of the message can hold is refused here.

use yrs::encoding::read::{Cursor, Read};

const MSG_SYNC: u8 = 0;
const MSG_AWARENESS: u8 = 1;
const MSG_AUTH: u8 = 2;
const MSG_QUERY_AWARENESS: u8 = 3;
const PERMISSION_DENIED: u8 = 0;
const SYNC_STEP_1: u8 = 0;
const SYNC_STEP_2: u8 = 1;
const SYNC_UPDATE: u8 = 2;

/// `Err` if a message in `data` declares more entries than it has bytes for. Messages yrs
/// cannot frame are left to yrs to refuse.
pub fn check_declared_counts(data: &[u8]) -> Result<(), String> {
    let mut cursor = Cursor::new(data);
    while cursor.has_content() {
        let Ok(tag) = cursor.read_var::<u8>() else {
            return Ok(());
        };
        match tag {
            MSG_SYNC => {
                let Ok(kind) = cursor.read_var::<u8>() else {
                    return Ok(());
                };
                let Some(body) = next_buf(&mut cursor) else {
                    return Ok(());
                };
                match kind {
                    // Per entry: a client id and a clock.
                    SYNC_STEP_1 => check_count(body, 2, "state vector")?,
                    SYNC_STEP_2 | SYNC_UPDATE => check_update(body)?,
                    _ => return Ok(()),
                }
            }
            // Per client: an id, a clock and a JSON string's length.
            MSG_AWARENESS => match next_buf(&mut cursor) {
                Some(body) => check_count(body, 3, "awareness update")?,
                None => return Ok(()),
            },
            // A permission, and when it is denied a reason.
            MSG_AUTH => {
                let Ok(permission) = cursor.read_var::<u8>() else {
                    return Ok(());
                };
                if permission == PERMISSION_DENIED && next_buf(&mut cursor).is_none() {
                    return Ok(());
                }
            }
            MSG_QUERY_AWARENESS => {}
            _ => {
                if next_buf(&mut cursor).is_none() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// The next length-prefixed buffer, or `None` past the end.
fn next_buf<'a>(cursor: &mut Cursor<'a>) -> Option<&'a [u8]> {
    let len = cursor.read_var::<u32>().ok()? as usize;
    let start = cursor.next;
    let end = start
        .checked_add(len)
        .filter(|end| *end <= cursor.buf.len())?;
    cursor.next = end;
    Some(&cursor.buf[start..end])
}

/// A leading count of entries of at least `min_entry_bytes` each.
fn check_count(body: &[u8], min_entry_bytes: usize, what: &str) -> Result<(), String> {
    let mut cursor = Cursor::new(body);
    let Ok(count) = cursor.read_var::<u64>() else {
        return Ok(());
    };
    let room = (body.len() - cursor.next) / min_entry_bytes;
    if count > room as u64 {
        return Err(format!(
            "{what} declares {count} entries in {} bytes",
            body.len()
        ));
    }
    Ok(())
}

/// An update (v1): its count of clients (each at least a block count, an id and a clock),
/// and the first client's count of blocks (each at least a byte).
fn check_update(body: &[u8]) -> Result<(), String> {
    check_count(body, 3, "update")?;
    let mut cursor = Cursor::new(body);
    let (Ok(clients), Ok(blocks)) = (cursor.read_var::<u64>(), cursor.read_var::<u64>()) else {
        return Ok(());
    };
    if clients > 0 && blocks > (body.len() - cursor.next) as u64 {
        return Err(format!(
            "update declares {blocks} blocks in {} bytes",
            body.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_vector_declaring_more_entries_than_bytes_is_refused() {
        // The fuzz target's find: an auth message, then sync step 1 with a state vector
        // declaring 197,705,682 entries in four bytes.
        let bomb = [
            0x02, 0x26, 0x00, 0x00, 0x04, 0xd2, 0xff, 0xa2, 0x5e, 0xa0, 0x5d, 0x5d, 0x23, 0xd2,
        ];
        assert!(check_declared_counts(&bomb).is_err());
        // Two entries in four bytes are fine.
        assert!(check_declared_counts(&[0x00, 0x00, 0x05, 0x02, 0x01, 0x01, 0x02, 0x03]).is_ok());
    }

    #[test]
    fn real_messages_pass() {
        use yrs::sync::{Awareness, Message, SyncMessage};
        use yrs::updates::encoder::Encode;
        use yrs::{GetString, ReadTxn, Text, Transact};
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        text.insert(&mut doc.transact_mut(), 0, "hello");
        let update = doc
            .transact()
            .encode_state_as_update_v1(&Default::default());
        assert_eq!(text.get_string(&doc.transact()), "hello");
        let mut awareness = Awareness::new(yrs::Doc::new());
        awareness.set_local_state("{\"user\":1}").unwrap();
        let messages = [
            Message::Sync(SyncMessage::SyncStep1(doc.transact().state_vector())),
            Message::Sync(SyncMessage::Update(update)),
            Message::Awareness(awareness.update().unwrap()),
            Message::AwarenessQuery,
        ];
        for m in messages {
            assert_eq!(check_declared_counts(&m.encode_v1()), Ok(()), "{m:?}");
        }
    }
}
