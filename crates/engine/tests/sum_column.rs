//! `ESP_aSum` into an int64 field of an insert-only aggregate, pinned down exactly: every
//! emitted row and the final contents against a recomputation from all events so far, and a
//! snapshot taken anywhere and restored into a fresh engine going on as if never stopped.
//!
//! Such a sum is kept in 8 bytes a group (`AccCol::SumI64`) until a value it cannot add
//! exactly widens the column to sums records (`NumAcc`: an exact i128 integer part, a double
//! part, the number of values and whether a non-integer value was added); both give these
//! semantics, and the cases below go through both and through the widening:
//! - null values are skipped; a group none of whose values was non-null sums to null, while a
//!   sum of zeros is 0;
//! - int32, int64, date and stamp values are integers: their sum is exact, whatever the
//!   partial sums on the way; it is null while the exact sum lies outside i64 and the number
//!   again once it is back in range; a sum of exactly `i64::MIN` is that number;
//! - any other value (a double, money) makes the group's sum a double sum for good: the
//!   doubles are added in event order in f64, the sum is `(doubles + integers as f64)` cast
//!   to int64 the way `as` casts (toward zero, saturating at the i64 limits, NaN to 0), so a
//!   sum that went out of range is no longer null once a double was added to it.
//!
//! The source's `m` field is declared int64 but some events carry a double, money, int32,
//! date or stamp value there: the engine does not convert injected values to the source's
//! schema, and a sum must handle whatever value it is given. Through `m` a group's integer sum
//! meets its first non-integer value at any point of the stream, whatever the state of the
//! other groups.

mod common;

use std::collections::BTreeMap;

use common::{cases, engine, inject, model, rows, win};
use proptest::prelude::*;
use sluice_engine::{CollectSink, Engine, WindowId};
use sluice_event::{Event, Row, Value};

const SRC: &str = "<window-source name='s' insert-only='true' index='pi_EMPTY'>\
<schema-string>id*:int64,g:int64,q:int64,d:double,i32:int32,m:int64</schema-string>\
</window-source>";

const OUTS: &str = "<field-expr>ESP_aCount()</field-expr>\
<field-expr>ESP_aSum(q)</field-expr>\
<field-expr>ESP_aSum(i32)</field-expr>\
<field-expr>ESP_aSum(d)</field-expr>\
<field-expr>ESP_aSum(m)</field-expr>\
<field-expr>ESP_aMax(d)</field-expr>";

// Output positions in the aggregates' rows.
const SQ: usize = 2;
const SI: usize = 3;
const SD: usize = 4;
const SM: usize = 5;
const HI: usize = 6;

/// `a` builds an existing group's old and new rows in one pass over its columns; `b` (with a
/// lag, kept apart) builds rows field by field and caches the last row of each group.
fn xml() -> String {
    let schema = "g*:int64,n:int64,sq:int64,si:int64,sd:int64,sm:int64,hi:double";
    model(
        &[
            SRC,
            &format!(
                "<window-aggregate name='a'><schema-string>{schema}</schema-string>\
                 <output>{OUTS}</output></window-aggregate>"
            ),
            &format!(
                "<window-aggregate name='b'><schema-string>{schema},lag:int64</schema-string>\
                 <output>{OUTS}<field-expr>ESP_aLag(q, 1)</field-expr></output></window-aggregate>"
            ),
        ],
        &[
            "<edge source='s' target='a'/>",
            "<edge source='s' target='b'/>",
        ],
    )
}

// ---------------------------------------------------------------------------------------
// The oracle

/// A sum recomputed from its values, by the rules in the header.
#[derive(Clone, Copy, Debug, Default)]
struct Sum {
    int: i128,
    float: f64,
    n: u64,
    non_integer: bool,
}

impl Sum {
    fn add(&mut self, v: &Value) {
        match v {
            Value::Null => return,
            Value::Int32(x) => self.int += i128::from(*x),
            Value::Int64(x) | Value::Date(x) | Value::Stamp(x) => self.int += i128::from(*x),
            other => {
                self.non_integer = true;
                self.float += other.as_f64().expect("a number");
            }
        }
        self.n += 1;
    }

    fn value(&self) -> Value {
        if self.n == 0 {
            Value::Null
        } else if !self.non_integer {
            i64::try_from(self.int).map_or(Value::Null, Value::Int64)
        } else {
            // `as` from f64: toward zero, saturating, NaN to 0.
            Value::Int64((self.float + self.int as f64) as i64)
        }
    }
}

