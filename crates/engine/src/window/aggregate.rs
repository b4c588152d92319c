//! `window-aggregate`: group by the window's key fields, one output row per group.
//!
//! Additive functions (sum, count, average, standard deviation, weighted average) are kept
//! in O(1) per event. Min and max keep an ordered multiset of values (O(log n) under delete
//! and update); on insert-only input they are running values. Order-dependent functions
//! (first, last, lag, cat) keep the group's member values ordered by the sequence of the
//! event that last touched each member: on insert-only input, first/last/lag/cat need only
//! O(1) or O(n) memory of their own.

use std::collections::BTreeMap;

use sluice_event::{Event, FieldType, Key, Opcode, Row, Value};
use sluice_expr::{EventInfo, ExprId, Globals, Program};

use crate::cow::CowMap;
use crate::state::{FxIndexMap, KeyRef};

/// Aggregate functions.
#[derive(Clone, Debug, PartialEq)]
pub enum AggFn {
    Sum,
    Count,
    Ave,
    Std,
    WAve,
    Max,
    Min,
    First,
    Last,
    Lag(usize),
    Cat(String),
    Mode,
    CountDistinct,
    /// A plain expression (no ESP_a function): its value on the group's latest event.
    Plain,
}

impl AggFn {
    fn needs_members(&self, insert_only: bool) -> bool {
        match self {
            AggFn::First | AggFn::Last | AggFn::Lag(_) | AggFn::Cat(_) | AggFn::Plain => {
                !insert_only
            }
            _ => false,
        }
    }
}

/// Where an argument's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Field(usize),
    Expr(ExprId),
}

/// One output field of the aggregate.
#[derive(Clone, Debug)]
pub struct AggField {
    pub func: AggFn,
    pub args: Vec<Arg>,
    pub ty: FieldType,
    /// Position in the output row.
    pub out_pos: usize,
}

/// Running state of one function in one group.
#[derive(Clone, Debug, PartialEq)]
pub enum Acc {
    /// Sum/average/std over integers (exact) or doubles.
    Num {
        int: i128,
        float: f64,
        sq: f64,
        n: i64,
        is_float: bool,
    },
    WAve {
        sw: f64,
        swf: f64,
    },
    /// Multiset of values (min/max/mode/count-distinct under deletes).
    Multi(BTreeMap<Value, u32>),
    /// A running value (min/max/first/last on insert-only input).
    Running(Value),
    /// Last n+1 values (lag on insert-only input), oldest first.
    Ring(std::collections::VecDeque<Value>),
    /// Concatenation (cat on insert-only input).
    Text(String),
    /// Nothing kept here (count, or order-dependent functions computed from members).
    None,
}

/// One group.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The current output row.
    pub row: Row,
    pub count: i64,
    pub accs: Vec<Acc>,
    /// Member argument values by input key, with the seq of the event that last touched them.
    pub members: FxIndexMap<Key, (u64, Vec<Value>)>,
    /// seq -> input key, ordered.
    pub order: BTreeMap<u64, Key>,
}

/// The aggregate window.
#[derive(Clone, Debug)]
pub struct AggregateWindow {
    pub fields: Vec<AggField>,
    /// Positions, in the input row, of the output key fields.
    pub group_by: Vec<usize>,
    /// Output schema width.
    pub width: usize,
    /// Positions of key fields in the output row.
    pub out_keys: Vec<usize>,
    /// Key positions of the input window (member identity).
    pub input_keys: Vec<usize>,
    pub insert_only: bool,
    pub keep_members: bool,
    pub program: Program,
    pub globals: Globals,
    pub groups: CowMap<Key, Group>,
    pub next_seq: u64,
    /// Argument values of the current event, one Vec per field (reused).
    scratch: Vec<Vec<Value>>,
    /// Output row positions in order.
    layout: Vec<Slot>,
    /// True when some argument is an expression (else nothing needs evaluating per event).
    has_exprs: bool,
}

