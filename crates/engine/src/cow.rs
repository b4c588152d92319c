//! [`CowMap`]: the insertion-ordered hash map of window state, split into shards that are
//! shared copy-on-write, so that a consistent snapshot of a window costs one reference-count
//! increment per shard instead of a copy of the state.
//!
//! Taking a snapshot ([`Clone::clone`]) shares every shard. The first change to a shard
//! afterwards copies that shard only (`Arc::make_mut`), and the shard holds its values behind
//! `Arc`s too, so copying a shard copies keys and pointers, not rows: an event that meets a
//! shared shard waits for at most [`SHARD_TARGET`] pointer copies plus a copy of the one value
//! it changes. Shards double when the map grows past [`SHARD_TARGET`] entries per shard.
//!
//! Iteration order is shard by shard, insertion order within a shard (with `swap_remove`
//! semantics). It depends only on the sequence of operations and the shard count, which a
//! snapshot records, so a restored map iterates exactly as the original. No output of the
//! engine depends on this order (listings are sorted by key).

use std::hash::{BuildHasher, BuildHasherDefault, Hash};
use std::sync::Arc;

use rustc_hash::FxHasher;

use crate::state::FxIndexMap;

/// Entries per shard before the shard count doubles.
pub const SHARD_TARGET: usize = 128;

/// Shards per group: a snapshot shares groups, and a first change copies one group's
/// pointers and one shard's pointers.
const GROUP: usize = 256;

type Shard<K, V> = FxIndexMap<K, Arc<V>>;
/// A group of shards, shared as one.
type Group<K, V> = Arc<Vec<Arc<Shard<K, V>>>>;

/// The shards, two levels deep so that sharing them all costs one reference count per group
/// (a 10-million-entry map has about 300 groups).
struct Shards<K, V> {
    groups: Vec<Group<K, V>>,
    n: usize,
}

impl<K, V> Clone for Shards<K, V> {
    fn clone(&self) -> Self {
        Shards {
            groups: self.groups.clone(),
            n: self.n,
        }
    }
}

impl<K, V> std::fmt::Debug for Shards<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shards({})", self.n)
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Shards<K, V> {
    fn new(n: usize) -> Self {
        Self::from_maps((0..n).map(|_| FxIndexMap::default()).collect())
    }

    fn from_maps(maps: Vec<Shard<K, V>>) -> Self {
        let n = maps.len();
        let mut groups = Vec::with_capacity(n.div_ceil(GROUP));
        let mut it = maps.into_iter().map(Arc::new).peekable();
        while it.peek().is_some() {
            groups.push(Arc::new(it.by_ref().take(GROUP).collect()));
        }
        Shards { groups, n }
    }

    fn get(&self, i: usize) -> &Shard<K, V> {
        &self.groups[i / GROUP][i % GROUP]
    }

    fn get_mut(&mut self, i: usize) -> &mut Shard<K, V> {
        Arc::make_mut(&mut Arc::make_mut(&mut self.groups[i / GROUP])[i % GROUP])
    }

    fn iter(&self) -> impl Iterator<Item = &Shard<K, V>> {
        self.groups.iter().flat_map(|g| g.iter().map(|s| &**s))
    }

    fn into_maps(self) -> impl Iterator<Item = Shard<K, V>> {
        self.groups
            .into_iter()
            .flat_map(|g| Arc::try_unwrap(g).unwrap_or_else(|a| (*a).clone()))
            .map(|s| Arc::try_unwrap(s).unwrap_or_else(|a| (*a).clone()))
    }
}

/// A copy-on-write sharded insertion-ordered map (see the module documentation).
#[derive(Debug)]
pub struct CowMap<K, V> {
    shards: Shards<K, V>,
    len: usize,
}