/// One group of the recomputation.
#[derive(Clone, Debug, Default)]
struct Group {
    n: i64,
    q: Sum,
    i32: Sum,
    d: Sum,
    m: Sum,
    /// Largest non-null d, by `f64::total_cmp`.
    hi: Option<f64>,
    /// The q of the group's event before its latest.
    lag: Option<Value>,
    last_q: Value,
}

impl Group {
    fn add(&mut self, row: &[Value]) {
        self.n += 1;
        self.q.add(&row[2]);
        self.d.add(&row[3]);
        self.i32.add(&row[4]);
        self.m.add(&row[5]);
        if let Value::Double(x) = row[3] {
            if self.hi.is_none_or(|h| x.total_cmp(&h).is_gt()) {
                self.hi = Some(x);
            }
        }
        self.lag = Some(std::mem::replace(&mut self.last_q, row[2].clone()));
    }

    fn row(&self, g: i64, lag: bool) -> Row {
        let mut r = vec![
            Value::Int64(g),
            Value::Int64(self.n),
            self.q.value(),
            self.i32.value(),
            self.d.value(),
            self.m.value(),
            self.hi.map_or(Value::Null, Value::Double),
        ];
        if lag {
            r.push(self.lag.clone().unwrap_or(Value::Null));
        }
        r
    }
}

/// The recomputation: the groups so far, and what `a` and `b` emitted.
#[derive(Clone, Debug, Default)]
struct Oracle {
    groups: BTreeMap<i64, Group>,
    a: Vec<Event>,
    b: Vec<Event>,
}

impl Oracle {
    fn apply(&mut self, row: &[Value]) {
        let g = row[1].as_i64().expect("a group");
        let (old_a, old_b, grp) = match self.groups.get_mut(&g) {
            Some(grp) => (Some(grp.row(g, false)), Some(grp.row(g, true)), grp),
            None => (None, None, self.groups.entry(g).or_default()),
        };
        grp.add(row);
        let (new_a, new_b) = (grp.row(g, false), grp.row(g, true));
        let ev = |new: Row, old: Option<Row>| match old {
            Some(old) => Event::update(new, old),
            None => Event::insert(new),
        };
        self.a.push(ev(new_a, old_a));
        self.b.push(ev(new_b, old_b));
    }

    fn contents(&self, lag: bool) -> Vec<Row> {
        self.groups
            .iter()
            .map(|(&g, grp)| grp.row(g, lag))
            .collect()
    }
}

fn oracle(events: &[Row]) -> Oracle {
    let mut o = Oracle::default();
    for r in events {
        o.apply(r);
    }
    o
}

// ---------------------------------------------------------------------------------------
// Running the engine

/// Injects `events` into the source in blocks of the `sizes` (taken in turn), calling
/// `each` after every block.
fn drive(
    e: &mut Engine,
    events: &[Row],
    sizes: &[usize],
    sink: &mut CollectSink,
    mut each: impl FnMut(&Engine, usize) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let s = win(e, "s");
    let (mut at, mut turn) = (0, 0);
    while at < events.len() {
        let n = sizes[turn % sizes.len()].min(events.len() - at);
        turn += 1;
        let block = events[at..at + n]
            .iter()
            .cloned()
            .map(Event::insert)
            .collect();
        inject(e, s, block, sink);
        at += n;
        each(e, at)?;
    }
    Ok(())
}

/// The events window `w` emitted into `sink`, in order.
fn emitted(sink: &CollectSink, w: WindowId) -> Vec<Event> {
    sink.outputs
        .iter()
        .filter(|(x, _, _)| *x == w)
        .flat_map(|(_, _, evs)| evs.iter().cloned())
        .collect()
}

/// The first difference of two event streams, or None.
fn first_diff(got: &[Event], want: &[Event]) -> Option<String> {
    let i = got.iter().zip(want).position(|(x, y)| x != y);
    match i {
        None if got.len() == want.len() => None,
        None => Some(format!(
            "engine emitted {} events, oracle {}",
            got.len(),
            want.len()
        )),
        Some(i) => Some(format!(
            "event {i}:\n engine {:?}\n oracle {:?}",
            got[i], want[i]
        )),
    }
}

