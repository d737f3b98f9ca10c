//! What a client's update goes through before it is kept: read through before yrs decodes
//! it ([`client_update::check`]), cut to what the document lacks, applied with yrs' panics
//! caught, and the document checked afterwards. Each guard stands for an input the
//! `y_websocket` fuzz target found (see `conclave_node::fuzz`).

use super::client_update::{self, Checked};
use super::nesting::Nesting;

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, IdSet, ReadTxn, StateVector, Transact, Update};

/// A client's update, checked ([`client_update::check`]) and trimmed against the document
/// `txn` reads, whose types nest as `nesting` says.
pub(crate) fn from_client(
    txn: &impl ReadTxn,
    nesting: &Nesting,
    bytes: Vec<u8>,
) -> Result<(Trimmed, Checked), String> {
    let known = txn.state_vector();
    let checked = client_update::check(&bytes, &known, nesting)?;
    Ok((trimmed(&known, bytes).map_err(|e| e.to_string())?, checked))
}

/// An update as the document can take it: without what the document already holds. yrs
/// trims an overlapping update itself by splitting its items, and the parts it then drops
/// are still pointed at: a heap use-after-free inside `apply_update` (a client re-sending
/// a block the room holds part of, as after a reconnect race, takes the same path). An
/// update that starts past what the document holds, the usual case, is used as it is;
/// another is first cut down to what is new by yrs' own diff (`diff_updates_v1`), which
/// encodes offsets instead of splitting items.
pub(crate) struct Trimmed {
    pub update: Update,
    /// The update's encoding (the diff's, when it was cut).
    pub bytes: Vec<u8>,
}

/// `bytes`, an update, trimmed against a document holding `known` (a stored one; a
/// client's goes through [`from_client`]).
pub(crate) fn trimmed(
    known: &StateVector,
    bytes: Vec<u8>,
) -> Result<Trimmed, yrs::encoding::read::Error> {
    let update = Update::decode_v1(&bytes)?;
    let lowest = update.state_vector_lower();
    if !lowest.iter().any(|(c, lowest)| *lowest < known.get(c)) {
        return Ok(Trimmed { update, bytes });
    }
    let new = yrs::diff_updates_v1(&bytes, &known.encode_v1())?;
    Ok(Trimmed {
        update: Update::decode_v1(&new)?,
        bytes: new,
    })
}

/// Why [`integrate`] did not take an update.
pub(crate) enum Refused {
    /// The update is not one the room takes; the document is as it was.
    Invalid(String),
    /// Applying it broke the document: it must not be used again.
    Broken(&'static str),
}

/// Applies a client's checked and trimmed update ([`from_client`]) to the document;
/// returns its encoding. A panic inside yrs (the fuzz target found some on crafted updates)
/// leaves the document [`Refused::Broken`], as does what [`broken_by`] finds.
pub(crate) fn integrate(doc: &Doc, trimmed: Trimmed) -> Result<Vec<u8>, Refused> {
    let update = trimmed.update;
    let inserted = update.insertions(true);
    // The transaction is held outside the closure that may panic, and committed (dropped)
    // apart: yrs' commit runs in its `Drop`, and when it panicked again while a panic of
    // `apply_update` unwound through it (a zero-length block made both divide by zero),
    // the panic in a destructor during cleanup aborted the whole process. Now each panic
    // is caught on its own.
    let mut txn = doc.transact_mut();
    let applied =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| txn.apply_update(update)));
    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(txn)));
    match (applied, committed) {
        (Ok(Ok(())), Ok(())) => {}
        (Ok(Err(e)), Ok(())) => return Err(Refused::Invalid(e.to_string())),
        _ => return Err(Refused::Broken("yrs panicked applying an update")),
    }
    match broken_by(doc, &inserted) {
        Some(why) => Err(Refused::Broken(why)),
        None => Ok(trimmed.bytes),
    }
}

