//! Determinism: a multi-window project (source -> filter -> compute -> aggregate, a join with
//! a dimension source, copies with count and time retention) fed the same generated input
//! twice gives byte-identical output sequences; fed the same events cut into other block
//! sizes, it ends with the same contents in every window.

mod common;

use common::*;
use sluice_engine::{CollectSink, Engine, WindowId};
use sluice_event::{Event, EventBlock, MsgId, Row, Value};

const WINDOWS: &[&str] = &[
    "<window-source name='s'><schema-string>k*:int64,g:string,x:int64,y:double</schema-string></window-source>",
    "<window-source name='d'><schema-string>g*:string,label:string</schema-string></window-source>",
    "<window-filter name='f'><expression>x &gt; -10</expression></window-filter>",
    "<window-compute name='c'><expr-initialize><initializer type='int64'>integer n n=0</initializer></expr-initialize>\
     <schema-string>k*:int64,g:string,x2:int64,y:double,seq:int64</schema-string>\
     <output><field-expr>g</field-expr><field-expr>x*2</field-expr><field-expr>y</field-expr><field-expr>n=n+1 return n</field-expr></output></window-compute>",
    "<window-aggregate name='a'><schema-string>g*:string,sx:int64,cnt:int64,my:double,av:double,ls:int64</schema-string>\
     <output><field-expr>ESP_aSum(x2)</field-expr><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aMax(y)</field-expr>\
     <field-expr>ESP_aAve(y)</field-expr><field-expr>ESP_aLast(seq)</field-expr></output></window-aggregate>",
    "<window-join name='j'><join type='leftouter'><conditions><fields left='g' right='g'/></conditions></join>\
     <output><field-selection name='x2' source='l_x2'/><field-selection name='label' source='r_label'/></output></window-join>",
    "<window-copy name='rc'><retention type='bycount_sliding'>5</retention></window-copy>",
    "<window-copy name='rt'><retention type='bytime_sliding'>15 seconds</retention></window-copy>",
];

const EDGES: &[&str] = &[
    "<edge source='s' target='f'/>",
    "<edge source='f' target='c'/>",
    "<edge source='c' target='a'/>",
    "<edge source='c' target='j' role='left'/>",
    "<edge source='d' target='j' role='right'/>",
    "<edge source='s' target='rc'/>",
    "<edge source='c' target='rt'/>",
];

/// A small deterministic generator (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// `phases` of (source index 0 = s / 1 = d, event) sequences.
fn input(seed: u64, phases: usize, per_phase: usize) -> Vec<Vec<(usize, Event)>> {
    let mut r = Lcg(seed);
    (0..phases)
        .map(|_| {
            (0..per_phase)
                .map(|_| {
                    // Insert-heavy, so rows live long enough for time retention to matter.
                    let op = opcode(
                        [0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 1, 1, 1, 1, 2, 2, 4, 4]
                            [r.next(20) as usize],
                    );
                    let g = Value::str(&format!("g{}", r.next(4)));
                    if r.next(10) < 7 {
                        let row: Row = vec![
                            Value::Int64(r.next(40) as i64),
                            g,
                            Value::Int64(r.next(41) as i64 - 20),
                            Value::Double(r.next(200) as f64 / 4.0 - 10.0),
                        ];
                        (0, Event::new(op, row))
                    } else {
                        let row: Row = vec![g, Value::str(&format!("L{}", r.next(100)))];
                        (1, Event::new(op, row))
                    }
                })
                .collect()
        })
        .collect()
}