/// Runs `events` and checks every emitted event of `a` and `b` and, after every block, both
/// aggregates' contents against the oracle.
fn check_run(events: &[Row], sizes: &[usize]) -> Result<(), TestCaseError> {
    let mut e = engine(&xml());
    let (a, b) = (win(&e, "a"), win(&e, "b"));
    let mut sink = CollectSink::default();
    let mut o = Oracle::default();
    drive(&mut e, events, sizes, &mut sink, |e, upto| {
        while o.a.len() < upto {
            o.apply(&events[o.a.len()]);
        }
        prop_assert_eq!(
            rows(e, a),
            o.contents(false),
            "contents of a after {} events",
            upto
        );
        prop_assert_eq!(
            rows(e, b),
            o.contents(true),
            "contents of b after {} events",
            upto
        );
        Ok(())
    })?;
    prop_assert!(sink.bad.is_empty(), "refused: {:?}", sink.bad);
    for (w, want, name) in [(a, &o.a, "a"), (b, &o.b, "b")] {
        if let Some(d) = first_diff(&emitted(&sink, w), want) {
            return Err(TestCaseError::fail(format!("output of {name}: {d}")));
        }
    }
    Ok(())
}

/// Runs `events` whole and with a snapshot after `cut` restored into a fresh engine: the
/// restored engine emits what the whole run emitted after the cut and ends with its contents.
/// The snapshot is the encoding of the whole run frozen at the cut, taken after it went on,
/// and equals the snapshot of a run stopped at the cut.
fn check_restore(events: &[Row], sizes: &[usize], cut: usize) -> Result<(), TestCaseError> {
    let xml = xml();
    let none = |_: &Engine, _: usize| Ok(());

    let mut whole = engine(&xml);
    let (a, b) = (win(&whole, "a"), win(&whole, "b"));
    let mut whole_sink = CollectSink::default();
    drive(&mut whole, &events[..cut], sizes, &mut whole_sink, none)?;
    let frozen = whole.freeze();
    let mut after = CollectSink::default();
    drive(&mut whole, &events[cut..], sizes, &mut after, none)?;
    let files = frozen.encode();

    let mut stopped = engine(&xml);
    drive(
        &mut stopped,
        &events[..cut],
        sizes,
        &mut CollectSink::default(),
        none,
    )?;
    prop_assert!(
        stopped.snapshot_windows() == files,
        "a frozen cut encodes to other bytes than a run stopped there"
    );

    let mut restored = engine(&xml);
    restored
        .restore_windows(&files)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(
        restored.snapshot_windows() == files,
        "the restored engine encodes to other bytes"
    );
    prop_assert_eq!(rows(&restored, a), rows(&stopped, a));
    prop_assert_eq!(rows(&restored, b), rows(&stopped, b));
    let mut rest = CollectSink::default();
    drive(&mut restored, &events[cut..], sizes, &mut rest, none)?;

    let o = oracle(events);
    for (w, name, lag) in [(a, "a", false), (b, "b", true)] {
        let want = emitted(&after, w);
        if let Some(d) = first_diff(&emitted(&rest, w), &want) {
            return Err(TestCaseError::fail(format!(
                "output of {name} after a restore at {cut}: {d}"
            )));
        }
        let oracle_after = if lag { &o.b[cut..] } else { &o.a[cut..] };
        if let Some(d) = first_diff(&want, oracle_after) {
            return Err(TestCaseError::fail(format!(
                "output of {name} after {cut} (no restore): {d}"
            )));
        }
        prop_assert_eq!(
            rows(&restored, w),
            rows(&whole, w),
            "final contents of {}",
            name
        );
        prop_assert_eq!(
            rows(&restored, w),
            o.contents(lag),
            "final contents of {}",
            name
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Generated events

/// Exact sums a generated value can aim at.
#[derive(Clone, Copy, Debug)]
enum Target {
    Min,
    Max,
    Zero,
    AboveMax,
    BelowMin,
}

impl Target {
    fn value(self) -> i128 {
        match self {
            Target::Min => i64::MIN.into(),
            Target::Max => i64::MAX.into(),
            Target::Zero => 0,
            Target::AboveMax => i128::from(i64::MAX) + 1,
            Target::BelowMin => i128::from(i64::MIN) - 1,
        }
    }
}

/// An integer value of `q` or `m`.
#[derive(Clone, Copy, Debug)]
enum IntGen {
    Null,
    Zero,
    Small(i8),
    /// `i64::MAX - k`.
    NearMax(u8),
    /// `i64::MIN + k`.
    NearMin(u8),
    /// ±2^62.
    Half(bool),
    /// The value bringing the group's exact integer sum of the field to the target (the
    /// nearest int64 to it).
    To(Target),
}

impl IntGen {
    fn value(self, sum: i128) -> Option<i64> {
        Some(match self {
            IntGen::Null => return None,
            IntGen::Zero => 0,
            IntGen::Small(x) => x.into(),
            IntGen::NearMax(k) => i64::MAX - i64::from(k),
            IntGen::NearMin(k) => i64::MIN + i64::from(k),
            IntGen::Half(neg) => {
                if neg {
                    -(1 << 62)
                } else {
                    1 << 62
                }
            }
            IntGen::To(t) => {
                let v = t.value() - sum;
                v.clamp(i64::MIN.into(), i64::MAX.into()) as i64
            }
        })
    }
}

fn int_gen() -> impl Strategy<Value = IntGen> {
    prop_oneof![
        2 => Just(IntGen::Null),
        1 => Just(IntGen::Zero),
        2 => (-8i8..8).prop_map(IntGen::Small),
        2 => (0u8..3).prop_map(IntGen::NearMax),
        2 => (0u8..3).prop_map(IntGen::NearMin),
        1 => any::<bool>().prop_map(IntGen::Half),
        4 => prop_oneof![
            Just(Target::Min),
            Just(Target::Max),
            Just(Target::Zero),
            Just(Target::AboveMax),
            Just(Target::BelowMin),
        ]
        .prop_map(IntGen::To),
    ]
}

fn i32_gen() -> impl Strategy<Value = Option<i32>> {
    prop_oneof![
        1 => Just(None),
        2 => (-5i32..5).prop_map(Some),
        1 => (0i32..3).prop_map(|k| Some(i32::MAX - k)),
        1 => (0i32..3).prop_map(|k| Some(i32::MIN + k)),
    ]
}

/// A double value: small integral ones, quarters, the largest double below 2^63 (which
/// converts to int64 exactly), ones beyond int64, and specials.
fn double_gen() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => (-4i8..4).prop_map(f64::from),
        3 => (-40i16..40).prop_map(|k| f64::from(k) / 4.0),
        1 => prop_oneof![Just(9_223_372_036_854_774_784.0), Just(-9_223_372_036_854_774_784.0)],
        1 => prop_oneof![Just(1e19), Just(-1e19)],
        1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(-0.0)],
    ]
}

