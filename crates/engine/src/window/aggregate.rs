//! `window-aggregate`: group by the window's key fields, one output row per group.
//!
//! Additive functions (sum, count, average, standard deviation, weighted average) are kept
//! in O(1) per event. Min and max keep an ordered multiset of values (O(log n) under delete
//! and update); on insert-only input they are running values. Order-dependent functions
//! (first, last, lag, cat) keep the group's member values ordered by the sequence of the
//! event that last touched each member: on insert-only input, first/last/lag/cat need only
//! O(1) or O(n) memory of their own.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash};

use hashbrown::HashTable;
use rustc_hash::FxHasher;
use sluice_event::{Event, FieldType, Key, Opcode, Row, Value};
use sluice_expr::{EventInfo, ExprId, Globals, Program};

use crate::cow::{CowVec, CHUNK};
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

/// Running sums of one group for sum and average: exact over integers, in floating point over
/// doubles and money. Plain old data (32 bytes), so a column of them is written to and read
/// from a snapshot as one block of bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NumAcc {
    pub int: i128,
    pub float: f64,
    /// Twice the number of values summed, plus 1 once a non-integer value was added.
    pub n2: i64,
}

impl NumAcc {
    /// Number of (non-null) values summed.
    #[inline(always)]
    pub fn n(&self) -> i64 {
        self.n2 >> 1
    }

    /// True once a non-integer value was added.
    #[inline(always)]
    pub fn is_float(&self) -> bool {
        self.n2 & 1 != 0
    }
}

/// Running state of one function in one group, for functions without a typed column.
#[derive(Clone, Debug, PartialEq)]
pub enum Acc {
    /// Standard deviation: the sums and the sum of squares.
    Std {
        num: NumAcc,
        sq: f64,
    },
    WAve {
        sw: f64,
        swf: f64,
    },
    /// Multiset of values (min/max/mode/count-distinct under deletes).
    Multi(BTreeMap<Value, u32>),
    /// Last n+1 values (lag on insert-only input), oldest first.
    Ring(std::collections::VecDeque<Value>),
    /// Concatenation (cat on insert-only input).
    Text(String),
}

/// The column of one aggregate field: one entry per group, typed by what the function keeps.
#[derive(Clone, Debug, PartialEq)]
pub enum AccCol {
    /// Nothing per group: count (from the group's count), and order-dependent functions
    /// computed from the group's members.
    Empty,
    /// Sum, average, standard deviation.
    Num(CowVec<NumAcc>),
    /// A running value: min/max/first/last/plain expression on insert-only input.
    Running(CowVec<Value>),
    /// A running double (min/max/first/last/plain expression into a double field, on
    /// insert-only input): the value's bits, or [`NULL_F64`] for null; 8 bytes a group. A value
    /// it cannot hold (another type, or those very bits) turns it into `Running` first.
    RunF64(CowVec<i64>),
    /// A running integer sum (`ESP_aSum` into an int64 field, on insert-only input): the sum,
    /// or [`NULL_SUM`] while every value was null; 8 bytes a group. A value it cannot add
    /// exactly (not an integer, an overflow of i64, a sum of those very bits) turns it into
    /// `Num` first.
    SumI64(CowVec<i64>),
    /// Everything else (weighted average, multisets, lag, cat).
    Other(CowVec<Acc>),
}

/// The null of a [`AccCol::RunF64`] column: a NaN whose payload no arithmetic and no parser
/// makes (a double with these bits widens the column instead).
pub const NULL_F64: i64 = 0x7ff4_5a6e_0000_0001_u64 as i64;

/// The null of a [`AccCol::SumI64`] column (no value summed yet); a sum equal to it widens
/// the column instead.
pub const NULL_SUM: i64 = i64::MIN;

/// The value of a [`AccCol::SumI64`] cell: what `NumOut::SumInt64` gives for the same sums.
#[inline(always)]
pub fn sum_value(cell: i64) -> Value {
    if cell == NULL_SUM {
        Value::Null
    } else {
        Value::Int64(cell)
    }
}

/// [`num_add`] of `v` on a [`AccCol::SumI64`] cell; fails (changing nothing) when the cell
/// cannot hold the exact sum.
#[inline(always)]
fn sum_i64(cur: &mut i64, v: &Value) -> Result<(), ()> {
    let x = match v {
        Value::Null => return Ok(()),
        Value::Int32(x) => *x as i64,
        Value::Int64(x) | Value::Date(x) | Value::Stamp(x) => *x,
        _ => return Err(()),
    };
    let base = if *cur == NULL_SUM { 0 } else { *cur };
    match base.checked_add(x) {
        Some(s) if s != NULL_SUM => {
            *cur = s;
            Ok(())
        }
        _ => Err(()),
    }
}

/// The sums record of a [`AccCol::SumI64`] cell. The count of values is 1 for any group that
/// has one: a sum's value only asks whether it is zero.
fn sum_record(cell: i64) -> NumAcc {
    if cell == NULL_SUM {
        NumAcc::default()
    } else {
        NumAcc {
            int: cell as i128,
            float: 0.0,
            n2: 2,
        }
    }
}

/// The cell of `v` in a [`AccCol::RunF64`] column, if it can hold it.
#[inline(always)]
pub fn f64_cell(v: &Value) -> Option<i64> {
    match v {
        Value::Null => Some(NULL_F64),
        Value::Double(x) if x.to_bits() as i64 != NULL_F64 => Some(x.to_bits() as i64),
        _ => None,
    }
}

/// The value of a [`AccCol::RunF64`] cell.
#[inline(always)]
pub fn f64_value(cell: i64) -> Value {
    if cell == NULL_F64 {
        Value::Null
    } else {
        Value::Double(f64::from_bits(cell as u64))
    }
}

/// [`running_add`] on a [`AccCol::RunF64`] cell, with the same results; fails (changing
/// nothing) on a value the cell cannot hold.
#[inline(always)]
fn running_f64(cur: &mut i64, func: &AggFn, v: &Value) -> Result<(), ()> {
    let x = f64_cell(v).ok_or(())?;
    if x == NULL_F64 {
        // Max, min and first skip nulls; last and plain take them.
        if !matches!(func, AggFn::Max | AggFn::Min | AggFn::First) {
            *cur = NULL_F64;
        }
        return Ok(());
    }
    let take = *cur == NULL_F64
        || match func {
            AggFn::Max => f64::from_bits(x as u64)
                .total_cmp(&f64::from_bits(*cur as u64))
                .is_gt(),
            AggFn::Min => f64::from_bits(x as u64)
                .total_cmp(&f64::from_bits(*cur as u64))
                .is_lt(),
            AggFn::First => false,
            _ => true,
        };
    if take {
        *cur = x;
    }
    Ok(())
}

impl AccCol {
    /// The column kept for `f`.
    pub fn for_field(f: &AggField, insert_only: bool) -> AccCol {
        match &f.func {
            AggFn::Sum if insert_only && f.ty == FieldType::Int64 => {
                AccCol::SumI64(CowVec::default())
            }
            AggFn::Sum | AggFn::Ave => AccCol::Num(CowVec::default()),
            AggFn::Count => AccCol::Empty,
            AggFn::Max | AggFn::Min | AggFn::First | AggFn::Last | AggFn::Plain if insert_only => {
                if f.ty == FieldType::Double {
                    AccCol::RunF64(CowVec::default())
                } else {
                    AccCol::Running(CowVec::default())
                }
            }
            AggFn::First | AggFn::Last | AggFn::Plain => AccCol::Empty,
            AggFn::Lag(_) | AggFn::Cat(_) if !insert_only => AccCol::Empty,
            _ => AccCol::Other(CowVec::default()),
        }
    }

    /// Appends the entry of a new group.
    fn push_new(&mut self, f: &AggField) {
        match self {
            AccCol::Empty => {}
            AccCol::Num(c) => c.push(NumAcc::default()),
            AccCol::Running(c) => c.push(Value::Null),
            AccCol::RunF64(c) => c.push(NULL_F64),
            AccCol::SumI64(c) => c.push(NULL_SUM),
            AccCol::Other(c) => c.push(match &f.func {
                AggFn::WAve => Acc::WAve { sw: 0.0, swf: 0.0 },
                AggFn::Std => Acc::Std {
                    num: NumAcc::default(),
                    sq: 0.0,
                },
                AggFn::Lag(_) => Acc::Ring(Default::default()),
                AggFn::Cat(_) => Acc::Text(String::new()),
                _ => Acc::Multi(BTreeMap::new()),
            }),
        }
    }

