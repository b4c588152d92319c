//! Window state to bytes and back (docs/formats/snapshot.md, "Window files").
//!
//! Encoding is a plain little-endian binary form written in one pass; decoding rebuilds the
//! derived indexes (retention order, member order) from the stored rows. Decoding never
//! touches the live engine: [`crate::Engine::restore_windows`] decodes into a copy and swaps it
//! in only when every window decoded.

use std::collections::BTreeMap;

use sluice_event::{Key, Row, Value};
use sluice_expr::Globals;

use crate::cow::{CowMap, CowVec, CHUNK};
use crate::state::{Entry, KeyedStore};
use crate::window::aggregate::{
    f64_cell, f64_value, Acc, AccCol, AggregateWindow, GroupCols, Groups, IntKey, KeyCol, Members,
    NumAcc,
};
use crate::window::join::{JoinWindow, KeySet};
use crate::window::WindowImpl;

const MAGIC: &[u8; 8] = b"SLWSTATE";

// Aggregate columns of plain old data are written as their memory image, which is the
// little-endian layout the format specifies only on a little-endian machine.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "the snapshot format's plain-old-data columns assume a little-endian machine"
);
/// Version of the window-file encoding that is written.
pub const WINDOW_FILE_VERSION: u16 = 4;
/// The oldest version read: version 4 added the key storage byte and two column kinds
/// (integer sums, running doubles as bits), and a version 3 file decodes as it did.
pub const OLDEST_WINDOW_FILE_VERSION: u16 = 3;

/// Why a window file cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("not a window state file (bad magic)")]
    Magic,
    #[error("window file version {0} is newer than this sluice supports ({WINDOW_FILE_VERSION})")]
    Version(u16),
    #[error("window file version {0} was written by an older sluice (this one reads versions {OLDEST_WINDOW_FILE_VERSION} to {WINDOW_FILE_VERSION}): restore it with the release that wrote it, or rebuild the state by replaying the input")]
    OldVersion(u16),
    #[error("window kind {found} in the file, but the project's window is a {expected} window")]
    Kind { found: u8, expected: &'static str },
    #[error("bad data at offset {offset}: {what}")]
    Bad { offset: usize, what: String },
    #[error("{0} bytes left over after the window state")]
    Trailing(usize),
    #[error("reading the file: {0}")]
    Read(String),
}

fn kind_code(w: &WindowImpl) -> u8 {
    match w {
        WindowImpl::Source(_) => 1,
        WindowImpl::Filter(_) => 2,
        WindowImpl::Compute(_) => 3,
        WindowImpl::Aggregate(_) => 4,
        WindowImpl::Copy(_) => 5,
        WindowImpl::Join(_) => 6,
        WindowImpl::Union(_) => 7,
    }
}

/// A byte writer: into memory, or streaming to a sink in pieces of about [`FLUSH_AT`] bytes.
#[derive(Default)]
pub struct Enc<'a> {
    pub buf: Vec<u8>,
    out: Option<&'a mut dyn std::io::Write>,
    err: Option<std::io::Error>,
}

/// Streaming encoders hand their buffer to the sink once it holds this much.
const FLUSH_AT: usize = 256 * 1024;

impl<'a> Enc<'a> {
    fn streaming(out: &'a mut dyn std::io::Write) -> Enc<'a> {
        Enc {
            buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
            out: Some(out),
            err: None,
        }
    }
    /// Hands what is buffered to the sink (streaming only).
    fn flush(&mut self) {
        if let Some(out) = &mut self.out {
            if self.err.is_none() && !self.buf.is_empty() {
                if let Err(e) = out.write_all(&self.buf) {
                    self.err = Some(e);
                }
            }
            self.buf.clear();
        }
    }
    /// Flushes when the buffer is full enough (streaming only); called between items.
    #[inline]
    fn maybe_flush(&mut self) {
        if self.out.is_some() && self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }
    /// Raw bytes: through the buffer in memory, straight to the sink when streaming.
    fn raw(&mut self, bytes: &[u8]) {
        if self.out.is_some() && bytes.len() >= FLUSH_AT / 4 {
            self.flush();
            if let (Some(out), None) = (&mut self.out, &self.err) {
                if let Err(e) = out.write_all(bytes) {
                    self.err = Some(e);
                }
            }
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("fewer than 2^32 items"));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.i64(x);
            }
            None => self.u8(0),
        }
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.u8(0),
            Value::Int32(x) => {
                self.u8(1);
                self.buf.extend_from_slice(&x.to_le_bytes());
            }
            Value::Int64(x) => {
                self.u8(2);
                self.i64(*x);
            }
            Value::Double(x) => {
                self.u8(3);
                self.u64(x.to_bits());
            }
            Value::Money(x) => {
                self.u8(4);
                self.i64(*x);
            }
            Value::String(s) => {
                self.u8(5);
                self.str(s);
            }
            Value::Date(x) => {
                self.u8(6);
                self.i64(*x);
            }
            Value::Stamp(x) => {
                self.u8(7);
                self.i64(*x);
            }
        }
    }
    fn values(&mut self, vs: &[Value]) {
        self.len(vs.len());
        for v in vs {
            self.value(v);
        }
    }
    /// A copy-on-write map: shard count, entry count, then the entries in iteration order.
    fn cow<V>(&mut self, m: &CowMap<Key, V>, mut each: impl FnMut(&mut Self, &V))
    where
        V: Clone,
    {
        self.u32(m.shard_count() as u32);
        self.u64(m.len() as u64);
        for (k, v) in m.iter() {
            self.values(k);
            each(self, v);
            self.maybe_flush();
        }
    }
    fn store(&mut self, s: &FrozenStore) {
        self.cow(&s.rows, |e, entry| {
            e.values(&entry.row);
            e.u64(entry.seq);
            e.i64(entry.time);
        });
        match &s.retention {
            Some((next_seq, latest, jump_end)) => {
                self.u8(1);
                self.u64(*next_seq);
                self.opt_i64(*latest);
                self.opt_i64(*jump_end);
            }
            None => self.u8(0),
        }
    }
    fn opt_store(&mut self, s: Option<&FrozenStore>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.store(s);
            }
            None => self.u8(0),
        }
    }
    fn globals(&mut self, g: &Globals) {
        self.values(&g.values);
    }
    fn keyed_rows(&mut self, m: &CowMap<Key, Row>) {
        self.cow(m, |e, r| e.values(r));
    }
    fn jk_index(&mut self, m: &CowMap<Key, KeySet>) {
        self.cow(m, |e, set| {
            e.len(set.len());
            for k in set {
                e.values(k);
            }
        });
    }
    fn acc(&mut self, a: &Acc) {
        match a {
            Acc::Std { num, sq } => {
                self.u8(7);
                self.raw(bytemuck::bytes_of(num));
                self.u64(sq.to_bits());
            }
            Acc::WAve { sw, swf } => {
                self.u8(2);
                self.u64(sw.to_bits());
                self.u64(swf.to_bits());
            }
            Acc::Multi(m) => {
                self.u8(3);
                self.u64(m.len() as u64);
                for (v, c) in m {
                    self.value(v);
                    self.u32(*c);
                }
            }
            Acc::Ring(r) => {
                self.u8(5);
                self.len(r.len());
                for v in r {
                    self.value(v);
                }
            }
            Acc::Text(t) => {
                self.u8(6);
                self.str(t);
            }
        }
    }
}