impl AggregateWindow {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        fields: Vec<AggField>,
        group_by: Vec<usize>,
        width: usize,
        out_keys: Vec<usize>,
        input_keys: Vec<usize>,
        insert_only: bool,
        program: Program,
        globals: Globals,
    ) -> AggregateWindow {
        let keep_members = fields.iter().any(|f| f.func.needs_members(insert_only));
        let scratch = fields
            .iter()
            .map(|f| Vec::with_capacity(f.args.len()))
            .collect();
        let has_exprs = fields
            .iter()
            .any(|f| f.args.iter().any(|a| matches!(a, Arg::Expr(_))));
        let mut layout = vec![Slot::Key(0); width];
        for (k, &p) in out_keys.iter().enumerate() {
            layout[p] = Slot::Key(k);
        }
        for (i, f) in fields.iter().enumerate() {
            layout[f.out_pos] = Slot::Field(i);
        }
        AggregateWindow {
            fields,
            group_by,
            width,
            out_keys,
            input_keys,
            insert_only,
            keep_members,
            program,
            globals,
            groups: CowMap::default(),
            next_seq: 0,
            has_exprs,
            scratch,
            layout,
        }
    }

    /// Evaluates every field's expression arguments on `row` into `self.scratch`.
    fn eval_args(&mut self, row: &[Value], info: EventInfo) -> Result<(), String> {
        if !self.has_exprs {
            // Plain field arguments only: they are read from the row in place.
            return Ok(());
        }
        for (i, f) in self.fields.iter().enumerate() {
            let dst = &mut self.scratch[i];
            dst.clear();
            for a in &f.args {
                // Field arguments are read from the row in place (no clone): a placeholder here.
                let v = match a {
                    Arg::Field(_) => Value::Null,
                    Arg::Expr(id) => self
                        .program
                        .eval(*id, row, info, &mut self.globals)
                        .map_err(|e| e.to_string())?,
                };
                dst.push(v);
            }
        }
        Ok(())
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Processes one input event, pushing the group changes it causes.
    pub fn process(&mut self, ev: &Event, now: i64, out: &mut Vec<Event>) -> Result<(), String> {
        let info = EventInfo {
            opcode: ev.opcode,
            flags: ev.flags,
            now_micros: now,
        };
        match ev.opcode {
            Opcode::Insert => {
                self.eval_args(&ev.row, info)?;
                self.add(&ev.row, out);
            }
            Opcode::Delete | Opcode::SafeDelete => {
                self.eval_args(&ev.row, info)?;
                self.retract(&ev.row, out)?;
            }
            Opcode::Update => {
                let Some(old) = &ev.old else {
                    return Err("update without its previous row: the aggregate's input must be a stateful window".into());
                };
                let old_key = sluice_event::event::key_of(old, &self.group_by);
                let new_key = sluice_event::event::key_of(&ev.row, &self.group_by);
                if old_key == new_key {
                    // Retract and add inside one group: one update out.
                    if !self.groups.contains_key(&old_key) {
                        return Err("update of a row the aggregate has not seen".into());
                    }
                    self.eval_args(old, info)?;
                    let old_member = sluice_event::event::key_of(old, &self.input_keys);
                    {
                        let g = self.groups.get_mut(&old_key).expect("checked");
                        retract_from(
                            g,
                            &self.fields,
                            &self.scratch,
                            old,
                            self.keep_members,
                            &old_member,
                        );
                    }
                    self.eval_args(&ev.row, info)?;
                    let member = sluice_event::event::key_of(&ev.row, &self.input_keys);
                    let seq = self.take_seq();
                    let g = self.groups.get_mut(&old_key).expect("checked");
                    add_to(
                        g,
                        &self.fields,
                        &self.scratch,
                        &ev.row,
                        self.insert_only,
                        self.keep_members,
                        member,
                        seq,
                    );
                    let new_row =
                        result_row(g, &self.fields, &self.layout, &self.group_by, &ev.row);
                    let old_row = std::mem::replace(&mut g.row, new_row.clone());
                    out.push(Event::update(new_row, old_row));
                } else {
                    self.eval_args(old, info)?;
                    self.retract(old, out)?;
                    self.eval_args(&ev.row, info)?;
                    self.add(&ev.row, out);
                }
            }
            Opcode::Upsert => {
                return Err(
                    "upsert reached an aggregate window: upserts are resolved by a stateful source"
                        .into(),
                )
            }
        }
        Ok(())
    }

    fn add(&mut self, row: &[Value], out: &mut Vec<Event>) {
        let member = if self.keep_members {
            sluice_event::event::key_of(row, &self.input_keys)
        } else {
            Key::new()
        };
        let seq = self.take_seq();
        let insert_only = self.insert_only;
        let kr = KeyRef {
            row,
            idx: &self.group_by,
        };
        // Hot path: an existing group, found without building its key.
        if let Some(g) = self.groups.get_mut_by(&kr) {
            add_to(
                g,
                &self.fields,
                &self.scratch,
                row,
                insert_only,
                self.keep_members,
                member,
                seq,
            );
            let new_row = result_row(g, &self.fields, &self.layout, &self.group_by, row);
            let old_row = std::mem::replace(&mut g.row, new_row.clone());
            out.push(Event::update(new_row, old_row));
            return;
        }
        let key = sluice_event::event::key_of(row, &self.group_by);
        let fields = &self.fields;
        let g = self.groups.get_or_insert_with(key, || Group {
            row: Vec::new(),
            count: 0,
            accs: fields.iter().map(|f| new_acc(f, insert_only)).collect(),
            members: FxIndexMap::default(),
            order: BTreeMap::new(),
        });
        add_to(
            g,
            &self.fields,
            &self.scratch,
            row,
            insert_only,
            self.keep_members,
            member,
            seq,
        );
        let new_row = result_row(g, &self.fields, &self.layout, &self.group_by, row);
        g.row = new_row.clone();
        out.push(Event::insert(new_row));
    }

    fn retract(&mut self, row: &[Value], out: &mut Vec<Event>) -> Result<(), String> {
        let member = sluice_event::event::key_of(row, &self.input_keys);
        let kr = KeyRef {
            row,
            idx: &self.group_by,
        };
        let g = self
            .groups
            .get_mut_by(&kr)
            .ok_or("delete of a row the aggregate has not seen")?;
        retract_from(
            g,
            &self.fields,
            &self.scratch,
            row,
            self.keep_members,
            &member,
        );
        if g.count == 0 {
            let key = sluice_event::event::key_of(row, &self.group_by);
            let g = self.groups.swap_remove(&key).expect("present");
            out.push(Event::delete(g.row));
        } else {
            let new_row = result_row(g, &self.fields, &self.layout, &self.group_by, row);
            let old_row = std::mem::replace(&mut g.row, new_row.clone());
            out.push(Event::update(new_row, old_row));
        }
        Ok(())
    }
}