    fn swap_remove(&mut self, slot: usize) {
        match self {
            AccCol::Empty => {}
            AccCol::Num(c) => {
                c.swap_remove(slot);
            }
            AccCol::Running(c) => {
                c.swap_remove(slot);
            }
            AccCol::RunF64(c) | AccCol::SumI64(c) => {
                c.swap_remove(slot);
            }
            AccCol::Other(c) => {
                c.swap_remove(slot);
            }
        }
    }

    /// Turns a [`AccCol::RunF64`] column into a `Running` one, and a [`AccCol::SumI64`] one
    /// into `Num` (same results).
    pub fn widen(&mut self) {
        match self {
            AccCol::RunF64(c) => {
                *self = AccCol::Running(c.iter().map(|&b| f64_value(b)).collect());
            }
            AccCol::SumI64(c) => *self = AccCol::Num(c.iter().map(|&x| sum_record(x)).collect()),
            _ => {}
        }
    }

    /// An empty column of the same kind.
    pub fn empty_like(&self) -> AccCol {
        match self {
            AccCol::Empty => AccCol::Empty,
            AccCol::Num(_) => AccCol::Num(CowVec::default()),
            AccCol::Running(_) => AccCol::Running(CowVec::default()),
            AccCol::RunF64(_) => AccCol::RunF64(CowVec::default()),
            AccCol::SumI64(_) => AccCol::SumI64(CowVec::default()),
            AccCol::Other(_) => AccCol::Other(CowVec::default()),
        }
    }
}

/// The kind of a one-field integer key column: which [`Value`] variant its numbers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntKey {
    Int32,
    Int64,
    Money,
    Date,
    Stamp,
}

impl IntKey {
    /// The kind for a key field of type `ty`, if it is a number kept as an integer.
    pub fn for_type(ty: FieldType) -> Option<IntKey> {
        match ty {
            FieldType::Int32 => Some(IntKey::Int32),
            FieldType::Int64 => Some(IntKey::Int64),
            FieldType::Money => Some(IntKey::Money),
            FieldType::Date => Some(IntKey::Date),
            FieldType::Stamp => Some(IntKey::Stamp),
            FieldType::Double | FieldType::String => None,
        }
    }

    /// The number of `v` when `v` is of this kind (nulls and other types are not).
    #[inline]
    pub fn of(self, v: &Value) -> Option<i64> {
        match (self, v) {
            (IntKey::Int32, Value::Int32(x)) => Some(i64::from(*x)),
            (IntKey::Int64, Value::Int64(x))
            | (IntKey::Money, Value::Money(x))
            | (IntKey::Date, Value::Date(x))
            | (IntKey::Stamp, Value::Stamp(x)) => Some(*x),
            _ => None,
        }
    }

    /// The value of number `x` (which [`IntKey::of`] gave).
    #[inline]
    pub fn value(self, x: i64) -> Value {
        match self {
            IntKey::Int32 => Value::Int32(x as i32),
            IntKey::Int64 => Value::Int64(x),
            IntKey::Money => Value::Money(x),
            IntKey::Date => Value::Date(x),
            IntKey::Stamp => Value::Stamp(x),
        }
    }
}

/// The group keys by slot. A one-field key of an integer type (int32, int64, money, date,
/// stamp) is kept as its number, 8 bytes a group; any other one-field key as a plain value
/// (24 bytes, no key object to build or compare); wider keys as keys. An integer column that
/// meets a key it cannot hold (a null) becomes a value column first. All kinds hash and
/// compare a key as the one-field [`Key`] holding it does, and are written to a snapshot alike.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyCol {
    Int(IntKey, CowVec<i64>),
    One(CowVec<Value>),
    Many(CowVec<Key>),
}

/// Hashes a value as the one-field key holding it hashes (and as a [`KeyRef`] does).
struct OneKey<'a>(&'a Value);

impl Hash for OneKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_usize(1);
        self.0.hash(h);
    }
}

impl KeyCol {
    /// An empty column for keys with fields of `types`.
    pub fn new(types: &[FieldType]) -> KeyCol {
        match types {
            [ty] => match IntKey::for_type(*ty) {
                Some(k) => KeyCol::Int(k, CowVec::default()),
                None => KeyCol::One(CowVec::default()),
            },
            _ => KeyCol::Many(CowVec::default()),
        }
    }

    /// An empty column of the same kind.
    pub fn empty_like(&self) -> KeyCol {
        match self {
            KeyCol::Int(k, _) => KeyCol::Int(*k, CowVec::default()),
            KeyCol::One(_) => KeyCol::One(CowVec::default()),
            KeyCol::Many(_) => KeyCol::Many(CowVec::default()),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        match self {
            KeyCol::Int(_, c) => c.len(),
            KeyCol::One(c) => c.len(),
            KeyCol::Many(c) => c.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Field `k` of the key in `slot`.
    #[inline]
    pub fn field(&self, slot: usize, k: usize) -> std::borrow::Cow<'_, Value> {
        match self {
            KeyCol::Int(kind, c) => std::borrow::Cow::Owned(kind.value(*c.get(slot))),
            KeyCol::One(c) => std::borrow::Cow::Borrowed(c.get(slot)),
            KeyCol::Many(c) => std::borrow::Cow::Borrowed(&c.get(slot)[k]),
        }
    }

    #[inline]
    fn hash_at(&self, slot: usize) -> u64 {
        match self {
            KeyCol::Int(kind, c) => hash_of(&OneKey(&kind.value(*c.get(slot)))),
            KeyCol::One(c) => hash_of(&OneKey(c.get(slot))),
            KeyCol::Many(c) => hash_of(c.get(slot)),
        }
    }

    /// Calls `f(slot, hash)` for the slots `from..to` in order (`from` on a chunk boundary),
    /// walking the column a chunk at a time.
    fn for_each_hash(&self, from: usize, to: usize, mut f: impl FnMut(usize, u64)) {
        fn walk<T: Clone>(
            c: &CowVec<T>,
            from: usize,
            to: usize,
            hash: impl Fn(&T) -> u64,
            f: &mut impl FnMut(usize, u64),
        ) {
            debug_assert!(from.is_multiple_of(CHUNK));
            let mut slot = from;
            for chunk in c.chunks().skip(from / CHUNK) {
                let take = chunk.len().min(to - slot);
                for x in &chunk[..take] {
                    f(slot, hash(x));
                    slot += 1;
                }
                if slot == to {
                    break;
                }
            }
        }
        match self {
            KeyCol::Int(kind, c) => {
                walk(c, from, to, |&x| hash_of(&OneKey(&kind.value(x))), &mut f)
            }
            KeyCol::One(c) => walk(c, from, to, |x| hash_of(&OneKey(x)), &mut f),
            KeyCol::Many(c) => walk(c, from, to, hash_of, &mut f),
        }
    }

    #[inline]
    fn matches_ref(&self, slot: usize, key: &KeyRef) -> bool {
        match self {
            KeyCol::Int(kind, c) => {
                key.idx.len() == 1 && kind.of(&key.row[key.idx[0]]) == Some(*c.get(slot))
            }
            KeyCol::One(c) => key.idx.len() == 1 && key.row[key.idx[0]] == *c.get(slot),
            KeyCol::Many(c) => indexmap::Equivalent::equivalent(key, c.get(slot)),
        }
    }

    fn matches_key(&self, slot: usize, key: &Key) -> bool {
        match self {
            KeyCol::Int(kind, c) => key.len() == 1 && kind.of(&key[0]) == Some(*c.get(slot)),
            KeyCol::One(c) => key.len() == 1 && key[0] == *c.get(slot),
            KeyCol::Many(c) => c.get(slot) == key,
        }
    }

    fn same(&self, a: usize, b: usize) -> bool {
        match self {
            KeyCol::Int(_, c) => c.get(a) == c.get(b),
            KeyCol::One(c) => c.get(a) == c.get(b),
            KeyCol::Many(c) => c.get(a) == c.get(b),
        }
    }

    /// Appends a key (of the column's width).
    pub fn push(&mut self, key: Key) {
        match self {
            KeyCol::Int(kind, c) => match kind.of(&key[0]) {
                Some(x) => c.push(x),
                None => {
                    self.widen();
                    self.push(key);
                }
            },
            KeyCol::One(c) => c.push(key.into_iter().next().expect("a one-field key")),
            KeyCol::Many(c) => c.push(key),
        }
    }

    /// Turns an integer column into a value column (same keys, same slots, same hashes).
    pub fn widen(&mut self) {
        if let KeyCol::Int(kind, c) = self {
            let kind = *kind;
            *self = KeyCol::One(c.iter().map(|&x| kind.value(x)).collect());
        }
    }

    fn swap_remove(&mut self, slot: usize) {
        match self {
            KeyCol::Int(_, c) => {
                c.swap_remove(slot);
            }
            KeyCol::One(c) => {
                c.swap_remove(slot);
            }
            KeyCol::Many(c) => {
                c.swap_remove(slot);
            }
        }
    }
}

/// Member values of one group, kept for order-dependent functions (first, last, lag, cat,
/// plain expressions) when the input is not insert-only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Members {
    /// Argument values by input key, with the seq of the event that last touched them.
    pub map: FxIndexMap<Key, (u64, Vec<Value>)>,
    /// seq -> input key, ordered.
    pub order: BTreeMap<u64, Key>,
}

/// The state of the groups, column by column: entry `s` of every column belongs to the
/// group in slot `s`. Columns are [`CowVec`]s, so cloning them is a snapshot cut (one
/// reference count per chunk) and encoding them is one pass over each array. A group's
/// output row is not stored: it is computed from its accumulators when it is emitted.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupCols {
    pub keys: KeyCol,
    /// Input rows in the group.
    pub counts: CowVec<i64>,
    /// One column per aggregate field.
    pub accs: Vec<AccCol>,
    /// Present when some function needs the group's members.
    pub members: Option<CowVec<Members>>,
}

