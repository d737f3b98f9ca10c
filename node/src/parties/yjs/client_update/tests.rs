//! The reader against what clients write and against crafted updates.

use super::read::*;
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
