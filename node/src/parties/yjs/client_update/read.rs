//! The wire side of a client's update: its v1 struct stream read into runs of blocks,
//! refused where it is not what a Yjs document writes (the kinds, lengths, clocks and
//! nesting rules in the parent module's list).

use super::{known_of, Block, Container, Dep, Id, Run, MAX_CLIENT, MAX_CLOCK, MAX_VALUE_DEPTH};
use yrs::encoding::read::{Cursor, Error as ReadError, Read};
use yrs::StateVector;

// A block's first byte: its content kind in the low five bits, flags above.
pub(super) const GC: u8 = 0;
pub(super) const DELETED: u8 = 1;
pub(super) const JSON: u8 = 2;
pub(super) const BINARY: u8 = 3;
pub(super) const STRING: u8 = 4;
pub(super) const EMBED: u8 = 5;
pub(super) const FORMAT: u8 = 6;
pub(super) const TYPE: u8 = 7;
pub(super) const ANY: u8 = 8;
pub(super) const DOC: u8 = 9;
pub(super) const SKIP: u8 = 10;
pub(super) const CONTENT: u8 = 0b1_1111;
pub(super) const HAS_ORIGIN: u8 = 0b1000_0000;
pub(super) const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
pub(super) const HAS_PARENT_SUB: u8 = 0b0010_0000;

// Shared types' kinds (a `TYPE` block's content).
pub(super) const ARRAY: u8 = 0;
pub(super) const MAP: u8 = 1;
pub(super) const TEXT: u8 = 2;
pub(super) const XML_ELEMENT: u8 = 3;
pub(super) const XML_FRAGMENT: u8 = 4;
pub(super) const XML_HOOK: u8 = 5;
pub(super) const XML_TEXT: u8 = 6;

pub(super) fn read_runs(cursor: &mut Cursor, known: &StateVector) -> Result<Vec<Run>, String> {
    let count: u32 = cursor.read_var().map_err(cut)?;
    let mut runs = Vec::new();
    for _ in 0..count {
        let blocks: u32 = cursor.read_var().map_err(cut)?;
        let client = read_client(cursor)?;
        let start: u32 = cursor.read_var().map_err(cut)?;
        if start > known_of(known, client) {
            return Err(format!(
                "an update starts past what the room holds of client {client}"
            ));
        }
        let mut run = Run {
            client,
            start,
            blocks: Vec::new(),
            deps: Vec::new(),
        };
        let mut clock = u64::from(start);
        for _ in 0..blocks {
            let (len, block, deps) = read_block(cursor)?;
            if len == 0 {
                // yrs drops an empty item (old Yjs versions wrote some) without moving on.
                continue;
            }
            clock += u64::from(len);
            if clock > MAX_CLOCK {
                return Err(format!(
                    "an update's clock of client {client} is out of range"
                ));
            }
            let at = run.blocks.len();
            let deps = deps.into_iter().flatten();
            run.deps.extend(deps.map(|on| Dep { block: at, on }));
            run.blocks.push(Block {
                end: clock as u32,
                ..block
            });
        }
        if run.blocks.is_empty() {
            return Err(format!("an update names client {client} without content"));
        }
        runs.push(run);
    }
    Ok(runs)
}

/// Reads one block; returns its length, the block (its end yet to be set) and what it
/// depends on (its origins, or the parent it names by id: at most two).
fn read_block(cursor: &mut Cursor) -> Result<(u32, Block, [Option<Id>; 2]), String> {
    let info = cursor.read_u8().map_err(cut)?;
    match info {
        GC => {
            let len: u32 = cursor.read_var().map_err(cut)?;
            if len == 0 {
                return Err("an update holds an empty block".into());
            }
            let block = Block {
                end: 0,
                container: None,
                is_type: false,
            };
            return Ok((len, block, [None, None]));
        }
        SKIP => return Err("an update skips part of a client's content".into()),
        _ => {}
    }
    let origin = (info & HAS_ORIGIN != 0)
        .then(|| read_id(cursor))
        .transpose()?;
    let right = (info & HAS_RIGHT_ORIGIN != 0)
        .then(|| read_id(cursor))
        .transpose()?;
    let container = match (origin, right) {
        (Some(beside), _) | (None, Some(beside)) => Container::Beside(beside),
        (None, None) => {
            let named: u32 = cursor.read_var().map_err(cut)?;
            let container = if named == 1 {
                cursor.read_string().map_err(cut)?;
                Container::Root
            } else {
                Container::In(read_id(cursor)?)
            };
            if info & HAS_PARENT_SUB != 0 {
                cursor.read_string().map_err(cut)?;
            }
            container
        }
    };
    let deps = match container {
        Container::In(parent) => [Some(parent), None],
        _ => [origin, right],
    };
    let kind = info & CONTENT;
    let block = Block {
        end: 0,
        container: Some(container),
        is_type: kind == TYPE,
    };
    Ok((read_content(cursor, kind)?, block, deps))
}

