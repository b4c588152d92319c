//! Property tests: each stateful window against a from-scratch recomputation over random
//! insert / update / upsert / delete / safedelete sequences, and the output consistency of
//! every window (its delta stream, replayed on an empty table, gives its final contents).
//!
//! The oracles:
//! - sources, copies with count retention, unions: a reference keyed table ([`RefTable`])
//!   fed the same events; the emitted event streams must be identical, not only the contents;
//! - aggregate, join, filter: recomputed from the final contents of their input windows.
//!
//! Default 64 cases per property; `PROPTEST_CASES=N` raises it.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sluice_engine::{CollectSink, Engine, WindowId};
use sluice_event::{Event, Flags, Key, Opcode, Row, Value};

/// One generated event, before it is shaped into a row of some schema.
#[derive(Clone, Debug)]
struct Op {
    /// Which source (joins, unions).
    side: bool,
    op: u8,
    key: i64,
    /// Group / join-key value.
    g: i64,
    x: i64,
    /// A double in eighths (exact in binary).
    y: i32,
    /// Deletes carry only the key (non-key fields null).
    sparse: bool,
}

fn op_strategy(keys: i64, groups: i64, insert_only: bool) -> impl Strategy<Value = Op> {
    (
        any::<bool>(),
        0u8..5,
        0..keys,
        0..groups,
        -20i64..20,
        -400i32..400,
        any::<bool>(),
    )
        .prop_map(move |(side, op, key, g, x, y, sparse)| Op {
            side,
            op: if insert_only { 0 } else { op },
            key,
            g,
            x,
            y,
            sparse,
        })
}

fn ops(keys: i64, groups: i64, insert_only: bool) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(keys, groups, insert_only), 0..48)
}

/// The event of `o` with `row`; a sparse delete nulls the non-key fields, a sparse update
/// may be a partial update.
fn event(o: &Op, mut row: Row, keys: &[usize]) -> Event {
    let opcode = opcode(o.op);
    if o.sparse && matches!(opcode, Opcode::Delete | Opcode::SafeDelete) {
        for (i, v) in row.iter_mut().enumerate() {
            if !keys.contains(&i) {
                *v = Value::Null;
            }
        }
    }
    // Some updates are partial: the last field null, kept from the old row.
    if o.sparse && opcode == Opcode::Update && o.x % 2 == 0 {
        if let Some(last) = row.last_mut() {
            *last = Value::Null;
        }
        return Event::new(opcode, row).with_flags(Flags::Partial);
    }
    Event::new(opcode, row)
}

/// Injects `(source index, event)` pairs, grouping consecutive events of one source into
/// blocks of at most `size` events.
fn drive(
    e: &mut Engine,
    sources: &[WindowId],
    evs: &[(usize, Event)],
    size: usize,
    sink: &mut CollectSink,
) {
    let mut i = 0;
    while i < evs.len() {
        let src = evs[i].0;
        let mut block = Vec::new();
        while i < evs.len() && evs[i].0 == src && block.len() < size {
            block.push(evs[i].1.clone());
            i += 1;
        }
        inject(e, sources[src], block, sink);
    }
}

/// The events `w` emitted, rendered, in order.
fn emitted(sink: &CollectSink, w: WindowId) -> Vec<String> {
    sink.outputs
        .iter()
        .filter(|(x, _, _)| *x == w)
        .flat_map(|(_, _, evs)| evs.iter().map(move |e| render(w, e)))
        .collect()
}

fn rendered(w: WindowId, evs: &[Event]) -> Vec<String> {
    evs.iter().map(|e| render(w, e)).collect()
}

/// Output consistency: the replayed delta stream of `w` equals its contents.
fn consistent(e: &Engine, sink: &CollectSink, w: WindowId, what: &str) -> Result<(), String> {
    let keys = e.node(w).schema.key_indices().to_vec();
    let replayed = replay(sink, w, &keys).map_err(|m| format!("{what}: output stream: {m}"))?;
    contents_close(
        &format!("{what} (replayed output vs contents)"),
        &keys,
        &replayed,
        &rows(e, w),
    )
}

fn first_diff(a: &[String], b: &[String]) -> String {
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(
        "event {i} differs: engine {:?}, reference {:?} (engine {} events, reference {})",
        a.get(i),
        b.get(i),
        a.len(),
        b.len()
    )
}