impl<K, V> Clone for CowMap<K, V> {
    /// Shares every shard: O(groups of shards), whatever the size of the map.
    fn clone(&self) -> Self {
        CowMap {
            shards: self.shards.clone(),
            len: self.len,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Default for CowMap<K, V> {
    fn default() -> Self {
        CowMap {
            shards: Shards::new(1),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone + PartialEq> PartialEq for CowMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.shards.n == other.shards.n && self.iter().eq(other.iter())
    }
}

/// The value out of its `Arc`, copied only when a snapshot still shares it.
fn unwrap_or_clone<V: Clone>(v: Arc<V>) -> V {
    Arc::try_unwrap(v).unwrap_or_else(|a| (*a).clone())
}

fn shard_of<Q: Hash + ?Sized>(key: &Q, shards: usize) -> usize {
    if shards == 1 {
        return 0;
    }
    let h = BuildHasherDefault::<FxHasher>::default().hash_one(key);
    // Mix, then take the top bits: independent of the bits the shard's own table uses.
    let mixed = h.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - shards.trailing_zeros())) as usize
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    /// An empty map with `shards` shards (a power of two; restore uses the recorded count).
    pub fn with_shards(shards: usize) -> Self {
        CowMap {
            shards: Shards::new(shards.max(1).next_power_of_two()),
            len: 0,
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.n
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn shard(&self, key: &K) -> &Shard<K, V> {
        self.shards.get(shard_of(key, self.shards.n))
    }

    fn shard_mut(&mut self, key: &K) -> &mut Shard<K, V> {
        let i = shard_of(key, self.shards.n);
        self.shards.get_mut(i)
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: &K) -> bool {
        self.shard(key).contains_key(key)
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.shard(key).get(key).map(|v| &**v)
    }

    /// The value of `key`, for change (copies its shard first if a snapshot shares it).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.shard_mut(key).get_mut(key).map(Arc::make_mut)
    }

    /// The value of a key given by an equivalent borrowed form (no owned key is built).
    pub fn get_mut_by<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        Q: Hash + indexmap::Equivalent<K> + ?Sized,
    {
        let i = shard_of(key, self.shards.n);
        self.shards.get_mut(i).get_mut(key).map(Arc::make_mut)
    }

    /// Inserts or replaces; returns the previous value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self
            .shard_mut(&key)
            .insert(key, Arc::new(value))
            .map(unwrap_or_clone);
        if old.is_none() {
            self.len += 1;
            self.maybe_grow();
        }
        old
    }

    /// The value of `key`, inserting `make()` first when absent (one lookup).
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        if self.len >= self.shards.n * SHARD_TARGET && !self.contains_key(&key) {
            // This insert grows the map: do it the long way.
            self.insert(key.clone(), make());
            return self.get_mut(&key).expect("just inserted");
        }
        let i = shard_of(&key, self.shards.n);
        let shard = self.shards.get_mut(i);
        match shard.entry(key) {
            indexmap::map::Entry::Occupied(o) => Arc::make_mut(o.into_mut()),
            indexmap::map::Entry::Vacant(v) => {
                self.len += 1;
                Arc::make_mut(v.insert(Arc::new(make())))
            }
        }
    }

    /// Removes `key` (the shard's last entry takes its place).
    pub fn swap_remove(&mut self, key: &K) -> Option<V> {
        let v = self.shard_mut(key).swap_remove(key).map(unwrap_or_clone);
        if v.is_some() {
            self.len -= 1;
        }
        v
    }

    fn maybe_grow(&mut self) {
        if self.len <= self.shards.n * SHARD_TARGET {
            return;
        }
        let n = self.shards.n * 2;
        let mut next: Vec<Shard<K, V>> = (0..n).map(|_| FxIndexMap::default()).collect();
        let old = std::mem::replace(&mut self.shards, Shards::new(1));
        for shard in old.into_maps() {
            for (k, v) in shard {
                let i = shard_of(&k, n);
                next[i].insert(k, v);
            }
        }
        self.shards = Shards::from_maps(next);
    }

    /// Entries in iteration order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (k, &**v)))
    }

