//! `left-index="pi_EMPTY"` on a join: the insert-only fact stream on the left is not kept.
//! Each fact emits its joined row as an insert, as the keeping join does for an insert-only
//! fact stream whose dimension rows came first; dimension changes afterwards emit nothing
//! (there is no kept fact row to regenerate), and the window holds no rows however many facts
//! pass. Misuse is refused when the project loads, with the reason.

mod common;

use common::{cases, engine, inject, model, render, rows, win};
use proptest::prelude::*;
use sluice_engine::{CollectSink, Engine, WindowId};
use sluice_event::{Event, Opcode, Value};

fn xml(join_type: &str, left_index: bool, facts_insert_only: bool) -> String {
    let facts = if facts_insert_only {
        "<window-source name='facts' insert-only='true' index='pi_EMPTY'>"
    } else {
        "<window-source name='facts'>"
    };
    let li = if left_index {
        " left-index='pi_EMPTY'"
    } else {
        ""
    };
    model(
        &[
            &format!("{facts}<schema-string>id*:int64,sym:string,q:int32</schema-string></window-source>"),
            "<window-source name='dim'><schema-string>sym*:string,sector:string</schema-string></window-source>",
            &format!(
                "<window-join name='j'><join type='{join_type}'{li}><conditions><fields left='sym' right='sym'/></conditions></join>\
                 <output><field-selection name='sym' source='l_sym'/><field-selection name='q' source='l_q'/>\
                 <field-expr name='sector' type='string'>r_sector</field-expr></output></window-join>"
            ),
        ],
        &[
            "<edge source='facts' target='j' role='left'/>",
            "<edge source='dim' target='j' role='right'/>",
        ],
    )
}

fn fact(id: i64, sym: u8, q: i32) -> Event {
    Event::insert(vec![
        Value::Int64(id),
        Value::str(&format!("S{sym}")),
        Value::Int32(q),
    ])
}

fn dim(op: Opcode, sym: u8, sector: u8) -> Event {
    Event::new(
        op,
        vec![
            Value::str(&format!("S{sym}")),
            Value::str(&format!("sector {sector}")),
        ],
    )
}

