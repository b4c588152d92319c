//! Aggregate state through a snapshot: for random event sequences, stopping after k events,
//! encoding every window, restoring into a fresh engine and finishing gives the same output
//! events after k and the same final rows as the uninterrupted run. Every kind of aggregate
//! column is covered: typed sums, running values, multisets, rings, text and members, on an
//! insert-only input and on an input with updates and deletes (groups appear and vanish, so
//! slots move).

mod common;

use common::{cases, engine, inject, opcode, render, rows, win};
use proptest::prelude::*;
use sluice_engine::{CollectSink, Engine, RestoreError};
use sluice_event::{Event, Value};

const FUNCS: &str = "<output>\
<field-expr>ESP_aCount()</field-expr>\
<field-expr>ESP_aSum(q)</field-expr>\
<field-expr>ESP_aAve(px)</field-expr>\
<field-expr>ESP_aStd(px)</field-expr>\
<field-expr>ESP_aWAve(q, px)</field-expr>\
<field-expr>ESP_aMax(px)</field-expr>\
<field-expr>ESP_aMin(q)</field-expr>\
<field-expr>ESP_aFirst(q)</field-expr>\
<field-expr>ESP_aLast(px)</field-expr>\
<field-expr>ESP_aLag(q, 1)</field-expr>\
<field-expr>ESP_aCat(tag, ';')</field-expr>\
<field-expr>ESP_aMode(q)</field-expr>\
<field-expr>ESP_aCountDistinct(tag)</field-expr>\
</output>";

const AGG_SCHEMA: &str =
    "g*:int64,n:int64,sq:int64,apx:double,spx:double,wpx:double,hi:double,lo:int32,\
first:int32,last:double,lag:int32,tags:string,mode:int32,kinds:int64";

const PAIR_SCHEMA: &str = "g*:int64,tag*:string,n:int64,sq:int64,hi:double";
const PAIR_FUNCS: &str = "<output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(q)</field-expr><field-expr>ESP_aMax(px)</field-expr></output>";

fn model() -> String {
    let src = "<schema-string>id*:int64,g:int64,q:int32,px:double,tag:string</schema-string>";
    common::model(
        &[
            &format!("<window-source name='keyed'>{src}</window-source>"),
            &format!("<window-source name='facts' insert-only='true' index='pi_EMPTY'>{src}</window-source>"),
            &format!("<window-aggregate name='a1'><schema-string>{AGG_SCHEMA}</schema-string>{FUNCS}</window-aggregate>"),
            &format!("<window-aggregate name='a2'><schema-string>{AGG_SCHEMA}</schema-string>{FUNCS}</window-aggregate>"),
            // Two-field group keys (the other kind of key column).
            &format!("<window-aggregate name='a3'><schema-string>{PAIR_SCHEMA}</schema-string>{PAIR_FUNCS}</window-aggregate>"),
            &format!("<window-aggregate name='a4'><schema-string>{PAIR_SCHEMA}</schema-string>{PAIR_FUNCS}</window-aggregate>"),
        ],
        &[
            "<edge source='keyed' target='a1'/>",
            "<edge source='facts' target='a2'/>",
            "<edge source='keyed' target='a3'/>",
            "<edge source='facts' target='a4'/>",
        ],
    )
}

/// (keyed?, opcode, id, group, q, px, tag)
type Op = (bool, u8, i64, i64, i32, i32, u8);

fn event(op: &Op, next_fact: &mut i64) -> (bool, Event) {
    let &(keyed, code, id, g, q, px, tag) = op;
    let id = if keyed {
        id
    } else {
        *next_fact += 1;
        *next_fact
    };
    let row = vec![
        Value::Int64(id),
        // Group 3 is the null group: an integer key column widens to values for it, live and
        // when a file holding it is decoded.
        if g == 3 { Value::Null } else { Value::Int64(g) },
        Value::Int32(q),
        Value::Double(f64::from(px) / 4.0),
        Value::str(&format!("t{tag}")),
    ];
    let opc = if keyed {
        opcode(code)
    } else {
        sluice_event::Opcode::Insert
    };
    (keyed, Event::new(opc, row))
}

fn feed(e: &mut Engine, ops: &[Op], next_fact: &mut i64, sink: &mut CollectSink) {
    let (keyed, facts) = (win(e, "keyed"), win(e, "facts"));
    for op in ops {
        let (k, ev) = event(op, next_fact);
        inject(e, if k { keyed } else { facts }, vec![ev], sink);
    }
}

fn outputs(sink: &CollectSink) -> Vec<String> {
    sink.outputs
        .iter()
        .flat_map(|(w, _, evs)| evs.iter().map(move |ev| render(*w, ev)))
        .collect()
}