    /// Values in iteration order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values().map(|v| &**v))
    }
}

/// Entries per chunk of a [`CowVec`].
pub const CHUNK: usize = 2048;

/// Chunks per group of a large [`CowVec`]: a snapshot shares groups, so it costs one
/// reference count per 524,288 entries of each large column.
const GROUP_CHUNKS: usize = 256;

/// Entries from which a [`CowVec`] keeps its chunks in groups (4,194,304: eight groups).
pub const GROUPED_FROM: usize = CHUNK * GROUP_CHUNKS * 8;

/// A chunk of entries, shared copy-on-write.
type Chunk<T> = Arc<Vec<T>>;

/// A vector split into chunks of [`CHUNK`] entries that are shared copy-on-write: a clone (a
/// snapshot) shares them, and the first change to a chunk afterwards copies that chunk only.
/// The columns of an aggregate window's state are `CowVec`s, so that a snapshot is a cut of
/// whole arrays that encode in one pass.
///
/// Up to [`GROUPED_FROM`] entries the chunks are one flat list and a clone costs one
/// reference count per chunk. From there on they are kept in groups of [`GROUP_CHUNKS`]
/// shared as one, so a clone costs one reference count per group and the pause of a persist
/// stops growing with the state (docs/benchmarks.md); the price is a second atomic check on
/// every change, which a flat vector, the common case, does not pay.
#[derive(Debug)]
pub struct CowVec<T> {
    chunks: Chunks<T>,
    len: usize,
}

#[derive(Debug)]
enum Chunks<T> {
    Flat(Vec<Chunk<T>>),
    Grouped(Vec<Arc<Vec<Chunk<T>>>>),
}

impl<T> Clone for Chunks<T> {
    fn clone(&self) -> Self {
        match self {
            Chunks::Flat(c) => Chunks::Flat(c.clone()),
            Chunks::Grouped(g) => Chunks::Grouped(g.clone()),
        }
    }
}

impl<T> Clone for CowVec<T> {
    fn clone(&self) -> Self {
        CowVec {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for CowVec<T> {
    fn default() -> Self {
        CowVec {
            chunks: Chunks::Flat(Vec::new()),
            len: 0,
        }
    }
}

impl<T: Clone + PartialEq> PartialEq for CowVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.chunks().zip(other.chunks()).all(|(a, b)| a == b)
    }
}

impl<T: Clone> CowVec<T> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entry `i` (panics when out of range).
    #[inline(always)]
    pub fn get(&self, i: usize) -> &T {
        let c = i / CHUNK;
        match &self.chunks {
            Chunks::Flat(f) => &f[c][i % CHUNK],
            Chunks::Grouped(g) => &g[c / GROUP_CHUNKS][c % GROUP_CHUNKS][i % CHUNK],
        }
    }

    /// Entry `i`, copying its chunk (and, grouped, its group's chunk pointers) first when a
    /// snapshot shares them.
    #[inline(always)]
    pub fn get_mut(&mut self, i: usize) -> &mut T {
        let c = i / CHUNK;
        let chunk = match &mut self.chunks {
            Chunks::Flat(f) => &mut f[c],
            Chunks::Grouped(g) => {
                &mut unique_mut(&mut g[c / GROUP_CHUNKS], GROUP_CHUNKS)[c % GROUP_CHUNKS]
            }
        };
        &mut unique_mut(chunk, CHUNK)[i % CHUNK]
    }

