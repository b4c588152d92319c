//! What can reach a window: a source that accepts only inserts but has retention of its own
//! emits retention deletes, and every window below it (aggregate, join, union, through filter,
//! compute and copy) must treat its input as one that carries deletes.
//!
//! The oracle is differential: the same model with `insert-only="true"` removed from the
//! source is fed the same events (all inserts with fresh keys, so both accept every one) and
//! must emit exactly the same event streams, window by window, and hold the same rows. The
//! aggregate is also recomputed from the final rows of its input window (insertion order is
//! the key order, since keys only grow), and a snapshot taken after retention removed rows
//! restores into an engine that continues as if never stopped.
//!
//! Default 128 cases per property; `PROPTEST_CASES=N` raises it.

mod common;

use std::collections::BTreeMap;

use common::{cases, engine, inject, render, rows, win};
use proptest::prelude::*;
use sluice_engine::{CollectSink, Engine};
use sluice_event::{Event, Opcode, Row, Value};

/// The source's schema: a growing key, a group, two numbers, a tag and an event time.
const SRC_SCHEMA: &str = "id*:int64,g:int64,q:int32,px:double,tag:string,t:stamp";

/// Every aggregate function over the fields above, in the aggregate's schema order.
const FUNCS: &str = "<output>\
<field-expr>ESP_aCount()</field-expr>\
<field-expr>ESP_aSum(q)</field-expr>\
<field-expr>ESP_aSum(px)</field-expr>\
<field-expr>ESP_aAve(q)</field-expr>\
<field-expr>ESP_aStd(px)</field-expr>\
<field-expr>ESP_aWAve(q, px)</field-expr>\
<field-expr>ESP_aMax(q)</field-expr>\
<field-expr>ESP_aMin(q)</field-expr>\
<field-expr>ESP_aMax(px)</field-expr>\
<field-expr>ESP_aMin(px)</field-expr>\
<field-expr>ESP_aFirst(q)</field-expr>\
<field-expr>ESP_aLast(q)</field-expr>\
<field-expr>ESP_aLag(q, 1)</field-expr>\
<field-expr>ESP_aCat(tag, ';')</field-expr>\
<field-expr>ESP_aMode(q)</field-expr>\
<field-expr>ESP_aCountDistinct(tag)</field-expr>\
<field-expr>q</field-expr>\
</output>";

const AGG_SCHEMA: &str = "g*:int64,n:int64,sq:int64,spx:double,aq:double,sdpx:double,\
wq:double,hiq:int32,loq:int32,hipx:double,lopx:double,firstq:int32,lastq:int32,lagq:int32,\
tags:string,modeq:int32,kinds:int64,plainq:int32";

/// The source's own retention.
#[derive(Clone, Copy, Debug)]
enum Ret {
    Count(u8),
    /// Event-time sliding retention over `t`, in seconds.
    Time(u8),
}

impl Ret {
    fn xml(self) -> String {
        match self {
            Ret::Count(n) => format!("<retention type='bycount_sliding'>{n}</retention>"),
            Ret::Time(s) => {
                format!("<retention type='bytime_sliding' field='t'>{s} seconds</retention>")
            }
        }
    }
}

/// The windows between the source and the aggregate.
#[derive(Clone, Copy, Debug)]
enum Chain {
    Direct,
    Filter,
    Compute,
    /// A copy without retention of its own.
    Copy,
    /// Filter, then compute, then copy.
    All,
}

fn source(insert_only: bool, ret: Ret) -> String {
    let io = if insert_only {
        " insert-only='true'"
    } else {
        ""
    };
    format!(
        "<window-source name='s'{io}><schema-string>{SRC_SCHEMA}</schema-string>{}</window-source>",
        ret.xml()
    )
}

const FILTER: &str = "<window-filter name='f'><expression>q &gt; -3</expression></window-filter>";
const COMPUTE: &str = "<window-compute name='c'><schema-string>id*:int64,g:int64,q:int32,\
px:double,tag:string,t:stamp</schema-string><output><field-expr>g</field-expr>\
<field-expr>q*2</field-expr><field-expr>px</field-expr><field-expr>tag</field-expr>\
<field-expr>t</field-expr></output></window-compute>";
const COPY: &str = "<window-copy name='k'/>";

