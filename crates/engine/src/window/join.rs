//! `window-join`: equality joins of two keyed inputs (inner, left, right and full outer).
//!
//! Both inputs are kept keyed, with a secondary index from join-key values to the rows that
//! carry them. A change on one side recomputes only the output rows it can touch: the pairs
//! of the changed row, plus the outer rows of the other side's rows with the same join key.
//! The recomputed rows are diffed against the window's stored output, so every output delta
//! is exact (insert, update with old row, delete) whatever the join type.

use indexmap::IndexSet;
use sluice_event::{Event, Key, Opcode, Row, Value};
use sluice_expr::{EventInfo, ExprId, Globals, Program};
use sluice_model::JoinType;

use crate::cow::CowMap;
use crate::state::FxIndexMap;

/// A deterministic set of keys.
pub type KeySet = IndexSet<Key, std::hash::BuildHasherDefault<rustc_hash::FxHasher>>;

/// Which input a join event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// How the output key is derived (reference 1.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    /// Conditions cover the right key: the left is the fact stream, output key = left key.
    LeftKey,
    /// Conditions cover the left key only: output key = right key.
    RightKey,
    /// Conditions cover both keys: output key = the left key fields.
    OneToOne,
    /// Neither: output key = left key fields then right key fields.
    ManyToMany,
}

/// Where an output key field comes from: the left row, else the right row.
#[derive(Clone, Debug)]
pub struct KeySrc {
    pub left: Option<usize>,
    pub right: Option<usize>,
}

/// Where an output non-key field comes from.
#[derive(Clone, Debug)]
pub enum OutSrc {
    Left(usize),
    Right(usize),
    Expr(ExprId),
}

/// The join window.
#[derive(Clone, Debug)]
pub struct JoinWindow {
    pub join_type: JoinType,
    pub mode: KeyMode,
    pub no_regenerates: bool,
    /// `left-index="pi_EMPTY"`: the insert-only fact stream on the left is not kept; each left
    /// insert emits its joined row as an insert, and right changes emit nothing.
    pub stream_left: bool,
    pub left_cond: Vec<usize>,
    pub right_cond: Vec<usize>,
    pub left_keys: Vec<usize>,
    pub right_keys: Vec<usize>,
    pub left_width: usize,
    pub right_width: usize,
    pub key_src: Vec<KeySrc>,
    pub outputs: Vec<OutSrc>,
    pub has_exprs: bool,
    pub program: Program,
    pub globals: Globals,
    pub left: CowMap<Key, Row>,
    pub right: CowMap<Key, Row>,
    pub left_by_jk: CowMap<Key, KeySet>,
    pub right_by_jk: CowMap<Key, KeySet>,
    /// The window's contents.
    pub out: CowMap<Key, Row>,
}