/// 64 cases unless PROPTEST_CASES says otherwise; failing cases are saved to (and replayed
/// from) `crates/engine/proptest-regressions/properties.txt`.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(64),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/properties.txt"
        )))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Aggregate

const AGG_SRC: &str = "<window-source name='s'><schema-string>k*:int64,g:string,x:int64,y:double</schema-string></window-source>";
const AGG_SRC_IO: &str = "<window-source name='s' insert-only='true'><schema-string>k*:int64,g:string,x:int64,y:double</schema-string></window-source>";
const AGG: &str = "<window-aggregate name='a'>\
  <schema-string>g*:string,cnt:int64,sx:int64,ax:double,mx:int64,mn:double,sy:double,fx:int64,lx:int64,m2:int64,sd:double</schema-string>\
  <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(x)</field-expr>\
  <field-expr>ESP_aAve(x)</field-expr><field-expr>ESP_aMax(x)</field-expr><field-expr>ESP_aMin(y)</field-expr>\
  <field-expr>ESP_aSum(y)</field-expr><field-expr>ESP_aFirst(x)</field-expr><field-expr>ESP_aLast(x)</field-expr>\
  <field-expr>ESP_aMax(x*2)</field-expr><field-expr>ESP_aStd(y)</field-expr></output></window-aggregate>";

/// The models above with an int64 group field instead of a string (the integer key column).
fn int_grouped(xml: &str) -> String {
    xml.replace("g:string", "g:int64")
        .replace("g*:string", "g*:int64")
}

fn agg_row(o: &Op, int_groups: bool) -> Row {
    vec![
        Value::Int64(o.key),
        match (int_groups, o.g) {
            (false, g) => Value::str(&format!("g{g}")),
            // Group 0 is the null group: the integer key column widens to values for it.
            (true, 0) => Value::Null,
            (true, g) => Value::Int64(g * 1_000_003),
        },
        Value::Int64(o.x),
        Value::Double(o.y as f64 / 8.0),
    ]
}

/// Recomputes the aggregate from the source's rows. First/last follow the order in which
/// members were last inserted or updated (`touch`): an updated member becomes the latest.
fn agg_oracle(src: &BTreeMap<Key, Row>, touch: &BTreeMap<Key, u64>) -> Vec<Row> {
    let mut groups: BTreeMap<Value, Vec<(u64, &Row)>> = BTreeMap::new();
    for (k, r) in src {
        groups.entry(r[1].clone()).or_default().push((touch[k], r));
    }
    groups
        .into_iter()
        .map(|(g, mut members)| {
            members.sort_by_key(|(t, _)| *t);
            let xs: Vec<i64> = members
                .iter()
                .map(|(_, r)| r[2].as_i64().unwrap())
                .collect();
            let ys: Vec<f64> = members
                .iter()
                .map(|(_, r)| r[3].as_f64().unwrap())
                .collect();
            let n = xs.len() as i64;
            let sx: i64 = xs.iter().sum();
            vec![
                g,
                Value::Int64(n),
                Value::Int64(sx),
                Value::Double(sx as f64 / n as f64),
                Value::Int64(*xs.iter().max().unwrap()),
                Value::Double(ys.iter().cloned().fold(f64::INFINITY, f64::min)),
                Value::Double(ys.iter().sum()),
                Value::Int64(xs[0]),
                Value::Int64(*xs.last().unwrap()),
                Value::Int64(2 * xs.iter().max().unwrap()),
                // Sample standard deviation.
                if n < 2 {
                    Value::Null
                } else {
                    let (s, sq): (f64, f64) = (ys.iter().sum(), ys.iter().map(|y| y * y).sum());
                    let var = ((sq - s * s / n as f64) / (n - 1) as f64).max(0.0);
                    Value::Double(var.sqrt())
                },
            ]
        })
        .collect()
}