fn aggregate() -> String {
    format!(
        "<window-aggregate name='a'><schema-string>{AGG_SCHEMA}</schema-string>{FUNCS}</window-aggregate>"
    )
}

/// The model, and the name of the aggregate's input window.
fn chain_model(insert_only: bool, ret: Ret, chain: Chain) -> (String, &'static str) {
    let src = source(insert_only, ret);
    let agg = aggregate();
    let (windows, edges, input): (Vec<&str>, Vec<&str>, &str) = match chain {
        Chain::Direct => (vec![], vec!["<edge source='s' target='a'/>"], "s"),
        Chain::Filter => (
            vec![FILTER],
            vec![
                "<edge source='s' target='f'/>",
                "<edge source='f' target='a'/>",
            ],
            "f",
        ),
        Chain::Compute => (
            vec![COMPUTE],
            vec![
                "<edge source='s' target='c'/>",
                "<edge source='c' target='a'/>",
            ],
            "c",
        ),
        Chain::Copy => (
            vec![COPY],
            vec![
                "<edge source='s' target='k'/>",
                "<edge source='k' target='a'/>",
            ],
            "k",
        ),
        Chain::All => (
            vec![FILTER, COMPUTE, COPY],
            vec![
                "<edge source='s' target='f'/>",
                "<edge source='f' target='c'/>",
                "<edge source='c' target='k'/>",
                "<edge source='k' target='a'/>",
            ],
            "k",
        ),
    };
    let mut all: Vec<&str> = vec![&src];
    all.extend(windows);
    all.push(&agg);
    (common::model(&all, &edges), input)
}

/// One generated insert: group, q, px in quarters, tag, seconds since the previous event
/// (may go back a little: event time is not always ordered).
type Ins = (i64, i32, i32, u8, i8);

fn ins_strategy() -> impl Strategy<Value = Ins> {
    (0i64..4, -5i32..8, -20i32..40, 0u8..3, -2i8..6)
}

/// The inserts as events with keys 1, 2, 3, ... in order.
fn events(ins: &[Ins]) -> Vec<Event> {
    let mut t: i64 = 1_000_000_000;
    ins.iter()
        .enumerate()
        .map(|(i, &(g, q, px, tag, dt))| {
            t += i64::from(dt) * 1_000_000;
            Event::new(
                Opcode::Insert,
                vec![
                    Value::Int64(i as i64 + 1),
                    Value::Int64(g),
                    Value::Int32(q),
                    Value::Double(f64::from(px) / 4.0),
                    Value::str(&format!("t{tag}")),
                    Value::Stamp(t),
                ],
            )
        })
        .collect()
}

/// Feeds `evs` into window `s` in blocks of `size`.
fn feed(e: &mut Engine, evs: &[Event], size: usize, sink: &mut CollectSink) {
    let s = win(e, "s");
    for block in evs.chunks(size.max(1)) {
        inject(e, s, block.to_vec(), sink);
    }
}

/// Every event every window emitted, rendered, in order.
fn stream(sink: &CollectSink) -> Vec<String> {
    sink.outputs
        .iter()
        .flat_map(|(w, _, evs)| evs.iter().map(move |ev| render(*w, ev)))
        .collect()
}

fn first_diff(a: &[String], b: &[String]) -> String {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            return format!("event {i}: insert-only source gives {x}, keyed source gives {y}");
        }
    }
    format!("lengths {} and {}", a.len(), b.len())
}