fn key_text(key: &Key) -> String {
    key.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl JoinWindow {
    fn jk(&self, row: &Row, side: Side) -> Option<Key> {
        let idx = match side {
            Side::Left => &self.left_cond,
            Side::Right => &self.right_cond,
        };
        let k: Key = idx.iter().map(|&i| row[i].clone()).collect();
        (!k.iter().any(Value::is_null)).then_some(k)
    }

    fn outer_left(&self) -> bool {
        matches!(self.join_type, JoinType::LeftOuter | JoinType::FullOuter)
    }

    fn outer_right(&self) -> bool {
        matches!(self.join_type, JoinType::RightOuter | JoinType::FullOuter)
    }

    fn build(&mut self, l: Option<&Row>, r: Option<&Row>, now: i64) -> Result<(Key, Row), String> {
        let mut key = Key::new();
        let mut row = Vec::with_capacity(self.key_src.len() + self.outputs.len());
        for ks in &self.key_src {
            let v = match (l, ks.left, r, ks.right) {
                (Some(l), Some(i), _, _) => l[i].clone(),
                (_, _, Some(r), Some(i)) => r[i].clone(),
                _ => Value::Null,
            };
            key.push(v.clone());
            row.push(v);
        }
        let combined: Option<Row> = self.has_exprs.then(|| {
            let mut c = Vec::with_capacity(self.left_width + self.right_width);
            match l {
                Some(l) => c.extend(l.iter().cloned()),
                None => c.resize(self.left_width, Value::Null),
            }
            match r {
                Some(r) => c.extend(r.iter().cloned()),
                None => c.resize(self.left_width + self.right_width, Value::Null),
            }
            c
        });
        let info = EventInfo {
            opcode: Opcode::Insert,
            flags: sluice_event::Flags::Normal,
            now_micros: now,
        };
        for o in &self.outputs {
            let v = match o {
                OutSrc::Left(i) => l.map_or(Value::Null, |l| l[*i].clone()),
                OutSrc::Right(i) => r.map_or(Value::Null, |r| r[*i].clone()),
                OutSrc::Expr(id) => self
                    .program
                    .eval(
                        *id,
                        combined.as_deref().expect("built"),
                        info,
                        &mut self.globals,
                    )
                    .map_err(|e| e.to_string())?,
            };
            row.push(v);
        }
        Ok((key, row))
    }

    /// Output rows of one row of `side` (its pairs, or its outer row).
    fn outs_of(
        &mut self,
        side: Side,
        row: &Row,
        now: i64,
        acc: &mut Vec<(Key, Row)>,
    ) -> Result<(), String> {
        let jk = self.jk(row, side);
        let others: Vec<Row> = match (&jk, side) {
            (Some(jk), Side::Left) => self
                .right_by_jk
                .get(jk)
                .map(|s| {
                    s.iter()
                        .map(|k| self.right.get(k).expect("indexed").clone())
                        .collect()
                })
                .unwrap_or_default(),
            (Some(jk), Side::Right) => self
                .left_by_jk
                .get(jk)
                .map(|s| {
                    s.iter()
                        .map(|k| self.left.get(k).expect("indexed").clone())
                        .collect()
                })
                .unwrap_or_default(),
            (None, _) => Vec::new(),
        };
        if others.is_empty() {
            let outer = match side {
                Side::Left => self.outer_left(),
                Side::Right => self.outer_right(),
            };
            if outer {
                acc.push(match side {
                    Side::Left => self.build(Some(row), None, now)?,
                    Side::Right => self.build(None, Some(row), now)?,
                });
            }
        } else {
            for o in &others {
                acc.push(match side {
                    Side::Left => self.build(Some(row), Some(o), now)?,
                    Side::Right => self.build(Some(o), Some(row), now)?,
                });
            }
        }
        Ok(())
    }

    /// Outer rows of `side`'s rows with join key `jk`, present when the other side has none.
    fn outer_group(
        &mut self,
        side: Side,
        jk: &Key,
        now: i64,
        acc: &mut Vec<(Key, Row)>,
    ) -> Result<(), String> {
        let (outer, mine, other) = match side {
            Side::Left => (self.outer_left(), &self.left_by_jk, &self.right_by_jk),
            Side::Right => (self.outer_right(), &self.right_by_jk, &self.left_by_jk),
        };
        if !outer || other.get(jk).is_some_and(|s| !s.is_empty()) {
            return Ok(());
        }
        let rows: Vec<Row> = match mine.get(jk) {
            Some(s) => s
                .iter()
                .map(|k| match side {
                    Side::Left => self.left.get(k).expect("indexed").clone(),
                    Side::Right => self.right.get(k).expect("indexed").clone(),
                })
                .collect(),
            None => return Ok(()),
        };
        for r in &rows {
            acc.push(match side {
                Side::Left => self.build(Some(r), None, now)?,
                Side::Right => self.build(None, Some(r), now)?,
            });
        }
        Ok(())
    }

    fn affected(
        &mut self,
        side: Side,
        row: Option<&Row>,
        jks: &[Key],
        now: i64,
    ) -> Result<Vec<(Key, Row)>, String> {
        let mut acc = Vec::new();
        let regen_blocked = self.no_regenerates
            && matches!(
                (self.mode, side),
                (KeyMode::LeftKey, Side::Right) | (KeyMode::RightKey, Side::Left)
            );
        if regen_blocked {
            return Ok(acc);
        }
        if let Some(r) = row {
            self.outs_of(side, r, now, &mut acc)?;
        }
        let other = match side {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        };
        for jk in jks {
            self.outer_group(other, jk, now, &mut acc)?;
        }
        Ok(acc)
    }

    fn unindex(&mut self, side: Side, key: &Key, row: &Row) {
        if let Some(jk) = self.jk(row, side) {
            let map = match side {
                Side::Left => &mut self.left_by_jk,
                Side::Right => &mut self.right_by_jk,
            };
            let now_empty = match map.get_mut(&jk) {
                Some(s) => {
                    s.shift_remove(key);
                    s.is_empty()
                }
                None => false,
            };
            if now_empty {
                map.swap_remove(&jk);
            }
        }
    }

    fn index(&mut self, side: Side, key: Key, row: &Row) {
        if let Some(jk) = self.jk(row, side) {
            let map = match side {
                Side::Left => &mut self.left_by_jk,
                Side::Right => &mut self.right_by_jk,
            };
            map.get_or_insert_with(jk, KeySet::default).insert(key);
        }
    }

    /// A left event of a stream join: its joined row (or outer row) as an insert, nothing kept.
    fn stream_left_event(
        &mut self,
        ev: &Event,
        now: i64,
        out: &mut Vec<Event>,
    ) -> Result<(), String> {
        if ev.opcode != Opcode::Insert {
            return Err(format!(
                "{} reached a join with left-index=\"pi_EMPTY\": its left input must be insert-only",
                ev.opcode.name()
            ));
        }
        // The conditions cover the right key: at most one right row has this join key.
        let right = self.jk(&ev.row, Side::Left).and_then(|jk| {
            self.right_by_jk
                .get(&jk)
                .and_then(|s| s.first())
                .and_then(|k| self.right.get(k))
                .cloned()
        });
        if right.is_some() || self.outer_left() {
            let (_, row) = self.build(Some(&ev.row), right.as_ref(), now)?;
            out.push(Event::insert(row).with_flags(ev.flags));
        }
        Ok(())
    }

    /// Processes one event from `side`.
    pub fn process(
        &mut self,
        side: Side,
        ev: &Event,
        now: i64,
        out: &mut Vec<Event>,
    ) -> Result<(), String> {
        if self.stream_left && side == Side::Left {
            return self.stream_left_event(ev, now, out);
        }
        let keys = match side {
            Side::Left => &self.left_keys,
            Side::Right => &self.right_keys,
        };
        let key = sluice_event::event::key_of(&ev.row, keys);
        let store = match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        };
        let old: Option<Row> = store.get(&key).cloned();
        let new: Option<Row> = match ev.opcode {
            Opcode::Insert => {
                if old.is_some() {
                    return Err(format!(
                        "duplicate insert: key {} already exists",
                        key_text(&key)
                    ));
                }
                Some(ev.row.clone())
            }
            Opcode::Update => {
                if old.is_none() {
                    return Err(format!("update of missing key {}", key_text(&key)));
                }
                Some(ev.row.clone())
            }
            Opcode::Upsert => Some(ev.row.clone()),
            Opcode::Delete => {
                if old.is_none() {
                    return Err(format!("delete of missing key {}", key_text(&key)));
                }
                None
            }
            Opcode::SafeDelete => {
                if old.is_none() {
                    return Ok(());
                }
                None
            }
        };
        let mut jks: Vec<Key> = Vec::with_capacity(2);
        for r in [old.as_ref(), new.as_ref()].into_iter().flatten() {
            if let Some(jk) = self.jk(r, side) {
                if !jks.contains(&jk) {
                    jks.push(jk);
                }
            }
        }
        let before = self.affected(side, old.as_ref(), &jks, now)?;
        // Apply the change to the input state.
        if let Some(o) = &old {
            self.unindex(side, &key, o);
        }
        match &new {
            Some(n) => {
                self.index(side, key.clone(), n);
                match side {
                    Side::Left => self.left.insert(key, n.clone()),
                    Side::Right => self.right.insert(key, n.clone()),
                };
            }
            None => {
                match side {
                    Side::Left => self.left.swap_remove(&key),
                    Side::Right => self.right.swap_remove(&key),
                };
            }
        }
        let after = self.affected(side, new.as_ref(), &jks, now)?;
        self.diff(before, after, ev.flags, out);
        Ok(())
    }

    fn diff(
        &mut self,
        before: Vec<(Key, Row)>,
        after: Vec<(Key, Row)>,
        flags: sluice_event::Flags,
        out: &mut Vec<Event>,
    ) {
        let mut after_map: FxIndexMap<Key, Row> = FxIndexMap::default();
        for (k, r) in after {
            after_map.insert(k, r);
        }
        for (k, _) in before {
            if after_map.contains_key(&k) {
                continue;
            }
            if let Some(stored) = self.out.swap_remove(&k) {
                out.push(Event::delete(stored).with_flags(flags));
            }
        }
        for (k, r) in after_map {
            match self.out.get_mut(&k) {
                Some(stored) => {
                    if *stored != r {
                        let old = std::mem::replace(stored, r.clone());
                        out.push(Event::update(r, old).with_flags(flags));
                    }
                }
                None => {
                    self.out.insert(k, r.clone());
                    out.push(Event::insert(r).with_flags(flags));
                }
            }
        }
    }
}