/// A piece of a window file: a buffer and the range of it that holds the file's next bytes.
pub type Piece = (Vec<u8>, std::ops::Range<usize>);

/// Where a decoder gets a file's next piece: it hands back the buffer of the piece before
/// (for reuse) and gets the next one, or `None` at the end of the file.
pub type NextPiece<'s> = &'s mut dyn FnMut(Vec<u8>) -> std::io::Result<Option<Piece>>;

/// A byte reader over a file that arrives in pieces, with file offsets in its errors.
pub struct Dec<'s> {
    /// The current piece; `cur[pos..end]` is not yet read.
    cur: Vec<u8>,
    pos: usize,
    end: usize,
    /// File offset of `cur[start]`.
    start: usize,
    piece_off: usize,
    /// The file's length.
    total: usize,
    next: Option<NextPiece<'s>>,
    /// Where values that straddle two pieces are put together.
    scratch: Vec<u8>,
    /// Column chunks already written through by a prefaulting thread, in decoding order
    /// (large aggregates; see [`prefault`]).
    blanks: Option<std::sync::mpsc::Receiver<Blank>>,
    /// The window-file version (set once the header is read).
    version: u16,
}

type DResult<T> = Result<T, DecodeError>;

impl<'s> Dec<'s> {
    /// A decoder over a file of `total` bytes whose pieces come from `next`.
    fn pieces(total: usize, next: NextPiece<'s>) -> Dec<'s> {
        Dec {
            cur: Vec::new(),
            pos: 0,
            end: 0,
            start: 0,
            piece_off: 0,
            total,
            next: Some(next),
            scratch: Vec::new(),
            blanks: None,
            version: WINDOW_FILE_VERSION,
        }
    }
    /// The file offset of the next byte.
    #[inline]
    fn at(&self) -> usize {
        self.piece_off + (self.pos - self.start)
    }
    /// The rest of the current piece.
    #[inline]
    fn ahead(&self) -> &[u8] {
        &self.cur[self.pos..self.end]
    }
    #[inline]
    fn take(&mut self, n: usize) -> DResult<&[u8]> {
        if n <= self.end - self.pos {
            let s = &self.cur[self.pos..self.pos + n];
            self.pos += n;
            return Ok(s);
        }
        self.take_across(n)
    }
    /// `n` bytes that run past the current piece, put together in `scratch`.
    #[cold]
    fn take_across(&mut self, n: usize) -> DResult<&[u8]> {
        let at = self.at();
        if n > self.total - at {
            return Err(self.truncated(n));
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&self.cur[self.pos..self.end]);
        self.pos = self.end;
        while self.scratch.len() < n {
            if !self.next_piece()? {
                // The file ended before its stated length.
                return Err(DecodeError::Truncated {
                    offset: at,
                    needed: n - self.scratch.len(),
                });
            }
            let k = (n - self.scratch.len()).min(self.end - self.pos);
            self.scratch
                .extend_from_slice(&self.cur[self.pos..self.pos + k]);
            self.pos += k;
        }
        Ok(&self.scratch[..n])
    }
    /// Moves to the next piece; false at the end of the file.
    fn next_piece(&mut self) -> DResult<bool> {
        let Some(next) = self.next.as_mut() else {
            return Ok(false);
        };
        self.piece_off += self.end - self.start;
        let spent = std::mem::take(&mut self.cur);
        match next(spent) {
            Ok(Some((buf, range))) => {
                self.cur = buf;
                self.start = range.start;
                self.pos = range.start;
                self.end = range.end;
                Ok(true)
            }
            Ok(None) => {
                self.next = None;
                self.start = 0;
                self.pos = 0;
                self.end = 0;
                Ok(false)
            }
            Err(e) => Err(DecodeError::Read(e.to_string())),
        }
    }
    #[cold]
    fn truncated(&self, n: usize) -> DecodeError {
        let at = self.at();
        DecodeError::Truncated {
            offset: at,
            needed: n - (self.total - at),
        }
    }
    /// An empty vector with room for a chunk: the next prefaulted chunk when a prefaulting
    /// thread runs and `T` is one of its kinds, else a new allocation.
    #[inline]
    fn chunk_buf<T: Prefault>(&mut self) -> Vec<T> {
        if T::PREFAULTED {
            if let Some(b) = self.blanks.as_ref().and_then(|rx| rx.recv().ok()) {
                if let Some(mut v) = T::take(b) {
                    v.clear();
                    return v;
                }
            }
        }
        Vec::with_capacity(CHUNK)
    }
    /// Fails unless `n` more bytes are in the file.
    fn need(&self, n: usize) -> DResult<()> {
        if n > self.total - self.at() {
            return Err(self.truncated(n));
        }
        Ok(())
    }
    /// `n` entries decoded by `each`, straight into the chunks of a column.
    fn chunked<T: Clone + Prefault>(
        &mut self,
        n: usize,
        mut each: impl FnMut(&mut Self) -> DResult<T>,
    ) -> DResult<CowVec<T>> {
        let mut col = CowVec::default();
        let mut left = n;
        while left > 0 {
            let k = left.min(CHUNK);
            let mut v = self.chunk_buf();
            for _ in 0..k {
                v.push(each(self)?);
            }
            col.push_chunk(v);
            left -= k;
        }
        Ok(col)
    }
    fn u8(&mut self) -> DResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> DResult<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> DResult<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> DResult<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i64(&mut self) -> DResult<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bad(&self, what: impl Into<String>) -> DecodeError {
        DecodeError::Bad {
            offset: self.at(),
            what: what.into(),
        }
    }
    /// A count, checked against the bytes left (each item needs at least `min` bytes), so a
    /// corrupted length cannot make us allocate without bound.
    fn count(&mut self, n: u64, min: usize) -> DResult<usize> {
        let left = (self.total - self.at()) as u64;
        if n.saturating_mul(min as u64) > left {
            return Err(self.bad(format!("count {n} is larger than the file allows")));
        }
        Ok(n as usize)
    }
    fn len(&mut self, min: usize) -> DResult<usize> {
        let n = self.u32()? as u64;
        self.count(n, min)
    }
    fn str(&mut self) -> DResult<String> {
        let n = self.len(1)?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("string is not UTF-8"))
    }
    fn opt_i64(&mut self) -> DResult<Option<i64>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.i64()?)),
            t => Err(self.bad(format!("option tag {t}"))),
        }
    }
    #[inline]
    fn value(&mut self) -> DResult<Value> {
        // Fixed-width values in one bounds check (the common case).
        if let Some(&[tag, b0, b1, b2, b3, b4, b5, b6, b7]) = self.ahead().get(..9) {
            let x = i64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
            let v = match tag {
                2 => Some(Value::Int64(x)),
                3 => Some(Value::Double(f64::from_bits(x as u64))),
                4 => Some(Value::Money(x)),
                6 => Some(Value::Date(x)),
                7 => Some(Value::Stamp(x)),
                _ => None,
            };
            if let Some(v) = v {
                self.pos += 9;
                return Ok(v);
            }
        }
        self.value_any()
    }
    fn value_any(&mut self) -> DResult<Value> {
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Int32(i32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            2 => Value::Int64(self.i64()?),
            3 => Value::Double(f64::from_bits(self.u64()?)),
            4 => Value::Money(self.i64()?),
            5 => {
                // Straight from the bytes into the shared string: one allocation.
                let n = self.len(1)?;
                let at = self.at();
                let b = self.take(n)?;
                let text = std::str::from_utf8(b).map_err(|_| DecodeError::Bad {
                    offset: at,
                    what: "string is not UTF-8".into(),
                })?;
                Value::String(std::sync::Arc::from(text))
            }
            6 => Value::Date(self.i64()?),
            7 => Value::Stamp(self.i64()?),
            t => return Err(self.bad(format!("value tag {t}"))),
        })
    }
    fn values(&mut self) -> DResult<Vec<Value>> {
        let n = self.len(1)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.value()?);
        }
        Ok(v)
    }
    /// A key of exactly one value (a one-field key column).
    #[inline]
    fn one_value_key(&mut self) -> DResult<Value> {
        // (Only when the value starts in this piece too: the slow path's count check would
        // then pass as well, so both paths refuse a file cut there alike.)
        if let Some(&[1, 0, 0, 0, _]) = self.ahead().get(..5) {
            self.pos += 4;
            return self.value();
        }
        // The length split across two pieces, or a key of another length.
        match self.len(1)? {
            1 => self.value(),
            n => Err(self.bad(format!(
                "a group key of {n} values where the window's key has one field"
            ))),
        }
    }
    #[inline]
    fn key(&mut self) -> DResult<Key> {
        // One-value keys (the common case) without the general loop.
        // (Only when the value starts in this piece too: the slow path's count check would
        // then pass as well, so both paths refuse a file cut there alike.)
        if let Some(&[1, 0, 0, 0, _]) = self.ahead().get(..5) {
            self.pos += 4;
            let mut k = Key::new();
            k.push(self.value()?);
            return Ok(k);
        }
        self.key_any()
    }
    fn key_any(&mut self) -> DResult<Key> {
        let n = self.len(1)?;
        let mut k = Key::with_capacity(n);
        for _ in 0..n {
            k.push(self.value()?);
        }
        Ok(k)
    }
    /// A copy-on-write map written by `Enc::cow`.
    fn cow<V: Clone>(
        &mut self,
        min: usize,
        mut each: impl FnMut(&mut Self) -> DResult<V>,
    ) -> DResult<CowMap<Key, V>> {
        let shards = self.u32()? as usize;
        if shards == 0 || !shards.is_power_of_two() || shards > (1 << 24) {
            return Err(self.bad(format!("shard count {shards} is not a power of two")));
        }
        let n = self.u64()?;
        let n = self.count(n, min)?;
        let mut m = CowMap::with_shards(shards);
        for _ in 0..n {
            let k = self.key()?;
            let v = each(self)?;
            if m.insert(k, v).is_some() {
                return Err(self.bad("a key appears twice"));
            }
        }
        Ok(m)
    }
    fn store(&mut self, into: &mut KeyedStore) -> DResult<()> {
        let rows = self.cow(24, |d| {
            let row = d.values()?;
            let seq = d.u64()?;
            let time = d.i64()?;
            Ok(Entry { row, seq, time })
        })?;
        match (self.u8()?, &mut into.retention) {
            (0, None) => {}
            (1, Some(r)) => {
                r.next_seq = self.u64()?;
                r.latest = self.opt_i64()?;
                r.jump_end = self.opt_i64()?;
                r.order = rows
                    .iter()
                    .map(|(k, e)| ((e.time, e.seq), k.clone()))
                    .collect();
            }
            (0, Some(_)) => {
                return Err(
                    self.bad("the snapshot has no retention state but the window has retention")
                )
            }
            (1, None) => {
                return Err(
                    self.bad("the snapshot has retention state but the window has no retention")
                )
            }
            (t, _) => return Err(self.bad(format!("retention tag {t}"))),
        }
        into.rows = rows;
        Ok(())
    }
    fn opt_store(&mut self, into: Option<&mut KeyedStore>) -> DResult<()> {
        match (self.u8()?, into) {
            (0, None) => Ok(()),
            (1, Some(s)) => self.store(s),
            (t, _) => Err(self.bad(format!(
                "stored-state tag {t} does not match the window's index"
            ))),
        }
    }
    fn globals(&mut self, into: &mut Globals) -> DResult<()> {
        let vs = self.values()?;
        if vs.len() != into.values.len() {
            return Err(self.bad(format!(
                "{} expression variables in the snapshot, {} in the window",
                vs.len(),
                into.values.len()
            )));
        }
        into.values = vs;
        Ok(())
    }
    fn keyed_rows(&mut self) -> DResult<CowMap<Key, Row>> {
        self.cow(8, |d| d.values())
    }
    fn jk_index(&mut self) -> DResult<CowMap<Key, KeySet>> {
        self.cow(8, |d| {
            let c = d.len(4)?;
            let mut set = KeySet::default();
            for _ in 0..c {
                set.insert(d.key()?);
            }
            Ok(set)
        })
    }
    fn acc(&mut self) -> DResult<Acc> {
        Ok(match self.u8()? {
            7 => {
                let num = bytemuck::pod_read_unaligned(self.take(std::mem::size_of::<NumAcc>())?);
                Acc::Std {
                    num,
                    sq: f64::from_bits(self.u64()?),
                }
            }
            2 => Acc::WAve {
                sw: f64::from_bits(self.u64()?),
                swf: f64::from_bits(self.u64()?),
            },
            3 => {
                let n = self.u64()?;
                let n = self.count(n, 5)?;
                let mut m = BTreeMap::new();
                for _ in 0..n {
                    let v = self.value()?;
                    let c = self.u32()?;
                    m.insert(v, c);
                }
                Acc::Multi(m)
            }
            5 => {
                let n = self.len(1)?;
                let mut r = std::collections::VecDeque::with_capacity(n);
                for _ in 0..n {
                    r.push_back(self.value()?);
                }
                Acc::Ring(r)
            }
            6 => Acc::Text(self.str()?),
            t => return Err(self.bad(format!("accumulator tag {t}"))),
        })
    }
}

