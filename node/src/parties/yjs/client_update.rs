//! A client's update (y-websocket's v1 encoding) read through before yrs decodes it, and
//! refused unless a client's own document could have made it. yrs (0.28) trusts the struct
//! stream it decodes: the `y_websocket` fuzz target found crafted updates that made it free
//! memory still in use (a client's blocks given twice, or overlapping after a length that
//! wraps the clock), leak (content waiting on a dependency the room does not have, a
//! subdocument) or recurse without bound (nested values, nested types). Each rule below
//! stands for one of those; what a Yjs client sends passes them all.
//!
//! The rules, per client the update holds content of:
//! - one run of blocks, starting no later than what the room holds of that client (it would
//!   wait for the content between), with no skipped range, a clock below 2^31 at its end and
//!   a client id JavaScript numbers hold exactly (53 bits; yrs folds bits above together);
//! - every block's origins and parent are content the room holds or content of the update
//!   that can be integrated before it: no dependency on missing content, none in a cycle;
//! - content is of a kind Yjs writes and yrs reads the same way (not the legacy JSON
//!   content, which yrs reads one entry past; not an XML hook, whose name yrs does not read;
//!   not a subdocument, which yrs leaks with its parent); values nest at most
//!   [`MAX_VALUE_DEPTH`] deep, shared types [`MAX_TYPE_DEPTH`] (see [`super::nesting`]);
//! - the delete set removes only content the room or the update holds.

use super::nesting::{Nesting, Span, MAX_TYPE_DEPTH};
use std::collections::HashMap;
use yrs::encoding::read::{Cursor, Error as ReadError, Read};
use yrs::{ClientID, StateVector};

/// How deep arrays and maps may nest in a value: yrs decodes and drops values recursively,
/// so a megabyte of nested arrays overflowed the stack of the thread running the room.
pub(crate) const MAX_VALUE_DEPTH: usize = 64;
/// Clocks stay below 2^31: yrs mixes them with `i32` offsets.
const MAX_CLOCK: u64 = i32::MAX as u64;
/// The largest client id a JavaScript number holds exactly (Yjs makes 32-bit ones).
const MAX_CLIENT: u64 = (1 << 53) - 1;

// A block's first byte: its content kind in the low five bits, flags above.
const GC: u8 = 0;
const DELETED: u8 = 1;
const JSON: u8 = 2;
const BINARY: u8 = 3;
const STRING: u8 = 4;
const EMBED: u8 = 5;
const FORMAT: u8 = 6;
const TYPE: u8 = 7;
const ANY: u8 = 8;
const DOC: u8 = 9;
const SKIP: u8 = 10;
const CONTENT: u8 = 0b1_1111;
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;

// Shared types' kinds (a `TYPE` block's content).
const ARRAY: u8 = 0;
const MAP: u8 = 1;
const TEXT: u8 = 2;
const XML_ELEMENT: u8 = 3;
const XML_FRAGMENT: u8 = 4;
const XML_HOOK: u8 = 5;
const XML_TEXT: u8 = 6;

#[derive(Clone, Copy)]
struct Id {
    client: u64,
    clock: u32,
}

/// Where an item is: the type it is in, known by a neighbour in the same type, by the
/// type's item, or as a root type.
#[derive(Clone, Copy)]
enum Container {
    Beside(Id),
    In(Id),
    Root,
}

struct Block {
    end: u32,
    /// `None` for a collected block.
    container: Option<Container>,
    is_type: bool,
}

/// One client's run of blocks, and what they depend on (in block order).
struct Run {
    client: u64,
    start: u32,
    blocks: Vec<Block>,
    deps: Vec<Dep>,
}

struct Dep {
    block: usize,
    on: Id,
}

/// A checked update's new content, with the depth of the type each block is in: added to
/// the room's [`Nesting`] once the update is applied ([`Checked::applied`]).
#[derive(Debug)]
pub(crate) struct Checked {
    runs: Vec<(u64, Vec<Span>)>,
}