fn op_strategy() -> impl Strategy<Value = Op> {
    (
        any::<bool>(),
        0u8..5,
        0i64..12,
        0i64..4,
        -3i32..6,
        0i32..20,
        0u8..3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(96)))]

    #[test]
    fn restored_aggregates_continue_as_if_never_stopped(
        ops in prop::collection::vec(op_strategy(), 0..80),
        cut in 0usize..81,
    ) {
        let cut = cut.min(ops.len());
        let xml = model();

        let mut whole = engine(&xml);
        let mut whole_sink = CollectSink::default();
        let mut facts = 0;
        feed(&mut whole, &ops[..cut], &mut facts, &mut whole_sink);
        let before = whole_sink.outputs.len();
        feed(&mut whole, &ops[cut..], &mut facts, &mut whole_sink);

        let mut first = engine(&xml);
        let mut facts2 = 0;
        feed(&mut first, &ops[..cut], &mut facts2, &mut CollectSink::default());
        let files = first.snapshot_windows();
        let mut second = engine(&xml);
        second.restore_windows(&files).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The restored engine encodes to the same bytes: nothing was lost or reordered.
        prop_assert_eq!(&second.snapshot_windows(), &files);
        let mut rest = CollectSink::default();
        feed(&mut second, &ops[cut..], &mut facts2, &mut rest);

        let want: Vec<String> = outputs(&CollectSink {
            outputs: whole_sink.outputs[before..].to_vec(),
            bad: Vec::new(),
        });
        prop_assert_eq!(outputs(&rest), want);
        for w in ["a1", "a2", "a3", "a4"] {
            prop_assert_eq!(rows(&second, win(&second, w)), rows(&whole, win(&whole, w)));
        }
    }
}

/// Restores `files` into a fresh engine the way a restore from disk does: each file arrives in
/// pieces (of the sizes in `sizes`, taken in turn), each piece in a buffer with other bytes
/// before and after it.
fn restore_in_pieces(
    xml: &str,
    files: &std::collections::BTreeMap<String, Vec<u8>>,
    sizes: &[usize],
) -> Result<Engine, RestoreError> {
    let mut e = engine(xml);
    let mut r = e.restoring();
    for (path, bytes) in files {
        let mut at = 0;
        let mut turn = 0;
        let mut next = |spent: Vec<u8>| -> std::io::Result<Option<sluice_engine::snapshot::Piece>> {
            drop(spent);
            if at >= bytes.len() {
                return Ok(None);
            }
            let n = sizes[turn % sizes.len()].min(bytes.len() - at);
            turn += 1;
            let pad = turn % 5;
            let mut buf = vec![0xa5u8; pad];
            buf.extend_from_slice(&bytes[at..at + n]);
            buf.extend(std::iter::repeat_n(0x5a, 3));
            at += n;
            Ok(Some((buf, pad..pad + n)))
        };
        r.decode_pieces(path, bytes.len() as u64, &mut next)?;
    }
    e.finish_restore(r)?;
    Ok(e)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    /// A window file decoded piece by piece, with values cut across pieces anywhere, gives
    /// the same state as decoded whole; a file cut short gives the same error either way.
    #[test]
    fn files_decoded_in_pieces_equal_files_decoded_whole(
        ops in prop::collection::vec(op_strategy(), 0..60),
        sizes in prop::collection::vec(1usize..40, 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let xml = model();
        let mut e = engine(&xml);
        let mut facts = 0;
        feed(&mut e, &ops, &mut facts, &mut CollectSink::default());
        let files = e.snapshot_windows();
        let restored = restore_in_pieces(&xml, &files, &sizes)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&restored.snapshot_windows(), &files);

        // One file cut short: the same refusal, at the same offset.
        let paths: Vec<&String> = files.keys().collect();
        let path = paths[cut.index(paths.len())];
        let bytes = &files[path];
        let at = cut.index(bytes.len().max(1)).min(bytes.len().saturating_sub(1));
        let mut damaged = files.clone();
        damaged.insert(path.clone(), bytes[..at].to_vec());
        let whole = engine(&xml).restore_windows(&damaged).map(|_| ());
        let pieces = restore_in_pieces(&xml, &damaged, &sizes).map(|_| ());
        prop_assert!(whole.is_err(), "{} cut at {} was accepted", path, at);
        prop_assert_eq!(
            pieces.map_err(|e| e.to_string()),
            whole.map_err(|e| e.to_string())
        );
    }
}

