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

mod read;
#[cfg(test)]
mod tests;

use super::nesting::{Nesting, Span, MAX_TYPE_DEPTH};
use read::{cut, read_client, read_runs};
use std::collections::HashMap;
use yrs::encoding::read::{Cursor, Read};
use yrs::{ClientID, StateVector};

/// How deep arrays and maps may nest in a value: yrs decodes and drops values recursively,
/// so a megabyte of nested arrays overflowed the stack of the thread running the room.
pub(crate) const MAX_VALUE_DEPTH: usize = 64;
/// Clocks stay below 2^31: yrs mixes them with `i32` offsets.
const MAX_CLOCK: u64 = i32::MAX as u64;
/// The largest client id a JavaScript number holds exactly (Yjs makes 32-bit ones).
const MAX_CLIENT: u64 = (1 << 53) - 1;

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