/// The aggregate recomputed from its input window's rows: count, sums, min/max, first/last
/// (insertion order is key order), for each group.
fn recompute(input: &[Row]) -> BTreeMap<i64, (i64, i64, i32, i32, i32, i32)> {
    let mut groups: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
    for r in input {
        groups.entry(r[1].as_i64().unwrap()).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(g, mut members)| {
            members.sort_by_key(|r| r[0].as_i64().unwrap());
            let qs: Vec<i32> = members
                .iter()
                .map(|r| r[2].as_i64().unwrap() as i32)
                .collect();
            (
                g,
                (
                    qs.len() as i64,
                    qs.iter().map(|&q| i64::from(q)).sum(),
                    *qs.iter().max().unwrap(),
                    *qs.iter().min().unwrap(),
                    qs[0],
                    *qs.last().unwrap(),
                ),
            )
        })
        .collect()
}

fn check_chain(ret: Ret, chain: Chain, ins: &[Ins], size: usize) -> Result<(), String> {
    let (io_xml, input) = chain_model(true, ret, chain);
    let (keyed_xml, _) = chain_model(false, ret, chain);
    let evs = events(ins);
    let (mut io, mut keyed) = (engine(&io_xml), engine(&keyed_xml));
    let (mut io_sink, mut keyed_sink) = (CollectSink::default(), CollectSink::default());
    feed(&mut io, &evs, size, &mut io_sink);
    feed(&mut keyed, &evs, size, &mut keyed_sink);
    if !io_sink.bad.is_empty() || !keyed_sink.bad.is_empty() {
        return Err(format!(
            "refused events: {:?} / {:?}",
            io_sink.bad, keyed_sink.bad
        ));
    }
    let (a, b) = (stream(&io_sink), stream(&keyed_sink));
    if a != b {
        return Err(format!("output streams differ: {}", first_diff(&a, &b)));
    }
    let agg_rows = rows(&io, win(&io, "a"));
    if agg_rows != rows(&keyed, win(&keyed, "a")) {
        return Err("final aggregate rows differ".into());
    }
    // Against a recomputation from the aggregate's input.
    let want = recompute(&rows(&io, win(&io, input)));
    if agg_rows.len() != want.len() {
        return Err(format!(
            "{} groups, recomputation has {}",
            agg_rows.len(),
            want.len()
        ));
    }
    for r in &agg_rows {
        let g = r[0].as_i64().unwrap();
        let (n, sq, hi, lo, first, last) = want[&g];
        let got = (
            r[1].as_i64().unwrap(),
            r[2].as_i64().unwrap(),
            r[7].as_i64().unwrap() as i32,
            r[8].as_i64().unwrap() as i32,
            r[11].as_i64().unwrap() as i32,
            r[12].as_i64().unwrap() as i32,
        );
        if got != (n, sq, hi, lo, first, last) {
            return Err(format!(
                "group {g}: (count, sum, max, min, first, last) = {got:?}, recomputed {:?}",
                (n, sq, hi, lo, first, last)
            ));
        }
    }
    Ok(())
}

fn ret_strategy() -> impl Strategy<Value = Ret> {
    prop_oneof![(1u8..5).prop_map(Ret::Count), (2u8..12).prop_map(Ret::Time)]
}