fn new_acc(f: &AggField, insert_only: bool) -> Acc {
    match &f.func {
        AggFn::Sum | AggFn::Ave | AggFn::Std => Acc::Num {
            int: 0,
            float: 0.0,
            sq: 0.0,
            n: 0,
            is_float: false,
        },
        AggFn::WAve => Acc::WAve { sw: 0.0, swf: 0.0 },
        AggFn::Max | AggFn::Min if insert_only => Acc::Running(Value::Null),
        AggFn::Max | AggFn::Min | AggFn::Mode | AggFn::CountDistinct => Acc::Multi(BTreeMap::new()),
        AggFn::First | AggFn::Last | AggFn::Plain if insert_only => Acc::Running(Value::Null),
        AggFn::Lag(_) if insert_only => Acc::Ring(Default::default()),
        AggFn::Cat(_) if insert_only => Acc::Text(String::new()),
        _ => Acc::None,
    }
}

/// Argument `k` of field `f`: from the row for a field reference, else from the scratch.
#[inline]
fn arg<'a>(f: &AggField, scratch: &'a [Value], row: &'a [Value], k: usize) -> Option<&'a Value> {
    match f.args.get(k)? {
        Arg::Field(p) => Some(&row[*p]),
        Arg::Expr(_) => Some(&scratch[k]),
    }
}

#[allow(clippy::too_many_arguments)]
fn add_to(
    g: &mut Group,
    fields: &[AggField],
    scratch: &[Vec<Value>],
    row: &[Value],
    insert_only: bool,
    keep: bool,
    member: Key,
    seq: u64,
) {
    g.count += 1;
    for (i, f) in fields.iter().enumerate() {
        let a0 = arg(f, &scratch[i], row, 0).unwrap_or(&Value::Null);
        let a1 = arg(f, &scratch[i], row, 1);
        acc_add(&mut g.accs[i], &f.func, a0, a1, insert_only);
    }
    if keep {
        let vals: Vec<Value> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| arg(f, &scratch[i], row, 0).cloned().unwrap_or_default())
            .collect();
        if let Some((old_seq, _)) = g.members.insert(member.clone(), (seq, vals)) {
            g.order.remove(&old_seq);
        }
        g.order.insert(seq, member);
    }
}