/// Appends a column of plain-old-data values as its memory image (little-endian).
fn put_pod<T: bytemuck::Pod + Clone>(e: &mut Enc, col: &CowVec<T>) {
    for chunk in col.chunks() {
        e.raw(bytemuck::cast_slice(chunk));
        // A chunk of 8-byte entries (16 KiB) is buffered, not written straight: without a
        // flush between chunks the buffer would grow to the whole column.
        e.maybe_flush();
    }
}

/// Reads `n` plain-old-data values written by [`put_pod`], a chunk at a time, copied straight
/// from the file's pieces.
fn get_pod<T: bytemuck::Pod + Clone + Prefault>(d: &mut Dec, n: usize) -> DResult<CowVec<T>> {
    let size = std::mem::size_of::<T>();
    d.need(n.saturating_mul(size))?;
    let mut col = CowVec::default();
    let mut v: Vec<T> = if n > 0 { d.chunk_buf() } else { Vec::new() };
    let mut left = n;
    while left > 0 {
        let whole = (d.ahead().len() / size).min(left).min(CHUNK - v.len());
        if whole > 0 {
            let bytes = d.take(whole * size)?;
            v.extend(
                bytes
                    .chunks_exact(size)
                    .map(bytemuck::pod_read_unaligned::<T>),
            );
            left -= whole;
        } else {
            // One value across two pieces (or the first piece not yet read).
            v.push(bytemuck::pod_read_unaligned::<T>(d.take(size)?));
            left -= 1;
        }
        if v.len() == CHUNK {
            let next = if left > 0 { d.chunk_buf() } else { Vec::new() };
            col.push_chunk(std::mem::replace(&mut v, next));
        }
    }
    if !v.is_empty() {
        col.push_chunk(v);
    }
    Ok(col)
}

