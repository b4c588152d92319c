//! Shared helpers of the engine's integration tests: building small projects from XML,
//! reading window contents, replaying output deltas, comparing rows with a tolerance, and a
//! reference keyed table (with count retention) used as an oracle.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use sluice_engine::{CollectSink, Engine, WindowId};
use sluice_event::{Event, EventBlock, Flags, Key, MsgId, Opcode, Row, Value};

/// A project `p` with one contquery `cq` holding `windows` and `edges` (XML fragments).
pub fn model(windows: &[&str], edges: &[&str]) -> String {
    let mut s = String::from(
        "<project name='p' pubsub='none'><contqueries><contquery name='cq'><windows>\n",
    );
    for w in windows {
        s.push_str(w);
        s.push('\n');
    }
    s.push_str("</windows><edges>\n");
    for e in edges {
        s.push_str(e);
        s.push('\n');
    }
    s.push_str("</edges></contquery></contqueries></project>\n");
    s
}

/// Compiles `xml` (exactly one project) with every window observed.
pub fn engine(xml: &str) -> Engine {
    let spec = sluice_model::parse_project(xml, &|_| None)
        .unwrap_or_else(|d| panic!("model does not parse: {d:#?}\n{xml}"));
    let mut e =
        Engine::new(&spec).unwrap_or_else(|d| panic!("model does not compile: {d:#?}\n{xml}"));
    let ids: Vec<WindowId> = (0..e.nodes().len()).map(|i| WindowId(i as u32)).collect();
    for id in ids {
        e.observe(id, true);
    }
    e
}

/// The window `cq/name`.
pub fn win(e: &Engine, name: &str) -> WindowId {
    e.window("cq", name)
        .unwrap_or_else(|| panic!("no window cq/{name}"))
}

/// A window's rows, sorted by key.
pub fn rows(e: &Engine, w: WindowId) -> Vec<Row> {
    e.rows_sorted(w)
        .into_iter()
        .map(|r| r.into_owned())
        .collect()
}

/// Injects `events` into source `w` as one normal block.
pub fn inject(e: &mut Engine, w: WindowId, events: Vec<Event>, sink: &mut CollectSink) {
    e.inject(w, EventBlock::new(MsgId(0), events), 0, sink)
        .expect("inject into a source window");
}

/// Replays the delta stream `w` emitted into `sink` on an empty table keyed by `keys`:
/// insert needs an absent key, update and delete a present one, and an update's old row
/// must be the row it replaces. Returns the table sorted by key, or the first violation.
pub fn replay(sink: &CollectSink, w: WindowId, keys: &[usize]) -> Result<Vec<Row>, String> {
    let mut table: BTreeMap<Key, Row> = BTreeMap::new();
    for (n, (win, _, events)) in sink.outputs.iter().enumerate() {
        if *win != w {
            continue;
        }
        for ev in events {
            let key: Key = keys.iter().map(|&i| ev.row[i].clone()).collect();
            match ev.opcode {
                Opcode::Insert => {
                    if table.insert(key.clone(), ev.row.clone()).is_some() {
                        return Err(format!("output block {n}: insert of present key {key:?}"));
                    }
                }
                Opcode::Update => {
                    let Some(prev) = table.get_mut(&key) else {
                        return Err(format!("output block {n}: update of absent key {key:?}"));
                    };
                    if let Some(old) = &ev.old {
                        if let Err(m) = rows_close(old, prev) {
                            return Err(format!(
                                "output block {n}: update of key {key:?} carries old row {old:?}, table has {prev:?}: {m}"
                            ));
                        }
                    }
                    *prev = ev.row.clone();
                }
                Opcode::Delete => {
                    if table.remove(&key).is_none() {
                        return Err(format!("output block {n}: delete of absent key {key:?}"));
                    }
                }
                op => {
                    return Err(format!(
                        "output block {n}: unresolved opcode {op:?} in output"
                    ))
                }
            }
        }
    }
    Ok(table.into_values().collect())
}

/// Two values equal, doubles within a relative tolerance.
pub fn values_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => {
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

/// Two rows equal field by field (doubles with a tolerance); the error names the field.
pub fn rows_close(a: &[Value], b: &[Value]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("widths differ: {} vs {}", a.len(), b.len()));
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if !values_close(x, y) {
            return Err(format!("field {i}: {x:?} vs {y:?}"));
        }
    }
    Ok(())
}

/// Compares window contents (both sorted by key) and names the key and field that differ.
pub fn contents_close(what: &str, keys: &[usize], got: &[Row], want: &[Row]) -> Result<(), String> {
    let key = |r: &Row| -> Key { keys.iter().map(|&i| r[i].clone()).collect() };
    let g: BTreeMap<Key, &Row> = got.iter().map(|r| (key(r), r)).collect();
    let w: BTreeMap<Key, &Row> = want.iter().map(|r| (key(r), r)).collect();
    if g.len() != got.len() {
        return Err(format!(
            "{what}: duplicate keys in the window's rows {got:?}"
        ));
    }
    for (k, wr) in &w {
        match g.get(k) {
            None => {
                return Err(format!(
                    "{what}: key {k:?} missing; expected row {wr:?}\n got {got:?}\nwant {want:?}"
                ))
            }
            Some(gr) => rows_close(gr, wr)
                .map_err(|m| format!("{what}: key {k:?}: {m}\n  got  {gr:?}\n  want {wr:?}"))?,
        }
    }
    for (k, gr) in &g {
        if !w.contains_key(k) {
            return Err(format!(
                "{what}: unexpected key {k:?} with row {gr:?}\nwant {want:?}"
            ));
        }
    }
    Ok(())
}