/// The kind of value `m` carries.
#[derive(Clone, Copy, Debug)]
enum MKind {
    Int64,
    Int32,
    Date,
    Stamp,
    /// A double (from the event's `md`).
    Double,
    /// Money: the event's `money` millionths.
    Money,
}

#[derive(Clone, Debug)]
struct Op {
    g: i64,
    q: IntGen,
    i32: Option<i32>,
    d: f64,
    m: IntGen,
    m_kind: MKind,
    md: f64,
    money: i32,
    /// d is non-null, m a non-integer, when below the case's rate.
    roll_d: u8,
    roll_m: u8,
}

fn op_gen() -> impl Strategy<Value = Op> {
    (
        (0i64..4, int_gen(), i32_gen(), double_gen()),
        (
            int_gen(),
            prop_oneof![
                4 => Just(MKind::Int64),
                1 => Just(MKind::Int32),
                1 => Just(MKind::Date),
                1 => Just(MKind::Stamp),
                2 => Just(MKind::Double),
                1 => Just(MKind::Money),
            ],
            double_gen(),
            -3_000_000i32..3_000_000,
        ),
        (0u8..64, 0u8..64),
    )
        .prop_map(
            |((g, q, i32, d), (m, m_kind, md, money), (roll_d, roll_m))| Op {
                g,
                q,
                i32,
                d,
                m,
                m_kind,
                md,
                money,
                roll_d,
                roll_m,
            },
        )
}

/// How often (in 64ths) d is non-null and m a non-integer: never, rarely, often, mostly.
fn rate(mix: u8) -> u8 {
    [0, 2, 8, 40][mix as usize]
}

