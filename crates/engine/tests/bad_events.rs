//! Bad events (reference 2.7): each refusal reaches the sink with its window and a reason,
//! and the rest of the block goes on; a transactional block with one bad event is refused
//! whole, every event of it reported, nothing applied.

mod common;

use common::*;
use sluice_engine::{CollectSink, Engine, WindowId};
use sluice_event::{Event, EventBlock, MsgId, Opcode, Row, Value};

fn row(k: i64, x: i64) -> Row {
    vec![Value::Int64(k), Value::Int64(x)]
}

fn keyed() -> (Engine, WindowId, WindowId) {
    let e = engine(&model(
        &[
            "<window-source name='s'><schema-string>k*:int64,x:int64</schema-string></window-source>",
            "<window-copy name='c'/>",
        ],
        &["<edge source='s' target='c'/>"],
    ));
    let (s, c) = (win(&e, "s"), win(&e, "c"));
    (e, s, c)
}

/// Injects one normal block and returns what the sink got.
fn block(e: &mut Engine, w: WindowId, events: Vec<Event>) -> CollectSink {
    let mut sink = CollectSink::default();
    inject(e, w, events, &mut sink);
    sink
}

fn keys_of(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|r| r[0].as_i64().unwrap()).collect()
}

/// Exactly one refusal, by `w`, of `ev`, with a reason containing `why`.
fn one_bad(sink: &CollectSink, w: WindowId, ev: &Event, why: &str) {
    assert_eq!(sink.bad.len(), 1, "{:#?}", sink.bad);
    let (bw, bev, reason) = &sink.bad[0];
    assert_eq!(*bw, w);
    assert_eq!(bev, ev);
    assert!(reason.contains(why), "reason {reason:?} lacks {why:?}");
}

#[test]
fn duplicate_insert_is_refused_and_the_block_goes_on() {
    let (mut e, s, c) = keyed();
    let dup = Event::insert(row(1, 99));
    let sink = block(
        &mut e,
        s,
        vec![
            Event::insert(row(1, 10)),
            dup.clone(),
            Event::insert(row(2, 20)),
        ],
    );
    one_bad(&sink, s, &dup, "duplicate insert");
    assert_eq!(rows(&e, s), vec![row(1, 10), row(2, 20)]);
    assert_eq!(
        rows(&e, c),
        vec![row(1, 10), row(2, 20)],
        "downstream saw the good events"
    );
}

#[test]
fn update_of_a_missing_key_is_refused_and_the_block_goes_on() {
    let (mut e, s, _) = keyed();
    let upd = Event::new(Opcode::Update, row(7, 1));
    let sink = block(&mut e, s, vec![upd.clone(), Event::insert(row(2, 20))]);
    one_bad(&sink, s, &upd, "update of missing key 7");
    assert_eq!(rows(&e, s), vec![row(2, 20)]);
}

#[test]
fn delete_of_a_missing_key_is_refused_and_the_block_goes_on() {
    let (mut e, s, _) = keyed();
    block(&mut e, s, vec![Event::insert(row(1, 10))]);
    let del = Event::delete(vec![Value::Int64(5), Value::Null]);
    let sink = block(
        &mut e,
        s,
        vec![
            del.clone(),
            Event::delete(row(1, 10)),
            Event::insert(row(3, 30)),
        ],
    );
    one_bad(&sink, s, &del, "delete of missing key 5");
    assert_eq!(keys_of(&rows(&e, s)), vec![3]);
}

#[test]
fn safedelete_of_a_missing_key_is_not_a_bad_event() {
    let (mut e, s, _) = keyed();
    let sink = block(&mut e, s, vec![Event::new(Opcode::SafeDelete, row(5, 0))]);
    assert!(sink.bad.is_empty(), "{:#?}", sink.bad);
    assert!(sink.outputs.is_empty());
}

#[test]
fn non_insert_into_an_insert_only_window_is_refused() {
    let mut e = engine(&model(
        &["<window-source name='s' insert-only='true'><schema-string>k*:int64,x:int64</schema-string></window-source>"],
        &[],
    ));
    let s = win(&e, "s");
    for op in [
        Opcode::Update,
        Opcode::Delete,
        Opcode::Upsert,
        Opcode::SafeDelete,
    ] {
        let ev = Event::new(op, row(1, 10));
        let sink = block(
            &mut e,
            s,
            vec![Event::insert(row(10 + op as i64, 0)), ev.clone()],
        );
        one_bad(&sink, s, &ev, "insert-only");
        assert!(sink.bad[0].2.contains(op.name()), "{:?}", sink.bad[0].2);
    }
    assert_eq!(
        keys_of(&rows(&e, s)),
        vec![11, 12, 13, 14],
        "the inserts of each block went in"
    );
}

#[test]
fn null_key_is_refused() {
    let (mut e, s, _) = keyed();
    let ev = Event::insert(vec![Value::Null, Value::Int64(1)]);
    let sink = block(&mut e, s, vec![ev.clone(), Event::insert(row(1, 1))]);
    one_bad(&sink, s, &ev, "key field is null");
    assert_eq!(keys_of(&rows(&e, s)), vec![1]);
}