/// Count retention of the reference table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountRetention {
    Sliding(usize),
    Jumping(usize),
}

/// A reference keyed window: what a source (strict) or a copy / non-strict union (lenient)
/// does with one event, with optional count retention. Emits resolved events.
#[derive(Clone, Debug)]
pub struct RefTable {
    pub rows: BTreeMap<Key, Row>,
    /// Keys in insertion order (retention).
    pub order: VecDeque<Key>,
    pub keys: Vec<usize>,
    pub strict: bool,
    pub retention: Option<CountRetention>,
    pub bad: usize,
}

impl RefTable {
    pub fn new(keys: &[usize], strict: bool, retention: Option<CountRetention>) -> RefTable {
        RefTable {
            rows: BTreeMap::new(),
            order: VecDeque::new(),
            keys: keys.to_vec(),
            strict,
            retention,
            bad: 0,
        }
    }

    fn evict(&mut self, out: &mut Vec<Event>) {
        if let Some(k) = self.order.pop_front() {
            let row = self.rows.remove(&k).expect("ordered key present");
            out.push(Event::delete(row).with_flags(Flags::Retention));
        }
    }

    /// Applies one event; returns what the window emits (empty for a refused or ignored one).
    pub fn apply(&mut self, ev: &Event) -> Vec<Event> {
        let key: Key = self.keys.iter().map(|&i| ev.row[i].clone()).collect();
        let present = self.rows.contains_key(&key);
        let op = match ev.opcode {
            Opcode::Upsert => {
                if present {
                    Opcode::Update
                } else {
                    Opcode::Insert
                }
            }
            Opcode::Insert | Opcode::Update if !self.strict => {
                if present {
                    Opcode::Update
                } else {
                    Opcode::Insert
                }
            }
            op => op,
        };
        let mut out = Vec::new();
        match op {
            Opcode::Insert => {
                if present {
                    self.bad += 1;
                    return out;
                }
                // Decision 8.7: retention deletes go out before the insert that causes them.
                match self.retention {
                    Some(CountRetention::Jumping(n)) if self.rows.len() >= n => {
                        while !self.order.is_empty() {
                            self.evict(&mut out);
                        }
                    }
                    Some(CountRetention::Sliding(n)) if n > 0 => {
                        while self.rows.len() >= n {
                            self.evict(&mut out);
                        }
                    }
                    _ => {}
                }
                self.rows.insert(key.clone(), ev.row.clone());
                self.order.push_back(key);
                out.push(Event::insert(ev.row.clone()).with_flags(ev.flags));
                if let Some(CountRetention::Sliding(n)) = self.retention {
                    while self.rows.len() > n {
                        self.evict(&mut out);
                    }
                }
            }
            Opcode::Update => {
                let Some(prev) = self.rows.get_mut(&key) else {
                    self.bad += 1;
                    return out;
                };
                // A partial update keeps the old value of its null fields and goes on as a
                // normal update.
                let mut row = ev.row.clone();
                let mut flags = ev.flags;
                if flags == Flags::Partial {
                    for (v, o) in row.iter_mut().zip(prev.iter()) {
                        if v.is_null() {
                            *v = o.clone();
                        }
                    }
                    flags = Flags::Normal;
                }
                let old = std::mem::replace(prev, row.clone());
                out.push(Event::update(row, old).with_flags(flags));
            }
            Opcode::Delete | Opcode::SafeDelete => match self.rows.remove(&key) {
                Some(row) => {
                    self.order.retain(|k| *k != key);
                    out.push(Event::delete(row).with_flags(ev.flags));
                }
                None => {
                    if op == Opcode::Delete && self.strict {
                        self.bad += 1;
                    }
                }
            },
            Opcode::Upsert => unreachable!(),
        }
        out
    }

    /// Rows sorted by key.
    pub fn contents(&self) -> Vec<Row> {
        self.rows.values().cloned().collect()
    }
}

/// The number of bad events `sink` holds for window `w`.
pub fn bad_count(sink: &CollectSink, w: WindowId) -> usize {
    sink.bad.iter().filter(|(x, _, _)| *x == w).count()
}

/// Proptest case count: PROPTEST_CASES when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One opcode from a small number (the generators draw 0..5).
pub fn opcode(n: u8) -> Opcode {
    match n % 5 {
        0 => Opcode::Insert,
        1 => Opcode::Update,
        2 => Opcode::Delete,
        3 => Opcode::Upsert,
        _ => Opcode::SafeDelete,
    }
}

/// Text of an event for byte comparisons: `window|I|N|fields|old`.
pub fn render(w: WindowId, ev: &Event) -> String {
    let mut s = format!("{}|{}|{}|", w.0, ev.opcode.letter(), ev.flags.letter());
    sluice_event::csv::write_row(&ev.row, None, &mut s);
    if let Some(old) = &ev.old {
        s.push_str("|old=");
        sluice_event::csv::write_row(old, None, &mut s);
    }
    s
}