fn retract_from(
    g: &mut Group,
    fields: &[AggField],
    scratch: &[Vec<Value>],
    row: &[Value],
    keep: bool,
    member: &Key,
) {
    for (i, f) in fields.iter().enumerate() {
        let a0 = arg(f, &scratch[i], row, 0).unwrap_or(&Value::Null);
        let a1 = arg(f, &scratch[i], row, 1);
        acc_remove(&mut g.accs[i], &f.func, a0, a1);
    }
    g.count -= 1;
    if keep {
        if let Some((seq, _)) = g.members.swap_remove(member) {
            g.order.remove(&seq);
        }
    }
}

/// The group's output row after a change; `row` is the event's input row (for key values).
fn result_row(
    g: &Group,
    fields: &[AggField],
    layout: &[Slot],
    group_by: &[usize],
    row: &[Value],
) -> Row {
    let mut out = Vec::with_capacity(layout.len());
    for slot in layout {
        out.push(match *slot {
            Slot::Key(k) => row[group_by[k]].clone(),
            Slot::Field(i) => {
                let f = &fields[i];
                let v = acc_result(&g.accs[i], &f.func, g, i, g.count);
                if v.is_null() || v.field_type() == Some(f.ty) {
                    v
                } else {
                    v.coerce(f.ty).unwrap_or(Value::Null)
                }
            }
        });
    }
    out
}

/// What fills one position of the output row.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    /// The k-th key field (from the input's group-by position k).
    Key(usize),
    /// The i-th aggregate field.
    Field(usize),
}

fn num_add(acc: &mut Acc, v: &Value, sign: i64, squares: bool) {
    let Acc::Num {
        int,
        float,
        sq,
        n,
        is_float,
    } = acc
    else {
        return;
    };
    match v {
        Value::Null => return,
        Value::Int32(x) => *int += sign as i128 * *x as i128,
        Value::Int64(x) | Value::Date(x) | Value::Stamp(x) => *int += sign as i128 * *x as i128,
        other => {
            *is_float = true;
            if let Some(f) = other.as_f64() {
                *float += sign as f64 * f;
            }
        }
    }
    if squares {
        if let Some(f) = v.as_f64() {
            *sq += sign as f64 * f * f;
        }
    }
    *n += sign;
}

fn acc_add(acc: &mut Acc, func: &AggFn, v: &Value, a1: Option<&Value>, insert_only: bool) {
    match (acc, func) {
        (acc @ Acc::Num { .. }, f) => num_add(acc, v, 1, *f == AggFn::Std),
        (Acc::WAve { sw, swf }, _) => {
            if let (Some(w), Some(f)) = (v.as_f64(), a1.and_then(Value::as_f64)) {
                *sw += w;
                *swf += w * f;
            }
        }
        (Acc::Multi(m), _) => {
            if !v.is_null() {
                match m.get_mut(v) {
                    Some(c) => *c += 1,
                    None => {
                        m.insert(v.clone(), 1);
                    }
                }
            }
        }
        (Acc::Running(cur), f) => match f {
            AggFn::Max => {
                if !v.is_null() && (cur.is_null() || *v > *cur) {
                    *cur = v.clone();
                }
            }
            AggFn::Min => {
                if !v.is_null() && (cur.is_null() || *v < *cur) {
                    *cur = v.clone();
                }
            }
            AggFn::First => {
                if cur.is_null() {
                    *cur = v.clone();
                }
            }
            _ => *cur = v.clone(),
        },
        (Acc::Ring(r), AggFn::Lag(n)) => {
            r.push_back(v.clone());
            while r.len() > n + 1 {
                r.pop_front();
            }
        }
        (Acc::Text(t), AggFn::Cat(sep)) => {
            if !v.is_null() {
                if !t.is_empty() {
                    t.push_str(sep);
                }
                t.push_str(&v.to_string());
            }
        }
        _ => {
            let _ = insert_only;
        }
    }
}