const COL_EMPTY: u8 = 0;
const COL_NUM: u8 = 1;
const COL_RUNNING: u8 = 2;
const COL_OTHER: u8 = 3;
/// A column of running integer sums (version 4): 8 bytes a group.
const COL_SUM64: u8 = 4;
/// A column of running doubles as their bits (version 4): 8 bytes a group.
const COL_RUNF64: u8 = 5;

/// Group keys as rows of values (and every key of version 3).
const KEYS_VALUES: u8 = 0;
/// A one-field integer key column as its numbers (version 4): 8 bytes a group.
const KEYS_INT: u8 = 1;

fn encode_aggregate(e: &mut Enc, next_seq: u64, globals: &Globals, g: &GroupCols) {
    e.u64(next_seq);
    e.globals(globals);
    // Column by column (docs/formats/snapshot.md, "Aggregate").
    let n = g.len();
    e.u64(n as u64);
    e.len(g.accs.len());
    let per_group: usize = 16
        + g.accs
            .iter()
            .map(|c| match c {
                AccCol::Empty => 0,
                AccCol::Num(_) => std::mem::size_of::<NumAcc>(),
                AccCol::Running(_) => 9,
                AccCol::RunF64(_) | AccCol::SumI64(_) => 8,
                AccCol::Other(_) => 24,
            })
            .sum::<usize>();
    if e.out.is_none() {
        e.buf.reserve(n * per_group);
    }
    // An integer key column as one block of its numbers; other keys as rows of values.
    match &g.keys {
        KeyCol::Int(_, c) => {
            e.u8(KEYS_INT);
            put_pod(e, c);
        }
        KeyCol::One(c) => {
            e.u8(KEYS_VALUES);
            for chunk in c.chunks() {
                for v in chunk {
                    e.len(1);
                    e.value(v);
                }
                e.maybe_flush();
            }
        }
        KeyCol::Many(c) => {
            e.u8(KEYS_VALUES);
            for chunk in c.chunks() {
                for k in chunk {
                    e.values(k);
                }
                e.maybe_flush();
            }
        }
    }
    put_pod(e, &g.counts);
    for col in &g.accs {
        match col {
            AccCol::Empty => e.u8(COL_EMPTY),
            AccCol::Num(c) => {
                e.u8(COL_NUM);
                put_pod(e, c);
            }
            AccCol::Running(c) => {
                e.u8(COL_RUNNING);
                for chunk in c.chunks() {
                    for v in chunk {
                        e.value(v);
                    }
                    e.maybe_flush();
                }
            }
            AccCol::RunF64(c) => {
                e.u8(COL_RUNF64);
                put_pod(e, c);
            }
            AccCol::SumI64(c) => {
                e.u8(COL_SUM64);
                put_pod(e, c);
            }
            AccCol::Other(c) => {
                e.u8(COL_OTHER);
                for acc in c.iter() {
                    e.acc(acc);
                    e.maybe_flush();
                }
            }
        }
    }
    match &g.members {
        Some(col) => {
            e.u8(1);
            for m in col.iter() {
                e.len(m.map.len());
                for (mk, (seq, vals)) in &m.map {
                    e.values(mk);
                    e.u64(*seq);
                    e.values(vals);
                }
                e.maybe_flush();
            }
        }
        None => e.u8(0),
    }
}