    /// Appends a chunk (the vector ends on a chunk boundary), grouping the chunks when the
    /// vector reaches [`GROUPED_FROM`].
    fn add_chunk(&mut self, chunk: Chunk<T>) {
        debug_assert!(self.len.is_multiple_of(CHUNK));
        if let Chunks::Flat(f) = &mut self.chunks {
            if self.len < GROUPED_FROM {
                f.push(chunk);
                return;
            }
            let mut groups = Vec::with_capacity(f.len() / GROUP_CHUNKS + 1);
            let mut flat = std::mem::take(f).into_iter().peekable();
            while flat.peek().is_some() {
                groups.push(Arc::new(flat.by_ref().take(GROUP_CHUNKS).collect()));
            }
            self.chunks = Chunks::Grouped(groups);
        }
        let Chunks::Grouped(g) = &mut self.chunks else {
            unreachable!("grouped above")
        };
        if self.len.is_multiple_of(CHUNK * GROUP_CHUNKS) {
            g.push(Arc::new(Vec::with_capacity(GROUP_CHUNKS)));
        }
        let last = g.last_mut().expect("a group");
        unique_mut(last, GROUP_CHUNKS).push(chunk);
    }

    /// The last chunk, to change (the vector is not empty).
    fn last_chunk(&mut self) -> &mut Vec<T> {
        let chunk = match &mut self.chunks {
            Chunks::Flat(f) => f.last_mut(),
            Chunks::Grouped(g) => {
                let last = g.last_mut().expect("a group");
                unique_mut(last, GROUP_CHUNKS).last_mut()
            }
        };
        unique_mut(chunk.expect("a chunk"), CHUNK)
    }

    /// Appends an entry.
    pub fn push(&mut self, v: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.add_chunk(Arc::new(Vec::with_capacity(CHUNK)));
        }
        self.last_chunk().push(v);
        self.len += 1;
    }

    /// Appends a whole chunk (decoding): the vector must end on a chunk boundary and `v`
    /// hold at most [`CHUNK`] entries.
    pub fn push_chunk(&mut self, mut v: Vec<T>) {
        assert!(
            self.len.is_multiple_of(CHUNK) && v.len() <= CHUNK,
            "push_chunk off a chunk boundary"
        );
        if v.is_empty() {
            return;
        }
        v.reserve_exact(CHUNK - v.len());
        let n = v.len();
        self.add_chunk(Arc::new(v));
        self.len += n;
    }

    /// Removes and returns the last entry.
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let chunk = self.last_chunk();
        let v = chunk.pop().expect("chunks are never empty");
        if chunk.is_empty() {
            match &mut self.chunks {
                Chunks::Flat(f) => {
                    f.pop();
                }
                Chunks::Grouped(g) => {
                    let last = g.last_mut().expect("a group");
                    let group = unique_mut(last, GROUP_CHUNKS);
                    group.pop();
                    if group.is_empty() {
                        g.pop();
                    }
                }
            }
        }
        self.len -= 1;
        Some(v)
    }

    /// Removes entry `i`, moving the last entry into its place.
    pub fn swap_remove(&mut self, i: usize) -> T {
        assert!(
            i < self.len,
            "swap_remove index {i} out of range {}",
            self.len
        );
        let last = self.pop().expect("not empty");
        if i == self.len {
            last
        } else {
            std::mem::replace(self.get_mut(i), last)
        }
    }

    /// The entries in order, a chunk at a time.
    pub fn chunks(&self) -> Box<dyn Iterator<Item = &[T]> + '_> {
        match &self.chunks {
            Chunks::Flat(f) => Box::new(f.iter().map(|c| c.as_slice())),
            Chunks::Grouped(g) => Box::new(g.iter().flat_map(|g| g.iter().map(|c| c.as_slice()))),
        }
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks().flatten()
    }

    /// Reference counts a clone of this vector takes: its chunks, or its groups of chunks.
    #[cfg(test)]
    pub fn shared_parts(&self) -> usize {
        match &self.chunks {
            Chunks::Flat(f) => f.len(),
            Chunks::Grouped(g) => g.len(),
        }
    }
}