impl GroupCols {
    /// Empty columns for `fields`.
    pub fn new(
        key_types: &[FieldType],
        fields: &[AggField],
        insert_only: bool,
        keep_members: bool,
    ) -> GroupCols {
        GroupCols {
            keys: KeyCol::new(key_types),
            counts: CowVec::default(),
            accs: fields
                .iter()
                .map(|f| AccCol::for_field(f, insert_only))
                .collect(),
            members: keep_members.then(CowVec::default),
        }
    }

    /// Empty columns of the same kinds.
    pub fn empty_like(&self) -> GroupCols {
        GroupCols {
            keys: self.keys.empty_like(),
            counts: CowVec::default(),
            accs: self.accs.iter().map(AccCol::empty_like).collect(),
            members: self.members.as_ref().map(|_| CowVec::default()),
        }
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no groups.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn hash_of<Q: Hash + ?Sized>(q: &Q) -> u64 {
    BuildHasherDefault::<FxHasher>::default().hash_one(q)
}

/// Tables of the group index: a key goes to the table that the top byte of its hash, mixed
/// once more, names (the hash's own top bits are the tables' tags and its low bits place a key
/// in its table, so neither may be constant within a table; nor may the choice follow a few
/// bits of the key, as the hash's middle bits do for integers). A table that is full grows by rehashing its keys on the engine's thread: with one
/// table that was every key at once (0.5 s at 10M groups), with 256 it is a 256th. A restore
/// builds the two halves of the tables on two threads.
pub const INDEX_PARTS: usize = 256;

/// The tables of half the index.
const HALF_PARTS: usize = INDEX_PARTS / 2;

/// Which table of the index holds the key of hash `h`.
#[inline(always)]
fn part_of(h: u64) -> usize {
    (h.rotate_left(23).wrapping_mul(0xA076_1D64_78BD_642F) >> 56) as usize
}

type IndexTables = Box<[HashTable<u32>; INDEX_PARTS]>;

/// The slot index of a key column, built by [`Groups::index_keys`].
#[derive(Debug)]
pub struct GroupIndex(IndexTables);

/// Half the tables of a [`GroupIndex`] (the first or the second 128).
#[derive(Debug)]
pub struct IndexHalf(Vec<HashTable<u32>>);

/// The slots of a range of a key column with their hashes, by table of the index: each entry
/// the slot, then the hash's low and high halves (one list a table, so that listing writes to
/// as few places at once as it can).
struct IndexLists(Vec<Vec<[u32; 3]>>);

impl IndexLists {
    /// The lists of the first half of the tables, and of the second.
    fn halves(mut self) -> (IndexLists, IndexLists) {
        let second = self.0.split_off(HALF_PARTS);
        (self, IndexLists(second))
    }
}

/// Where the slots of `n` groups are split between the two threads that list them: on a
/// chunk boundary, so each walks whole chunks.
fn index_split(n: usize) -> usize {
    n / 2 / CHUNK * CHUNK
}

impl GroupIndex {
    /// The index from its two halves (0, then 1), or the first slot, in slot order, whose key
    /// appeared before (a key and its copy are in the same table).
    pub fn from_halves(
        h0: Result<IndexHalf, usize>,
        h1: Result<IndexHalf, usize>,
    ) -> Result<GroupIndex, usize> {
        match (h0, h1) {
            (Ok(a), Ok(b)) => {
                let tables: Vec<HashTable<u32>> = a.0.into_iter().chain(b.0).collect();
                Ok(GroupIndex(
                    tables
                        .into_boxed_slice()
                        .try_into()
                        .expect("two halves make the tables"),
                ))
            }
            (Err(a), Err(b)) => Err(a.min(b)),
            (Err(a), _) | (_, Err(a)) => Err(a),
        }
    }
}

/// Doubles an index table (what `reserve` would do), its keys hashed first in one tight pass
/// and then inserted: the keys of a table are scattered over the whole key column, and a loop
/// that only reads them has many of those cache misses in flight at once, where hashbrown's
/// own rehash takes them one insert at a time (6 ms for a table of 35,000 keys at 10M groups).
fn grow(table: &mut HashTable<u32>, keys: &KeyCol) {
    let entries: Vec<(u64, u32)> = table
        .iter()
        .map(|&s| (keys.hash_at(s as usize), s))
        .collect();
    let mut grown = HashTable::with_capacity(table.capacity() + 1);
    for (h, s) in entries {
        grown.insert_unique(h, s, |&x| keys.hash_at(x as usize));
    }
    *table = grown;
}

fn empty_index() -> IndexTables {
    let tables: Vec<HashTable<u32>> = (0..INDEX_PARTS).map(|_| HashTable::new()).collect();
    tables
        .into_boxed_slice()
        .try_into()
        .expect("INDEX_PARTS tables")
}

/// The groups: their columns and an index from key to slot. Removing a group moves the
/// last group into its slot, so slots stay dense; the slot order depends only on the
/// sequence of events and is what a snapshot records, so a restored window has the same
/// slots. No output depends on it (listings are sorted by key).
#[derive(Clone, Debug)]
pub struct Groups {
    /// By [`part_of`] the key's hash.
    index: IndexTables,
    pub cols: GroupCols,
    last_rows: RowCache,
}

/// The row each group last emitted, by slot. A cache, not state: it is not in snapshots
/// (a restored window starts without it and recomputes a row where it is missing), and it
/// spares computing a group's previous row again for the update event that replaces it.
/// Kept only by windows whose rows are costly to compute (`AggregateWindow::cache_rows`);
/// for the others, computing the previous row costs less than copying every row emitted.
#[derive(Clone, Debug, Default)]
struct RowCache {
    chunks: Vec<Vec<Option<Row>>>,
}

const ROW_CACHE_CHUNK: usize = 1024;

impl RowCache {
    fn take(&mut self, slot: usize) -> Option<Row> {
        self.chunks
            .get_mut(slot / ROW_CACHE_CHUNK)?
            .get_mut(slot % ROW_CACHE_CHUNK)?
            .take()
    }

    fn put(&mut self, slot: usize, row: Row) {
        let c = slot / ROW_CACHE_CHUNK;
        if self.chunks.len() <= c {
            self.chunks.resize_with(c + 1, Vec::new);
        }
        let chunk = &mut self.chunks[c];
        if chunk.is_empty() {
            chunk.resize(ROW_CACHE_CHUNK, None);
        }
        chunk[slot % ROW_CACHE_CHUNK] = Some(row);
    }

    /// Follows a group removal: the last slot's row moves into `slot`.
    fn swap_remove(&mut self, slot: usize, last: usize) {
        let moved = self.take(last);
        self.take(slot);
        if let (Some(row), true) = (moved, slot != last) {
            self.put(slot, row);
        }
    }
}

impl Groups {
    /// The slot index of a key column (see [`Groups::from_parts`]); fails on a key that
    /// appears twice (with its slot, the first in slot order). Built apart so a restore can
    /// build it on other threads while it decodes the other columns
    /// ([`Groups::index_keys_on_two_threads`]).
    pub fn index_keys(keys: &KeyCol) -> Result<GroupIndex, usize> {
        let mid = index_split(keys.len());
        let (a0, a1) = Self::index_lists(keys, 0, mid).halves();
        let (b0, b1) = Self::index_lists(keys, mid, keys.len()).halves();
        GroupIndex::from_halves(
            Self::index_half(keys, [a0, b0], 0),
            Self::index_half(keys, [a1, b1], 1),
        )
    }

    /// [`Groups::index_keys`] on this thread and one more: each lists half the slots, then each
    /// fills half the tables from both lists. The same index, whatever the threads' timing.
    pub fn index_keys_on_two_threads(keys: &KeyCol) -> Result<GroupIndex, usize> {
        let mid = index_split(keys.len());
        let (first, second) = std::thread::scope(|scope| {
            let second = scope.spawn(|| Self::index_lists(keys, mid, keys.len()));
            let first = Self::index_lists(keys, 0, mid);
            (
                first,
                second.join().expect("the index lister does not panic"),
            )
        });
        let ((a0, a1), (b0, b1)) = (first.halves(), second.halves());
        std::thread::scope(|scope| {
            let h1 = scope.spawn(|| Self::index_half(keys, [a1, b1], 1));
            let h0 = Self::index_half(keys, [a0, b0], 0);
            GroupIndex::from_halves(h0, h1.join().expect("the index builder does not panic"))
        })
    }

    /// The slots `from..to` of a key column with their hashes, listed by the table of the index
    /// each goes to, in slot order: one pass over the keys, a chunk at a time.
    fn index_lists(keys: &KeyCol, from: usize, to: usize) -> IndexLists {
        let share = (to - from) / INDEX_PARTS;
        let guess = share + share / 16 + 16;
        let mut lists: Vec<Vec<[u32; 3]>> = (0..INDEX_PARTS)
            .map(|_| Vec::with_capacity(guess))
            .collect();
        keys.for_each_hash(from, to, |slot, h| {
            lists[part_of(h)].push([slot as u32, h as u32, (h >> 32) as u32]);
        });
        IndexLists(lists)
    }

    /// Half `half` (0 or 1) of the slot index from the lists of its tables, from the first and
    /// from the second part of the slots: table by table (so that each table is in the cache
    /// while its keys go in), keys inserted in slot order; fails on the first key of the half,
    /// in slot order, that appeared before (with its slot). Each table's lists are freed once
    /// it is filled, so the next tables can take their memory (not new memory, which costs its
    /// first write).
    fn index_half(
        keys: &KeyCol,
        mut lists: [IndexLists; 2],
        half: usize,
    ) -> Result<IndexHalf, usize> {
        let base = half * HALF_PARTS;
        let mut first_twice: Option<usize> = None;
        let tables = (0..HALF_PARTS)
            .map(|i| {
                let part = base + i;
                let [l0, l1] = &mut lists;
                let ours = [std::mem::take(&mut l0.0[i]), std::mem::take(&mut l1.0[i])];
                let len = ours[0].len() + ours[1].len();
                // Below the length at which `insert` grows this table, as a table that got
                // there by inserts is: else every table would grow at its next insert, all
                // in the first blocks after the restore.
                if len == 0 {
                    return HashTable::new();
                }
                let cap = len * 2 * INDEX_PARTS / (INDEX_PARTS + part) + 1;
                let mut table = HashTable::with_capacity(cap);
                'fill: for l in &ours {
                    for &[slot, lo, hi] in l {
                        let slot = slot as usize;
                        let h = u64::from(hi) << 32 | u64::from(lo);
                        let entry = table.entry(
                            h,
                            |&s: &u32| keys.same(s as usize, slot),
                            |&s: &u32| keys.hash_at(s as usize),
                        );
                        match entry {
                            hashbrown::hash_table::Entry::Occupied(_) => {
                                // The table's first, in slot order; the half's is the least.
                                first_twice = Some(first_twice.map_or(slot, |f| f.min(slot)));
                                break 'fill;
                            }
                            hashbrown::hash_table::Entry::Vacant(v) => {
                                v.insert(slot as u32);
                            }
                        }
                    }
                }
                table
            })
            .collect();
        match first_twice {
            Some(slot) => Err(slot),
            None => Ok(IndexHalf(tables)),
        }
    }

    /// Groups from columns and the index of their key column.
    pub fn from_parts(index: GroupIndex, cols: GroupCols) -> Groups {
        Groups {
            index: index.0,
            cols,
            last_rows: RowCache::default(),
        }
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.cols.len()
    }

    /// True when there are no groups.
    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// The slot of the group whose key is `key` projected from a row.
    #[inline]
    fn find(&self, key: &KeyRef) -> Option<usize> {
        let keys = &self.cols.keys;
        let h = hash_of(key);
        self.index[part_of(h)]
            .find(h, |&s| keys.matches_ref(s as usize, key))
            .map(|&s| s as usize)
    }

    /// The slot of the group `key`.
    fn find_key(&self, key: &Key) -> Option<usize> {
        let keys = &self.cols.keys;
        let h = hash_of(key);
        self.index[part_of(h)]
            .find(h, |&s| keys.matches_key(s as usize, key))
            .map(|&s| s as usize)
    }

    /// Adds a group and returns its slot.
    fn insert(&mut self, key: Key, fields: &[AggField]) -> usize {
        let slot = self.cols.len();
        let h = hash_of(&key);
        self.cols.keys.push(key);
        self.cols.counts.push(0);
        for (col, f) in self.cols.accs.iter_mut().zip(fields) {
            col.push_new(f);
        }
        if let Some(m) = &mut self.cols.members {
            m.push(Members::default());
        }
        let keys = &self.cols.keys;
        let part = part_of(h);
        let table = &mut self.index[part];
        // Keys spread evenly over the tables, so left to grow when full they would all
        // rehash in the same block (every key at once). Table `part` doubles once it is
        // between half full and full, by its number, so at most about one table in 256 grows
        // per 1/256 of the way between two sizes.
        let cap = table.capacity();
        if table.len() >= cap / 2 + cap * part / (2 * INDEX_PARTS) {
            grow(table, keys);
        }
        table.insert_unique(h, slot as u32, |&s| keys.hash_at(s as usize));
        slot
    }

    /// Removes the group in `slot`; the last group moves into it.
    fn remove(&mut self, slot: usize) {
        let keys = &self.cols.keys;
        let last = keys.len() - 1;
        let h = keys.hash_at(slot);
        let entry = self.index[part_of(h)]
            .find_entry(h, |&s| s as usize == slot)
            .unwrap_or_else(|_| panic!("group slot {slot} is indexed"));
        entry.remove();
        if slot != last {
            let h = keys.hash_at(last);
            let moved = self.index[part_of(h)]
                .find_mut(h, |&s| s as usize == last)
                .expect("the last group is indexed");
            *moved = slot as u32;
        }
        self.last_rows.swap_remove(slot, last);
        self.cols.keys.swap_remove(slot);
        self.cols.counts.swap_remove(slot);
        for col in &mut self.cols.accs {
            col.swap_remove(slot);
        }
        if let Some(m) = &mut self.cols.members {
            m.swap_remove(slot);
        }
    }
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
    pub groups: Groups,
    pub next_seq: u64,
    /// Argument values of the current event, one Vec per field (reused).
    scratch: Vec<Vec<Value>>,
    /// Output row positions in order.
    layout: Vec<Slot>,
    /// True when some argument is an expression (else nothing needs evaluating per event).
    has_exprs: bool,
    /// True when a group's row is costly to compute (some field is computed from the group's
    /// members): the row a group emitted is then kept in the `RowCache` for the update that
    /// replaces it. Otherwise the previous row is computed from the accumulators before the
    /// change, which costs less than keeping a copy of every row emitted.
    cache_rows: bool,
    /// True when every column is a count, running sums or a running value, each shown in
    /// one output field: an event of an existing group then changes the columns and builds
    /// both of its rows in one pass (`add_in_place`).
    one_pass: bool,
}

impl AggregateWindow {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        fields: Vec<AggField>,
        group_by: Vec<usize>,
        key_types: &[FieldType],
        width: usize,
        out_keys: Vec<usize>,
        input_keys: Vec<usize>,
        insert_only: bool,
        program: Program,
        globals: Globals,
    ) -> AggregateWindow {
        let keep_members = fields.iter().any(|f| f.func.needs_members(insert_only));
        debug_assert_eq!(key_types.len(), out_keys.len());
        let cols = GroupCols::new(key_types, &fields, insert_only, keep_members);
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
            layout[f.out_pos] = match (&f.func, &cols.accs[i]) {
                (AggFn::Count, AccCol::Empty) => Slot::Count(f.ty),
                (AggFn::Ave, AccCol::Num(_)) if f.ty == FieldType::Double => {
                    Slot::Num(i, NumOut::AveDouble)
                }
                (AggFn::Sum, AccCol::Num(_) | AccCol::SumI64(_)) if f.ty == FieldType::Int64 => {
                    Slot::Num(i, NumOut::SumInt64)
                }
                (_, AccCol::Num(_)) => Slot::Num(i, NumOut::Any(f.ty)),
                (_, AccCol::Running(_) | AccCol::RunF64(_)) => Slot::Running(i, f.ty),
                _ => Slot::Field(i),
            };
        }
        let cache_rows = layout.iter().any(|s| matches!(s, Slot::Field(_)));
        // `add_in_place` changes each column from the layout's slot of its field: every
        // column must have exactly one.
        let one_pass = !cache_rows
            && !keep_members
            && cols.accs.iter().enumerate().all(|(i, col)| {
                let uses = layout
                    .iter()
                    .filter(|s| matches!(s, Slot::Num(j, _) | Slot::Running(j, _) if *j == i))
                    .count();
                match col {
                    AccCol::Empty => uses == 0,
                    AccCol::Num(_) | AccCol::SumI64(_) | AccCol::Running(_) | AccCol::RunF64(_) => {
                        uses == 1
                    }
                    AccCol::Other(_) => false,
                }
            });
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
            groups: Groups {
                index: empty_index(),
                cols,
                last_rows: RowCache::default(),
            },
            next_seq: 0,
            has_exprs,
            scratch,
            layout,
            cache_rows,
            one_pass,
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
    /// Processes one input event, pushing the group changes it causes. A string group key
    /// may be moved out of the event's row (it is the same string as the group's key): the
    /// event is dropped after this, or handed back unchanged with the error.
    pub fn process(
        &mut self,
        ev: &mut Event,
        now: i64,
        out: &mut Vec<Event>,
    ) -> Result<(), String> {
        let info = EventInfo {
            opcode: ev.opcode,
            flags: ev.flags,
            now_micros: now,
        };
        match ev.opcode {
            Opcode::Insert => {
                self.eval_args(&ev.row, info)?;
                self.add(&mut ev.row, out);
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
                    let Some(slot) = self.groups.find_key(&old_key) else {
                        return Err("update of a row the aggregate has not seen".into());
                    };
                    let old_row = self.old_row(slot);
                    self.eval_args(old, info)?;
                    let old_member = sluice_event::event::key_of(old, &self.input_keys);
                    retract_from(
                        &mut self.groups.cols,
                        slot,
                        &self.fields,
                        &self.scratch,
                        old,
                        &old_member,
                    );
                    self.eval_args(&ev.row, info)?;
                    let seq = self.take_seq();
                    add_to(
                        &mut self.groups.cols,
                        slot,
                        &self.fields,
                        &self.scratch,
                        &ev.row,
                        self.insert_only,
                        &self.input_keys,
                        seq,
                    );
                    out.push(Event::update(self.new_row(slot), old_row));
                } else {
                    self.eval_args(old, info)?;
                    self.retract(old, out)?;
                    self.eval_args(&ev.row, info)?;
                    self.add(&mut ev.row, out);
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

    /// The output row of the group in `slot`, from its key and accumulators.
    fn result_row(&self, slot: usize) -> Row {
        result_row(&self.groups.cols, slot, &self.fields, &self.layout)
    }

    /// The row the group in `slot` emitted last (called before the change under way).
    #[inline]
    fn old_row(&mut self, slot: usize) -> Row {
        if self.cache_rows {
            if let Some(row) = self.groups.last_rows.take(slot) {
                return row;
            }
        }
        self.result_row(slot)
    }

    /// The group's row after a change (remembered as its last row when rows are cached).
    #[inline]
    fn new_row(&mut self, slot: usize) -> Row {
        let row = self.result_row(slot);
        if self.cache_rows {
            self.groups.last_rows.put(slot, row.clone());
        }
        row
    }

    fn add(&mut self, row: &mut [Value], out: &mut Vec<Event>) {
        let seq = self.take_seq();
        let kr = KeyRef {
            row,
            idx: &self.group_by,
        };
        // Hot path: an existing group, found without building its key.
        let (slot, old_row) = match self.groups.find(&kr) {
            Some(slot) if self.one_pass => {
                let (old_row, new_row) = add_in_place(
                    &mut self.groups.cols,
                    slot,
                    &self.fields,
                    &self.scratch,
                    row,
                    &self.layout,
                    &self.group_by,
                );
                out.push(Event::update(new_row, old_row));
                return;
            }
            Some(slot) => (slot, Some(self.old_row(slot))),
            None => {
                let key = sluice_event::event::key_of(row, &self.group_by);
                (self.groups.insert(key, &self.fields), None)
            }
        };
        add_to(
            &mut self.groups.cols,
            slot,
            &self.fields,
            &self.scratch,
            row,
            self.insert_only,
            &self.input_keys,
            seq,
        );
        let new_row = self.new_row(slot);
        out.push(match old_row {
            Some(old_row) => Event::update(new_row, old_row),
            None => Event::insert(new_row),
        });
    }

    fn retract(&mut self, row: &[Value], out: &mut Vec<Event>) -> Result<(), String> {
        let member = sluice_event::event::key_of(row, &self.input_keys);
        let kr = KeyRef {
            row,
            idx: &self.group_by,
        };
        let slot = self
            .groups
            .find(&kr)
            .ok_or("delete of a row the aggregate has not seen")?;
        let old_row = self.old_row(slot);
        retract_from(
            &mut self.groups.cols,
            slot,
            &self.fields,
            &self.scratch,
            row,
            &member,
        );
        if *self.groups.cols.counts.get(slot) == 0 {
            self.groups.remove(slot);
            out.push(Event::delete(old_row));
        } else {
            out.push(Event::update(self.new_row(slot), old_row));
        }
        Ok(())
    }

    /// The current output rows, in slot order.
    pub fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        (0..self.groups.len()).map(|s| self.result_row(s))
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
    g: &mut GroupCols,
    slot: usize,
    fields: &[AggField],
    scratch: &[Vec<Value>],
    row: &[Value],
    insert_only: bool,
    input_keys: &[usize],
    seq: u64,
) {
    *g.counts.get_mut(slot) += 1;
    for ((f, sc), col) in fields.iter().zip(scratch).zip(&mut g.accs) {
        let a0 = arg(f, sc, row, 0).unwrap_or(&Value::Null);
        match col {
            AccCol::Empty => {}
            AccCol::Num(c) => num_add(c.get_mut(slot), a0, 1),
            AccCol::SumI64(c) => {
                if sum_i64(c.get_mut(slot), a0).is_err() {
                    widen_and_add(col, slot, &f.func, a0);
                }
            }
            AccCol::Running(c) => running_add(c.get_mut(slot), &f.func, a0),
            AccCol::RunF64(c) => {
                if running_f64(c.get_mut(slot), &f.func, a0).is_err() {
                    widen_and_add(col, slot, &f.func, a0);
                }
            }
            AccCol::Other(c) => {
                let a1 = arg(f, sc, row, 1);
                acc_add(c.get_mut(slot), &f.func, a0, a1, insert_only)
            }
        }
    }
    if let Some(members) = &mut g.members {
        let member = sluice_event::event::key_of(row, input_keys);
        let vals: Vec<Value> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| arg(f, &scratch[i], row, 0).cloned().unwrap_or_default())
            .collect();
        let m = members.get_mut(slot);
        if let Some((old_seq, _)) = m.map.insert(member.clone(), (seq, vals)) {
            m.order.remove(&old_seq);
        }
        m.order.insert(seq, member);
    }
}

fn retract_from(
    g: &mut GroupCols,
    slot: usize,
    fields: &[AggField],
    scratch: &[Vec<Value>],
    row: &[Value],
    member: &Key,
) {
    for ((f, sc), col) in fields.iter().zip(scratch).zip(&mut g.accs) {
        let a0 = arg(f, sc, row, 0).unwrap_or(&Value::Null);
        match col {
            AccCol::Num(c) => num_add(c.get_mut(slot), a0, -1),
            AccCol::Other(c) => acc_remove(c.get_mut(slot), a0, arg(f, sc, row, 1)),
            // Running values are kept only on insert-only input, which never retracts.
            AccCol::Empty | AccCol::Running(_) | AccCol::RunF64(_) | AccCol::SumI64(_) => {}
        }
    }
    *g.counts.get_mut(slot) -= 1;
    if let Some(members) = &mut g.members {
        let m = members.get_mut(slot);
        if let Some((seq, _)) = m.map.swap_remove(member) {
            m.order.remove(&seq);
        }
    }
}

/// The output row of the group in `slot`.
fn result_row(g: &GroupCols, slot: usize, fields: &[AggField], layout: &[Slot]) -> Row {
    // `collect` over a slice writes in place (no capacity check per field).
    layout
        .iter()
        .map(|s| match *s {
            Slot::Key(k) => g.keys.field(slot, k).into_owned(),
            Slot::Count(ty) => count_value(*g.counts.get(slot), ty),
            Slot::Num(i, out) => match &g.accs[i] {
                AccCol::Num(c) => out.value(&fields[i].func, c.get(slot)),
                AccCol::SumI64(c) => sum_value(*c.get(slot)),
                _ => Value::Null,
            },
            Slot::Running(i, ty) => match &g.accs[i] {
                AccCol::Running(c) => fit_ref(c.get(slot), ty),
                AccCol::RunF64(c) => fit(f64_value(*c.get(slot)), ty),
                _ => Value::Null,
            },
            Slot::Field(i) => field_value(g, slot, fields, i),
        })
        .collect()
}

/// Adds `row` to the existing group in `slot` and returns the group's rows before and after,
/// in one pass over the layout: each column is changed at its field's slot, between reading
/// its old and its new value. The same values as [`result_row`] before and after [`add_to`],
/// for windows whose every column has exactly one slot (`AggregateWindow::one_pass`).
///
/// A string key of the new row is moved out of the input `row` (whose key equals the
/// group's: the group was found by it) instead of cloned from the key column: one atomic
/// reference-count increment and one decrement less per event.
fn add_in_place(
    g: &mut GroupCols,
    slot: usize,
    fields: &[AggField],
    scratch: &[Vec<Value>],
    row: &mut [Value],
    layout: &[Slot],
    group_by: &[usize],
) -> (Row, Row) {
    // Values are pushed where they are made (`push_*`): a value built apart and then copied
    // into the row is read back from the stack before its parts are stored, which stalls.
    let mut old = Vec::with_capacity(layout.len());
    let mut new = Vec::with_capacity(layout.len());
    // The output position and key field of the string key to move from the input row.
    let mut moved: Option<(usize, usize)> = None;
    let count = g.counts.get_mut(slot);
    let n = *count;
    *count += 1;
    for s in layout {
        match *s {
            Slot::Key(k) => {
                let field = g.keys.field(slot, k);
                let v: &Value = &field;
                push_clone(&mut old, v);
                if moved.is_none() && matches!(v, Value::String(_)) {
                    // Moved from the input row below, once every argument is read.
                    moved = Some((new.len(), k));
                    new.push(Value::Null);
                } else {
                    push_clone(&mut new, v);
                }
            }
            Slot::Count(ty) => {
                push_count(&mut old, n, ty);
                push_count(&mut new, n + 1, ty);
            }
            Slot::Num(i, out) => {
                let f = &fields[i];
                let col = &mut g.accs[i];
                if let AccCol::SumI64(c) = col {
                    let v = arg(f, &scratch[i], row, 0).unwrap_or(&Value::Null);
                    let cur = c.get_mut(slot);
                    old.push(sum_value(*cur));
                    if sum_i64(cur, v).is_ok() {
                        new.push(sum_value(*cur));
                        continue;
                    }
                    widen_and_add(col, slot, &f.func, v);
                    let AccCol::Num(c) = col else {
                        unreachable!("a widened sum column holds sums records")
                    };
                    out.push(&mut new, &f.func, c.get(slot));
                    continue;
                }
                let AccCol::Num(c) = col else {
                    unreachable!("a slot of running sums shows a column of running sums")
                };
                let a = c.get_mut(slot);
                out.push(&mut old, &f.func, a);
                let v = arg(f, &scratch[i], row, 0).unwrap_or(&Value::Null);
                num_add(a, v, 1);
                out.push(&mut new, &f.func, a);
            }
            Slot::Running(i, ty) => {
                let f = &fields[i];
                let v = arg(f, &scratch[i], row, 0).unwrap_or(&Value::Null);
                let col = &mut g.accs[i];
                if let AccCol::RunF64(c) = col {
                    let cur = c.get_mut(slot);
                    push_fit(&mut old, &f64_value(*cur), ty);
                    if running_f64(cur, &f.func, v).is_ok() {
                        push_fit(&mut new, &f64_value(*cur), ty);
                        continue;
                    }
                    widen_and_add(col, slot, &f.func, v);
                    let AccCol::Running(c) = col else {
                        unreachable!("a widened column holds values")
                    };
                    push_fit(&mut new, c.get(slot), ty);
                    continue;
                }
                let AccCol::Running(c) = col else {
                    unreachable!("a slot of running values shows a column of running values")
                };
                let cur = c.get_mut(slot);
                push_fit(&mut old, cur, ty);
                running_add(cur, &f.func, v);
                push_fit(&mut new, cur, ty);
            }
            Slot::Field(_) => unreachable!("no other aggregate fields in one pass"),
        }
    }
    if let Some((pos, k)) = moved {
        let p = group_by[k];
        new[pos] = match std::mem::take(&mut row[p]) {
            v @ Value::String(_) => v,
            other => {
                // Not expected (the input's key equals the group's); cloned to be safe.
                row[p] = other;
                g.keys.field(slot, k).into_owned()
            }
        };
    }
    (old, new)
}

/// Pushes a copy of `v`.
#[inline(always)]
fn push_clone(row: &mut Vec<Value>, v: &Value) {
    match v {
        Value::String(s) => row.push(Value::String(s.clone())),
        Value::Int64(x) => row.push(Value::Int64(*x)),
        Value::Double(x) => row.push(Value::Double(*x)),
        other => row.push(other.clone()),
    }
}

/// Pushes [`count_value`].
#[inline(always)]
fn push_count(row: &mut Vec<Value>, n: i64, ty: FieldType) {
    if ty == FieldType::Int64 {
        row.push(Value::Int64(n));
    } else {
        row.push(fit_slow(Value::Int64(n), ty));
    }
}

/// Pushes [`fit_ref`].
#[inline(always)]
fn push_fit(row: &mut Vec<Value>, v: &Value, ty: FieldType) {
    match (v, ty) {
        (Value::Null, _) => row.push(Value::Null),
        (Value::Int64(x), FieldType::Int64) => row.push(Value::Int64(*x)),
        (Value::Double(x), FieldType::Double) => row.push(Value::Double(*x)),
        _ => row.push(fit_slow(v.clone(), ty)),
    }
}

/// `ESP_aCount()` as a value of the field's type.
#[inline(always)]
fn count_value(n: i64, ty: FieldType) -> Value {
    if ty == FieldType::Int64 {
        Value::Int64(n)
    } else {
        fit_slow(Value::Int64(n), ty)
    }
}

/// Any other aggregate field `i` of the group in `slot`.
#[inline(never)]
fn field_value(g: &GroupCols, slot: usize, fields: &[AggField], i: usize) -> Value {
    let f = &fields[i];
    let members = g.members.as_ref().map(|m| m.get(slot));
    let count = *g.counts.get(slot);
    fit(
        acc_result(&g.accs[i], slot, &f.func, members, i, count),
        f.ty,
    )
}

/// `v` as a value of the output field's type (null when it does not convert).
#[inline(always)]
fn fit(v: Value, ty: FieldType) -> Value {
    match (&v, ty) {
        (Value::Null, _)
        | (Value::Int64(_), FieldType::Int64)
        | (Value::Double(_), FieldType::Double) => v,
        _ => fit_slow(v, ty),
    }
}

/// [`fit`] of a copy of `v`.
#[inline(always)]
fn fit_ref(v: &Value, ty: FieldType) -> Value {
    match (v, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Int64(x), FieldType::Int64) => Value::Int64(*x),
        (Value::Double(x), FieldType::Double) => Value::Double(*x),
        _ => fit_slow(v.clone(), ty),
    }
}

/// The conversions of [`fit`], out of line.
#[inline(never)]
fn fit_slow(v: Value, ty: FieldType) -> Value {
    if v.field_type() == Some(ty) {
        v
    } else {
        v.coerce(ty).unwrap_or(Value::Null)
    }
}

/// What fills one position of the output row.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    /// The k-th key field (from the input's group-by position k).
    Key(usize),
    /// `ESP_aCount()`, as a value of the field's type.
    Count(FieldType),
    /// Field i, kept in a column of running sums.
    Num(usize, NumOut),
    /// Field i, kept in a column of running values.
    Running(usize, FieldType),
    /// Any other aggregate field i.
    Field(usize),
}