/// Reads an item's content; returns its length (yrs counts strings in UTF-16 units).
fn read_content(cursor: &mut Cursor, kind: u8) -> Result<u32, String> {
    Ok(match kind {
        DELETED => cursor.read_var().map_err(cut)?,
        BINARY => {
            cursor.read_buf().map_err(cut)?;
            1
        }
        STRING => {
            let s = cursor.read_string().map_err(cut)?;
            u32::try_from(s.encode_utf16().count()).unwrap_or(u32::MAX)
        }
        EMBED => {
            cursor.read_string().map_err(cut)?;
            1
        }
        FORMAT => {
            cursor.read_string().map_err(cut)?;
            cursor.read_string().map_err(cut)?;
            1
        }
        TYPE => {
            match cursor.read_u8().map_err(cut)? {
                ARRAY | MAP | TEXT | XML_FRAGMENT | XML_TEXT => {}
                XML_ELEMENT => {
                    cursor.read_string().map_err(cut)?;
                }
                XML_HOOK => return Err("an update holds an XML hook (not taken)".into()),
                other => return Err(format!("an update holds a shared type of kind {other}")),
            }
            1
        }
        ANY => {
            let count: u32 = cursor.read_var().map_err(cut)?;
            for _ in 0..count {
                skip_value(cursor, 0)?;
            }
            count
        }
        JSON => return Err("an update holds legacy JSON content (not taken)".into()),
        DOC => return Err("an update holds a subdocument (not taken)".into()),
        other => return Err(format!("an update holds a block of kind {other}")),
    })
}

/// Skips one lib0 value, refusing one nested deeper than [`MAX_VALUE_DEPTH`].
fn skip_value(cursor: &mut Cursor, depth: usize) -> Result<(), String> {
    match cursor.read_u8().map_err(cut)? {
        // undefined, null, false, true
        127 | 126 | 121 | 120 => {}
        125 => {
            cursor.read_var::<i64>().map_err(cut)?;
        }
        124 => {
            cursor.read_exact(4).map_err(cut)?;
        }
        123 | 122 => {
            cursor.read_exact(8).map_err(cut)?;
        }
        119 => {
            cursor.read_string().map_err(cut)?;
        }
        116 => {
            cursor.read_buf().map_err(cut)?;
        }
        tag @ (118 | 117) => {
            if depth == MAX_VALUE_DEPTH {
                return Err(format!(
                    "an update holds a value nested deeper than {MAX_VALUE_DEPTH}"
                ));
            }
            let entries: u64 = cursor.read_var().map_err(cut)?;
            for _ in 0..entries {
                if tag == 118 {
                    cursor.read_string().map_err(cut)?;
                }
                skip_value(cursor, depth + 1)?;
            }
        }
        other => return Err(format!("an update holds a value of unknown kind {other}")),
    }
    Ok(())
}

pub(super) fn read_client(cursor: &mut Cursor) -> Result<u64, String> {
    let client: u64 = cursor.read_var().map_err(cut)?;
    if client > MAX_CLIENT {
        return Err(format!("an update names client id {client}, past 2^53"));
    }
    Ok(client)
}

pub(super) fn read_id(cursor: &mut Cursor) -> Result<Id, String> {
    let client = read_client(cursor)?;
    let clock = cursor.read_var().map_err(cut)?;
    Ok(Id { client, clock })
}

pub(super) fn cut(e: ReadError) -> String {
    format!("an update does not decode: {e}")
}