fn acc_remove(acc: &mut Acc, func: &AggFn, v: &Value, a1: Option<&Value>) {
    match acc {
        Acc::Num { .. } => num_add(acc, v, -1, *func == AggFn::Std),
        Acc::WAve { sw, swf } => {
            if let (Some(w), Some(f)) = (v.as_f64(), a1.and_then(Value::as_f64)) {
                *sw -= w;
                *swf -= w * f;
            }
        }
        Acc::Multi(m) => {
            if let Some(c) = m.get_mut(v) {
                *c -= 1;
                if *c == 0 {
                    m.remove(v);
                }
            }
        }
        // Running values are used only on insert-only input, which never retracts.
        _ => {}
    }
}

/// i128 to f64, through i64 when it fits (the direct conversion is a slow library call).
fn i128_f64(x: i128) -> f64 {
    match i64::try_from(x) {
        Ok(v) => v as f64,
        Err(_) => x as f64,
    }
}

fn num_value(int: i128, float: f64, is_float: bool) -> Value {
    if is_float {
        Value::Double(float + i128_f64(int))
    } else {
        i64::try_from(int).map_or(Value::Null, Value::Int64)
    }
}

fn acc_result(acc: &Acc, func: &AggFn, g: &Group, field: usize, count: i64) -> Value {
    // Order-dependent functions over members (non-insert-only input).
    let member_vals = || {
        g.order
            .values()
            .filter_map(|k| g.members.get(k))
            .map(move |(_, v)| &v[field])
    };
    match (func, acc) {
        (AggFn::Count, _) => Value::Int64(count),
        (
            AggFn::Sum,
            Acc::Num {
                int,
                float,
                n,
                is_float,
                ..
            },
        ) => {
            if *n == 0 {
                Value::Null
            } else {
                num_value(*int, *float, *is_float)
            }
        }
        (AggFn::Ave, Acc::Num { int, float, n, .. }) => {
            if *n == 0 {
                Value::Null
            } else {
                Value::Double((*float + i128_f64(*int)) / *n as f64)
            }
        }
        (
            AggFn::Std,
            Acc::Num {
                int, float, sq, n, ..
            },
        ) => {
            if *n < 2 {
                Value::Null
            } else {
                let s = *float + i128_f64(*int);
                let nf = *n as f64;
                let var = ((*sq - s * s / nf) / (nf - 1.0)).max(0.0);
                Value::Double(var.sqrt())
            }
        }
        (AggFn::WAve, Acc::WAve { sw, swf }) => {
            if *sw == 0.0 {
                Value::Null
            } else {
                Value::Double(swf / sw)
            }
        }
        (AggFn::Max, Acc::Multi(m)) => m.keys().next_back().cloned().unwrap_or_default(),
        (AggFn::Min, Acc::Multi(m)) => m.keys().next().cloned().unwrap_or_default(),
        (AggFn::CountDistinct, Acc::Multi(m)) => Value::Int64(m.len() as i64),
        (AggFn::Mode, Acc::Multi(m)) => {
            let mut best: Option<(&Value, u32)> = None;
            for (v, c) in m {
                if best.is_none_or(|(_, bc)| *c > bc) {
                    best = Some((v, *c));
                }
            }
            best.map(|(v, _)| v.clone()).unwrap_or_default()
        }
        (_, Acc::Running(v)) => v.clone(),
        (AggFn::Lag(n), Acc::Ring(r)) => {
            if r.len() > *n {
                r[r.len() - 1 - n].clone()
            } else {
                Value::Null
            }
        }
        (AggFn::Cat(_), Acc::Text(t)) => Value::str(t),
        (AggFn::First, _) => member_vals().next().cloned().unwrap_or_default(),
        (AggFn::Last | AggFn::Plain, _) => member_vals().next_back().cloned().unwrap_or_default(),
        (AggFn::Lag(n), _) => {
            let vals: Vec<&Value> = member_vals().collect();
            if vals.len() > *n {
                vals[vals.len() - 1 - n].clone()
            } else {
                Value::Null
            }
        }
        (AggFn::Cat(sep), _) => {
            let parts: Vec<String> = member_vals()
                .filter(|v| !v.is_null())
                .map(|v| v.to_string())
                .collect();
            Value::str(&parts.join(sep))
        }
        _ => Value::Null,
    }
}