/// A chunk or a group, to change: copied first when a snapshot shares it (keeping
/// `capacity`: the last one may still grow). The common case (nothing shared) stays inline:
/// two plain loads of the counts and one atomic check, instead of a call to
/// `Arc::make_mut`.
#[inline(always)]
fn unique_mut<T: Clone>(c: &mut Arc<Vec<T>>, capacity: usize) -> &mut Vec<T> {
    // A strong count of 1 means no snapshot holds it, and only a holder could add a
    // reference (a snapshot on another thread may drop its own meanwhile, never add one to
    // ours); no `Weak` is ever made. So a count of 1 seen here stays 1 and `get_mut` below
    // cannot fail. A chunk is reached only through its group, made unique first, so a
    // snapshot that shares the group shows in the chunk's count from then on.
    if Arc::strong_count(c) != 1 || Arc::weak_count(c) != 0 {
        unshare(c, capacity);
    }
    Arc::get_mut(c).expect("nothing a snapshot shares")
}

/// Copies a chunk or group a snapshot shares.
#[cold]
#[inline(never)]
fn unshare<T: Clone>(c: &mut Arc<Vec<T>>, capacity: usize) {
    if Arc::get_mut(c).is_none() {
        let mut v = Vec::with_capacity(capacity.max(c.len()));
        v.extend_from_slice(c);
        *c = Arc::new(v);
    }
}

