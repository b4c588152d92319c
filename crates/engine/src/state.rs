//! Keyed window state with optional retention.
//!
//! Rows live in an insertion-ordered map (deterministic iteration that survives a
//! snapshot/restore round trip, unlike a plain hash map). Retention bookkeeping keeps, per
//! row, the sequence number and time at which it was inserted, and an ordered index of them.

use std::collections::BTreeMap;
use std::hash::BuildHasherDefault;

use indexmap::IndexMap;
use rustc_hash::FxHasher;
use sluice_event::{Event, Flags, Key, Opcode, Row, Value};
use sluice_model::{RetentionKind, RetentionSpec};

use crate::cow::CowMap;

/// An insertion-ordered hash map with a fixed (deterministic) hasher.
pub type FxIndexMap<K, V> = IndexMap<K, V, BuildHasherDefault<FxHasher>>;
/// A hash map with a fixed hasher; never iterated where order could leak into output.
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// One stored row with its retention bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub row: Row,
    /// Order of insertion (retention).
    pub seq: u64,
    /// Time of insertion: wall-clock µs, or event time for `field=` retention.
    pub time: i64,
}

/// Retention policy state of one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Retention {
    pub kind: RetentionKind,
    /// Count, or microseconds.
    pub amount: u64,
    /// Event-time field position, for `field=` retention.
    pub time_field: Option<usize>,
    /// (time, seq) -> key, ordered oldest first.
    pub order: BTreeMap<(i64, u64), Key>,
    pub next_seq: u64,
    /// Newest event time seen (event-time retention).
    pub latest: Option<i64>,
    /// End of the current jumping window (by-time jumping).
    pub jump_end: Option<i64>,
}

impl Retention {
    /// Builds the policy; `time_field` is the resolved position of `spec.field`.
    pub fn new(spec: &RetentionSpec, time_field: Option<usize>) -> Retention {
        Retention {
            kind: spec.kind,
            amount: spec.amount,
            time_field,
            order: BTreeMap::new(),
            next_seq: 0,
            latest: None,
            jump_end: None,
        }
    }

    pub(crate) fn uses_wall_clock(&self) -> bool {
        self.kind.is_time() && self.time_field.is_none()
    }
}

/// Keyed state of a source, copy or union window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyedStore {
    pub rows: CowMap<Key, Entry>,
    pub retention: Option<Retention>,
}

fn key_text(key: &Key) -> String {
    let parts: Vec<String> = key.iter().map(|v| v.to_string()).collect();
    parts.join(",")
}