impl Checked {
    pub fn applied(self, nesting: &mut Nesting) {
        for (client, spans) in self.runs {
            nesting.add(client, spans);
        }
    }
}

/// `Err` with the reason when `update` is not one a client's document could have made
/// against a room holding `known`, whose types nest as `nesting` says.
pub(crate) fn check(
    update: &[u8],
    known: &StateVector,
    nesting: &Nesting,
) -> Result<Checked, String> {
    let mut cursor = Cursor::new(update);
    let runs = read_runs(&mut cursor, known)?;
    let mut index = HashMap::with_capacity(runs.len());
    for (i, run) in runs.iter().enumerate() {
        if index.insert(run.client, i).is_some() {
            return Err(format!(
                "an update holds client {}'s content twice",
                run.client
            ));
        }
    }
    let checked = integrate(&runs, &index, known, nesting)?;
    check_deletes(&mut cursor, &runs, &index, known)?;
    Ok(checked)
}

fn known_of(known: &StateVector, client: u64) -> u32 {
    known.get(&ClientID::new(client))
}

fn read_runs(cursor: &mut Cursor, known: &StateVector) -> Result<Vec<Run>, String> {
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

fn read_client(cursor: &mut Cursor) -> Result<u64, String> {
    let client: u64 = cursor.read_var().map_err(cut)?;
    if client > MAX_CLIENT {
        return Err(format!("an update names client id {client}, past 2^53"));
    }
    Ok(client)
}

fn read_id(cursor: &mut Cursor) -> Result<Id, String> {
    let client = read_client(cursor)?;
    let clock = cursor.read_var().map_err(cut)?;
    Ok(Id { client, clock })
}

fn cut(e: ReadError) -> String {
    format!("an update does not decode: {e}")
}

/// Integrates the runs as yrs would, without the document: a block goes in once what it
/// depends on is in (held by the room, or integrated before it); a block waiting on a run
/// works that run forward first. A dependency past what the room and the update hold, or
/// on a run already waiting (a cycle), refuses the update, as does a type nested past
/// [`MAX_TYPE_DEPTH`]. Linear in blocks: each run is pushed at most once.
fn integrate(
    runs: &[Run],
    index: &HashMap<u64, usize>,
    known: &StateVector,
    nesting: &Nesting,
) -> Result<Checked, String> {
    // Per run: the first block the room does not hold, the next block to integrate, its
    // first dependency, the clock integrated up to, and the depths of the blocks
    // integrated.
    let mut first = Vec::with_capacity(runs.len());
    let mut next_block = Vec::with_capacity(runs.len());
    let mut next_dep = Vec::with_capacity(runs.len());
    let mut integrated = Vec::with_capacity(runs.len());
    let mut depths: Vec<Vec<u16>> = Vec::with_capacity(runs.len());
    for run in runs {
        let held = known_of(known, run.client);
        let skipped = run.blocks.partition_point(|b| b.end <= held);
        first.push(skipped);
        next_block.push(skipped);
        next_dep.push(run.deps.partition_point(|d| d.block < skipped));
        integrated.push(held);
        depths.push(Vec::new());
    }
    // The depth of the type holding `id`: the update's, where it holds it, else the room's.
    let depth_of = |depths: &[Vec<u16>], next_block: &[usize], id: Id| -> Option<u16> {
        if let Some(&r) = index.get(&id.client) {
            let run = &runs[r];
            let b = run.blocks.partition_point(|b| b.end <= id.clock);
            let start = match first[r] {
                0 => run.start,
                f => run.blocks[f - 1].end,
            };
            if id.clock >= start && b < next_block[r] {
                return Some(depths[r][b - first[r]]).filter(|d| *d > 0);
            }
        }
        nesting.depth_of(id.client, id.clock)
    };
    let mut waiting = vec![false; runs.len()];
    let mut stack = Vec::new();
    for root in 0..runs.len() {
        if next_block[root] == runs[root].blocks.len() {
            continue;
        }
        stack.push(root);
        waiting[root] = true;
        while let Some(&top) = stack.last() {
            let run = &runs[top];
            let b = next_block[top];
            let Some(block) = run.blocks.get(b) else {
                stack.pop();
                waiting[top] = false;
                continue;
            };
            let mut missing = None;
            while let Some(dep) = run.deps.get(next_dep[top]).filter(|d| d.block == b) {
                let on = dep.on;
                let held = index
                    .get(&on.client)
                    .map_or(known_of(known, on.client), |&r| integrated[r]);
                if on.clock < held {
                    next_dep[top] += 1;
                } else {
                    missing = Some(on);
                    break;
                }
            }
            let Some(on) = missing else {
                let depth = match block.container {
                    None => 0,
                    Some(Container::Root) => 1,
                    Some(Container::Beside(id)) => depth_of(&depths, &next_block, id).unwrap_or(1),
                    Some(Container::In(id)) => depth_of(&depths, &next_block, id).unwrap_or(1) + 1,
                };
                if block.is_type && depth >= MAX_TYPE_DEPTH {
                    return Err(format!(
                        "an update nests shared types deeper than {MAX_TYPE_DEPTH}"
                    ));
                }
                depths[top].push(depth);
                integrated[top] = block.end;
                next_block[top] += 1;
                continue;
            };
            let Some(&r) = index.get(&on.client).filter(|&&r| {
                runs[r]
                    .blocks
                    .last()
                    .is_some_and(|last| on.clock < last.end)
            }) else {
                return Err(format!(
                    "an update depends on content the room does not have (client {}, clock {})",
                    on.client, on.clock
                ));
            };
            if waiting[r] {
                return Err(format!(
                    "an update's content depends on itself (client {}, clock {})",
                    on.client, on.clock
                ));
            }
            stack.push(r);
            waiting[r] = true;
        }
    }
    let runs = runs
        .iter()
        .zip(first)
        .zip(depths)
        .map(|((run, first), depths)| {
            let mut start = match first {
                0 => run.start,
                f => run.blocks[f - 1].end,
            };
            let spans = run.blocks[first..]
                .iter()
                .zip(depths)
                .map(|(block, depth)| {
                    let span = Span {
                        start,
                        end: block.end,
                        depth,
                    };
                    start = block.end;
                    span
                });
            (run.client, spans.collect())
        })
        .collect();
    Ok(Checked { runs })
}

/// The delete set: each range within what the room or the update holds of its client.
fn check_deletes(
    cursor: &mut Cursor,
    runs: &[Run],
    index: &HashMap<u64, usize>,
    known: &StateVector,
) -> Result<(), String> {
    let clients: u32 = cursor.read_var().map_err(cut)?;
    for _ in 0..clients {
        let client = read_client(cursor)?;
        let held = index
            .get(&client)
            .and_then(|&r| runs[r].blocks.last().map(|b| b.end))
            .unwrap_or(0)
            .max(known_of(known, client));
        let ranges: u32 = cursor.read_var().map_err(cut)?;
        for _ in 0..ranges {
            let clock: u32 = cursor.read_var().map_err(cut)?;
            let len: u32 = cursor.read_var().map_err(cut)?;
            if u64::from(clock) + u64::from(len) > u64::from(held) {
                return Err(format!(
                    "an update deletes content the room does not have (client {client})"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parties::yjs::integrate::take;
    use yrs::encoding::write::Write;
    use yrs::updates::decoder::Decode;
    use yrs::{
        Any, Array, Doc, GetString, Map, MapPrelim, ReadTxn, Text, Transact, WriteTxn,
        XmlElementPrelim, XmlFragment, XmlTextPrelim,
    };

    /// What a client sends after an edit: its document's content past `before`.
    fn since(doc: &Doc, before: &StateVector) -> Vec<u8> {
        doc.transact().encode_state_as_update_v1(before)
    }

    /// Every kind of content yrs' own documents hold, edited by two clients that sync only
    /// through the room (concurrently, before either sees the other's edit): each update is
    /// taken, and the room ends up with both documents' content.
    #[test]
    fn what_clients_write_passes() {
        let room = Doc::new();
        let a = Doc::with_client_id(1);
        let b = Doc::with_client_id(2);
        let mut nesting = Nesting::default();
        let mut send = |from: &Doc, before: &StateVector, to: &Doc| {
            let update = since(from, before);
            take(&room, &mut nesting, update).unwrap_or_else(|e| panic!("refused: {e}"));
            let answer = room
                .transact()
                .encode_state_as_update_v1(&to.transact().state_vector());
            to.transact_mut()
                .apply_update(yrs::Update::decode_v1(&answer).unwrap())
                .unwrap();
        };
        for round in 0..20u32 {
            let (sa, sb) = (a.transact().state_vector(), b.transact().state_vector());
            {
                let text = a.get_or_insert_text("text");
                let mut txn = a.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, len / 2, "héllo 👋 ");
                let bold = [("bold".into(), Any::Bool(true))].into_iter().collect();
                text.format(&mut txn, 0, 2, bold);
                text.insert_embed(&mut txn, 1, Any::from(vec![Any::from("image")]));
                if round % 3 == 2 {
                    text.remove_range(&mut txn, 0, 3);
                }
                let map = txn.get_or_insert_map("map");
                let nested = Any::from(vec![Any::from(vec![Any::from(round)])]);
                map.insert(&mut txn, format!("k{}", round % 4), nested);
                map.insert(&mut txn, "bytes", Any::Buffer(vec![1, 2, 3].into()));
            }
            {
                let mut txn = b.transact_mut();
                let list = txn.get_or_insert_array("list");
                list.insert(&mut txn, 0, Any::Null);
                list.insert(&mut txn, 1, "x".to_string());
                if round % 2 == 1 {
                    list.remove(&mut txn, 0);
                }
                let xml = txn.get_or_insert_xml_fragment("xml");
                let p = xml.insert(&mut txn, 0, XmlElementPrelim::empty("p"));
                p.insert(&mut txn, 0, XmlTextPrelim::new("para"));
                let text = txn.get_or_insert_text("text");
                text.insert(&mut txn, 0, "b");
            }
            send(&a, &sa, &a);
            send(&b, &sb, &b);
        }
        let now = a.transact().state_vector();
        send(&a, &now, &a);
        // A client (re)sending everything, part of which the room holds, is taken too.
        let all = since(&a, &StateVector::default());
        assert!(check(&all, &room.transact().state_vector(), &nesting).is_ok());
        let room_text = room.get_or_insert_text("text").get_string(&room.transact());
        let a_text = a.get_or_insert_text("text").get_string(&a.transact());
        let b_text = b.get_or_insert_text("text").get_string(&b.transact());
        assert_eq!(room_text, a_text);
        assert_eq!(room_text, b_text);
    }

    /// An update written by hand: runs of `(client, clock, blocks)` (each block's bytes as
    /// written) and delete ranges `(client, clock, len)`.
    fn update(runs: &[(u64, u32, &[&[u8]])], deletes: &[(u64, u32, u32)]) -> Vec<u8> {
        let mut e = Vec::new();
        e.write_var(runs.len() as u32);
        for (client, clock, blocks) in runs {
            e.write_var(blocks.len() as u32);
            e.write_var(*client);
            e.write_var(*clock);
            for block in *blocks {
                e.write_all(block);
            }
        }
        e.write_var(deletes.len() as u32);
        for (client, clock, len) in deletes {
            e.write_var(*client);
            e.write_var(1u32);
            e.write_var(*clock);
            e.write_var(*len);
        }
        e
    }

    /// A string item in root type "t" (no origins).
    const ROOT_STRING: &[u8] = &[STRING, 1, 1, b't', 1, b'a'];

    /// A string item whose origin is `(client, clock)` (both below 128).
    fn after(client: u8, clock: u8) -> Vec<u8> {
        vec![STRING | HAS_ORIGIN, client, clock, 1, b'b']
    }

    #[test]
    fn crafted_updates_are_refused_with_the_reason() {
        let none = StateVector::default();
        let ok = update(&[(1, 0, &[ROOT_STRING, &after(1, 0)])], &[(1, 0, 2)]);
        assert_eq!(check(&ok, &none, &Nesting::default()).map(drop), Ok(()));

        let cases: &[(&str, &[u8], &str)] = &[
            (
                "twice",
                &update(&[(1, 0, &[ROOT_STRING]), (1, 0, &[ROOT_STRING])], &[]),
                "twice",
            ),
            (
                "skip",
                &update(&[(1, 0, &[ROOT_STRING, &[SKIP, 3], &after(1, 0)])], &[]),
                "skips",
            ),
            (
                "wraps",
                &update(&[(1, 0, &[&[GC, 0xff, 0xff, 0xff, 0xff, 0x0f]])], &[]),
                "out of range",
            ),
            (
                "late",
                &update(&[(1, 5, &[ROOT_STRING])], &[]),
                "starts past",
            ),
            (
                "missing",
                &update(&[(1, 0, &[&after(9, 0)])], &[]),
                "does not have",
            ),
            (
                "cycle",
                &update(&[(1, 0, &[&after(2, 0)]), (2, 0, &[&after(1, 0)])], &[]),
                "depends on itself",
            ),
            (
                "own_later",
                &update(&[(1, 0, &[&after(1, 1), ROOT_STRING])], &[]),
                "depends on itself",
            ),
            (
                "deletes_unknown",
                &update(&[(1, 0, &[ROOT_STRING])], &[(1, 0, 2)]),
                "deletes",
            ),
            (
                "big_client",
                &update(&[(1 << 53, 0, &[ROOT_STRING])], &[]),
                "2^53",
            ),
            (
                "subdoc",
                &update(&[(1, 0, &[&[DOC, 1, 1, b't', 1, b'g', 126]])], &[]),
                "subdocument",
            ),
            (
                "json",
                &update(&[(1, 0, &[&[JSON, 1, 1, b't', 1, 1, b'1']])], &[]),
                "JSON",
            ),
            (
                "hook",
                &update(&[(1, 0, &[&[TYPE, 1, 1, b't', XML_HOOK, 1, b'h']])], &[]),
                "hook",
            ),
            (
                "flagged_gc",
                &update(&[(1, 0, &[&[GC | HAS_ORIGIN, 1, 0, 1]])], &[]),
                "kind 0",
            ),
            ("cut_short", &ok[..ok.len() - 2], "does not decode"),
        ];
        for (name, update, reason) in cases {
            match check(update, &none, &Nesting::default()) {
                Err(why) => assert!(why.contains(reason), "{name}: {why}"),
                Ok(_) => panic!("{name} was taken"),
            }
        }
        // Dependencies the room holds, or another client's content integrated first.
        let mut known = StateVector::default();
        known.set_max(ClientID::new(9), 1);
        let waits = update(&[(1, 0, &[&after(9, 0)])], &[]);
        assert_eq!(check(&waits, &known, &Nesting::default()).map(drop), Ok(()));
        let crossed = update(
            &[
                (1, 0, &[ROOT_STRING, &after(2, 0)]),
                (2, 0, &[&after(1, 0)]),
            ],
            &[],
        );
        assert_eq!(
            check(&crossed, &none, &Nesting::default()).map(drop),
            Ok(())
        );
    }

    /// A value nested past the bound is refused before yrs decodes it (yrs would recurse
    /// once per level, decoding and again dropping it: a megabyte of them overflows a
    /// thread's stack).
    #[test]
    fn deeply_nested_values_are_refused() {
        let nested = |depth: usize| {
            let mut block = vec![ANY, 1, 1, b't', 1];
            for _ in 0..depth {
                block.extend([117, 1]);
            }
            block.push(126);
            update(&[(1, 0, &[&block])], &[])
        };
        let none = StateVector::default();
        assert_eq!(
            check(&nested(MAX_VALUE_DEPTH), &none, &Nesting::default()).map(drop),
            Ok(())
        );
        for depth in [MAX_VALUE_DEPTH + 1, 500_000] {
            let why = check(&nested(depth), &none, &Nesting::default()).unwrap_err();
            assert!(why.contains("nested"), "{why}");
        }
    }

    /// A client nesting maps `levels` deep under root map "root", one level per update
    /// (all in one when `at_once`); the updates it sends.
    fn nested_maps(levels: usize, at_once: bool) -> (Doc, Vec<Vec<u8>>) {
        let client = Doc::with_client_id(5);
        let mut updates = Vec::new();
        let mut before = StateVector::default();
        let mut map = client.get_or_insert_map("root");
        for level in 0..levels {
            map = map.insert(&mut client.transact_mut(), "k", MapPrelim::default());
            if !at_once || level + 1 == levels {
                updates.push(since(&client, &before));
                before = client.transact().state_vector();
            }
        }
        (client, updates)
    }

    /// Shared types nest at most `MAX_TYPE_DEPTH` deep, whether in one update or level by
    /// level; the room learns how its stored document nests when it loads. (yrs deletes a
    /// type's content recursively: 100,000 nested maps, then a delete of the outer one,
    /// overflowed the stack and aborted the process.)
    #[test]
    fn shared_types_nest_at_most_the_bound() {
        let levels = usize::from(MAX_TYPE_DEPTH) - 1;
        let (_, updates) = nested_maps(levels + 1, false);
        let room = Doc::new();
        let mut nesting = Nesting::default();
        for update in &updates[..levels] {
            take(&room, &mut nesting, update.clone()).unwrap();
        }
        let why = take(&room, &mut nesting, updates[levels].clone()).unwrap_err();
        assert!(why.contains("nests shared types deeper"), "{why}");

        // A room that loads the document (its snapshot) knows how deep it is.
        let snapshot = since(&room, &StateVector::default());
        let mut loaded = Nesting::default();
        loaded.learn(&snapshot, &StateVector::default());
        let why = check(&updates[levels], &room.transact().state_vector(), &loaded);
        assert!(why.unwrap_err().contains("deeper"));
        assert!(loaded.spans() <= 2 * levels, "{} spans", loaded.spans());

        // 100,000 levels in one update, written by hand (a map in root map "root", then each
        // in the one before, under key "k").
        let mut blocks = vec![vec![TYPE, 1, 4, b'r', b'o', b'o', b't', MAP]];
        for clock in 0..99_999u32 {
            let mut block = vec![TYPE | HAS_PARENT_SUB, 0, 5];
            block.write_var(clock);
            block.extend([1, b'k', MAP]);
            blocks.push(block);
        }
        let blocks: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
        let deep = update(&[(5, 0, &blocks)], &[]);
        let why = check(&deep, &StateVector::default(), &Nesting::default());
        assert!(why.unwrap_err().contains("deeper"));
        let (_, at_once) = nested_maps(levels, true);
        let fresh = Doc::new();
        take(&fresh, &mut Nesting::default(), at_once[0].clone()).unwrap();
    }

    /// The bound leaves room: a room holding types nested as deep as they may be deletes
    /// the outer one on a 512 KiB stack, a quarter of a runtime worker thread's, in a debug build.
    #[test]
    fn a_document_nested_to_the_bound_is_deleted_on_a_small_stack() {
        let levels = usize::from(MAX_TYPE_DEPTH) - 1;
        let (client, updates) = nested_maps(levels, true);
        let deleted = std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || {
                let room = Doc::new();
                let mut nesting = Nesting::default();
                take(&room, &mut nesting, updates[0].clone()).unwrap();
                let before = client.transact().state_vector();
                let root = client.get_or_insert_map("root");
                root.remove(&mut client.transact_mut(), "k");
                take(&room, &mut nesting, since(&client, &before)).unwrap();
                let len = room.get_or_insert_map("root").len(&room.transact());
                len
            })
            .unwrap()
            .join()
            .expect("the delete overflowed a 512 KiB stack");
        assert_eq!(deleted, 0);
    }
}