/// Enough groups that the restore builds the key index on a second thread: the restored
/// window encodes to the same bytes and goes on exactly as the original.
#[test]
fn a_large_aggregate_restores_with_its_index_built_beside_the_columns() {
    let xml = model();
    let groups = 70_000i64;
    let ops = |from: i64, to: i64| -> Vec<Op> {
        (from..to)
            .map(|i| {
                (
                    false,
                    0,
                    0,
                    i % groups,
                    (i % 7) as i32,
                    (i % 13) as i32,
                    (i % 3) as u8,
                )
            })
            .collect()
    };
    let mut whole = engine(&xml);
    let mut facts = 0;
    feed(
        &mut whole,
        &ops(0, groups + 500),
        &mut facts,
        &mut CollectSink::default(),
    );
    let files = whole.snapshot_windows();
    let mut restored = engine(&xml);
    restored.restore_windows(&files).unwrap();
    assert_eq!(restored.snapshot_windows(), files);
    assert_eq!(rows(&restored, win(&restored, "a2")).len(), groups as usize);

    let (mut a, mut b) = (CollectSink::default(), CollectSink::default());
    let mut facts2 = facts;
    feed(
        &mut whole,
        &ops(groups + 500, groups + 1500),
        &mut facts,
        &mut a,
    );
    feed(
        &mut restored,
        &ops(groups + 500, groups + 1500),
        &mut facts2,
        &mut b,
    );
    let a2 = format!("{}|", win(&whole, "a2").0);
    let only_a2 = |s: &CollectSink| -> Vec<String> {
        outputs(s)
            .into_iter()
            .filter(|l| l.starts_with(&a2))
            .collect()
    };
    let (a, b) = (only_a2(&a), only_a2(&b));
    assert_eq!(a.len(), 1000, "one update per event into an existing group");
    assert!(
        a.iter().all(|l| l.contains("|U|")),
        "existing groups are found"
    );
    assert_eq!(a, b);
}

/// A window file cut short anywhere, or with any byte changed, is refused or restores
/// something: the decoder never panics and never allocates what the file cannot hold. (The
/// persist layer's checksums refuse such files before they get here; this is the engine's own
/// guard.)
#[test]
fn damaged_window_files_are_refused_without_a_panic() {
    let xml = model();
    let mut e = engine(&xml);
    let ops: Vec<Op> = (0..300)
        .map(|i| {
            (
                i % 3 != 0,
                (i % 5) as u8,
                i % 17,
                i % 4,
                (i % 9) as i32 - 2,
                (i % 20) as i32,
                (i % 3) as u8,
            )
        })
        .collect();
    let mut facts = 0;
    feed(&mut e, &ops, &mut facts, &mut CollectSink::default());
    let files = e.snapshot_windows();
    for (path, bytes) in &files {
        if !path.starts_with("cq/a") {
            continue;
        }
        let step = (bytes.len() / 200).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let mut damaged = files.clone();
            damaged.insert(path.clone(), bytes[..cut].to_vec());
            assert!(
                engine(&xml).restore_windows(&damaged).is_err(),
                "{path} cut at {cut} of {} was accepted",
                bytes.len()
            );
        }
        for at in (0..bytes.len()).step_by(step) {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = files.clone();
                let mut b = bytes.clone();
                b[at] ^= flip;
                damaged.insert(path.clone(), b);
                // Either outcome is fine; a panic or an abort is not.
                let _ = engine(&xml).restore_windows(&damaged);
            }
        }
    }
}

/// The index of a large key column (built part by part) refuses a key that appears twice,
/// naming the later slot of the first such pair, as the slot-by-slot build does for small ones.
#[test]
fn a_key_that_appears_twice_is_found_in_large_and_small_columns() {
    use sluice_engine::cow::CowVec;
    use sluice_engine::window::aggregate::{Groups, IntKey, KeyCol};
    for n in [1_000usize, 100_000] {
        let numbers = |dups: &[(usize, usize)]| {
            let mut v: Vec<i64> = (0..n as i64).map(|i| i * 7919).collect();
            for &(from, to) in dups {
                v[to] = v[from];
            }
            v
        };
        let int =
            |v: &[i64]| KeyCol::Int(IntKey::Int64, v.iter().copied().collect::<CowVec<i64>>());
        let one = |v: &[i64]| {
            KeyCol::One(
                v.iter()
                    .map(|&x| Value::Int64(x))
                    .collect::<CowVec<Value>>(),
            )
        };
        assert!(
            Groups::index_keys(&int(&numbers(&[]))).is_ok(),
            "{n} distinct"
        );
        // Two pairs: the answer is the smaller later slot. The index is built from two lists
        // (each half of the slots), so pairs within the first half, within the second and
        // across both are tried; on one thread and on two alike.
        let half = n / 2;
        for (pairs, first) in [
            (vec![(half, n - 3), (10, n / 3)], n / 3),
            (vec![(half + 1, n - 3), (20, half + 5)], half + 5),
            (vec![(half + 7, n - 1), (3, 40)], 40),
        ] {
            let v = numbers(&pairs);
            for (how, keys) in [("int", int(&v)), ("values", one(&v))] {
                assert_eq!(
                    Groups::index_keys(&keys).err(),
                    Some(first),
                    "{n} {how} with duplicates {pairs:?}"
                );
                assert_eq!(
                    Groups::index_keys_on_two_threads(&keys).err(),
                    Some(first),
                    "{n} {how} with duplicates {pairs:?}, two threads"
                );
            }
        }
        assert!(Groups::index_keys_on_two_threads(&int(&numbers(&[]))).is_ok());
    }
}