impl KeyedStore {
    /// An empty store.
    pub fn new(retention: Option<Retention>) -> KeyedStore {
        KeyedStore {
            rows: CowMap::default(),
            retention,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let e = self.rows.swap_remove(key)?;
        if let Some(r) = &mut self.retention {
            r.order.remove(&(e.time, e.seq));
        }
        Some(e)
    }

    fn insert_new(&mut self, key: Key, row: Row, now: i64) {
        let (seq, time) = match &mut self.retention {
            Some(r) => {
                let seq = r.next_seq;
                r.next_seq += 1;
                let time = match r.time_field {
                    Some(f) => row[f].as_i64().unwrap_or(i64::MIN),
                    None if r.kind.is_time() => now,
                    None => seq as i64,
                };
                r.order.insert((time, seq), key.clone());
                (seq, time)
            }
            None => (0, 0),
        };
        self.rows.insert(key, Entry { row, seq, time });
    }

    fn evict_all(&mut self, out: &mut Vec<Event>) {
        let Some(r) = &mut self.retention else { return };
        let order = std::mem::take(&mut r.order);
        for (_, key) in order {
            if let Some(e) = self.rows.swap_remove(&key) {
                out.push(retention_delete(e.row));
            }
        }
    }

    /// Retention work due before inserting a row with event time `t` (count and event-time kinds).
    fn before_insert(&mut self, row: &Row, out: &mut Vec<Event>) {
        let Some(r) = &mut self.retention else { return };
        match (r.kind, r.time_field) {
            // Decision 8.7: the retention deletes an insert causes go out before it (the
            // window never shows N+1 rows downstream). `after_insert` still covers N = 0.
            (RetentionKind::ByCountSliding, _) if r.amount > 0 => {
                evict_oldest_until(
                    &mut self.rows,
                    &mut r.order,
                    r.amount.saturating_sub(1),
                    out,
                );
            }
            (RetentionKind::ByCountJumping, _) if self.rows.len() as u64 >= r.amount => {
                self.evict_all(out);
            }
            (RetentionKind::ByTimeSliding, Some(f)) => {
                let Some(t) = row[f].as_i64() else { return };
                let latest = r.latest.map_or(t, |l| l.max(t));
                r.latest = Some(latest);
                let horizon = latest.saturating_sub(r.amount as i64);
                // Boundary inclusive: rows exactly T older than the newest are retained out.
                evict_older(&mut self.rows, &mut r.order, horizon, out);
            }
            (RetentionKind::ByTimeJumping, Some(f)) => {
                let Some(t) = row[f].as_i64() else { return };
                let len = r.amount.max(1) as i64;
                match r.jump_end {
                    Some(end) if t >= end => {
                        r.jump_end = Some(t.div_euclid(len) * len + len);
                        self.evict_all(out);
                    }
                    Some(_) => {}
                    None => r.jump_end = Some(t.div_euclid(len) * len + len),
                }
            }
            _ => {}
        }
    }

    /// Retention work due after an insert (count sliding; late rows under event-time sliding).
    fn after_insert(&mut self, out: &mut Vec<Event>) {
        let Some(r) = &mut self.retention else { return };
        // Event-time sliding: a late row already `amount` older than the newest time seen is
        // out of the window at once (reference 2.5); `before_insert` removed the others.
        if let (RetentionKind::ByTimeSliding, Some(_), Some(latest)) =
            (r.kind, r.time_field, r.latest)
        {
            let horizon = latest.saturating_sub(r.amount as i64);
            evict_older(&mut self.rows, &mut r.order, horizon, out);
        }
        if r.kind == RetentionKind::ByCountSliding {
            evict_oldest_until(&mut self.rows, &mut r.order, r.amount, out);
        }
    }

    /// Wall-clock retention: called with the runtime's time on every heartbeat.
    pub fn advance_time(&mut self, now: i64, out: &mut Vec<Event>) {
        let Some(r) = &mut self.retention else { return };
        if !r.uses_wall_clock() {
            return;
        }
        match r.kind {
            RetentionKind::ByTimeSliding => {
                let horizon = now.saturating_sub(r.amount as i64);
                evict_older(&mut self.rows, &mut r.order, horizon, out);
            }
            RetentionKind::ByTimeJumping => {
                let len = r.amount.max(1) as i64;
                match r.jump_end {
                    None => r.jump_end = Some(now.saturating_add(len)),
                    Some(end) if now >= end => {
                        let mut next = end;
                        while next <= now {
                            next = next.saturating_add(len);
                        }
                        r.jump_end = Some(next);
                        self.evict_all(out);
                    }
                    Some(_) => {}
                }
            }
            _ => {}
        }
    }

    /// Applies a resolved or unresolved event to the state, pushing what the window emits.
    /// `strict`: updates and deletes of missing keys, and inserts of existing keys, are
    /// refused (source windows). Non-strict (copy windows behind retention, non-strict unions,
    /// filters): inserts and updates become upserts and deletes of missing keys are ignored.
    /// A refused event is handed back with the reason.
    pub fn apply(
        &mut self,
        ev: Event,
        key: Key,
        now: i64,
        strict: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), (String, Event)> {
        let present = self.rows.contains_key(&key);
        let opcode = match ev.opcode {
            Opcode::Upsert => {
                if present {
                    Opcode::Update
                } else {
                    Opcode::Insert
                }
            }
            Opcode::Insert | Opcode::Update if !strict => {
                if present {
                    Opcode::Update
                } else {
                    Opcode::Insert
                }
            }
            op => op,
        };
        match opcode {
            Opcode::Insert if present => {
                return Err((
                    format!("duplicate insert: key {} already exists", key_text(&key)),
                    ev,
                ))
            }
            Opcode::Update if !present => {
                return Err((format!("update of missing key {}", key_text(&key)), ev))
            }
            Opcode::Delete if !present && strict => {
                return Err((format!("delete of missing key {}", key_text(&key)), ev))
            }
            _ => {}
        }
        let Event { flags, mut row, .. } = ev;
        match opcode {
            Opcode::Insert => {
                self.before_insert(&row, out);
                self.insert_new(key, row.clone(), now);
                out.push(Event {
                    opcode: Opcode::Insert,
                    flags,
                    row,
                    old: None,
                });
                self.after_insert(out);
            }
            Opcode::Update => {
                let entry = self.rows.get_mut(&key).expect("checked present");
                if flags == Flags::Partial {
                    for (v, old) in row.iter_mut().zip(entry.row.iter()) {
                        if v.is_null() {
                            *v = old.clone();
                        }
                    }
                }
                let old = std::mem::replace(&mut entry.row, row.clone());
                out.push(Event {
                    opcode: Opcode::Update,
                    flags: if flags == Flags::Partial {
                        Flags::Normal
                    } else {
                        flags
                    },
                    row,
                    old: Some(old),
                });
            }
            Opcode::Delete | Opcode::SafeDelete => {
                if let Some(e) = self.remove(&key) {
                    out.push(Event {
                        opcode: Opcode::Delete,
                        flags,
                        row: e.row,
                        old: None,
                    });
                }
            }
            Opcode::Upsert => unreachable!("resolved above"),
        }
        Ok(())
    }

    /// Rows in storage order.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values().map(|e| &e.row)
    }
}