/// What an update just applied broke in the document, if anything; then the instance is
/// dropped (the next event reloads the document from storage) and the update not kept.
///
/// - Content left pending, waiting on content the room does not have: yrs merges pending
///   updates into every later encoding with an `unwrap` (a crafted one made every new
///   client's sync step 1 panic the room once it was stored), and trimming a later update
///   against them freed memory still in use (a heap use-after-free). A room is every
///   client's only peer, so a client's update depends only on content the room sent it:
///   nothing is pending but by a crafted update.
/// - A client's content past where its state vector ends: a range skipped inside it (skip
///   structs, which only merged updates carry, never a client's own), which leads a later
///   update that straddles the gap's end down the same use-after-free.
fn broken_by(doc: &Doc, inserted: &IdSet) -> Option<&'static str> {
    let txn = doc.transact();
    if txn.has_missing_updates() {
        return Some("an update waits on content the room does not have");
    }
    let known: StateVector = txn.state_vector();
    let gap = inserted
        .iter()
        .any(|(client, ranges)| ranges.iter().any(|r| r.end > known.get(client)));
    gap.then_some("an update left a gap (skipped ranges) in the document")
}

/// For tests: a client's update through the room's path (checked, trimmed, applied, its
/// nesting learnt); the reason when it is refused.
#[cfg(test)]
pub(crate) fn take(doc: &Doc, nesting: &mut Nesting, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let (trimmed, checked) = from_client(&doc.transact(), nesting, bytes)?;
    match integrate(doc, trimmed) {
        Ok(bytes) => {
            checked.applied(nesting);
            Ok(bytes)
        }
        Err(Refused::Invalid(why)) => Err(why),
        Err(Refused::Broken(why)) => Err(why.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    /// A client's merged update holding a block the document knows the first half of (its
    /// earlier update reached the room, then it re-sent the merged block).
    #[test]
    fn an_update_overlapping_the_document_is_cut_to_what_is_new() {
        let client = Doc::with_client_id(7);
        let text = client.get_or_insert_text("t");
        text.insert(&mut client.transact_mut(), 0, "hel");
        let first = client
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        text.insert(&mut client.transact_mut(), 3, "lo");
        let merged = client
            .transact()
            .encode_state_as_update_v1(&StateVector::default());

        let room = Doc::new();
        let mut nesting = Nesting::default();
        for bytes in [first, merged.clone()] {
            let taken = take(&room, &mut nesting, bytes.clone()).unwrap();
            assert_eq!(taken == bytes, bytes != merged, "trimmed iff it overlaps");
        }
        let room_text = room.get_or_insert_text("t");
        assert_eq!(room_text.get_string(&room.transact()), "hello");
    }

    /// The inputs the fuzz target found (kept in its corpus under names that are not
    /// hashes) go through the room's path here too, without the sanitizer: none may abort
    /// the process (one did, by a panic inside yrs' commit while another unwound), nor
    /// panic out of the room's path. (yrs is built without overflow checks in tests too, as
    /// released: see the workspace's Cargo.toml.)
    #[test]
    fn the_inputs_the_fuzz_target_found_do_not_abort_the_process() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/y_websocket");
        let mut replayed = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let found = ["crash-", "oom-", "uaf-", "regression-"];
            if found.iter().any(|p| name.starts_with(p)) {
                crate::fuzz::y_websocket(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
        assert!(replayed >= 12, "{replayed} inputs found in {dir}");
    }

    /// A merged update of a client's first and third edits (a skip over the second) is
    /// refused before yrs decodes it, and the document is as it was.
    #[test]
    fn an_update_with_a_hole_in_a_clients_content_is_refused_unapplied() {
        let client = Doc::with_client_id(7);
        let text = client.get_or_insert_text("t");
        let mut edits = Vec::new();
        for (at, s) in [(0, "hel"), (3, "lo"), (5, "!!")] {
            let before = client.transact().state_vector();
            text.insert(&mut client.transact_mut(), at, s);
            edits.push(client.transact().encode_state_as_update_v1(&before));
        }
        let holed = yrs::merge_updates_v1([edits[0].as_slice(), edits[2].as_slice()]).unwrap();

        let room = Doc::new();
        let mut nesting = Nesting::default();
        match take(&room, &mut nesting, holed) {
            Err(why) => assert!(why.contains("skips"), "{why}"),
            Ok(_) => panic!("an update with a hole was not refused"),
        }
        assert_eq!(room.transact().state_vector(), StateVector::default());
        // The same edits whole and in order are taken.
        for bytes in edits {
            take(&room, &mut nesting, bytes).unwrap();
        }
        let room_text = room.get_or_insert_text("t");
        assert_eq!(room_text.get_string(&room.transact()), "hello!!");
    }
}