/// A column chunk whose memory was written through once, so the decoder that fills it does
/// not stop on page faults. Memory a process has never used costs a page fault per page on
/// first write, and on a virtual machine each of those can be slower than decoding the bytes
/// that go there (docs/benchmarks.md); a restore of a large aggregate has a thread of its own
/// take those faults, chunk by chunk ahead of the decoder.
pub(crate) enum Blank {
    I64(Vec<i64>),
    Values(Vec<Value>),
    Sums(Vec<NumAcc>),
}

/// Column entries a prefaulting thread makes chunks for (`PREFAULTED`), and how to take one.
pub(crate) trait Prefault: Sized {
    const PREFAULTED: bool = false;
    fn take(_: Blank) -> Option<Vec<Self>> {
        None
    }
}

macro_rules! prefaulted {
    ($t:ty, $kind:ident) => {
        impl Prefault for $t {
            const PREFAULTED: bool = true;
            fn take(b: Blank) -> Option<Vec<Self>> {
                match b {
                    Blank::$kind(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

prefaulted!(i64, I64);
prefaulted!(Value, Values);
prefaulted!(NumAcc, Sums);
impl Prefault for Key {}
impl Prefault for Acc {}

/// Chunks the prefaulting thread may be ahead of the decoder.
const PREFAULT_AHEAD: usize = 32;

#[derive(Clone, Copy)]
enum BlankKind {
    I64,
    Values,
    Sums,
}

/// The chunks an aggregate of `n` groups decodes into, in the order it asks for them: the key
/// column (numbers or values), the counts, then each sum and running-value column.
fn prefault_plan(cols: &GroupCols, n: usize) -> Vec<(BlankKind, usize)> {
    let mut plan = Vec::new();
    match cols.keys {
        KeyCol::Int(..) => plan.push((BlankKind::I64, n)),
        KeyCol::One(_) => plan.push((BlankKind::Values, n)),
        KeyCol::Many(_) => {}
    }
    plan.push((BlankKind::I64, n));
    for c in &cols.accs {
        match c {
            AccCol::Num(_) => plan.push((BlankKind::Sums, n)),
            AccCol::Running(_) => plan.push((BlankKind::Values, n)),
            AccCol::RunF64(_) | AccCol::SumI64(_) => plan.push((BlankKind::I64, n)),
            AccCol::Empty | AccCol::Other(_) => {}
        }
    }
    plan
}

/// The prefaulting thread: chunks of the plan, each written through, until the plan ends or
/// the decoder stops taking them. What the decoder gets is memory only: it clears and fills
/// each chunk, and allocates its own when none is there, so the result never depends on this.
fn prefault(plan: &[(BlankKind, usize)], tx: &std::sync::mpsc::SyncSender<Blank>) {
    fn filled<T: Clone>(v: T) -> Vec<T> {
        let mut c = Vec::with_capacity(CHUNK);
        // Opaque to the optimiser: an allocation filled with zeros it can prove are zeros
        // becomes a zeroed allocation (`calloc`), which the allocator satisfies from fresh
        // memory without writing it, and then the page faults land on the decoder after all.
        c.resize(CHUNK, std::hint::black_box(v));
        c
    }
    for &(kind, n) in plan {
        for _ in 0..n.div_ceil(CHUNK) {
            let b = match kind {
                BlankKind::I64 => Blank::I64(filled(0)),
                BlankKind::Values => Blank::Values(filled(Value::Null)),
                BlankKind::Sums => Blank::Sums(filled(NumAcc::default())),
            };
            if tx.send(b).is_err() {
                return;
            }
        }
    }
}

/// A column of `n` numbers decoded from values (`read`) through `cell`, the typed form of a
/// column of values. A value `cell` refuses (the column that was saved had been widened)
/// widens the column with `widen`, as it would have live, and the rest is read as values.
fn typed_column<'s>(
    d: &mut Dec<'s>,
    n: usize,
    read: fn(&mut Dec<'s>) -> DResult<Value>,
    cell: impl Fn(&Value) -> Option<i64>,
    widen: impl FnOnce(CowVec<i64>) -> CowVec<Value>,
) -> DResult<Result<CowVec<i64>, CowVec<Value>>> {
    let mut col = CowVec::default();
    let mut v: Vec<i64> = if n > 0 { d.chunk_buf() } else { Vec::new() };
    for i in 0..n {
        let value = read(d)?;
        match cell(&value) {
            Some(x) => v.push(x),
            None => {
                col.push_chunk(v);
                let mut col = widen(col);
                col.push(value);
                for _ in i + 1..n {
                    col.push(read(d)?);
                }
                return Ok(Err(col));
            }
        }
        if v.len() == CHUNK {
            let next = if i + 1 < n { d.chunk_buf() } else { Vec::new() };
            col.push_chunk(std::mem::replace(&mut v, next));
        }
    }
    if !v.is_empty() {
        col.push_chunk(v);
    }
    Ok(Ok(col))
}

/// A column of `n` running doubles (written as values).
fn f64_cells(d: &mut Dec, n: usize) -> DResult<AccCol> {
    let widen = |c: CowVec<i64>| c.iter().map(|&b| f64_value(b)).collect();
    Ok(match typed_column(d, n, Dec::value, f64_cell, widen)? {
        Ok(c) => AccCol::RunF64(c),
        Err(c) => AccCol::Running(c),
    })
}

/// A one-field integer key column of `n` keys stored as its numbers (version 4); an int32
/// key out of the int32 range is refused.
fn int_key_block(d: &mut Dec, kind: IntKey, n: usize) -> DResult<KeyCol> {
    let at = d.at();
    let c: CowVec<i64> = get_pod(d, n)?;
    if kind == IntKey::Int32 {
        if let Some(slot) = c.iter().position(|&x| i32::try_from(x).is_err()) {
            return Err(DecodeError::Bad {
                offset: at + slot * 8,
                what: format!("group {slot}: an int32 key out of the int32 range"),
            });
        }
    }
    Ok(KeyCol::Int(kind, c))
}

/// A one-field integer key column of `n` keys written as values.
fn int_keys(d: &mut Dec, kind: IntKey, n: usize) -> DResult<KeyCol> {
    let widen = |c: CowVec<i64>| c.iter().map(|&x| kind.value(x)).collect();
    Ok(
        match typed_column(d, n, Dec::one_value_key, |v| kind.of(v), widen)? {
            Ok(c) => KeyCol::Int(kind, c),
            Err(c) => KeyCol::One(c),
        },
    )
}

fn decode_aggregate(d: &mut Dec, a: &mut AggregateWindow) -> DResult<()> {
    a.next_seq = d.u64()?;
    d.globals(&mut a.globals)?;
    let nfields = a.fields.len();
    let n = d.u64()?;
    // Each group takes at least a key length and a count.
    let n = d.count(n, 4 + 8)?;
    let na = d.len(0)?;
    if na != nfields {
        return Err(d.bad(format!(
            "{na} aggregate functions in the snapshot, {nfields} in the window"
        )));
    }
    let mut cols = a.groups.cols.empty_like();
    let keep_members = a.keep_members;
    let decode = |d: &mut Dec, cols: &mut GroupCols, threaded: bool| {
        // Version 3 wrote every key as values: an integer column takes them back as numbers
        // where it can. From version 4 an integer column written as values had been widened,
        // and is restored widened, so the state is the one that was saved, byte for byte.
        let v3 = d.version < 4;
        let how = if v3 { KEYS_VALUES } else { d.u8()? };
        let keys = match (how, &cols.keys) {
            (KEYS_INT, KeyCol::Int(kind, _)) => int_key_block(d, *kind, n)?,
            (KEYS_VALUES, KeyCol::Int(kind, _)) if v3 => int_keys(d, *kind, n)?,
            (KEYS_VALUES, KeyCol::Int(..)) => KeyCol::One(d.chunked(n, Dec::one_value_key)?),
            (KEYS_VALUES, KeyCol::One(_)) => KeyCol::One(d.chunked(n, Dec::one_value_key)?),
            (KEYS_VALUES, KeyCol::Many(_)) => KeyCol::Many(d.chunked(n, Dec::key)?),
            (how, _) => {
                return Err(d.bad(format!(
                    "group keys stored as kind {how}, which the window's key does not take"
                )))
            }
        };
        // The key index (random access into a table as large as the state) is built on two
        // more threads (each lists half the keys, then fills half the tables,
        // `Groups::index_keys_on_two_threads`), while this one decodes the other columns, when
        // there are enough groups for it to pay. Either way the index is the same: keys are
        // inserted in slot order.
        let (index, rest) = if threaded {
            std::thread::scope(|scope| {
                let index = scope.spawn(|| Groups::index_keys_on_two_threads(&keys));
                let rest = decode_group_columns(d, keep_members, n, cols);
                let index = index.join().expect("the index builder does not panic");
                (index, rest)
            })
        } else {
            let rest = decode_group_columns(d, keep_members, n, cols);
            (Groups::index_keys(&keys), rest)
        };
        Ok::<_, DecodeError>((keys, index, rest))
    };
    let (keys, index, rest) = if n < 1 << 16 {
        decode(d, &mut cols, false)?
    } else {
        // Large: a third thread writes through the memory of the columns ahead of the
        // decoder (see `prefault`).
        let plan = prefault_plan(&cols, n);
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(PREFAULT_AHEAD);
            scope.spawn(move || prefault(&plan, &tx));
            d.blanks = Some(rx);
            let r = decode(d, &mut cols, true);
            d.blanks = None; // the prefaulting thread stops at its next chunk
            r
        })?
    };
    rest?;
    let index = index.map_err(|slot| d.bad(format!("group {slot}: a key appears twice")))?;
    cols.keys = keys;
    a.groups = Groups::from_parts(index, cols);
    Ok(())
}

/// The count, function and member columns of an aggregate (after its keys).
fn decode_group_columns(
    d: &mut Dec,
    keep_members: bool,
    n: usize,
    cols: &mut GroupCols,
) -> DResult<()> {
    cols.counts = get_pod(d, n)?;
    for (i, col) in cols.accs.iter_mut().enumerate() {
        let tag = d.u8()?;
        match (tag, &mut *col) {
            (COL_EMPTY, AccCol::Empty) => {}
            (COL_NUM, AccCol::Num(c)) => *c = get_pod(d, n)?,
            (COL_RUNNING, AccCol::Running(c)) => *c = d.chunked(n, Dec::value)?,
            // Version 3 wrote running doubles as values; from version 4, values in a column
            // of running doubles mean it had been widened.
            (COL_RUNNING, AccCol::RunF64(_)) if d.version < 4 => *col = f64_cells(d, n)?,
            (COL_RUNNING, AccCol::RunF64(_)) => *col = AccCol::Running(d.chunked(n, Dec::value)?),
            (COL_SUM64, AccCol::SumI64(c)) => *c = get_pod(d, n)?,
            (COL_RUNF64, AccCol::RunF64(c)) => *c = get_pod(d, n)?,
            // Widened before it was saved (or saved by version 3, which had no such column).
            (COL_NUM, AccCol::SumI64(_)) => *col = AccCol::Num(get_pod(d, n)?),
            (COL_OTHER, AccCol::Other(c)) => *c = d.chunked(n, Dec::acc)?,
            _ => {
                return Err(d.bad(format!(
                    "column kind {tag} of aggregate function {} does not match the window",
                    i + 1
                )))
            }
        }
    }
    match (d.u8()?, &mut cols.members) {
        (0, None) => {}
        (1, Some(col)) => {
            for _ in 0..n {
                let nm = d.len(12)?;
                let mut m = Members::default();
                for _ in 0..nm {
                    let mk = d.key()?;
                    let seq = d.u64()?;
                    let vals = d.values()?;
                    m.order.insert(seq, mk.clone());
                    m.map.insert(mk, (seq, vals));
                }
                col.push(m);
            }
        }
        (t @ (0 | 1), _) => {
            return Err(d.bad(format!(
                "member tag {t} does not match the window (members kept: {})",
                keep_members
            )))
        }
        (t, _) => return Err(d.bad(format!("member tag {t}"))),
    }
    Ok(())
}

fn encode_join(e: &mut Enc, j: &FrozenJoin) {
    e.keyed_rows(&j.left);
    e.keyed_rows(&j.right);
    e.jk_index(&j.left_by_jk);
    e.jk_index(&j.right_by_jk);
    e.keyed_rows(&j.out);
    e.globals(&j.globals);
}

fn decode_join(d: &mut Dec, j: &mut JoinWindow) -> DResult<()> {
    j.left = d.keyed_rows()?;
    if j.stream_left && !j.left.is_empty() {
        return Err(d.bad(
            "the snapshot holds left rows, but the join keeps none (left-index=\"pi_EMPTY\")",
        ));
    }
    j.right = d.keyed_rows()?;
    j.left_by_jk = d.jk_index()?;
    j.right_by_jk = d.jk_index()?;
    j.out = d.keyed_rows()?;
    d.globals(&mut j.globals)
}

/// A keyed store frozen at a cut.
#[derive(Clone, Debug)]
pub struct FrozenStore {
    rows: CowMap<Key, Entry>,
    /// next sequence, newest event time, end of the jumping window.
    retention: Option<(u64, Option<i64>, Option<i64>)>,
}

/// A join frozen at a cut.
#[derive(Clone, Debug)]
pub struct FrozenJoin {
    left: CowMap<Key, Row>,
    right: CowMap<Key, Row>,
    left_by_jk: CowMap<Key, KeySet>,
    right_by_jk: CowMap<Key, KeySet>,
    out: CowMap<Key, Row>,
    globals: Globals,
}

#[derive(Clone, Debug)]
enum FrozenKind {
    Source {
        store: Option<FrozenStore>,
        autogen: Option<i64>,
    },
    Filter {
        store: Option<FrozenStore>,
        globals: Globals,
    },
    Compute {
        store: Option<FrozenStore>,
        globals: Globals,
    },
    Copy(FrozenStore),
    Union(FrozenStore),
    Aggregate {
        next_seq: u64,
        globals: Globals,
        groups: GroupCols,
    },
    Join(Box<FrozenJoin>),
}

/// A window's state at a cut between blocks. Taking it costs one reference-count increment
/// per shard of each map (see [`crate::cow`]), whatever the size of the state; encoding it
/// ([`Frozen::encode`]) can then run on another thread while the window goes on.
#[derive(Clone, Debug)]
pub struct Frozen {
    kind: FrozenKind,
    code: u8,
    splitter: Option<Globals>,
}

fn freeze_store(s: &KeyedStore) -> FrozenStore {
    FrozenStore {
        rows: s.rows.clone(),
        retention: s
            .retention
            .as_ref()
            .map(|r| (r.next_seq, r.latest, r.jump_end)),
    }
}

/// Freezes a window (and its splitter's globals).
pub fn freeze(imp: &WindowImpl, splitter: Option<&Globals>) -> Frozen {
    let kind = match imp {
        WindowImpl::Source(s) => FrozenKind::Source {
            store: s.store.as_ref().map(freeze_store),
            autogen: s.autogen.as_ref().map(|a| a.next),
        },
        WindowImpl::Filter(f) => FrozenKind::Filter {
            store: f.store.as_ref().map(freeze_store),
            globals: f.globals.clone(),
        },
        WindowImpl::Compute(c) => FrozenKind::Compute {
            store: c.store.as_ref().map(freeze_store),
            globals: c.globals.clone(),
        },
        WindowImpl::Copy(c) => FrozenKind::Copy(freeze_store(&c.store)),
        WindowImpl::Union(u) => FrozenKind::Union(freeze_store(&u.store)),
        WindowImpl::Aggregate(a) => FrozenKind::Aggregate {
            next_seq: a.next_seq,
            globals: a.globals.clone(),
            groups: a.groups.cols.clone(),
        },
        WindowImpl::Join(j) => FrozenKind::Join(Box::new(FrozenJoin {
            left: j.left.clone(),
            right: j.right.clone(),
            left_by_jk: j.left_by_jk.clone(),
            right_by_jk: j.right_by_jk.clone(),
            out: j.out.clone(),
            globals: j.globals.clone(),
        })),
    };
    Frozen {
        kind,
        code: kind_code(imp),
        splitter: splitter.cloned(),
    }
}

impl Frozen {
    /// The window file (docs/formats/snapshot.md).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        self.encode_with(&mut e);
        e.buf
    }

    /// Writes the window file to `out` in pieces, without holding it in memory whole.
    pub fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut e = Enc::streaming(out);
        self.encode_with(&mut e);
        e.flush();
        match e.err {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn encode_with(&self, e: &mut Enc) {
        let e = &mut *e;
        e.buf.extend_from_slice(MAGIC);
        e.u16(WINDOW_FILE_VERSION);
        e.u8(self.code);
        match &self.kind {
            FrozenKind::Source { store, autogen } => {
                e.opt_store(store.as_ref());
                e.opt_i64(*autogen);
            }
            FrozenKind::Filter { store, globals } | FrozenKind::Compute { store, globals } => {
                e.opt_store(store.as_ref());
                e.globals(globals);
            }
            FrozenKind::Copy(s) | FrozenKind::Union(s) => e.store(s),
            FrozenKind::Aggregate {
                next_seq,
                globals,
                groups,
            } => encode_aggregate(e, *next_seq, globals, groups),
            FrozenKind::Join(j) => encode_join(e, j),
        }
        if let Some(g) = &self.splitter {
            e.globals(g);
        }
    }
}

/// Encodes a window's state (and its splitter's globals).
pub fn encode_window(imp: &WindowImpl, splitter: Option<&Globals>) -> Vec<u8> {
    freeze(imp, splitter).encode()
}

/// Decodes a window file of `len` bytes that arrives in pieces from `next` (a restore decodes
/// while the file is still being read). On error `imp` may be partly changed: callers decode
/// into a copy.
pub fn decode_window_pieces(
    len: u64,
    next: NextPiece<'_>,
    imp: &mut WindowImpl,
    splitter: Option<&mut Globals>,
) -> Result<(), DecodeError> {
    let len = usize::try_from(len).map_err(|_| DecodeError::Bad {
        offset: 0,
        what: format!("a file of {len} bytes is larger than this machine can address"),
    })?;
    decode_from(Dec::pieces(len, next), imp, splitter)
}

fn decode_from(
    mut d: Dec<'_>,
    imp: &mut WindowImpl,
    splitter: Option<&mut Globals>,
) -> Result<(), DecodeError> {
    if d.take(8).map_err(|_| DecodeError::Magic)? != MAGIC {
        return Err(DecodeError::Magic);
    }
    let v = d.u16()?;
    if v > WINDOW_FILE_VERSION {
        return Err(DecodeError::Version(v));
    }
    if v < OLDEST_WINDOW_FILE_VERSION {
        return Err(DecodeError::OldVersion(v));
    }
    d.version = v;
    let k = d.u8()?;
    if k != kind_code(imp) {
        return Err(DecodeError::Kind {
            found: k,
            expected: imp.kind(),
        });
    }
    match imp {
        WindowImpl::Source(s) => {
            d.opt_store(s.store.as_mut())?;
            let next = d.opt_i64()?;
            match (&mut s.autogen, next) {
                (Some(a), Some(n)) => a.next = n,
                (None, None) => {}
                _ => return Err(d.bad("autogen-key state does not match the window")),
            }
        }
        WindowImpl::Filter(f) => {
            d.opt_store(f.store.as_mut())?;
            d.globals(&mut f.globals)?;
        }
        WindowImpl::Compute(c) => {
            d.opt_store(c.store.as_mut())?;
            d.globals(&mut c.globals)?;
        }
        WindowImpl::Copy(c) => d.store(&mut c.store)?,
        WindowImpl::Union(u) => d.store(&mut u.store)?,
        WindowImpl::Aggregate(a) => decode_aggregate(&mut d, a)?,
        WindowImpl::Join(j) => decode_join(&mut d, j)?,
    }
    if let Some(g) = splitter {
        d.globals(g)?;
    }
    if d.at() != d.total {
        return Err(DecodeError::Trailing(d.total - d.at()));
    }
    Ok(())
}