/// The join's output events, rendered.
fn join_out(e: &Engine, sink: &CollectSink) -> Vec<String> {
    let j: WindowId = win(e, "j");
    sink.outputs
        .iter()
        .filter(|(w, _, _)| *w == j)
        .flat_map(|(w, _, evs)| evs.iter().map(move |ev| render(*w, ev)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    /// With the dimension loaded first, the stream join emits what the keeping join emits.
    #[test]
    fn facts_join_as_the_keeping_join_joins_them(
        dims in prop::collection::btree_map(0u8..6, 0u8..3, 0..6),
        facts in prop::collection::vec((0u8..8, -5i32..50), 0..60),
        outer in any::<bool>(),
    ) {
        let jt = if outer { "leftouter" } else { "inner" };
        let mut keep = engine(&xml(jt, false, true));
        let mut stream = engine(&xml(jt, true, true));
        let (mut a, mut b) = (CollectSink::default(), CollectSink::default());
        let dim_events: Vec<Event> = dims.iter().map(|(&s, &c)| dim(Opcode::Insert, s, c)).collect();
        let fact_events: Vec<Event> = facts
            .iter()
            .enumerate()
            .map(|(i, &(s, q))| fact(i as i64, s, q))
            .collect();
        for (e, sink) in [(&mut keep, &mut a), (&mut stream, &mut b)] {
            let (d, f) = (win(e, "dim"), win(e, "facts"));
            inject(e, d, dim_events.clone(), sink);
            inject(e, f, fact_events.clone(), sink);
        }
        let want = join_out(&keep, &a);
        prop_assert_eq!(join_out(&stream, &b), want.clone());
        prop_assert!(want.iter().all(|l| l.contains("|I|")), "only inserts");
        let expected = facts
            .iter()
            .filter(|(s, _)| outer || dims.contains_key(s))
            .count();
        prop_assert_eq!(want.len(), expected);
        prop_assert!(rows(&stream, win(&stream, "j")).is_empty(), "the stream join keeps no rows");
        prop_assert_eq!(stream.row_count(win(&stream, "j")), 0);
    }
}

#[test]
fn dimension_changes_after_the_facts_emit_nothing_from_a_stream_join() {
    let mut keep = engine(&xml("leftouter", false, true));
    let mut stream = engine(&xml("leftouter", true, true));
    let mut outs = Vec::new();
    for e in [&mut keep, &mut stream] {
        let (d, f) = (win(e, "dim"), win(e, "facts"));
        let mut sink = CollectSink::default();
        inject(e, d, vec![dim(Opcode::Insert, 1, 1)], &mut sink);
        inject(e, f, vec![fact(1, 1, 10), fact(2, 2, 20)], &mut sink);
        let before = join_out(e, &sink).len();
        inject(e, d, vec![dim(Opcode::Update, 1, 2)], &mut sink);
        inject(e, d, vec![dim(Opcode::Insert, 2, 3)], &mut sink);
        // A fact after the change sees the new dimension row.
        inject(e, f, vec![fact(3, 1, 30)], &mut sink);
        let all = join_out(e, &sink);
        outs.push((before, all));
    }
    let (keep_before, keep_all) = &outs[0];
    let (stream_before, stream_all) = &outs[1];
    assert_eq!(keep_before, stream_before);
    assert_eq!(
        keep_all.len(),
        keep_before + 3,
        "the keeping join regenerates two rows"
    );
    assert_eq!(
        stream_all.len(),
        stream_before + 1,
        "the stream join emits only the new fact"
    );
    assert!(
        stream_all.last().unwrap().contains("sector 2"),
        "{stream_all:?}"
    );
}

#[test]
fn a_stream_join_restores_its_dimension_and_refuses_kept_fact_rows() {
    let mut stream = engine(&xml("inner", true, true));
    let mut sink = CollectSink::default();
    let (d, f) = (win(&stream, "dim"), win(&stream, "facts"));
    inject(&mut stream, d, vec![dim(Opcode::Insert, 1, 1)], &mut sink);
    let files = stream.snapshot_windows();
    let mut restored = engine(&xml("inner", true, true));
    restored.restore_windows(&files).unwrap();
    let mut s2 = CollectSink::default();
    inject(&mut restored, f, vec![fact(7, 1, 5)], &mut s2);
    assert_eq!(
        join_out(&restored, &s2).len(),
        1,
        "the dimension row came back"
    );

    // The keeping join's snapshot holds fact rows: refused whole by the stream join.
    let mut keep = engine(&xml("inner", false, true));
    inject(&mut keep, d, vec![dim(Opcode::Insert, 1, 1)], &mut sink);
    inject(&mut keep, f, vec![fact(7, 1, 5)], &mut sink);
    let err = engine(&xml("inner", true, true))
        .restore_windows(&keep.snapshot_windows())
        .unwrap_err()
        .to_string();
    assert!(err.contains("left-index"), "{err}");
}

fn load_error(xml: &str) -> String {
    let spec = sluice_model::parse_project(xml, &|_| None).expect("parses");
    let Err(diags) = Engine::new(&spec) else {
        panic!("the model should be refused");
    };
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn misuse_is_refused_with_the_reason() {
    let e = load_error(&xml("leftouter", true, false));
    assert!(e.contains("left input must be insert-only"), "{e}");
    let e = load_error(&xml("leftouter", true, true).replace(
        "<window-source name='dim'><schema-string>sym*:string",
        "<window-source name='dim'><schema-string>sym:string,id*:int64",
    ));
    assert!(e.contains("must cover the right window's key"), "{e}");
    let e = load_error(&xml("leftouter", false, true).replace(
        "type='leftouter'",
        "type='leftouter' right-index='pi_EMPTY'",
    ));
    assert!(
        e.contains("right-index=\"pi_EMPTY\" is not supported"),
        "{e}"
    );
}