/// The output value of a field kept in running sums.
#[derive(Clone, Copy, Debug)]
pub enum NumOut {
    /// `ESP_aSum` into an int64 field.
    SumInt64,
    /// `ESP_aAve` into a double field (no conversion).
    AveDouble,
    /// Any other, as a value of the field's type.
    Any(FieldType),
}

impl NumOut {
    /// The field's value from the group's sums (`func` is the field's function).
    #[inline(always)]
    fn value(self, func: &AggFn, a: &NumAcc) -> Value {
        match self {
            NumOut::SumInt64 => {
                if a.n() == 0 {
                    Value::Null
                } else if !a.is_float() {
                    i64::try_from(a.int).map_or(Value::Null, Value::Int64)
                } else {
                    fit_slow(num_value(a.int, a.float, true), FieldType::Int64)
                }
            }
            NumOut::AveDouble => {
                if a.n() == 0 {
                    Value::Null
                } else {
                    Value::Double((a.float + i128_f64(a.int)) / a.n() as f64)
                }
            }
            NumOut::Any(ty) => fit(num_result(func, a), ty),
        }
    }

    /// Pushes [`NumOut::value`].
    #[inline(always)]
    fn push(self, row: &mut Vec<Value>, func: &AggFn, a: &NumAcc) {
        match self {
            NumOut::SumInt64 if a.n() != 0 && !a.is_float() => match i64::try_from(a.int) {
                Ok(x) => row.push(Value::Int64(x)),
                Err(_) => row.push(Value::Null),
            },
            NumOut::AveDouble if a.n() != 0 => {
                row.push(Value::Double((a.float + i128_f64(a.int)) / a.n() as f64))
            }
            _ => row.push(self.value(func, a)),
        }
    }
}