/// Runs the input with blocks of at most `size` events (one source per block). Phase `p`
/// runs at time `p * 10 s`, followed by a heartbeat at that time. Returns the engine, every
/// output and refusal rendered in order.
fn run(input: &[Vec<(usize, Event)>], size: usize) -> (Engine, Vec<String>, Vec<String>) {
    let mut e = engine(&model(WINDOWS, EDGES));
    let sources = [win(&e, "s"), win(&e, "d")];
    let mut sink = CollectSink::default();
    let mut id = 0u64;
    for (p, phase) in input.iter().enumerate() {
        let now = p as i64 * 10_000_000;
        let mut i = 0;
        while i < phase.len() {
            let src = phase[i].0;
            let mut block = Vec::new();
            while i < phase.len() && phase[i].0 == src && block.len() < size {
                block.push(phase[i].1.clone());
                i += 1;
            }
            id += 1;
            e.inject(
                sources[src],
                EventBlock::new(MsgId(id), block),
                now,
                &mut sink,
            )
            .expect("source");
        }
        e.advance_time(now, &mut sink);
    }
    let outputs = rendered_outputs(&sink);
    let bad = sink
        .bad
        .iter()
        .map(|(w, ev, why)| format!("{} {why}", render(*w, ev)))
        .collect();
    (e, outputs, bad)
}

/// Every output event, rendered with its block's ID, in order.
fn rendered_outputs(sink: &CollectSink) -> Vec<String> {
    sink.outputs
        .iter()
        .flat_map(|(w, id, evs)| {
            evs.iter()
                .map(move |ev| format!("#{id} {}", render(*w, ev)))
        })
        .collect()
}

/// Every window's rows, rendered, window by window.
fn contents(e: &Engine) -> Vec<String> {
    let mut out = Vec::new();
    for (i, n) in e.nodes().iter().enumerate() {
        out.push(format!("# {}", n.path));
        for row in e.rows_sorted(WindowId(i as u32)) {
            let mut l = String::new();
            sluice_event::csv::write_row(&row, None, &mut l);
            out.push(l);
        }
    }
    out
}

fn first_difference(a: &[String], b: &[String]) -> String {
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(
        "line {i}: {:?} vs {:?} ({} vs {} lines)",
        a.get(i),
        b.get(i),
        a.len(),
        b.len()
    )
}

#[test]
fn same_input_gives_byte_identical_output() {
    for seed in [1u64, 7, 42, 1234] {
        let data = input(seed, 3, 150);
        let (e1, out1, bad1) = run(&data, 4);
        let (e2, out2, bad2) = run(&data, 4);
        // The run must exercise the graph, not pass by being empty.
        assert!(
            out1.len() > 300,
            "seed {seed}: only {} output events",
            out1.len()
        );
        assert!(
            !bad1.is_empty(),
            "seed {seed}: the input should contain refused events"
        );
        for w in ["a", "j", "rc"] {
            assert!(
                e1.row_count(win(&e1, w)) > 0,
                "seed {seed}: window {w} is empty"
            );
        }
        assert!(
            out1 == out2,
            "seed {seed}: outputs differ at {}",
            first_difference(&out1, &out2)
        );
        assert!(
            bad1 == bad2,
            "seed {seed}: refusals differ at {}",
            first_difference(&bad1, &bad2)
        );
        assert_eq!(contents(&e1), contents(&e2), "seed {seed}");
    }
}

#[test]
fn block_sizes_do_not_change_final_contents() {
    for seed in [3u64, 99, 2024] {
        let data = input(seed, 3, 150);
        let (base, _, mut bad_base) = run(&data, 1);
        let want = contents(&base);
        // Time retention really evicted something (rows from phase 0 are older than 15 s).
        let rt = win(&base, "rt");
        assert!(
            base.row_count(rt) < base.row_count(win(&base, "c")),
            "seed {seed}: rt retained everything"
        );
        bad_base.sort();
        for size in [2usize, 5, 64, 1000] {
            let (e, _, mut bad) = run(&data, size);
            let got = contents(&e);
            assert!(
                got == want,
                "seed {seed}, blocks of {size}: contents differ at {}",
                first_difference(&got, &want)
            );
            bad.sort();
            assert_eq!(
                bad, bad_base,
                "seed {seed}, blocks of {size}: refusals differ"
            );
        }
    }
}