/// The events of `ops`, with `mix` the rate of doubles: `id, g, q, d, i32, m`. With
/// `null_group`, q, i32 and m are null in every event of group 3.
fn make_events(ops: &[Op], mix: u8, null_group: bool) -> Vec<Row> {
    // Exact integer sums of q and m per group, for the targeted values.
    let mut sums: BTreeMap<i64, (i128, i128)> = BTreeMap::new();
    ops.iter()
        .enumerate()
        .map(|(id, o)| {
            let d = if o.roll_d < rate(mix) {
                Value::Double(o.d)
            } else {
                Value::Null
            };
            let s = sums.entry(o.g).or_default();
            let q = o.q.value(s.0);
            s.0 += q.map_or(0, i128::from);
            let m = if o.roll_m < rate(mix) {
                match o.m_kind {
                    MKind::Money => Value::Money(o.money.into()),
                    _ => Value::Double(o.md),
                }
            } else {
                match o.m.value(s.1) {
                    None => Value::Null,
                    Some(x) => {
                        let v = match o.m_kind {
                            MKind::Int32 => {
                                Value::Int32(x.clamp(i32::MIN.into(), i32::MAX.into()) as i32)
                            }
                            MKind::Date => Value::Date(x),
                            MKind::Stamp => Value::Stamp(x),
                            _ => Value::Int64(x),
                        };
                        s.1 += i128::from(v.as_i64().expect("an integer"));
                        v
                    }
                }
            };
            if null_group && o.g == 3 {
                return vec![
                    Value::Int64(id as i64),
                    Value::Int64(o.g),
                    Value::Null,
                    d,
                    Value::Null,
                    Value::Null,
                ];
            }
            vec![
                Value::Int64(id as i64),
                Value::Int64(o.g),
                q.map_or(Value::Null, Value::Int64),
                d,
                o.i32.map_or(Value::Null, Value::Int32),
                m,
            ]
        })
        .collect()
}