fn chain_strategy() -> impl Strategy<Value = Chain> {
    prop_oneof![
        Just(Chain::Direct),
        Just(Chain::Filter),
        Just(Chain::Compute),
        Just(Chain::Copy),
        Just(Chain::All),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    /// An insert-only source with count or event-time retention, through every chain, into
    /// an aggregate of every function: the same streams as a keyed source, and the
    /// aggregate equals a recomputation from its input's rows.
    #[test]
    fn retaining_insert_only_source_equals_keyed_source(
        ret in ret_strategy(),
        chain in chain_strategy(),
        ins in prop::collection::vec(ins_strategy(), 0..40),
        size in 1usize..4,
    ) {
        let r = check_chain(ret, chain, &ins, size);
        prop_assert!(r.is_ok(), "{:?} {:?}: {}", ret, chain, r.unwrap_err());
    }

    /// A snapshot taken after retention removed rows restores into an engine that continues
    /// exactly as the uninterrupted one (output events and final rows).
    #[test]
    fn snapshot_after_retention_continues(
        ret in ret_strategy(),
        chain in chain_strategy(),
        ins in prop::collection::vec(ins_strategy(), 0..40),
        cut in 0usize..41,
    ) {
        let (xml, _) = chain_model(true, ret, chain);
        let evs = events(&ins);
        let cut = cut.min(evs.len());
        let mut whole = engine(&xml);
        let mut whole_sink = CollectSink::default();
        feed(&mut whole, &evs[..cut], 1, &mut whole_sink);
        let before = whole_sink.outputs.len();
        feed(&mut whole, &evs[cut..], 1, &mut whole_sink);

        let mut first = engine(&xml);
        feed(&mut first, &evs[..cut], 1, &mut CollectSink::default());
        let files = first.snapshot_windows();
        let mut second = engine(&xml);
        second.restore_windows(&files).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut rest = CollectSink::default();
        feed(&mut second, &evs[cut..], 1, &mut rest);
        let want = stream(&CollectSink { outputs: whole_sink.outputs[before..].to_vec(), bad: Vec::new() });
        prop_assert_eq!(stream(&rest), want);
        prop_assert_eq!(rows(&second, win(&second, "a")), rows(&whole, win(&whole, "a")));
    }
}

/// The smallest case of the report, by hand: the source holds rows 2 and 3 after the third
/// insert, so the group is {20 @ 2.0, 40 @ 4.0}.
#[test]
fn smallest_case_by_hand() {
    let xml = common::model(
        &[
            "<window-source name='s' insert-only='true'><schema-string>ID*:int32,sym:string,qty:int32,price:double</schema-string>\
             <retention type='bycount_sliding'>2</retention></window-source>",
            "<window-aggregate name='a'><schema-string>sym*:string,n:int64,s:int32,lo:int32,hi:int32,\
             first:int32,last:int32,ave:double,wave:double</schema-string><output>\
             <field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(qty)</field-expr>\
             <field-expr>ESP_aMin(qty)</field-expr><field-expr>ESP_aMax(qty)</field-expr>\
             <field-expr>ESP_aFirst(qty)</field-expr><field-expr>ESP_aLast(qty)</field-expr>\
             <field-expr>ESP_aAve(qty)</field-expr><field-expr>ESP_aWAve(qty, price)</field-expr>\
             </output></window-aggregate>",
        ],
        &["<edge source='s' target='a'/>"],
    );
    let mut e = engine(&xml);
    let mut sink = CollectSink::default();
    let s = win(&e, "s");
    for (id, qty, price) in [(1, 50, 1.0), (2, 20, 2.0), (3, 40, 4.0)] {
        let row = vec![
            Value::Int32(id),
            Value::str("A"),
            Value::Int32(qty),
            Value::Double(price),
        ];
        inject(&mut e, s, vec![Event::new(Opcode::Insert, row)], &mut sink);
    }
    let got = rows(&e, win(&e, "a"));
    // ESP_aWAve(qty, price) = Σ(qty·price)/Σqty = (40 + 160) / 60.
    let want: Row = vec![
        Value::str("A"),
        Value::Int64(2),
        Value::Int32(60),
        Value::Int32(20),
        Value::Int32(40),
        Value::Int32(20),
        Value::Int32(40),
        Value::Double(30.0),
        Value::Double(200.0 / 60.0),
    ];
    assert_eq!(got.len(), 1, "{got:?}");
    common::rows_close(&got[0], &want).unwrap_or_else(|e| panic!("{e}: {got:?}"));
}

/// Joins and unions below a retaining insert-only source see its retention deletes.
#[test]
fn joins_and_unions_below_a_retaining_insert_only_source() {
    fn join_model(io: bool) -> String {
        let io = if io { " insert-only='true'" } else { "" };
        common::model(
            &[
                &format!("<window-source name='s'{io}><schema-string>{SRC_SCHEMA}</schema-string><retention type='bycount_sliding'>3</retention></window-source>"),
                &format!("<window-source name='s2'{io}><schema-string>{SRC_SCHEMA}</schema-string><retention type='bycount_sliding'>2</retention></window-source>"),
                "<window-source name='dim'><schema-string>g*:int64,name:string</schema-string></window-source>",
                "<window-join name='j'><join type='leftouter'><conditions><fields left='g' right='g'/></conditions></join>\
                 <output><field-selection name='q' source='l_q'/><field-selection name='name' source='r_name'/></output></window-join>",
                "<window-union name='u' strict='true'/>",
                &format!("<window-aggregate name='a'><schema-string>{AGG_SCHEMA}</schema-string>{FUNCS}</window-aggregate>"),
                "<window-aggregate name='ja'><schema-string>name*:string,n:int64,hi:int32,first:int32</schema-string>\
                 <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aMax(q)</field-expr><field-expr>ESP_aFirst(q)</field-expr></output></window-aggregate>",
            ],
            &[
                "<edge source='s' target='j' role='left'/>",
                "<edge source='dim' target='j' role='right'/>",
                "<edge source='j' target='ja'/>",
                "<edge source='s' target='u'/>",
                "<edge source='s2' target='u'/>",
                "<edge source='u' target='a'/>",
            ],
        )
    }
    let ins: Vec<Ins> = (0..30)
        .map(|i| (i % 3, (i * 7 % 11) as i32 - 4, i as i32, (i % 3) as u8, 1))
        .collect();
    let evs = events(&ins);
    let mut outs = Vec::new();
    let mut finals = Vec::new();
    for io in [true, false] {
        let mut e = engine(&join_model(io));
        let mut sink = CollectSink::default();
        let dim = win(&e, "dim");
        let dims = (0..3)
            .map(|g| {
                Event::new(
                    Opcode::Insert,
                    vec![Value::Int64(g), Value::str(&format!("n{g}"))],
                )
            })
            .collect();
        inject(&mut e, dim, dims, &mut sink);
        let (s, s2) = (win(&e, "s"), win(&e, "s2"));
        for (i, ev) in evs.iter().enumerate() {
            inject(&mut e, s, vec![ev.clone()], &mut sink);
            // The second union input gets its own keys (no clash with the first).
            let mut other = ev.clone();
            other.row[0] = Value::Int64(1000 + i as i64);
            inject(&mut e, s2, vec![other], &mut sink);
        }
        assert!(sink.bad.is_empty(), "{:?}", sink.bad);
        outs.push(stream(&sink));
        finals.push((rows(&e, win(&e, "ja")), rows(&e, win(&e, "a"))));
    }
    assert_eq!(outs[0].len(), outs[1].len());
    assert_eq!(outs[0], outs[1], "{}", first_diff(&outs[0], &outs[1]));
    assert_eq!(finals[0], finals[1]);
    // The union holds 3 + 2 rows, so the aggregate counts 5 members in all.
    let n: i64 = finals[0].1.iter().map(|r| r[1].as_i64().unwrap()).sum();
    assert_eq!(n, 5);
}

/// A stream join (`left-index="pi_EMPTY"`) keeps no left rows, so it cannot take the
/// retention deletes of an insert-only source: refused at load with the reason.
#[test]
fn stream_join_refuses_a_retaining_insert_only_source() {
    let xml = common::model(
        &[
            &format!("<window-source name='s' insert-only='true'><schema-string>{SRC_SCHEMA}</schema-string><retention type='bycount_sliding'>3</retention></window-source>"),
            "<window-source name='dim'><schema-string>g*:int64,name:string</schema-string></window-source>",
            "<window-join name='j'><join type='leftouter' left-index='pi_EMPTY'><conditions><fields left='g' right='g'/></conditions></join>\
             <output><field-selection name='q' source='l_q'/><field-selection name='name' source='r_name'/></output></window-join>",
        ],
        &[
            "<edge source='s' target='j' role='left'/>",
            "<edge source='dim' target='j' role='right'/>",
        ],
    );
    let spec = sluice_model::parse_project(&xml, &|_| None).expect("parses");
    let err = Engine::new(&spec).expect_err("a stream join over retention deletes is refused");
    let text = format!("{err:?}");
    assert!(text.contains("insert-only"), "{text}");
}