/// A cloned engine continues exactly like the original (no hidden shared or global state).
#[test]
fn a_cloned_engine_continues_identically() {
    let data = input(5, 2, 120);
    let mut a = engine(&model(WINDOWS, EDGES));
    let sources = [win(&a, "s"), win(&a, "d")];
    let mut sink = CollectSink::default();
    for (src, ev) in &data[0] {
        a.inject(
            sources[*src],
            EventBlock::new(MsgId(1), vec![ev.clone()]),
            0,
            &mut sink,
        )
        .unwrap();
    }
    let mut b = a.clone();
    let (mut sa, mut sb) = (CollectSink::default(), CollectSink::default());
    for (src, ev) in &data[1] {
        a.inject(
            sources[*src],
            EventBlock::new(MsgId(2), vec![ev.clone()]),
            0,
            &mut sa,
        )
        .unwrap();
        b.inject(
            sources[*src],
            EventBlock::new(MsgId(2), vec![ev.clone()]),
            0,
            &mut sb,
        )
        .unwrap();
    }
    let ra: Vec<String> = sa
        .outputs
        .iter()
        .flat_map(|(w, _, e)| e.iter().map(|ev| render(*w, ev)))
        .collect();
    let rb: Vec<String> = sb
        .outputs
        .iter()
        .flat_map(|(w, _, e)| e.iter().map(|ev| render(*w, ev)))
        .collect();
    assert!(!ra.is_empty());
    assert!(ra == rb, "{}", first_difference(&ra, &rb));
    assert_eq!(contents(&a), contents(&b));
}

/// A project without wall-clock retention and without `now()`/`today()` does not read the
/// time (`Engine::reads_clock` is false, so the runtime skips its clock per block), and that
/// holds: any time given gives the same outputs. Wall-clock retention or a clock function
/// makes it read the time.
#[test]
fn only_projects_that_read_the_clock_depend_on_the_time_given() {
    let untimed: Vec<&str> = WINDOWS
        .iter()
        .copied()
        .filter(|w| !w.contains("bytime"))
        .collect();
    let edges: Vec<&str> = EDGES
        .iter()
        .copied()
        .filter(|e| !e.contains("'rt'"))
        .collect();
    let xml = model(&untimed, &edges);
    assert!(!engine(&xml).reads_clock());
    let input = input(11, 4, 150);
    let run_at = |xml: &str, time: &dyn Fn(usize) -> i64| {
        let mut e = engine(xml);
        let sources = [win(&e, "s"), win(&e, "d")];
        let mut sink = CollectSink::default();
        for (p, phase) in input.iter().enumerate() {
            for (i, (src, ev)) in phase.iter().enumerate() {
                let block = EventBlock::new(MsgId((p * 1000 + i) as u64), vec![ev.clone()]);
                e.inject(sources[*src], block, time(p * 1000 + i), &mut sink)
                    .expect("source");
            }
            e.advance_time(time(p * 1000 + 999), &mut sink);
        }
        (rendered_outputs(&sink), contents(&e))
    };
    let spaced = |i: usize| 1_700_000_000_000_000 + i as i64 * 7_919_000;
    let zero = run_at(&xml, &|_| 0);
    assert!(zero.0.len() > 300, "the input makes output");
    assert_eq!(zero, run_at(&xml, &spaced));

    // What makes a project read the time; with wall-clock retention the time shows.
    let timed = model(WINDOWS, EDGES);
    assert!(engine(&timed).reads_clock(), "bytime retention");
    assert_ne!(run_at(&timed, &|_| 0), run_at(&timed, &spaced));
    let src =
        "<window-source name='s'><schema-string>k*:int64,t:stamp</schema-string></window-source>";
    for (w, why) in [
        ("<window-filter name='w'><expression>t &lt; now()</expression></window-filter>", "now()"),
        (
            "<window-compute name='w'><schema-string>k*:int64,d:date</schema-string>\
             <output><field-expr>today()</field-expr></output></window-compute>",
            "today()",
        ),
        (
            "<window-copy name='w'><retention type='bycount_sliding'>5</retention></window-copy>",
            "",
        ),
        (
            "<window-copy name='w'><retention type='bytime_sliding' field='t'>5 seconds</retention></window-copy>",
            "",
        ),
    ] {
        let e = engine(&model(&[src, w], &["<edge source='s' target='w'/>"]));
        assert_eq!(e.reads_clock(), !why.is_empty(), "{w}");
    }
}