fn check_aggregate(src_xml: &str, ops: &[Op], size: usize, int_groups: bool) -> Result<(), String> {
    let (src_xml, agg) = if int_groups {
        (int_grouped(src_xml), int_grouped(AGG))
    } else {
        (src_xml.to_string(), AGG.to_string())
    };
    let mut e = engine(&model(
        &[&src_xml, &agg],
        &["<edge source='s' target='a'/>"],
    ));
    let (s, a) = (win(&e, "s"), win(&e, "a"));
    let mut sink = CollectSink::default();
    let insert_only = src_xml.contains("insert-only");
    let mut reference = RefTable::new(&[0], true, None);
    let mut touch: BTreeMap<Key, u64> = BTreeMap::new();
    let mut evs = Vec::new();
    let mut src_out = Vec::new();
    for (seq, o) in ops.iter().enumerate() {
        let ev = event(o, agg_row(o, int_groups), &[0]);
        let out = if insert_only && ev.opcode != Opcode::Insert {
            reference.bad += 1;
            Vec::new()
        } else {
            reference.apply(&ev)
        };
        for r in &out {
            let k: Key = [r.row[0].clone()].into_iter().collect();
            match r.opcode {
                Opcode::Delete => {
                    touch.remove(&k);
                }
                _ => {
                    touch.insert(k, seq as u64);
                }
            }
        }
        src_out.extend(out);
        evs.push((0, ev));
    }
    drive(&mut e, &[s], &evs, size, &mut sink);
    // The source against the reference table: same stream, same refusals.
    let (got, want) = (emitted(&sink, s), rendered(s, &src_out));
    if got != want {
        return Err(format!("source stream: {}", first_diff(&got, &want)));
    }
    if bad_count(&sink, s) != reference.bad {
        return Err(format!(
            "source refused {} events, reference {}",
            bad_count(&sink, s),
            reference.bad
        ));
    }
    if bad_count(&sink, a) != 0 {
        return Err(format!("aggregate refused events: {:?}", sink.bad));
    }
    contents_close(
        "aggregate",
        &[0],
        &rows(&e, a),
        &agg_oracle(&reference.rows, &touch),
    )?;
    consistent(&e, &sink, a, "aggregate")?;
    consistent(&e, &sink, s, "source")
}

proptest! {
    #![proptest_config(config())]

    /// Sum, count, average, max, min, first, last (and max of an expression) per group,
    /// with group keys changing on update, against a recomputation from the source rows.
    #[test]
    fn aggregate_matches_recomputation(ops in ops(8, 3, false), size in 1usize..4) {
        let r = check_aggregate(AGG_SRC, &ops, size, false);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    /// The same over an insert-only source (running max/min/first/last).
    #[test]
    fn aggregate_insert_only_matches_recomputation(ops in ops(16, 3, true), size in 1usize..4) {
        let r = check_aggregate(AGG_SRC_IO, &ops, size, false);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    /// Both again with integer group keys (kept as numbers), a null group among them.
    #[test]
    fn aggregate_by_integer_matches_recomputation(
        ops in ops(8, 3, false),
        size in 1usize..4,
        insert_only in any::<bool>(),
    ) {
        let src = if insert_only { AGG_SRC_IO } else { AGG_SRC };
        let r = check_aggregate(src, &ops, size, true);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

// ---------------------------------------------------------------------------------------
// Join

/// Key-coverage cases of reference 1.9.
#[derive(Clone, Copy, Debug, PartialEq)]
enum JoinCase {
    /// Conditions cover the right key: output key = left key.
    OneToMany,
    /// Conditions cover the left key: output key = right key.
    ManyToOne,
    /// Conditions cover both keys.
    OneToOne,
    /// Neither: output key = left key + right key.
    ManyToMany,
}

impl JoinCase {
    fn left_schema(self) -> &'static str {
        match self {
            JoinCase::OneToMany | JoinCase::ManyToMany => "lk*:int64,jk:int32,lv:int64",
            JoinCase::ManyToOne | JoinCase::OneToOne => "lk*:int32,lv:int64",
        }
    }
    fn right_schema(self) -> &'static str {
        match self {
            JoinCase::ManyToOne | JoinCase::ManyToMany => "rk*:int64,jk:int32,rv:int64",
            JoinCase::OneToMany | JoinCase::OneToOne => "rk*:int32,rv:int64",
        }
    }
    /// (left field, right field) of the condition, as names and positions.
    fn cond(self) -> (&'static str, &'static str, usize, usize) {
        match self {
            JoinCase::OneToMany => ("jk", "rk", 1, 0),
            JoinCase::ManyToOne => ("lk", "jk", 0, 1),
            JoinCase::OneToOne => ("lk", "rk", 0, 0),
            JoinCase::ManyToMany => ("jk", "jk", 1, 1),
        }
    }
    fn left_fields(self) -> &'static [&'static str] {
        match self {
            JoinCase::OneToMany | JoinCase::ManyToMany => &["lk", "jk", "lv"],
            _ => &["lk", "lv"],
        }
    }
    fn right_fields(self) -> &'static [&'static str] {
        match self {
            JoinCase::ManyToOne | JoinCase::ManyToMany => &["rk", "jk", "rv"],
            _ => &["rk", "rv"],
        }
    }
    fn types(self) -> &'static [&'static str] {
        match self {
            JoinCase::OneToMany => &["inner", "leftouter"],
            JoinCase::ManyToOne => &["inner", "rightouter"],
            _ => &["inner", "leftouter", "rightouter", "fullouter"],
        }
    }
    /// A row of one side from a generated op: the key from `key`, join fields from `g`.
    fn row(self, left: bool, o: &Op) -> Row {
        let wide = if left {
            matches!(self, JoinCase::OneToMany | JoinCase::ManyToMany)
        } else {
            matches!(self, JoinCase::ManyToOne | JoinCase::ManyToMany)
        };
        if wide {
            vec![
                Value::Int64(o.key),
                Value::Int32(o.g as i32),
                Value::Int64(o.x),
            ]
        } else {
            // The key is itself the join field: draw it from the join-key range.
            vec![Value::Int32(o.key as i32 % 4), Value::Int64(o.x)]
        }
    }
    fn out_keys(self) -> Vec<usize> {
        if self == JoinCase::ManyToMany {
            vec![0, 1]
        } else {
            vec![0]
        }
    }
}