fn case_gen() -> impl Strategy<Value = (Vec<Row>, Vec<usize>, usize)> {
    (
        prop::collection::vec(op_gen(), 0..48),
        0u8..4,
        any::<bool>(),
        prop::collection::vec(1usize..5, 1..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(ops, mix, null_group, sizes, cut)| {
            let cut = cut.index(ops.len() + 1);
            (make_events(&ops, mix, null_group), sizes, cut)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Every event emitted by both aggregates, and their contents after every block, equal
    /// the recomputation from all events so far.
    #[test]
    fn sums_match_the_recomputation_after_every_event((events, sizes, _) in case_gen()) {
        check_run(&events, &sizes)?;
    }

    /// Stopped anywhere, snapshotted, restored into a fresh engine and finished: the same
    /// events after the cut and the same contents as the run that never stopped.
    #[test]
    fn restored_sums_go_on_as_if_never_stopped((events, sizes, cut) in case_gen()) {
        check_restore(&events, &sizes, cut)?;
    }
}

/// The generated cases reach every edge the properties are about, often: an exact sum of
/// `i64::MIN`, a sum out of range coming back, a group whose values were all null, a
/// non-integer value added to a group whose integer sum is out of range or to a column whose
/// other groups hold integer sums, doubles that saturate or are NaN, and int32 sums beyond
/// i32.
#[test]
fn the_generated_cases_reach_every_edge() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = case_gen();
    let mut hits: BTreeMap<&str, u32> = BTreeMap::new();
    let total = 256;
    for _ in 0..total {
        let (events, _, _) = strategy.new_tree(&mut runner).unwrap().current();
        let mut seen: BTreeMap<&str, bool> = BTreeMap::new();
        let mut o = Oracle::default();
        let mut out_of_range: BTreeMap<(i64, usize), bool> = BTreeMap::new();
        for r in &events {
            let g = r[1].as_i64().unwrap();
            let before = o.groups.get(&g).cloned();
            o.apply(r);
            let grp = &o.groups[&g];
            let ev = o.a.last().unwrap();
            for (f, sum) in [(SQ, grp.q), (SM, grp.m)] {
                if ev.row[f] == Value::Int64(i64::MIN) && !sum.non_integer {
                    seen.insert("exact sum of i64::MIN", true);
                }
                let out = sum.n > 0 && !sum.non_integer && i64::try_from(sum.int).is_err();
                let was = out_of_range.insert((g, f), out).unwrap_or(false);
                if was && !out && !sum.non_integer {
                    seen.insert("sum back in range after overflow", true);
                }
            }
            if let Some(b) = before {
                if !b.m.non_integer && grp.m.non_integer {
                    seen.insert("first non-integer of a group", true);
                    if b.m.n > 0 && i64::try_from(b.m.int).is_err() {
                        seen.insert("first non-integer of an out-of-range sum", true);
                    }
                    let others = o
                        .groups
                        .iter()
                        .filter(|(&k, x)| k != g && x.m.n > 0 && !x.m.non_integer)
                        .count();
                    if others > 0 {
                        seen.insert("first non-integer beside integer groups", true);
                    }
                }
            }
            if grp.m.non_integer && i64::try_from(grp.m.int).is_err() {
                seen.insert("mixed sum with an out-of-range integer part", true);
            }
            if matches!(r[5], Value::Date(_) | Value::Stamp(_) | Value::Int32(_)) {
                seen.insert("int32, date or stamp in m", true);
            }
            if matches!(r[5], Value::Money(_)) {
                seen.insert("money in m", true);
            }
            if grp.d.non_integer && (grp.d.float.abs() >= 9.3e18 || grp.d.float.is_nan()) {
                seen.insert("saturated or NaN double sum", true);
            }
            if let Value::Int64(x) = ev.row[SI] {
                if i32::try_from(x).is_err() {
                    seen.insert("int32 sum beyond i32", true);
                }
            }
        }
        for grp in o.groups.values() {
            if grp.q.n == 0 && grp.n > 1 {
                seen.insert("group of only null q", true);
            }
            if grp.d.n == 0 {
                seen.insert("group of only null d", true);
            }
            if grp.q.n > 0 && !grp.q.non_integer && grp.q.int == 0 {
                seen.insert("sum of zero", true);
            }
        }
        if o.groups.values().any(|x| x.d.n > 0) && o.groups.values().any(|x| x.d.n == 0) {
            seen.insert("d summed in one group, only nulls in another", true);
        }
        for k in seen.into_keys() {
            *hits.entry(k).or_default() += 1;
        }
    }
    let want = [
        "exact sum of i64::MIN",
        "sum back in range after overflow",
        "first non-integer of a group",
        "first non-integer of an out-of-range sum",
        "first non-integer beside integer groups",
        "mixed sum with an out-of-range integer part",
        "int32, date or stamp in m",
        "money in m",
        "saturated or NaN double sum",
        "int32 sum beyond i32",
        "group of only null q",
        "group of only null d",
        "sum of zero",
        "d summed in one group, only nulls in another",
    ];
    for w in want {
        let n = hits.get(w).copied().unwrap_or(0);
        assert!(
            n >= total / 16,
            "only {n} of {total} cases reach: {w}\n{hits:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Hand-written cases

/// An event of group `g` (ids are given by position when run).
fn ev(g: i64, q: Option<i64>, d: Option<f64>, i32: Option<i32>, m: Value) -> Row {
    vec![
        Value::Null,
        Value::Int64(g),
        q.map_or(Value::Null, Value::Int64),
        d.map_or(Value::Null, Value::Double),
        i32.map_or(Value::Null, Value::Int32),
        m,
    ]
}

/// Numbers the events by position.
fn numbered(mut events: Vec<Row>) -> Vec<Row> {
    for (i, r) in events.iter_mut().enumerate() {
        r[0] = Value::Int64(i as i64);
    }
    events
}

/// Runs `events` one per block, checking everything against the oracle, and returns field
/// `f` of each row `a` emitted, in order.
fn run_field(events: &[Row], f: usize) -> Vec<Value> {
    check_run(events, &[1]).unwrap_or_else(|e| panic!("{e}"));
    check_restore(events, &[1], events.len() / 2).unwrap_or_else(|e| panic!("{e}"));
    let mut e = engine(&xml());
    let a = win(&e, "a");
    let mut sink = CollectSink::default();
    drive(&mut e, events, &[1], &mut sink, |_, _| Ok(())).unwrap();
    let got: Vec<Value> = emitted(&sink, a)
        .into_iter()
        .map(|e| e.row[f].clone())
        .collect();
    let want: Vec<Value> = oracle(events)
        .a
        .into_iter()
        .map(|e| e.row[f].clone())
        .collect();
    assert_eq!(got, want, "engine vs oracle, field {f}");
    got
}

fn int(x: i64) -> Value {
    Value::Int64(x)
}

const MAX: i64 = i64::MAX;
const MIN: i64 = i64::MIN;

#[test]
fn an_integer_sum_is_exact_and_null_only_while_out_of_range() {
    let qs = [MAX, 1, 1, -2, MIN, MIN, 1, 0, MIN, MAX, MAX, MAX];
    let events = numbered(
        qs.iter()
            .map(|&q| ev(0, Some(q), None, None, Value::Null))
            .collect(),
    );
    let n = Value::Null;
    assert_eq!(
        run_field(&events, SQ),
        vec![
            int(MAX),
            n.clone(), // 2^63
            n.clone(), // 2^63 + 1
            int(MAX),
            int(-1),
            n.clone(), // MIN - 1
            int(MIN),
            int(MIN),
            n.clone(), // 2 MIN
            n.clone(), // MIN - 1
            int(-2),
            int(MAX - 2),
        ]
    );
    // The same through m, with the values as dates, stamps and int32s.
    let ms = [
        Value::Date(MAX),
        Value::Stamp(MAX),
        Value::Int32(i32::MIN),
        Value::Date(MIN),
        Value::Stamp(MIN),
        Value::Int64(MIN),
        Value::Date(MAX),
        Value::Int32(i32::MAX),
    ];
    let events = numbered(
        ms.iter()
            .map(|m| ev(0, None, None, None, m.clone()))
            .collect(),
    );
    let i32_min = i64::from(i32::MIN);
    assert_eq!(
        run_field(&events, SM),
        vec![
            int(MAX),
            Value::Null,            // 2 MAX
            Value::Null,            // 2 MAX + i32::MIN
            int(MAX - 1 + i32_min), // MAX + MIN + MAX + i32::MIN
            int(-2 + i32_min),      // 2 MAX + 2 MIN + i32::MIN
            Value::Null,            // one MIN more
            int(-3 + i32_min),      // and one MAX
            int(-4),                // and i32::MAX
        ]
    );
    // Exact beyond 2^53: no value goes through a double.
    let big = (1i64 << 53) + 1;
    let events = numbered(vec![
        ev(0, Some(big), None, None, Value::Date(big)),
        ev(0, Some(big), None, None, Value::Stamp(big)),
    ]);
    assert_eq!(run_field(&events, SQ), vec![int(big), int(2 * big)]);
    assert_eq!(run_field(&events, SM), vec![int(big), int(2 * big)]);
}

#[test]
fn a_sum_of_exactly_i64_min_is_that_number() {
    let half = -(1i64 << 62);
    let events = numbered(vec![
        ev(0, Some(MIN), None, Some(-1), Value::Date(MIN)),
        ev(1, Some(half), None, None, Value::Null),
        ev(1, Some(half), None, None, Value::Int64(MIN)),
        ev(2, Some(MAX), None, None, Value::Null),
        ev(2, Some(1), None, None, Value::Null),
        ev(2, Some(MIN), None, None, Value::Null),
        ev(2, Some(MIN), None, None, Value::Null),
        ev(0, Some(0), None, None, Value::Int64(0)),
        ev(1, None, None, None, Value::Null),
        ev(0, Some(1), None, None, Value::Int64(1)),
        ev(2, Some(-1), None, None, Value::Null),
    ]);
    let n = Value::Null;
    assert_eq!(
        run_field(&events, SQ),
        vec![
            int(MIN),
            int(half),
            int(MIN),
            int(MAX),
            n.clone(),
            int(0),
            int(MIN),
            int(MIN),
            int(MIN),
            int(MIN + 1),
            n.clone(),
        ]
    );
    assert_eq!(
        run_field(&events, SM),
        vec![
            int(MIN),
            n.clone(),
            int(MIN),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            int(MIN),
            int(MIN),
            int(MIN + 1),
            n.clone(),
        ]
    );
    // Restored at every point: a sum of i64::MIN survives the snapshot.
    for cut in 0..=events.len() {
        check_restore(&events, &[1], cut).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
    }
}

#[test]
fn a_sum_of_nulls_is_null_and_a_sum_of_zeros_is_zero() {
    let events = numbered(vec![
        ev(0, None, None, None, Value::Null),
        ev(1, Some(0), None, Some(0), Value::Int64(0)),
        ev(0, None, None, None, Value::Null),
        ev(2, None, None, None, Value::Null),
        ev(2, Some(0), None, None, Value::Double(0.0)),
        ev(1, Some(0), Some(0.0), Some(0), Value::Null),
    ]);
    let mut e = engine(&xml());
    let (a, b) = (win(&e, "a"), win(&e, "b"));
    let mut sink = CollectSink::default();
    drive(&mut e, &events, &[1], &mut sink, |_, _| Ok(())).unwrap();
    let n = Value::Null;
    let dbl = Value::Double;
    let want = vec![
        vec![
            int(0),
            int(2),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
        ],
        vec![int(1), int(2), int(0), int(0), int(0), int(0), dbl(0.0)],
        vec![
            int(2),
            int(2),
            int(0),
            n.clone(),
            n.clone(),
            int(0),
            n.clone(),
        ],
    ];
    assert_eq!(rows(&e, a), want);
    let emitted_a: Vec<Row> = emitted(&sink, a).into_iter().map(|e| e.row).collect();
    assert_eq!(
        emitted_a[3],
        vec![
            int(2),
            int(1),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone()
        ]
    );
    assert_eq!(rows(&e, b).len(), 3);
    check_run(&events, &[1]).unwrap_or_else(|e| panic!("{e}"));
    for cut in 0..=events.len() {
        check_restore(&events, &[2], cut).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
    }
}

#[test]
fn a_non_integer_makes_the_sum_a_double_sum_cast_toward_zero_and_saturating() {
    // Through d: doubles only.
    let ds = [
        Some(1.5),
        Some(-3.25),
        None,
        Some(0.75),
        Some(1e19),
        Some(-1e19),
        Some(-9_223_372_036_854_774_784.0),
        Some(-1e19),
        Some(f64::NAN),
        Some(1.0),
    ];
    let events = numbered(
        ds.iter()
            .map(|&d| ev(0, Some(1), d, None, Value::Null))
            .collect(),
    );
    assert_eq!(
        run_field(&events, SD),
        vec![
            int(1),  // 1.5
            int(-1), // -1.75
            int(-1),
            int(-1),  // -1.0
            int(MAX), // 1e19 saturates
            int(0),   // 1e19 - 1 - 1e19 = 0 in f64
            int(-9_223_372_036_854_774_784),
            int(MIN), // saturates
            int(0),   // NaN
            int(0),   // NaN for good
        ]
    );
    assert_eq!(run_field(&events, HI)[8], Value::Double(f64::NAN));

    // Through m: an integer sum out of range is null; a double added to it makes it the
    // saturated double sum, no longer null, and later integers are added through f64.
    let ms = [
        Value::Int64(MAX),
        Value::Int64(MAX),
        Value::Double(0.5),
        Value::Int64(MIN),
        Value::Int64(MIN),
        Value::Money(250_000),
        Value::Date(2),
        Value::Double(-0.25),
        Value::Int32(-1),
    ];
    let events = numbered(
        ms.iter()
            .map(|m| ev(0, None, None, None, m.clone()))
            .collect(),
    );
    assert_eq!(
        run_field(&events, SM),
        vec![
            int(MAX),
            Value::Null,
            int(MAX), // (2^64 - 2) as f64 + 0.5 saturates
            int(MAX), // 2^63 - 2 is 2^63 in f64: saturates
            int(-1),  // -2 + 0.5
            int(-1),  // -1.25
            int(0),   // 0.75
            int(0),   // 0.5
            int(0),   // -0.5 toward zero
        ]
    );

    // Beyond 2^53 the integer part of a mixed sum goes through f64.
    let big = (1i64 << 53) + 1;
    let events = numbered(vec![
        ev(0, None, None, None, Value::Int64(big)),
        ev(0, None, None, None, Value::Double(0.0)),
        ev(0, None, None, None, Value::Int64(2)),
        ev(1, None, None, None, Value::Double(0.0)),
        ev(1, None, None, None, Value::Int64(big)),
    ]);
    assert_eq!(
        run_field(&events, SM),
        vec![
            int(big),
            int(big - 1), // 2^53 + 1 rounds to even
            int(big + 3), // 2^53 + 3 too
            int(0),
            int(big - 1)
        ]
    );

    // A double in one group leaves another group's integer and null sums as they were.
    let events = numbered(vec![
        ev(0, None, None, None, Value::Int64(MAX)),
        ev(1, None, None, None, Value::Null),
        ev(2, None, None, None, Value::Int64(MAX)),
        ev(2, None, None, None, Value::Int64(MAX)),
        ev(3, None, None, None, Value::Int64(MIN)),
        ev(4, None, Some(2.5), None, Value::Double(2.5)),
        ev(0, None, None, None, Value::Int64(-1)),
        ev(1, None, None, None, Value::Null),
        ev(2, None, None, None, Value::Int64(MIN)),
        ev(3, None, None, None, Value::Int64(0)),
    ]);
    let sm = run_field(&events, SM);
    assert_eq!(
        &sm[5..],
        &[int(2), int(MAX - 1), Value::Null, int(MAX - 1), int(MIN)]
    );
    let sd = run_field(&events, SD);
    assert_eq!(
        &sd[5..],
        &[int(2), Value::Null, Value::Null, Value::Null, Value::Null]
    );
}

#[test]
fn int32_sums_go_beyond_i32() {
    let events = numbered(
        (0..4)
            .map(|i| {
                ev(
                    0,
                    None,
                    None,
                    Some(if i < 3 { i32::MAX } else { i32::MIN }),
                    Value::Null,
                )
            })
            .collect(),
    );
    let m = i64::from(i32::MAX);
    assert_eq!(
        run_field(&events, SI),
        vec![
            int(m),
            int(2 * m),
            int(3 * m),
            int(3 * m + i64::from(i32::MIN))
        ]
    );
}