/// Retention-deletes the rows whose retention time is at or before `horizon`.
fn evict_older(
    rows: &mut CowMap<Key, Entry>,
    order: &mut BTreeMap<(i64, u64), Key>,
    horizon: i64,
    out: &mut Vec<Event>,
) {
    while let Some((&(time, seq), _)) = order.first_key_value() {
        if time > horizon {
            break;
        }
        let key = order.remove(&(time, seq)).expect("present");
        if let Some(e) = rows.swap_remove(&key) {
            out.push(retention_delete(e.row));
        }
    }
}

/// Retention-deletes the oldest rows until at most `keep` remain.
fn evict_oldest_until(
    rows: &mut CowMap<Key, Entry>,
    order: &mut BTreeMap<(i64, u64), Key>,
    keep: u64,
    out: &mut Vec<Event>,
) {
    while rows.len() as u64 > keep {
        let Some((_, key)) = order.pop_first() else {
            break;
        };
        if let Some(e) = rows.swap_remove(&key) {
            out.push(retention_delete(e.row));
        }
    }
}

/// A retention delete of `row`.
pub fn retention_delete(row: Row) -> Event {
    Event {
        opcode: Opcode::Delete,
        flags: Flags::Retention,
        row,
        old: None,
    }
}

/// A key seen through the row it comes from, without building it: hashes and compares
/// exactly like the owned [`Key`] (a slice: length, then each value), so maps can be searched
/// with it on the hot path.
pub struct KeyRef<'a> {
    pub row: &'a [Value],
    pub idx: &'a [usize],
}

impl std::hash::Hash for KeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_usize(self.idx.len());
        for &i in self.idx {
            self.row[i].hash(h);
        }
    }
}

impl indexmap::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        key.len() == self.idx.len()
            && self
                .idx
                .iter()
                .zip(key.iter())
                .all(|(&i, v)| self.row[i] == *v)
    }
}

/// True when a key has a null part (refused by keyed windows).
pub fn key_has_null(key: &Key) -> bool {
    key.iter().any(Value::is_null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn key_ref_hashes_and_compares_like_the_owned_key() {
        let row = vec![Value::str("x"), Value::Int64(7), Value::Double(1.5)];
        let idx = [2usize, 0];
        let owned: Key = sluice_event::event::key_of(&row, &idx);
        let b = std::hash::BuildHasherDefault::<FxHasher>::default();
        let r = KeyRef {
            row: &row,
            idx: &idx,
        };
        assert_eq!(b.hash_one(&owned), b.hash_one(&r));
        assert!(indexmap::Equivalent::equivalent(&r, &owned));
        let other: Key = sluice_event::event::key_of(&row, &[0, 2]);
        assert!(!indexmap::Equivalent::equivalent(&r, &other));
    }
}