fn join_xml(case: JoinCase, jt: &str) -> String {
    let (lc, rc, _, _) = case.cond();
    let mut out = String::new();
    for f in case.left_fields() {
        out.push_str(&format!("<field-selection name='l_{f}' source='l_{f}'/>"));
    }
    for f in case.right_fields() {
        out.push_str(&format!("<field-selection name='r_{f}' source='r_{f}'/>"));
    }
    let l = format!(
        "<window-source name='l'><schema-string>{}</schema-string></window-source>",
        case.left_schema()
    );
    let r = format!(
        "<window-source name='r'><schema-string>{}</schema-string></window-source>",
        case.right_schema()
    );
    let j = format!(
        "<window-join name='j'><join type='{jt}'><conditions><fields left='{lc}' right='{rc}'/></conditions></join><output>{out}</output></window-join>"
    );
    model(
        &[&l, &r, &j],
        &[
            "<edge source='l' target='j' role='left'/>",
            "<edge source='r' target='j' role='right'/>",
        ],
    )
}

/// Recomputes the join from both inputs' rows (reference 1.9 key derivation).
fn join_oracle(case: JoinCase, jt: &str, left: &[Row], right: &[Row]) -> Vec<Row> {
    let (_, _, lc, rc) = case.cond();
    let outer_left = matches!(jt, "leftouter" | "fullouter");
    let outer_right = matches!(jt, "rightouter" | "fullouter");
    let lw = case.left_fields().len();
    let rw = case.right_fields().len();
    let build = |l: Option<&Row>, r: Option<&Row>| -> Row {
        let mut row: Row = match case {
            JoinCase::OneToMany => vec![l.unwrap()[0].clone()],
            JoinCase::ManyToOne => vec![r.unwrap()[0].clone()],
            JoinCase::OneToOne => vec![l.or(r).unwrap()[0].clone()],
            JoinCase::ManyToMany => vec![
                l.map_or(Value::Null, |l| l[0].clone()),
                r.map_or(Value::Null, |r| r[0].clone()),
            ],
        };
        match l {
            Some(l) => row.extend(l.iter().cloned()),
            None => row.extend(std::iter::repeat_n(Value::Null, lw)),
        }
        match r {
            Some(r) => row.extend(r.iter().cloned()),
            None => row.extend(std::iter::repeat_n(Value::Null, rw)),
        }
        row
    };
    let mut out = Vec::new();
    for l in left {
        let matches: Vec<&Row> = right.iter().filter(|r| r[rc] == l[lc]).collect();
        if matches.is_empty() && outer_left {
            out.push(build(Some(l), None));
        }
        for r in matches {
            out.push(build(Some(l), Some(r)));
        }
    }
    if outer_right {
        for r in right {
            if !left.iter().any(|l| l[lc] == r[rc]) {
                out.push(build(None, Some(r)));
            }
        }
    }
    let keys = case.out_keys();
    out.sort_by(|a, b| {
        keys.iter()
            .map(|&k| a[k].cmp(&b[k]))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    out
}

fn check_join(case: JoinCase, jt: &str, ops: &[Op], size: usize) -> Result<(), String> {
    let mut e = engine(&join_xml(case, jt));
    let (l, r, j) = (win(&e, "l"), win(&e, "r"), win(&e, "j"));
    let mut sink = CollectSink::default();
    let evs: Vec<(usize, Event)> = ops
        .iter()
        .map(|o| {
            let side = usize::from(o.side);
            (side, event(o, case.row(side == 0, o), &[0]))
        })
        .collect();
    drive(&mut e, &[l, r], &evs, size, &mut sink);
    if bad_count(&sink, j) != 0 {
        return Err(format!(
            "join refused events: {:?}",
            sink.bad.iter().filter(|b| b.0 == j).collect::<Vec<_>>()
        ));
    }
    let want = join_oracle(case, jt, &rows(&e, l), &rows(&e, r));
    let what = format!("{case:?} {jt} join");
    contents_close(&what, &case.out_keys(), &rows(&e, j), &want)?;
    consistent(&e, &sink, j, &what)
}

fn join_case() -> impl Strategy<Value = (JoinCase, &'static str)> {
    prop_oneof![
        Just(JoinCase::OneToMany),
        Just(JoinCase::ManyToOne),
        Just(JoinCase::OneToOne),
        Just(JoinCase::ManyToMany)
    ]
    .prop_flat_map(|c| {
        let types = c.types();
        (Just(c), (0..types.len()).prop_map(move |i| types[i]))
    })
}

proptest! {
    #![proptest_config(config())]

    /// Every join type and key-coverage case against a recomputation from both inputs.
    #[test]
    fn join_matches_recomputation((case, jt) in join_case(), ops in ops(6, 3, false), size in 1usize..4) {
        let r = check_join(case, jt, &ops, size);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// Every (case, type) pair at least once, deterministically, with a fixed busy sequence.
#[test]
fn join_every_type_and_case() {
    let cases = [
        JoinCase::OneToMany,
        JoinCase::ManyToOne,
        JoinCase::OneToOne,
        JoinCase::ManyToMany,
    ];
    let mut ops = Vec::new();
    for i in 0..60i64 {
        ops.push(Op {
            side: i % 3 == 1,
            op: [0, 0, 3, 1, 2, 0, 4][(i % 7) as usize],
            key: (i * 5) % 6,
            g: (i * 7) % 3,
            x: i,
            y: 0,
            sparse: i % 2 == 0,
        });
    }
    for case in cases {
        for jt in case.types() {
            check_join(case, jt, &ops, 2).unwrap_or_else(|m| panic!("{m}"));
        }
    }
}

/// One-to-many joins that would need a fact stream on the wrong side are refused.
#[test]
fn join_refuses_outer_side_without_fact_stream() {
    for (case, jt) in [
        (JoinCase::OneToMany, "rightouter"),
        (JoinCase::OneToMany, "fullouter"),
        (JoinCase::ManyToOne, "leftouter"),
    ] {
        let spec = sluice_model::parse_project(&join_xml(case, jt), &|_| None).expect("parses");
        assert!(
            Engine::new(&spec).is_err(),
            "{case:?} {jt} should be refused"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Retention, copy, union, filter

const KX: &str = "k*:int64,x:int64";

fn kx_row(o: &Op) -> Row {
    vec![Value::Int64(o.key), Value::Int64(o.x)]
}

fn retention_xml(kind: &str, n: usize) -> String {
    format!("<retention type='{kind}'>{n}</retention>")
}

fn check_copy_retention(kind: &str, n: usize, ops: &[Op], size: usize) -> Result<(), String> {
    let ret = retention_xml(kind, n);
    let xml = model(
        &[
            &format!("<window-source name='s'><schema-string>{KX}</schema-string></window-source>"),
            &format!("<window-copy name='c'>{ret}</window-copy>"),
        ],
        &["<edge source='s' target='c'/>"],
    );
    let mut e = engine(&xml);
    let (s, c) = (win(&e, "s"), win(&e, "c"));
    let mut sink = CollectSink::default();
    let policy = if kind == "bycount_sliding" {
        CountRetention::Sliding(n)
    } else {
        CountRetention::Jumping(n)
    };
    let mut src = RefTable::new(&[0], true, None);
    let mut copy = RefTable::new(&[0], false, Some(policy));
    let (mut src_out, mut copy_out) = (Vec::new(), Vec::new());
    let mut evs = Vec::new();
    for o in ops {
        let ev = event(o, kx_row(o), &[0]);
        for se in src.apply(&ev) {
            copy_out.extend(copy.apply(&se));
            src_out.push(se);
        }
        evs.push((0, ev));
    }
    drive(&mut e, &[s], &evs, size, &mut sink);
    let (got, want) = (emitted(&sink, s), rendered(s, &src_out));
    if got != want {
        return Err(format!("source stream: {}", first_diff(&got, &want)));
    }
    let (got, want) = (emitted(&sink, c), rendered(c, &copy_out));
    if got != want {
        return Err(format!(
            "copy ({kind} {n}) stream: {}",
            first_diff(&got, &want)
        ));
    }
    if e.row_count(c) > n.max(1) {
        return Err(format!("copy ({kind} {n}) holds {} rows", e.row_count(c)));
    }
    contents_close("copy", &[0], &rows(&e, c), &copy.contents())?;
    consistent(&e, &sink, c, "copy")
}

fn check_source_retention(kind: &str, n: usize, ops: &[Op], size: usize) -> Result<(), String> {
    let ret = retention_xml(kind, n);
    let xml = model(
        &[&format!(
            "<window-source name='s'><schema-string>{KX}</schema-string>{ret}</window-source>"
        )],
        &[],
    );
    let mut e = engine(&xml);
    let s = win(&e, "s");
    let mut sink = CollectSink::default();
    let policy = if kind == "bycount_sliding" {
        CountRetention::Sliding(n)
    } else {
        CountRetention::Jumping(n)
    };
    let mut src = RefTable::new(&[0], true, Some(policy));
    let mut out = Vec::new();
    let mut evs = Vec::new();
    for o in ops {
        let ev = event(o, kx_row(o), &[0]);
        out.extend(src.apply(&ev));
        evs.push((0, ev));
    }
    drive(&mut e, &[s], &evs, size, &mut sink);
    let (got, want) = (emitted(&sink, s), rendered(s, &out));
    if got != want {
        return Err(format!(
            "source ({kind} {n}) stream: {}",
            first_diff(&got, &want)
        ));
    }
    if bad_count(&sink, s) != src.bad {
        return Err(format!(
            "source refused {} events, reference {}",
            bad_count(&sink, s),
            src.bad
        ));
    }
    contents_close("source", &[0], &rows(&e, s), &src.contents())?;
    consistent(&e, &sink, s, "source")
}

fn check_union(strict: bool, ops: &[Op], size: usize) -> Result<(), String> {
    let src = |n: &str| {
        format!("<window-source name='{n}'><schema-string>{KX}</schema-string></window-source>")
    };
    let xml = model(
        &[
            &src("s1"),
            &src("s2"),
            &format!("<window-union name='u' strict='{strict}'/>"),
        ],
        &[
            "<edge source='s1' target='u'/>",
            "<edge source='s2' target='u'/>",
        ],
    );
    let mut e = engine(&xml);
    let (s1, s2, u) = (win(&e, "s1"), win(&e, "s2"), win(&e, "u"));
    let mut sink = CollectSink::default();
    let mut refs = [
        RefTable::new(&[0], true, None),
        RefTable::new(&[0], true, None),
    ];
    let mut union = RefTable::new(&[0], strict, None);
    let mut union_out = Vec::new();
    let mut evs = Vec::new();
    for o in ops {
        let side = usize::from(o.side);
        let ev = event(o, kx_row(o), &[0]);
        for se in refs[side].apply(&ev) {
            union_out.extend(union.apply(&se));
        }
        evs.push((side, ev));
    }
    drive(&mut e, &[s1, s2], &evs, size, &mut sink);
    let (got, want) = (emitted(&sink, u), rendered(u, &union_out));
    if got != want {
        return Err(format!(
            "union (strict={strict}) stream: {}",
            first_diff(&got, &want)
        ));
    }
    if bad_count(&sink, u) != union.bad {
        return Err(format!(
            "union (strict={strict}) refused {} events, reference {}",
            bad_count(&sink, u),
            union.bad
        ));
    }
    if !strict && union.bad != 0 {
        return Err("a non-strict union refused events".into());
    }
    contents_close("union", &[0], &rows(&e, u), &union.contents())?;
    consistent(&e, &sink, u, "union")
}

fn check_filter(ops: &[Op], size: usize) -> Result<(), String> {
    let xml = model(
        &[
            AGG_SRC,
            "<window-filter name='f'><expression>x &gt; 0 and y &lt; 20.0</expression></window-filter>",
        ],
        &["<edge source='s' target='f'/>"],
    );
    let mut e = engine(&xml);
    let (s, f) = (win(&e, "s"), win(&e, "f"));
    let mut sink = CollectSink::default();
    let evs: Vec<(usize, Event)> = ops
        .iter()
        .map(|o| (0, event(o, agg_row(o, false), &[0])))
        .collect();
    drive(&mut e, &[s], &evs, size, &mut sink);
    let want: Vec<Row> = rows(&e, s)
        .into_iter()
        .filter(|r| r[2].as_i64().unwrap() > 0 && r[3].as_f64().unwrap() < 20.0)
        .collect();
    contents_close("filter", &[0], &rows(&e, f), &want)?;
    consistent(&e, &sink, f, "filter")
}

fn count_kind() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("bycount_sliding"), Just("bycount_jumping")]
}

proptest! {
    #![proptest_config(config())]

    /// A copy window with count retention behind a keyed source, against a reference.
    #[test]
    fn copy_count_retention_matches_reference(kind in count_kind(), n in 1usize..5, ops in ops(8, 1, false), size in 1usize..4) {
        let r = check_copy_retention(kind, n, &ops, size);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    /// A source window with count retention, against a reference.
    #[test]
    fn source_count_retention_matches_reference(kind in count_kind(), n in 1usize..5, ops in ops(8, 1, false), size in 1usize..4) {
        let r = check_source_retention(kind, n, &ops, size);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    /// Strict and non-strict unions of two keyed sources, against a reference.
    #[test]
    fn union_matches_reference(strict in any::<bool>(), ops in ops(6, 1, false), size in 1usize..4) {
        let r = check_union(strict, &ops, size);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    /// A stateful filter holds exactly the source rows that satisfy it.
    #[test]
    fn filter_matches_recomputation(ops in ops(8, 3, false), size in 1usize..4) {
        let r = check_filter(&ops, size);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

// ---------------------------------------------------------------------------------------
// Event-time retention

/// Reference for `bytime_sliding` on an event-time field (reference 2.5): on each insert the
/// newest time seen moves forward and every retained row with `latest - t >= T` is deleted
/// (boundary inclusive), the deletes before the insert (decision 8.7); a late row that is
/// itself already out of the window is deleted right after its insert.
fn check_event_time_retention(ops: &[Op], size: usize) -> Result<(), String> {
    const T: i64 = 10_000_000;
    let xml = model(
        &[
            "<window-source name='s'><schema-string>k*:int64,t:stamp</schema-string>\
           <retention type='bytime_sliding' field='t'>10 seconds</retention></window-source>",
        ],
        &[],
    );
    let mut e = engine(&xml);
    let s = win(&e, "s");
    let mut sink = CollectSink::default();
    // key -> (t, seq, row)
    let mut held: BTreeMap<i64, (i64, u64, Row)> = BTreeMap::new();
    let mut latest: Option<i64> = None;
    let mut out: Vec<Event> = Vec::new();
    let mut evs = Vec::new();
    for (seq, o) in ops.iter().enumerate() {
        let t = (o.x + 20) * 1_000_000;
        let row = vec![Value::Int64(o.key), Value::Stamp(t)];
        let opcode = [Opcode::Insert, Opcode::Delete, Opcode::SafeDelete][o.op as usize % 3];
        let ev = Event::new(opcode, row.clone());
        match opcode {
            Opcode::Insert if !held.contains_key(&o.key) => {
                let l = latest.map_or(t, |l| l.max(t));
                latest = Some(l);
                let mut old: Vec<(i64, u64, i64)> = held
                    .iter()
                    .filter(|(_, (ht, _, _))| *ht <= l - T)
                    .map(|(k, (ht, hs, _))| (*ht, *hs, *k))
                    .collect();
                old.sort();
                for (_, _, k) in old {
                    let (_, _, r) = held.remove(&k).unwrap();
                    out.push(sluice_engine::state::retention_delete(r));
                }
                out.push(Event::insert(row.clone()));
                if t <= l - T {
                    out.push(sluice_engine::state::retention_delete(row));
                } else {
                    held.insert(o.key, (t, seq as u64, row));
                }
            }
            Opcode::Delete | Opcode::SafeDelete => {
                if let Some((_, _, r)) = held.remove(&o.key) {
                    out.push(Event::delete(r));
                }
            }
            _ => {}
        }
        evs.push((0, ev));
    }
    drive(&mut e, &[s], &evs, size, &mut sink);
    let (got, want) = (emitted(&sink, s), rendered(s, &out));
    if got != want {
        return Err(format!(
            "event-time retention stream: {}",
            first_diff(&got, &want)
        ));
    }
    let want_rows: Vec<Row> = held.into_values().map(|(_, _, r)| r).collect();
    contents_close("event-time source", &[0], &rows(&e, s), &want_rows)?;
    consistent(&e, &sink, s, "event-time source")
}

proptest! {
    #![proptest_config(config())]

    /// A source with event-time sliding retention, against a reference.
    #[test]
    fn event_time_retention_matches_reference(ops in ops(8, 1, false), size in 1usize..4) {
        let r = check_event_time_retention(&ops, size);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

// ---------------------------------------------------------------------------------------
// Aggregate behind a join (update blocks from join regeneration move rows between groups)

fn check_join_then_aggregate(jt: &str, ops: &[Op], size: usize) -> Result<(), String> {
    let case = JoinCase::OneToMany;
    let mut xml = join_xml(case, jt);
    let agg = "<window-aggregate name='a'><schema-string>l_jk*:int32,cnt:int64,s:int64,mx:int64,mn:int64</schema-string>\
        <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(l_lv)</field-expr>\
        <field-expr>ESP_aMax(r_rv)</field-expr><field-expr>ESP_aMin(l_lv)</field-expr></output></window-aggregate>";
    xml = xml.replace("</windows>", &format!("{agg}\n</windows>"));
    xml = xml.replace("</edges>", "<edge source='j' target='a'/>\n</edges>");
    let mut e = engine(&xml);
    let (l, r, j, a) = (win(&e, "l"), win(&e, "r"), win(&e, "j"), win(&e, "a"));
    let mut sink = CollectSink::default();
    let evs: Vec<(usize, Event)> = ops
        .iter()
        .map(|o| {
            let side = usize::from(o.side);
            (side, event(o, case.row(side == 0, o), &[0]))
        })
        .collect();
    drive(&mut e, &[l, r], &evs, size, &mut sink);
    if !sink.bad.iter().all(|b| b.0 == l || b.0 == r) {
        return Err(format!("a derived window refused events: {:?}", sink.bad));
    }
    // Join output: lk, l_lk, l_jk, l_lv, r_rk, r_rv.
    let mut groups: BTreeMap<Value, Vec<Row>> = BTreeMap::new();
    for row in rows(&e, j) {
        groups.entry(row[2].clone()).or_default().push(row);
    }
    let want: Vec<Row> = groups
        .into_iter()
        .map(|(g, members)| {
            let lv: Vec<i64> = members.iter().map(|m| m[3].as_i64().unwrap()).collect();
            let rv: Vec<i64> = members.iter().filter_map(|m| m[5].as_i64()).collect();
            vec![
                g,
                Value::Int64(members.len() as i64),
                Value::Int64(lv.iter().sum()),
                rv.iter().max().map_or(Value::Null, |m| Value::Int64(*m)),
                Value::Int64(*lv.iter().min().unwrap()),
            ]
        })
        .collect();
    contents_close(
        &format!("aggregate behind a {jt} join"),
        &[0],
        &rows(&e, a),
        &want,
    )?;
    consistent(&e, &sink, a, "aggregate behind a join")
}

proptest! {
    #![proptest_config(config())]

    /// An aggregate fed by a join equals a recomputation from the join's contents.
    #[test]
    fn aggregate_behind_join_matches_recomputation(
        jt in prop_oneof![Just("inner"), Just("leftouter")],
        ops in ops(6, 3, false),
        size in 1usize..4,
    ) {
        let r = check_join_then_aggregate(jt, &ops, size);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