#[inline]
fn num_add(acc: &mut NumAcc, v: &Value, sign: i64) {
    match v {
        Value::Null => return,
        Value::Int32(x) => acc.int += sign as i128 * *x as i128,
        Value::Int64(x) | Value::Date(x) | Value::Stamp(x) => acc.int += sign as i128 * *x as i128,
        other => {
            acc.n2 |= 1;
            if let Some(f) = other.as_f64() {
                acc.float += sign as f64 * f;
            }
        }
    }
    acc.n2 += 2 * sign;
}

/// A value a [`AccCol::RunF64`] or [`AccCol::SumI64`] column cannot hold: the column
/// widens (`Running`, `Num`), then `v` is added there.
#[cold]
#[inline(never)]
fn widen_and_add(col: &mut AccCol, slot: usize, func: &AggFn, v: &Value) {
    col.widen();
    match col {
        AccCol::Running(c) => running_add(c.get_mut(slot), func, v),
        AccCol::Num(c) => num_add(c.get_mut(slot), v, 1),
        _ => {}
    }
}

#[inline(always)]
fn running_add(cur: &mut Value, func: &AggFn, v: &Value) {
    // Doubles and integers in place (the common case), by the same order as `Value::cmp`.
    match (func, &mut *cur, v) {
        (AggFn::Max, Value::Double(c), Value::Double(x)) => {
            if x.total_cmp(c).is_gt() {
                *c = *x;
            }
            return;
        }
        (AggFn::Min, Value::Double(c), Value::Double(x)) => {
            if x.total_cmp(c).is_lt() {
                *c = *x;
            }
            return;
        }
        (AggFn::Max, Value::Int64(c), Value::Int64(x)) => {
            *c = (*c).max(*x);
            return;
        }
        (AggFn::Min, Value::Int64(c), Value::Int64(x)) => {
            *c = (*c).min(*x);
            return;
        }
        _ => {}
    }
    running_add_any(cur, func, v);
}