#[test]
fn strict_union_collision_is_refused_by_the_union() {
    let mut e = engine(&model(
        &[
            "<window-source name='a'><schema-string>k*:int64,x:int64</schema-string></window-source>",
            "<window-source name='b'><schema-string>k*:int64,x:int64</schema-string></window-source>",
            "<window-union name='u' strict='true'/>",
        ],
        &["<edge source='a' target='u'/>", "<edge source='b' target='u'/>"],
    ));
    let (a, b, u) = (win(&e, "a"), win(&e, "b"), win(&e, "u"));
    block(&mut e, a, vec![Event::insert(row(1, 10))]);
    let sink = block(
        &mut e,
        b,
        vec![Event::insert(row(1, 20)), Event::insert(row(2, 20))],
    );
    one_bad(&sink, u, &Event::insert(row(1, 20)), "duplicate insert");
    assert_eq!(rows(&e, u), vec![row(1, 10), row(2, 20)]);
    assert_eq!(
        rows(&e, b),
        vec![row(1, 20), row(2, 20)],
        "the source itself accepted both"
    );
}

#[test]
fn a_transactional_block_with_one_bad_event_is_refused_whole() {
    let (mut e, s, c) = keyed();
    block(&mut e, s, vec![Event::insert(row(1, 10))]);
    let events = vec![
        Event::insert(row(2, 20)),
        Event::new(Opcode::Update, row(1, 11)),
        Event::new(Opcode::Update, row(9, 0)), // missing key: the bad one
        Event::insert(row(3, 30)),
    ];
    let mut sink = CollectSink::default();
    let blk = EventBlock {
        id: MsgId(2),
        transactional: true,
        events: events.clone(),
    };
    e.inject(s, blk, 0, &mut sink).unwrap();
    assert!(
        sink.outputs.is_empty(),
        "nothing of the block was applied: {:#?}",
        sink.outputs
    );
    assert_eq!(
        sink.bad.len(),
        events.len(),
        "every event of the block is reported"
    );
    for ((w, ev, reason), sent) in sink.bad.iter().zip(&events) {
        assert_eq!(*w, s);
        assert_eq!(ev, sent);
        assert!(
            reason.contains("transactional block refused whole"),
            "{reason}"
        );
        assert!(reason.contains("event 3 of the block"), "{reason}");
    }
    assert_eq!(rows(&e, s), vec![row(1, 10)]);
    assert_eq!(rows(&e, c), vec![row(1, 10)]);
    // The next block goes on.
    let sink = block(&mut e, s, vec![Event::insert(row(4, 40))]);
    assert!(sink.bad.is_empty());
    assert_eq!(keys_of(&rows(&e, c)), vec![1, 4]);
}

#[test]
fn a_transactional_block_sees_its_own_earlier_events() {
    // Insert then update then delete of one new key inside one block is valid; a duplicate
    // insert of a key inserted earlier in the same block is not.
    let (mut e, s, _) = keyed();
    let good = EventBlock {
        id: MsgId(1),
        transactional: true,
        events: vec![
            Event::insert(row(5, 1)),
            Event::new(Opcode::Update, row(5, 2)),
            Event::insert(row(6, 1)),
            Event::delete(row(6, 1)),
        ],
    };
    let mut sink = CollectSink::default();
    e.inject(s, good, 0, &mut sink).unwrap();
    assert!(sink.bad.is_empty(), "{:#?}", sink.bad);
    assert_eq!(rows(&e, s), vec![row(5, 2)]);
    let bad = EventBlock {
        id: MsgId(2),
        transactional: true,
        events: vec![Event::insert(row(7, 1)), Event::insert(row(7, 2))],
    };
    let mut sink = CollectSink::default();
    e.inject(s, bad, 0, &mut sink).unwrap();
    assert_eq!(sink.bad.len(), 2);
    assert!(
        sink.bad[0].2.contains("event 2 of the block"),
        "{}",
        sink.bad[0].2
    );
    assert_eq!(rows(&e, s), vec![row(5, 2)]);
}

#[test]
fn a_compute_conversion_failure_is_refused_with_the_field() {
    let mut e = engine(&model(
        &[
            "<window-source name='s'><schema-string>k*:int64,t:string</schema-string></window-source>",
            "<window-compute name='c'><schema-string>k*:int64,n:int32</schema-string><output><field-expr>t</field-expr></output></window-compute>",
        ],
        &["<edge source='s' target='c'/>"],
    ));
    let (s, c) = (win(&e, "s"), win(&e, "c"));
    let bad = Event::insert(vec![Value::Int64(1), Value::str("abc")]);
    let sink = block(
        &mut e,
        s,
        vec![
            bad.clone(),
            Event::insert(vec![Value::Int64(2), Value::str("42")]),
        ],
    );
    one_bad(&sink, c, &bad, "field 'n'");
    assert_eq!(rows(&e, c), vec![vec![Value::Int64(2), Value::Int32(42)]]);
}