impl<T: Clone> FromIterator<T> for CowVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        let mut v = CowVec::default();
        for x in it {
            v.push(x);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_across_growth() {
        let mut m: CowMap<u64, u64> = CowMap::default();
        for i in 0..20_000u64 {
            assert_eq!(m.insert(i, i * 2), None);
        }
        assert!(m.shard_count() > 1);
        assert_eq!(m.len(), 20_000);
        for i in (0..20_000u64).step_by(3) {
            assert_eq!(m.swap_remove(&i), Some(i * 2));
        }
        assert_eq!(m.get(&1), Some(&2));
        assert_eq!(m.get(&3), None);
        *m.get_mut(&1).unwrap() = 7;
        assert_eq!(m.get(&1), Some(&7));
        assert_eq!(m.iter().count(), m.len());
    }

    #[test]
    fn many_shard_groups_freeze_and_change_independently() {
        let mut m: CowMap<u64, u64> = CowMap::default();
        for i in 0..100_000u64 {
            m.insert(i, i);
        }
        assert!(m.shard_count() > GROUP, "several groups of shards");
        let snap = m.clone();
        for i in (0..100_000u64).step_by(7) {
            *m.get_mut(&i).unwrap() += 1;
        }
        m.swap_remove(&3);
        assert!(
            snap.iter().all(|(k, v)| k == v),
            "the snapshot did not move"
        );
        assert_eq!(snap.len(), 100_000);
        assert_eq!(m.get(&7), Some(&8));
        assert_eq!(m.get(&3), None);
        assert_eq!(m.len(), 99_999);
    }

    #[test]
    fn a_clone_is_a_frozen_snapshot() {
        let mut m: CowMap<u64, String> = CowMap::default();
        for i in 0..10_000u64 {
            m.insert(i, i.to_string());
        }
        let snap = m.clone();
        *m.get_mut(&5).unwrap() = "changed".into();
        m.swap_remove(&6);
        m.insert(100_000, "new".into());
        assert_eq!(snap.get(&5).map(String::as_str), Some("5"));
        assert_eq!(snap.get(&6).map(String::as_str), Some("6"));
        assert_eq!(snap.get(&100_000), None);
        assert_eq!(snap.len(), 10_000);
        assert_eq!(m.get(&5).map(String::as_str), Some("changed"));
    }

    #[test]
    fn same_operations_same_order_and_restore_reproduces_it() {
        let ops = |m: &mut CowMap<u64, u64>| {
            for i in 0..9000u64 {
                m.insert(i.wrapping_mul(7919) % 10_007, i);
                if i % 5 == 0 {
                    m.swap_remove(&(i % 10_007));
                }
            }
        };
        let mut a = CowMap::default();
        let mut b = CowMap::default();
        ops(&mut a);
        ops(&mut b);
        assert!(a.iter().eq(b.iter()));
        let mut r: CowMap<u64, u64> = CowMap::with_shards(a.shard_count());
        for (k, v) in a.iter() {
            r.insert(*k, *v);
        }
        assert!(
            a.iter().eq(r.iter()),
            "a restored map iterates like the original"
        );
    }

    #[test]
    fn cow_vec_pushes_removes_and_freezes() {
        let mut v: CowVec<u64> = (0..(CHUNK as u64 * 2 + 5)).collect();
        assert_eq!(v.len(), CHUNK * 2 + 5);
        let frozen = v.clone();
        *v.get_mut(3) = 99;
        assert_eq!(*v.get(3), 99);
        assert_eq!(*frozen.get(3), 3, "the snapshot keeps its value");
        let last = (CHUNK * 2 + 4) as u64;
        assert_eq!(v.swap_remove(1), 1);
        assert_eq!(*v.get(1), last);
        assert_eq!(v.len(), CHUNK * 2 + 4);
        while v.len() > 1 {
            let n = v.len();
            v.swap_remove(n - 1);
        }
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(v.swap_remove(0), 0);
        assert!(v.is_empty());
        assert_eq!(frozen.iter().count(), CHUNK * 2 + 5);
        assert_eq!(
            frozen.iter().copied().collect::<Vec<_>>(),
            (0..last + 1).collect::<Vec<_>>()
        );
    }

    /// Across groups of chunks: against a plain `Vec`, with snapshots taken all along that
    /// must keep their contents whatever the vector does after them.
    #[test]
    fn cow_vec_across_groups_matches_a_vec_and_snapshots_stay_put() {
        let per_group = CHUNK * GROUP_CHUNKS;
        let grouped = |len: usize| {
            if len >= GROUPED_FROM {
                len.div_ceil(per_group)
            } else {
                len.div_ceil(CHUNK)
            }
        };
        let mut v: CowVec<u32> = CowVec::default();
        let mut model: Vec<u32> = Vec::new();
        let mut snaps: Vec<(CowVec<u32>, Vec<u32>)> = Vec::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        // Grow past the grouping threshold and two group boundaries, shrink back across one,
        // then grow again.
        for (round, target) in [
            GROUPED_FROM + per_group + 777,
            GROUPED_FROM + per_group - 3,
            GROUPED_FROM + per_group + CHUNK + 1,
        ]
        .into_iter()
        .enumerate()
        {
            while model.len() != target {
                if model.len() < target {
                    let e = (model.len() as u32) ^ (round as u32) << 28;
                    v.push(e);
                    model.push(e);
                } else {
                    let i = next(model.len());
                    assert_eq!(v.swap_remove(i), model.swap_remove(i));
                }
                if next(400_000) == 0 {
                    snaps.push((v.clone(), model.clone()));
                }
                if !model.is_empty() && next(4) == 0 {
                    let i = next(model.len());
                    *v.get_mut(i) = !model[i];
                    model[i] = !model[i];
                }
            }
            assert_eq!(v.len(), model.len());
            assert_eq!(v.shared_parts(), grouped(model.len()));
            assert!(v.iter().eq(model.iter()), "round {round}");
            assert!(v.chunks().all(|c| !c.is_empty() && c.len() <= CHUNK));
        }
        // Decoding builds a vector chunk by chunk: the same entries, grouped the same way.
        let mut decoded: CowVec<u32> = CowVec::default();
        for c in model.chunks(CHUNK) {
            decoded.push_chunk(c.to_vec());
        }
        assert_eq!(decoded, v);
        assert_eq!(decoded.shared_parts(), grouped(model.len()));
        assert!(snaps.len() >= 5, "snapshots taken along the way");
        for (snap, want) in &snaps {
            assert_eq!(snap.len(), want.len());
            assert!(snap.iter().eq(want.iter()), "a snapshot moved");
        }
        while v.pop().is_some() {}
        assert!(v.is_empty() && v.shared_parts() == 0);
    }
}