/// [`running_add`] of other values (out of line).
#[inline(never)]
fn running_add_any(cur: &mut Value, func: &AggFn, v: &Value) {
    match func {
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
    }
}

fn acc_add(acc: &mut Acc, func: &AggFn, v: &Value, a1: Option<&Value>, insert_only: bool) {
    match (acc, func) {
        (Acc::Std { num, sq }, _) => std_add(num, sq, v, 1),
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

fn acc_remove(acc: &mut Acc, v: &Value, a1: Option<&Value>) {
    match acc {
        Acc::Std { num, sq } => std_add(num, sq, v, -1),
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
        // Rings and text are kept only on insert-only input, which never retracts.
        Acc::Ring(_) | Acc::Text(_) => {}
    }
}

/// Adds (`sign` 1) or removes (-1) `v` to a standard deviation's sums.
fn std_add(num: &mut NumAcc, sq: &mut f64, v: &Value, sign: i64) {
    num_add(num, v, sign);
    if let Some(f) = v.as_f64() {
        *sq += sign as f64 * f * f;
    }
}

/// i128 to f64, through i64 when it fits (the direct conversion is a slow library call).
#[inline]
fn i128_f64(x: i128) -> f64 {
    match i64::try_from(x) {
        Ok(v) => v as f64,
        Err(_) => wide_f64(x),
    }
}

/// Kept out of line: otherwise the optimiser merges both paths into the slow library call.
#[cold]
#[inline(never)]
fn wide_f64(x: i128) -> f64 {
    x as f64
}

fn num_value(int: i128, float: f64, is_float: bool) -> Value {
    if is_float {
        Value::Double(float + i128_f64(int))
    } else {
        i64::try_from(int).map_or(Value::Null, Value::Int64)
    }
}

fn num_result(func: &AggFn, a: &NumAcc) -> Value {
    if a.n() == 0 {
        return Value::Null;
    }
    match func {
        AggFn::Sum => num_value(a.int, a.float, a.is_float()),
        AggFn::Ave => Value::Double((a.float + i128_f64(a.int)) / a.n() as f64),
        _ => Value::Null,
    }
}

/// Sample standard deviation from the sums and the sum of squares.
fn std_result(a: &NumAcc, sq: f64) -> Value {
    if a.n() < 2 {
        return Value::Null;
    }
    let s = a.float + i128_f64(a.int);
    let nf = a.n() as f64;
    let var = ((sq - s * s / nf) / (nf - 1.0)).max(0.0);
    Value::Double(var.sqrt())
}

fn acc_result(
    col: &AccCol,
    slot: usize,
    func: &AggFn,
    members: Option<&Members>,
    field: usize,
    count: i64,
) -> Value {
    match col {
        AccCol::Empty => members_result(func, members, field, count),
        AccCol::Num(c) => num_result(func, c.get(slot)),
        AccCol::Running(c) => c.get(slot).clone(),
        AccCol::RunF64(c) => f64_value(*c.get(slot)),
        AccCol::SumI64(c) => sum_value(*c.get(slot)),
        AccCol::Other(c) => other_result(func, c.get(slot)),
    }
}

fn other_result(func: &AggFn, acc: &Acc) -> Value {
    match (func, acc) {
        (AggFn::Std, Acc::Std { num, sq }) => std_result(num, *sq),
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
        (AggFn::Lag(n), Acc::Ring(r)) => {
            if r.len() > *n {
                r[r.len() - 1 - n].clone()
            } else {
                Value::Null
            }
        }
        (AggFn::Cat(_), Acc::Text(t)) => Value::str(t),
        _ => Value::Null,
    }
}

/// Count, and the order-dependent functions over the members (input not insert-only).
fn members_result(func: &AggFn, members: Option<&Members>, field: usize, count: i64) -> Value {
    let member_vals = || {
        members
            .into_iter()
            .flat_map(|m| m.order.values().filter_map(|k| m.map.get(k)))
            .map(move |(_, v)| &v[field])
    };
    match func {
        AggFn::Count => Value::Int64(count),
        AggFn::First => member_vals().next().cloned().unwrap_or_default(),
        AggFn::Last | AggFn::Plain => member_vals().next_back().cloned().unwrap_or_default(),
        AggFn::Lag(n) => {
            let vals: Vec<&Value> = member_vals().collect();
            if vals.len() > *n {
                vals[vals.len() - 1 - n].clone()
            } else {
                Value::Null
            }
        }
        AggFn::Cat(sep) => {
            let parts: Vec<String> = member_vals()
                .filter(|v| !v.is_null())
                .map(|v| v.to_string())
                .collect();
            Value::str(&parts.join(sep))
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index across many groups: every table grows (staggered), groups are removed from
    /// all over, and a slot is found by its key throughout; an index built from the key
    /// column afterwards (as a restore does) finds the same slots.
    #[test]
    fn the_index_finds_every_group_across_growth_and_removals() {
        for ty in [FieldType::Int64, FieldType::String] {
            let mut g = Groups {
                index: empty_index(),
                cols: GroupCols::new(&[ty], &[], true, false),
                last_rows: RowCache::default(),
            };
            let key = |i: u64| -> Key {
                let v = if ty == FieldType::Int64 {
                    Value::Int64(i as i64 * 7 - 5000)
                } else {
                    Value::str(&format!("k{i}"))
                };
                std::iter::once(v).collect()
            };
            let n = 150_000u64;
            let mut live: Vec<u64> = Vec::new();
            let mut caps = std::collections::BTreeSet::new();
            for i in 0..n {
                let slot = g.insert(key(i), &[]);
                assert_eq!(slot, live.len());
                live.push(i);
                if i % 1000 == 999 {
                    caps.insert(g.index.iter().map(|t| t.capacity()).min());
                }
                // Now and then a group goes: the last one moves into its slot.
                if i % 3 == 2 {
                    let slot = (i as usize * 7919) % live.len();
                    g.remove(slot);
                    live.swap_remove(slot);
                }
            }
            assert!(caps.len() > 3, "the tables grew");
            assert_eq!(g.len(), live.len());
            for (slot, &i) in live.iter().enumerate() {
                assert_eq!(g.find_key(&key(i)), Some(slot), "key {i}");
            }
            for i in (0..n).filter(|i| i % 3 == 2).take(1000) {
                if !live.contains(&i) {
                    assert_eq!(g.find_key(&key(i)), None, "removed key {i}");
                }
            }
            let rebuilt = Groups::from_parts(
                Groups::index_keys(&g.cols.keys).expect("no key twice"),
                g.cols.clone(),
            );
            // As a restore builds it: two threads list half the keys each, then fill half the
            // tables each; the same tables, table by table, as the build on one thread.
            let threaded = Groups::from_parts(
                Groups::index_keys_on_two_threads(&g.cols.keys).expect("no key twice"),
                g.cols.clone(),
            );
            for (slot, &i) in live.iter().enumerate() {
                assert_eq!(rebuilt.find_key(&key(i)), Some(slot), "rebuilt, key {i}");
                assert_eq!(threaded.find_key(&key(i)), Some(slot), "threaded, key {i}");
            }
            for (a, b) in rebuilt.index.iter().zip(threaded.index.iter()) {
                assert_eq!(a.capacity(), b.capacity());
                assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
            }
            // Rebuilt tables are below the length at which an insert grows them, as tables
            // grown by inserts are: no burst of growth after a restore.
            for index in [&g.index, &rebuilt.index] {
                for (part, t) in index.iter().enumerate() {
                    let cap = t.capacity();
                    assert!(t.len() <= cap / 2 + cap * part / (2 * INDEX_PARTS));
                }
            }
        }
    }

    #[test]
    fn a_one_value_key_hashes_as_its_key_and_its_row_view() {
        let row = vec![Value::Int64(3), Value::str("x")];
        for i in 0..2 {
            let key: Key = sluice_event::event::key_of(&row, &[i]);
            let view = KeyRef {
                row: &row,
                idx: &[i],
            };
            assert_eq!(hash_of(&OneKey(&row[i])), hash_of(&key));
            assert_eq!(hash_of(&OneKey(&row[i])), hash_of(&view));
        }
    }

    /// An engine of one insert-only source into aggregates of every column kind and output
    /// type that one pass covers, with its aggregates' `one_pass` and `cache_rows` set.
    fn one_pass_engine(one_pass: bool, cache_rows: bool) -> crate::Engine {
        let xml = "<project name='p' pubsub='none'><contqueries><contquery name='cq'><windows>\
            <window-source name='s' insert-only='true' index='pi_EMPTY'>\
              <schema-string>id*:int64,g:string,i:int32,l:int64,d:double,t:string</schema-string>\
            </window-source>\
            <window-aggregate name='a'>\
              <schema-string>g*:string,cnt:int64,cnt32:int32,si:int64,sdi:int64,sd:double,sl:double,\
                av:double,avi:int64,mx:double,mxi:int64,mn:string,fi:int64,la:double,\
                s2:int64,mxm:money</schema-string>\
              <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aCount()</field-expr>\
                <field-expr>ESP_aSum(i)</field-expr><field-expr>ESP_aSum(d)</field-expr>\
                <field-expr>ESP_aSum(d)</field-expr><field-expr>ESP_aSum(l)</field-expr>\
                <field-expr>ESP_aAve(l)</field-expr><field-expr>ESP_aAve(d)</field-expr>\
                <field-expr>ESP_aMax(d)</field-expr>\
                <field-expr>ESP_aMax(i)</field-expr><field-expr>ESP_aMin(t)</field-expr>\
                <field-expr>ESP_aFirst(l)</field-expr><field-expr>ESP_aLast(d)</field-expr>\
                <field-expr>ESP_aSum(l * 2)</field-expr><field-expr>ESP_aMax(d)</field-expr></output>\
            </window-aggregate>\
            <window-aggregate name='b'>\
              <schema-string>g*:string,i*:int32,cnt:int64,si:int64,mn:double,mg:string</schema-string>\
              <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(l)</field-expr>\
                <field-expr>ESP_aMin(d)</field-expr><field-expr>ESP_aMax(g)</field-expr></output>\
            </window-aggregate>\
            <window-aggregate name='c'>\
              <schema-string>l*:int64,cnt:int64,sd:double,mx:double,mi:double,ld:double</schema-string>\
              <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(d)</field-expr>\
                <field-expr>ESP_aMax(d)</field-expr><field-expr>ESP_aMax(i)</field-expr>\
                <field-expr>ESP_aLast(d)</field-expr></output>\
            </window-aggregate>\
            </windows><edges><edge source='s' target='a'/><edge source='s' target='b'/>\
              <edge source='s' target='c'/></edges>\
            </contquery></contqueries></project>";
        let spec = sluice_model::parse_project(xml, &|_| None).expect("model parses");
        let mut e = crate::Engine::new(&spec).expect("model compiles");
        // c: grouped by an integer (the key column of numbers, widened by the null group);
        // running doubles, one fed integers (its column widens to values at the first).
        for name in ["a", "b", "c"] {
            let w = e.window("cq", name).expect("aggregate window");
            e.observe(w, true);
            let crate::window::WindowImpl::Aggregate(a) = &mut e.node_mut(w).imp else {
                panic!("an aggregate window")
            };
            assert!(a.one_pass, "window {name} qualifies for one pass");
            a.one_pass = one_pass;
            a.cache_rows = cache_rows;
        }
        e
    }

    #[test]
    fn one_pass_gives_the_rows_of_the_general_path() {
        let mut engines = [
            one_pass_engine(true, false),
            one_pass_engine(false, false),
            one_pass_engine(false, true),
        ];
        let mut sinks: [crate::CollectSink; 3] = Default::default();
        let mut x = 0x5EEDu64;
        let mut next = move |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for block in 0..200 {
            let events: Vec<Event> = (0..1 + next(6))
                .map(|k| {
                    let maybe = |v: Value, r: u64| if r == 0 { Value::Null } else { v };
                    let big = if next(10) == 0 { 1i64 << 50 } else { 1 };
                    Event::insert(vec![
                        Value::Int64(block * 10 + k as i64),
                        Value::str(&format!("g{}", next(5))),
                        maybe(Value::Int32(next(200) as i32 - 100), next(8)),
                        maybe(Value::Int64(big * (next(1000) as i64 - 500)), next(8)),
                        // Now and then a double with the bits a column of running doubles
                        // keeps for null: that column widens to values.
                        if next(60) == 0 {
                            Value::Double(f64::from_bits(NULL_F64 as u64))
                        } else {
                            maybe(Value::Double(next(4000) as f64 / 8.0 - 250.0), next(8))
                        },
                        maybe(Value::str(&format!("t{}", next(30))), next(8)),
                    ])
                })
                .collect();
            for (e, sink) in engines.iter_mut().zip(&mut sinks) {
                let s = e.window("cq", "s").expect("source");
                let block = sluice_event::EventBlock::new(sluice_event::MsgId(0), events.clone());
                e.inject(s, block, 0, sink).expect("inject");
            }
        }
        let shown = |s: &crate::CollectSink| format!("{:?}", s.outputs);
        assert!(sinks.iter().all(|s| s.bad.is_empty()), "{:?}", sinks[0].bad);
        assert!(sinks[0].outputs.len() >= 400);
        assert_eq!(shown(&sinks[0]), shown(&sinks[1]));
        assert_eq!(shown(&sinks[0]), shown(&sinks[2]));
        // Widened columns restore into a fresh engine's typed ones (widening as they decode).
        let files = engines[0].snapshot_windows();
        let mut fresh = one_pass_engine(true, false);
        fresh.restore_windows(&files).expect("restore");
        assert_eq!(fresh.snapshot_windows(), files);
        let c = fresh.window("cq", "c").expect("window c");
        let crate::window::WindowImpl::Aggregate(a) = &fresh.node(c).imp else {
            panic!("an aggregate window")
        };
        assert!(
            matches!(a.groups.cols.keys, KeyCol::One(_)),
            "the null group widened the keys"
        );
        assert!(
            a.groups
                .cols
                .accs
                .iter()
                .all(|c| !matches!(c, AccCol::RunF64(_))),
            "integers and the null bits widened the running doubles"
        );
        // Window a: `ESP_aSum(i)` (int32 values) stays a column of 8-byte sums; `ESP_aSum(d)`
        // into an int64 field widened to sums records at its first double, before and after
        // the restore.
        for e in [&engines[0], &fresh] {
            let w = e.window("cq", "a").expect("window a");
            let crate::window::WindowImpl::Aggregate(a) = &e.node(w).imp else {
                panic!("an aggregate window")
            };
            assert!(matches!(a.groups.cols.accs[2], AccCol::SumI64(_)));
            assert!(matches!(a.groups.cols.accs[3], AccCol::Num(_)));
        }
    }
}
