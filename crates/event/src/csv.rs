//! The CSV text form of events: `opcode,flags,field1,...,fieldN`.
//!
//! Parsing rules (docs/formats/csv-events.md): opcode and flag letters are case-insensitive and
//! an empty opcode is insert; an empty field is null; numeric fields may carry surrounding
//! blanks, string fields keep theirs; a field may be double-quoted, with `""` or `\"` standing
//! for a quote inside it, and `\n`, `\r`, `\\` for a line feed, a carriage return and a
//! backslash (so that one line holds any string: what [`write_value`] writes reads back).

use std::fmt::Write;
use std::sync::Arc;

use crate::event::{Event, Flags, Opcode, Row};
use crate::schema::Schema;
use crate::time::{self, DateFormat};
use crate::value::{self, FieldType, Value};

/// How CSV lines are read and written for one window.
#[derive(Clone, Debug, Default)]
pub struct CsvOptions {
    /// `dateformat`: how date and stamp fields are written as text.
    pub dateformat: Option<DateFormat>,
    /// `addcsvopcode`: lines carry no opcode column; every event is an insert (or an
    /// upsert with `publishwithupsert`).
    pub add_opcode: bool,
    /// `addcsvflags`: lines carry no flags column; every event is normal.
    pub add_flags: bool,
    /// `publishwithupsert`: with `addcsvopcode`, build upserts instead of inserts.
    pub upsert: bool,
    /// `noautogenfield`: lines lack the (autogen) key column at this schema position.
    pub missing_field: Option<usize>,
    /// `csvfielddelimiter`: default `,`.
    pub delimiter: u8,
}

impl CsvOptions {
    /// Options with the `,` delimiter and nothing else set.
    pub fn new() -> CsvOptions {
        CsvOptions {
            delimiter: b',',
            ..CsvOptions::default()
        }
    }

    fn delim(&self) -> u8 {
        if self.delimiter == 0 {
            b','
        } else {
            self.delimiter
        }
    }
}

/// Why a CSV line could not become an event. The text says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("unknown opcode '{0}' (use i, u, d, p or s)")]
    Opcode(String),
    #[error("unknown flags '{0}' (use n, p or r)")]
    Flags(String),
    #[error("expected {expected} fields after opcode and flags, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("field '{field}' ({ty}): cannot read '{text}'")]
    Value {
        field: String,
        ty: FieldType,
        text: String,
    },
    #[error("unterminated quoted field")]
    Quote,
}

/// Splits one CSV line into fields (quotes honoured). Reuses `out`.
pub fn split_line<'a>(
    line: &'a str,
    delim: u8,
    out: &mut Vec<std::borrow::Cow<'a, str>>,
) -> Result<(), CsvError> {
    use std::borrow::Cow;
    out.clear();
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let bytes = line.as_bytes();
    if !bytes.contains(&b'"') {
        out.extend(line.split(delim as char).map(Cow::Borrowed));
        return Ok(());
    }
    let mut i = 0;
    loop {
        // Start of a field.
        let start = i;
        // Skip blanks before a quote, so `a, "b"` works.
        let mut j = i;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j < bytes.len() && bytes[j] == b'"' {
            let mut s = String::new();
            let mut k = j + 1;
            loop {
                if k >= bytes.len() {
                    return Err(CsvError::Quote);
                }
                match bytes[k] {
                    b'"' if bytes.get(k + 1) == Some(&b'"') => {
                        s.push('"');
                        k += 2;
                    }
                    b'"' => {
                        k += 1;
                        break;
                    }
                    b'\\' if matches!(bytes.get(k + 1), Some(b'"' | b'\\' | b'n' | b'r')) => {
                        s.push(match bytes[k + 1] {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'n' => '\n',
                            _ => '\r',
                        });
                        k += 2;
                    }
                    _ => {
                        let ch_len = utf8_len(bytes[k]);
                        s.push_str(&line[k..k + ch_len]);
                        k += ch_len;
                    }
                }
            }
            // Anything up to the delimiter after the closing quote is kept.
            let end = line[k..].find(delim as char).map_or(bytes.len(), |p| k + p);
            s.push_str(&line[k..end]);
            out.push(Cow::Owned(s));
            if end >= bytes.len() {
                return Ok(());
            }
            i = end + 1;
        } else {
            let end = line[start..]
                .find(delim as char)
                .map_or(bytes.len(), |p| start + p);
            out.push(Cow::Borrowed(&line[start..end]));
            if end >= bytes.len() {
                return Ok(());
            }
            i = end + 1;
        }
    }
}

fn utf8_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Parses one field's text as `ty`. Empty text is null.
pub fn parse_value(text: &str, ty: FieldType, fmt: Option<&DateFormat>) -> Option<Value> {
    if ty == FieldType::String {
        if text.is_empty() {
            return Some(Value::Null);
        }
        return Some(Value::String(Arc::from(text)));
    }
    parse_non_string(text, ty, fmt)
}

/// [`parse_value`] for every type but string.
fn parse_non_string(text: &str, ty: FieldType, fmt: Option<&DateFormat>) -> Option<Value> {
    let t = text.trim_ascii();
    if t.is_empty() {
        return Some(Value::Null);
    }
    Some(match ty {
        FieldType::String => Value::String(Arc::from(text)),
        FieldType::Int32 => Value::Int32(parse_i32(t)?),
        FieldType::Int64 => Value::Int64(parse_i64(t)?),
        FieldType::Double => Value::Double(parse_double(t)?),
        FieldType::Money => Value::Money(value::parse_money(t)?),
        FieldType::Date => Value::Date(time::parse_date(text, fmt)?),
        FieldType::Stamp => Value::Stamp(time::parse_stamp(text, fmt)?),
    })
}

/// Splits an optional leading `+` or `-` off `b`: (negative, rest).
#[inline]
fn split_sign(b: &[u8]) -> (bool, &[u8]) {
    match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    }
}

/// The value of 1 to `max_digits` ASCII digits (no overflow of an i64 possible below 19);
/// `None` when a byte is not a digit or the length is outside that range.
#[inline]
fn short_digits(b: &[u8], max_digits: usize) -> Option<i64> {
    if b.is_empty() || b.len() > max_digits {
        return None;
    }
    let mut v: i64 = 0;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + i64::from(d);
    }
    Some(v)
}

/// `s.parse::<i64>()`, with a fast path for up to 18 digits (the same result: std accepts
/// exactly an optional sign and digits).
pub fn parse_i64(s: &str) -> Option<i64> {
    let (neg, digits) = split_sign(s.as_bytes());
    if digits.len() <= 18 && !digits.is_empty() {
        let v = short_digits(digits, 18)?;
        return Some(if neg { -v } else { v });
    }
    s.parse().ok()
}

/// `s.parse::<i32>()`, with a fast path for up to 9 digits.
pub fn parse_i32(s: &str) -> Option<i32> {
    let (neg, digits) = split_sign(s.as_bytes());
    if digits.len() <= 9 && !digits.is_empty() {
        let v = short_digits(digits, 9)? as i32;
        return Some(if neg { -v } else { v });
    }
    s.parse().ok()
}

/// Powers of ten exactly representable as f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `s.parse::<f64>()`, bit for bit. Plain decimals (`[+-]digits[.digits]`, at most 19
/// digits, a mantissa of at most 2^53 and at most 22 fractional digits) take Clinger's fast
/// path: the mantissa and the power of ten are exact, and one IEEE division rounds
/// correctly, so the result is the correctly rounded value std's parser also gives.
/// Everything else (exponents, `inf`, long mantissas, errors) goes to std.
pub fn parse_f64(s: &str) -> Option<f64> {
    let (neg, b) = split_sign(s.as_bytes());
    let mut mant: u64 = 0;
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        mant = mant.wrapping_mul(10).wrapping_add(u64::from(b[i] - b'0'));
        i += 1;
    }
    let int_digits = i;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            mant = mant.wrapping_mul(10).wrapping_add(u64::from(b[i] - b'0'));
            i += 1;
            frac_digits += 1;
        }
    }
    let digits = int_digits + frac_digits;
    if i == b.len() && digits > 0 && digits <= 19 && frac_digits <= 22 && mant <= 1 << 53 {
        let v = mant as f64 / POW10[frac_digits];
        return Some(if neg { -v } else { v });
    }
    s.parse().ok()
}

fn parse_double(s: &str) -> Option<f64> {
    let v = parse_f64(s)?;
    // Rust accepts "inf" and "NaN"; ESP data does not use them and they poison aggregates.
    v.is_finite().then_some(v)
}

/// Parses one CSV line into an event of `schema`.
pub fn parse_event(line: &str, schema: &Schema, opts: &CsvOptions) -> Result<Event, CsvError> {
    let fmt = opts.dateformat.as_ref();
    parse_line(line, schema, opts, |_, text, ty| parse_value(text, ty, fmt))
}

/// Splits `line` (a trailing `\n` and then `\r` dropped) and builds the event, each field's
/// value made by `value(position, text, type)`.
fn parse_line(
    line: &str,
    schema: &Schema,
    opts: &CsvOptions,
    value: impl FnMut(usize, &str, FieldType) -> Option<Value>,
) -> Result<Event, CsvError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if memchr::memchr(b'"', line.as_bytes()).is_none() {
        // Fast path: no quoting, no allocation for the split.
        parse_fields(Fields::new(line, opts.delim()), schema, opts, value)
    } else {
        let mut cols = Vec::new();
        split_line(line, opts.delim(), &mut cols)?;
        parse_fields(cols.iter().map(|c| c.as_ref()), schema, opts, value)
    }
}

/// String values at most this long are remembered by a [`CsvParser`].
const STR_CACHE_MAX_LEN: usize = 32;
/// Bits of the hash that pick a string cache set (of [`STR_CACHE_WAYS`] slots).
const STR_CACHE_BITS: u32 = 11;
/// Slots per set: three, so that a field with about a thousand distinct values (the
/// benchmark's symbols) rarely evicts one it still uses (two slots per set missed about one
/// lookup in eight there, each miss an allocation and a UTF-8 check), and a set with its tags
/// fits one cache line.
const STR_CACHE_WAYS: usize = 3;

/// One set of a [`StrCache`]: its slots, the most recent first, and 16 bits of the hash of
/// each slot's string (slot `k` at bits `16k..`), in one cache line.
#[derive(Clone, Debug, Default)]
#[repr(align(64))]
struct StrSet {
    tags: u64,
    slots: [Option<Arc<str>>; STR_CACHE_WAYS],
}

/// The last string values seen in one field, in a table indexed by a hash of their bytes
/// ([`STR_CACHE_WAYS`] slots per hash): a value equal to one in its slots is a clone of the
/// same `Arc`, so a repeated value (a symbol, a name) costs no allocation. The result is the
/// same string either way. At most 6144 strings of up to 32 bytes are kept per field. A
/// lookup reads one cache line for the set, whose tags say which slot may hold the value,
/// and the string of that slot only (which the `Arc` clone reads anyway).
#[derive(Clone, Debug, Default)]
struct StrCache {
    sets: Vec<StrSet>,
}

impl StrCache {
    fn get(&mut self, text: &str) -> Arc<str> {
        match self.get_bytes(text.as_bytes()) {
            Some(s) => s,
            None => Arc::from(text),
        }
    }

    /// The string of `b`, `None` when `b` is not UTF-8. A hit needs no UTF-8 check: the
    /// bytes equal those of a string.
    fn get_bytes(&mut self, b: &[u8]) -> Option<Arc<str>> {
        if b.len() > STR_CACHE_MAX_LEN {
            return std::str::from_utf8(b).ok().map(Arc::from);
        }
        if self.sets.is_empty() {
            self.sets = vec![StrSet::default(); 1 << STR_CACHE_BITS];
        }
        let h = str_hash(b);
        let set = &mut self.sets[h >> (usize::BITS - STR_CACHE_BITS)];
        let tag = (h >> 32) as u16;
        const LO: u64 = 0x0001_0001_0001_0001;
        // Lanes of `tags` equal to `tag` have their high bit set (and maybe lanes after the
        // first equal one, as in `bytes_equal`): each candidate is checked on its bytes. The
        // fourth lane (no slot) is never a candidate.
        let x = set.tags ^ (LO * u64::from(tag));
        let mut m = x.wrapping_sub(LO) & !x & (LO << 15) & !(1 << 63);
        while m != 0 {
            let k = (m.trailing_zeros() / 16) as usize;
            if let Some(s) = &set.slots[k] {
                if short_eq(s.as_bytes(), b) {
                    return Some(Arc::clone(s));
                }
            }
            m &= m - 1;
        }
        set.insert(tag, b)
    }
}

impl StrSet {
    /// A miss: the string of `b` becomes the first slot, the others move down one (the last
    /// one leaves the cache).
    #[cold]
    #[inline(never)]
    fn insert(&mut self, tag: u16, b: &[u8]) -> Option<Arc<str>> {
        let s: Arc<str> = Arc::from(std::str::from_utf8(b).ok()?);
        self.slots.rotate_right(1);
        self.slots[0] = Some(Arc::clone(&s));
        let mask = (1u64 << (16 * STR_CACHE_WAYS)) - 1;
        self.tags = ((self.tags << 16) | u64::from(tag)) & mask;
        Some(s)
    }
}

/// A hash of a short byte string (8 bytes at a time), good in its high bits.
#[inline]
fn str_hash(b: &[u8]) -> usize {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        h = (h.rotate_left(26) ^ word(c)).wrapping_mul(K);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let n = b.len();
        let w = if n >= 8 {
            // The last 8 bytes (overlapping the chunks before).
            word(&b[n - 8..])
        } else if n >= 4 {
            // The first and the last 4 bytes (overlapping).
            u64::from(word4(b)) << 32 | u64::from(word4(&b[n - 4..]))
        } else {
            tail.iter().fold(0u64, |w, &c| (w << 8) | u64::from(c))
        };
        h = (h.rotate_left(26) ^ w).wrapping_mul(K);
    }
    (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) as usize
}

/// `a == b` for strings of at most [`STR_CACHE_MAX_LEN`] bytes, without a call to `memcmp`.
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if n < 4 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    if n < 8 {
        return word4(a) == word4(b) && word4(&a[n - 4..]) == word4(&b[n - 4..]);
    }
    // Words at the start and at the end cover up to 16 bytes; longer strings compare whole.
    word(a) == word(b)
        && word(&a[n - 8..]) == word(&b[n - 8..])
        && (n <= 16 || a[8..n - 8] == b[8..n - 8])
}

/// The first 4 bytes of `b` (at least 4 long) as a little-endian word.
#[inline]
fn word4(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

/// The first 8 bytes of `b` (at least 8 long) as a little-endian word.
#[inline]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// Bytes of `w` equal to `c` have their high bit set in the result, and so may bytes after
/// the first equal one (a borrow), never bytes before it: the lowest set bit is exact.
#[inline]
fn bytes_equal(w: u64, c: u8) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    let x = w ^ (LO * u64::from(c));
    x.wrapping_sub(LO) & !x & (LO << 7)
}

/// The position in `b` of the first `delim` or `"`.
#[inline]
fn find_delim_or_quote(b: &[u8], delim: u8) -> Option<usize> {
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let w = word(c);
        let m = bytes_equal(w, delim) | bytes_equal(w, b'"');
        if m != 0 {
            return Some(at + (m.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == delim || c == b'"')
        .map(|p| at + p)
}

/// The capacity a parsed row of `n` values is allocated with: `n`, or a little more (at most
/// a quarter more) when that makes its size a power of two in the allocator's size classes.
/// Both binaries use mimalloc, which serves every Rust allocation through its aligned entry
/// point: once the free list of a size's page runs out, a size that is not a power of two
/// (four values: 96 bytes) takes an over-allocating slow path on every allocation (about 110
/// more instructions per event at blocksize 1), while a power of two (five values: 120 bytes,
/// in the 128-byte class, the class of the engine's five-field rows) stays on the fast path.
/// The values are the same; only the capacity differs.
fn row_capacity(n: usize) -> usize {
    let each = std::mem::size_of::<Value>();
    let c = (n * each).next_power_of_two() / each;
    if c >= n && (c - n) * 4 <= n {
        c
    } else {
        n
    }
}

/// Parses the CSV lines of one schema and set of options, one after another: the same events
/// and errors as [`parse_event`], with less work per line. Repeated short string values
/// share one allocation per field (see [`StrCache`]); nothing else is kept between lines.
#[derive(Clone, Debug)]
pub struct CsvParser {
    schema: Schema,
    opts: CsvOptions,
    /// The delimiter allows [`CsvParser::parse_plain`]: ASCII, and neither a quote, a line
    /// end nor a character of a number.
    plain: bool,
    /// One per schema field (unused for non-string fields).
    strings: Vec<StrCache>,
    /// What the plain path reads for each schema field, in order.
    kinds: Vec<Kind>,
    /// [`row_capacity`] of the schema's length.
    row_capacity: usize,
}

/// What [`CsvParser::parse_plain`] does for one schema field.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// The autogen key field missing from the lines (`noautogenfield`): null.
    Missing,
    /// A column of this type.
    Field(FieldType),
}

/// Reads `[-]digits` at `line[at..]` up to the delimiter or the end of the line: the value
/// and the position after the digits, when there are 1 to `max_digits` digits (so no
/// overflow) and the field ends there.
#[inline]
fn plain_int(line: &[u8], at: usize, delim: u8, max_digits: usize) -> Option<(i64, usize)> {
    let neg = line.get(at) == Some(&b'-');
    let first = at + usize::from(neg);
    let (j, v) = scan_digits(line, first, 0);
    let digits = j - first;
    if digits == 0 || digits > max_digits || line.get(j).is_some_and(|&c| c != delim) {
        return None;
    }
    // At most 18 digits: no overflow, so the wrapping sum is the value.
    let v = v as i64;
    Some((if neg { -v } else { v }, j))
}

/// Reads the ASCII digits at `line[j..]` into `mant` (`mant * 10 + digit` each, wrapping):
/// the position after them and the result.
#[inline(always)]
fn scan_digits(line: &[u8], mut j: usize, mut mant: u64) -> (usize, u64) {
    while let Some(&c) = line.get(j) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        mant = mant.wrapping_mul(10).wrapping_add(u64::from(d));
        j += 1;
    }
    (j, mant)
}

/// Reads `[-]digits[.digits]` at `line[at..]` up to the delimiter or the end of the line,
/// when [`parse_f64`]'s fast path applies to it (the same value).
#[inline]
fn plain_double(line: &[u8], at: usize, delim: u8) -> Option<(f64, usize)> {
    let neg = line.get(at) == Some(&b'-');
    let start = at + usize::from(neg);
    let (mut j, mut mant) = scan_digits(line, start, 0);
    let mut digits = j - start;
    let mut frac = 0usize;
    if line.get(j) == Some(&b'.') {
        let (end, m) = scan_digits(line, j + 1, mant);
        frac = end - (j + 1);
        (j, mant) = (end, m);
    }
    digits += frac;
    if digits == 0
        || digits > 19
        || frac > 22
        || mant > 1 << 53
        || line.get(j).is_some_and(|&c| c != delim)
    {
        return None;
    }
    let v = mant as f64 / POW10[frac];
    Some((if neg { -v } else { v }, j))
}

/// The opcode of a plain opcode column (empty or one letter).
#[inline]
fn plain_opcode(col: &[u8]) -> Option<Opcode> {
    match col {
        [] => Some(Opcode::Insert),
        [c] => Opcode::from_letter(*c),
        _ => None,
    }
}

/// The flags of a plain flags column (empty or one letter).
#[inline]
fn plain_flags(col: &[u8]) -> Option<Flags> {
    match col {
        [] => Some(Flags::Normal),
        [c] => Flags::from_letter(*c),
        _ => None,
    }
}

impl CsvParser {
    /// A parser for lines of `schema` read with `opts`.
    pub fn new(schema: &Schema, opts: &CsvOptions) -> CsvParser {
        let d = opts.delim();
        CsvParser {
            schema: schema.clone(),
            opts: opts.clone(),
            plain: d.is_ascii() && !d.is_ascii_digit() && !b"+-.\"\r\n".contains(&d),
            strings: vec![StrCache::default(); schema.len()],
            kinds: schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    if opts.missing_field == Some(i) {
                        Kind::Missing
                    } else {
                        Kind::Field(f.ty)
                    }
                })
                .collect(),
            row_capacity: row_capacity(schema.len()),
        }
    }

    /// Parses one line (a trailing `\n` and then `\r` dropped), as [`parse_event`] does.
    pub fn parse(&mut self, line: &str) -> Result<Event, CsvError> {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        let bare = bare.strip_suffix('\r').unwrap_or(bare);
        if let Some(ev) = self.parse_plain(bare.as_bytes()) {
            return Ok(ev);
        }
        let fmt = self.opts.dateformat.as_ref();
        let strings = &mut self.strings;
        parse_line(line, &self.schema, &self.opts, |i, text, ty| {
            string_or_value(strings, i, text, ty, fmt)
        })
    }

    /// The fast path of [`CsvParser::parse`], on the bytes of a line without its line end:
    /// `Some` with the event `parse` gives, for a line that is UTF-8 and parses without error
    /// and whose fields are plain (no quote in the line; a one-letter or empty opcode and
    /// flags; as many fields as the schema expects; integers and doubles as bare digits).
    /// `None` when `parse` must decide, with the same values as `parse` for the fields it
    /// read (strings are looked up in the same cache).
    pub fn parse_plain(&mut self, line: &[u8]) -> Option<Event> {
        let (opcode, flags, at) = self.plain_head(line)?;
        let mut row = Vec::with_capacity(self.row_capacity);
        self.plain_row(line, at, &mut row)?;
        Some(Event {
            opcode,
            flags,
            row,
            old: None,
        })
    }

    /// [`CsvParser::parse_plain`] that pushes the event onto `out` (true) instead of returning
    /// it (false: `out` is unchanged). The event is pushed first and filled in place: an event
    /// built aside and then moved into `out` was copied with wide loads of fields just written
    /// with narrower stores (opcode and flags, the row's parts), which stalled on every line.
    pub fn parse_plain_into(&mut self, line: &[u8], out: &mut Vec<Event>) -> bool {
        let Some((opcode, flags, at)) = self.plain_head(line) else {
            return false;
        };
        let k = out.len();
        // Made in place once `out` has room (a `push` builds the event aside first).
        let cap = self.row_capacity;
        out.resize_with(k + 1, || Event {
            opcode,
            flags,
            row: Vec::with_capacity(cap),
            old: None,
        });
        if self.plain_row(line, at, &mut out[k].row).is_some() {
            return true;
        }
        out.pop();
        false
    }

    /// The opcode and flags of a plain line and the position of its first field.
    #[inline(always)]
    fn plain_head(&self, line: &[u8]) -> Option<(Opcode, Flags, usize)> {
        if !self.plain {
            return None;
        }
        let delim = self.opts.delim();
        // Position of the first field.
        let mut at = 0usize;
        let opcode = if self.opts.add_opcode {
            if self.opts.upsert {
                Opcode::Upsert
            } else {
                Opcode::Insert
            }
        } else {
            let (op, len) = match line {
                [d, ..] if *d == delim => (Opcode::Insert, 0),
                [c, d, ..] if *d == delim => (plain_opcode(std::slice::from_ref(c))?, 1),
                _ => return None,
            };
            at = len + 1;
            op
        };
        let flags = if self.opts.add_flags {
            Flags::Normal
        } else {
            let (fl, len) = match &line[at..] {
                [d, ..] if *d == delim => (Flags::Normal, 0),
                [c, d, ..] if *d == delim => (plain_flags(std::slice::from_ref(c))?, 1),
                _ => return None,
            };
            at += len + 1;
            fl
        };
        Some((opcode, flags, at))
    }

    /// Pushes the values of the fields of a plain line, the first at `line[at..]`, onto
    /// `row`; `None` when the line is not plain (`row` then holds the values read so far).
    #[inline(always)]
    fn plain_row(&mut self, line: &[u8], mut at: usize, row: &mut Row) -> Option<()> {
        let delim = self.opts.delim();
        let fmt = self.opts.dateformat.as_ref();
        // `more` while a field starts at `at`.
        let mut more = true;
        for (i, &kind) in self.kinds.iter().enumerate() {
            let ty = match kind {
                Kind::Missing => {
                    row.push(Value::Null);
                    continue;
                }
                Kind::Field(ty) => ty,
            };
            if !more {
                return None;
            }
            let fast = match ty {
                FieldType::Int64 => plain_int(line, at, delim, 18).map(|(v, e)| {
                    row.push(Value::Int64(v));
                    e
                }),
                FieldType::Int32 => plain_int(line, at, delim, 9).map(|(v, e)| {
                    row.push(Value::Int32(v as i32));
                    e
                }),
                FieldType::Double => plain_double(line, at, delim).map(|(v, e)| {
                    row.push(Value::Double(v));
                    e
                }),
                _ => None,
            };
            let end = match fast {
                Some(end) => end,
                None => {
                    let rest = &line[at..];
                    let end = match find_delim_or_quote(rest, delim) {
                        // A quote: `parse` splits the line its own way.
                        Some(p) if rest[p] == b'"' => return None,
                        Some(p) => at + p,
                        None => line.len(),
                    };
                    let text = &line[at..end];
                    row.push(match ty {
                        FieldType::String if text.is_empty() => Value::Null,
                        FieldType::String => Value::String(self.strings[i].get_bytes(text)?),
                        _ => parse_non_string(std::str::from_utf8(text).ok()?, ty, fmt)?,
                    });
                    end
                }
            };
            more = end < line.len();
            at = end + 1;
        }
        if more {
            // Extra columns: an error `parse` reports.
            return None;
        }
        Some(())
    }
}

/// A field's value as [`parse_value`] gives it, short strings shared through `strings`.
#[inline]
fn string_or_value(
    strings: &mut [StrCache],
    i: usize,
    text: &str,
    ty: FieldType,
    fmt: Option<&DateFormat>,
) -> Option<Value> {
    if ty == FieldType::String {
        if text.is_empty() {
            return Some(Value::Null);
        }
        Some(Value::String(strings[i].get(text)))
    } else {
        parse_non_string(text, ty, fmt)
    }
}

/// Splits an unquoted line at an ASCII delimiter (the pieces are `str` slices at ASCII
/// boundaries, so no UTF-8 re-check is needed).
struct Fields<'a> {
    line: &'a str,
    at: usize,
    delim: u8,
    done: bool,
}

impl<'a> Fields<'a> {
    fn new(line: &'a str, delim: u8) -> Fields<'a> {
        Fields {
            line,
            at: 0,
            delim,
            done: false,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let rest = &self.line.as_bytes()[self.at..];
        // Fields are short: a plain scan beats memchr's setup here.
        match rest.iter().position(|&b| b == self.delim) {
            Some(p) => {
                let f = &self.line[self.at..self.at + p];
                self.at += p + 1;
                Some(f)
            }
            None => {
                self.done = true;
                Some(&self.line[self.at..])
            }
        }
    }
}

fn parse_fields<'a>(
    mut cols: impl Iterator<Item = &'a str>,
    schema: &Schema,
    opts: &CsvOptions,
    mut value: impl FnMut(usize, &str, FieldType) -> Option<Value>,
) -> Result<Event, CsvError> {
    let opcode = if opts.add_opcode {
        if opts.upsert {
            Opcode::Upsert
        } else {
            Opcode::Insert
        }
    } else {
        let t = cols.next().unwrap_or("");
        Opcode::parse(t).ok_or_else(|| CsvError::Opcode(t.to_string()))?
    };
    let flags = if opts.add_flags {
        Flags::Normal
    } else {
        let t = cols.next().unwrap_or("");
        Flags::parse(t).ok_or_else(|| CsvError::Flags(t.to_string()))?
    };
    let expected = schema.len() - usize::from(opts.missing_field.is_some());
    let is_delete = matches!(opcode, Opcode::Delete | Opcode::SafeDelete);
    let mut row = Vec::with_capacity(row_capacity(schema.len()));
    let mut found = 0usize;
    for (i, field) in schema.fields().iter().enumerate() {
        if opts.missing_field == Some(i) {
            row.push(Value::Null);
            continue;
        }
        let text = match cols.next() {
            Some(t) => {
                found += 1;
                t
            }
            None => "",
        };
        let v = value(i, text, field.ty).ok_or_else(|| CsvError::Value {
            field: field.name.clone(),
            ty: field.ty,
            text: text.to_string(),
        })?;
        row.push(v);
    }
    let extra = cols.count();
    // A delete needs only its key: trailing empty columns may be missing.
    if extra > 0 || (found < expected && !(is_delete && found > 0)) {
        return Err(CsvError::FieldCount {
            expected,
            found: found + extra,
        });
    }
    Ok(Event {
        opcode,
        flags,
        row,
        old: None,
    })
}

/// Appends one value's CSV text. A string holding the delimiter, a quote, a line feed or a
/// carriage return is quoted, with `""` for a quote and `\n`, `\r`, `\\` for a line feed, a
/// carriage return and a backslash, so the text stays on one line and [`split_line`] reads the
/// same string back. (An empty string is an empty field, which reads back as null.)
pub fn write_value(v: &Value, fmt: Option<&DateFormat>, out: &mut String) {
    match v {
        Value::Null => {}
        Value::String(s) => {
            if s.contains([',', '"', '\n', '\r']) {
                out.push('"');
                for ch in s.chars() {
                    match ch {
                        '"' => out.push_str("\"\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        ch => out.push(ch),
                    }
                }
                out.push('"');
            } else {
                out.push_str(s);
            }
        }
        Value::Date(s) => time::format_date(*s, fmt, out),
        Value::Stamp(us) => time::format_stamp(*us, fmt, out),
        Value::Money(m) => value::format_money(*m, out),
        Value::Int32(x) => {
            let _ = write!(out, "{x}");
        }
        Value::Int64(x) => {
            let _ = write!(out, "{x}");
        }
        Value::Double(x) => {
            let _ = write!(out, "{x}");
        }
    }
}

/// Appends the fields of `row`, comma-separated.
pub fn write_row(row: &[Value], fmt: Option<&DateFormat>, out: &mut String) {
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_value(v, fmt, out);
    }
}

/// Appends `OPCODE,FLAGS,fields...` (no newline).
pub fn write_event(ev: &Event, fmt: Option<&DateFormat>, out: &mut String) {
    out.push(ev.opcode.letter());
    out.push(',');
    out.push(ev.flags.letter());
    out.push(',');
    write_row(&ev.row, fmt, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::parse_schema_string("ID*:int32,symbol:string,quant:int32,price:double").unwrap()
    }

    #[test]
    fn parses_letters_blanks_and_nulls() {
        let s = schema();
        let o = CsvOptions::new();
        let e = parse_event("I,N, 10,ibm ,2000,164.1", &s, &o).unwrap();
        assert_eq!(e.opcode, Opcode::Insert);
        assert_eq!(
            e.row,
            vec![
                Value::Int32(10),
                Value::str("ibm "),
                Value::Int32(2000),
                Value::Double(164.1)
            ]
        );
        let d = parse_event("d,n,10,,,", &s, &o).unwrap();
        assert_eq!(d.row[1], Value::Null);
        let d2 = parse_event("d,n,10", &s, &o).unwrap();
        assert_eq!(d2.row.len(), 4);
        let p = parse_event(",n,10,x,1,2", &s, &o).unwrap();
        assert_eq!(p.opcode, Opcode::Insert);
    }

    #[test]
    fn quoted_fields() {
        let s = schema();
        let e = parse_event("i,n,1,\"a, \"\"b\"\"\",3,4.5", &s, &CsvOptions::new()).unwrap();
        assert_eq!(e.row[1], Value::str("a, \"b\""));
        let mut out = String::new();
        write_event(&e, None, &mut out);
        assert_eq!(out, "I,N,1,\"a, \"\"b\"\"\",3,4.5");
        assert_eq!(
            parse_event("i,n,1,\"abc,3,4", &s, &CsvOptions::new()),
            Err(CsvError::Quote)
        );
    }

    #[test]
    fn errors_name_the_field() {
        let s = schema();
        let e = parse_event("i,n,1,a,x,4", &s, &CsvOptions::new()).unwrap_err();
        assert_eq!(e.to_string(), "field 'quant' (int32): cannot read 'x'");
        let e = parse_event("i,n,1,a,3", &s, &CsvOptions::new()).unwrap_err();
        assert!(matches!(
            e,
            CsvError::FieldCount {
                expected: 4,
                found: 3
            }
        ));
        assert!(matches!(
            parse_event("z,n,1,a,3,4", &s, &CsvOptions::new()),
            Err(CsvError::Opcode(_))
        ));
    }

    #[test]
    fn autogen_without_opcode_flags_or_key() {
        let s = Schema::parse_schema_string("id*:int64,name:string,v:double").unwrap();
        let o = CsvOptions {
            add_opcode: true,
            add_flags: true,
            missing_field: Some(0),
            ..CsvOptions::new()
        };
        let e = parse_event("VERT & PEAK,45.1", &s, &o).unwrap();
        assert_eq!(
            e.row,
            vec![Value::Null, Value::str("VERT & PEAK"), Value::Double(45.1)]
        );
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    /// SplitMix64: a fixed, seedable source of test inputs.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    fn same_f64(text: &str) {
        let std: Option<f64> = text.parse().ok();
        let ours = parse_f64(text);
        assert_eq!(
            std.map(f64::to_bits),
            ours.map(f64::to_bits),
            "{text:?}: std {std:?}, ours {ours:?}"
        );
    }

    #[test]
    fn f64_parsing_equals_std_on_edge_cases() {
        for t in [
            "",
            ".",
            "-",
            "+",
            "-.",
            "0",
            "-0",
            "+0",
            "-0.0",
            "0.0",
            "1.",
            ".5",
            "-.5",
            "+.5",
            "1.5",
            "123.45",
            "0.1",
            "0.3",
            "1e5",
            "1E5",
            "1.5e-3",
            "inf",
            "-inf",
            "NaN",
            "infinity",
            "1..2",
            "1.2.3",
            "--1",
            "+-1",
            " 1",
            "1 ",
            "1,5",
            "0x10",
            "9007199254740992",
            "9007199254740993",
            "9007199254740992.5",
            "900719925474099.3",
            "1234567890123456789",
            "12345678901234567890",
            "0.1234567890123456789",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "1.0000000000000000000000",
            "0000000000000000000000000001.5",
            "179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000.0",
            "2.2250738585072014e-308",
            "4.9e-324",
            "1e400",
            "٣",
        ] {
            same_f64(t);
        }
    }

    #[test]
    fn f64_parsing_equals_std_on_random_decimals() {
        let mut r = Rng(42);
        let mut s = String::new();
        for _ in 0..200_000 {
            s.clear();
            match r.below(4) {
                0 => s.push('-'),
                1 if r.below(4) == 0 => s.push('+'),
                _ => {}
            }
            let int_digits = r.below(21);
            let frac_digits = r.below(25);
            for _ in 0..int_digits {
                s.push(char::from(b'0' + r.below(10) as u8));
            }
            if frac_digits > 0 || r.below(8) == 0 {
                s.push('.');
            }
            for _ in 0..frac_digits {
                s.push(char::from(b'0' + r.below(10) as u8));
            }
            if r.below(20) == 0 {
                s.push('e');
                s.push_str(&(r.below(40) as i32 - 20).to_string());
            }
            same_f64(&s);
            // Values printed the way data files hold them.
            let v = f64::from_bits(r.next());
            if v.is_finite() {
                same_f64(&v.to_string());
                same_f64(&format!("{v:.2}"));
            }
            same_f64(&format!("{}.{:02}", r.below(100_000), r.below(100)));
        }
    }

    #[test]
    fn integer_parsing_equals_std() {
        let mut cases: Vec<String> = [
            "",
            "+",
            "-",
            "0",
            "-0",
            "+0",
            "+5",
            "-5",
            "007",
            "1_0",
            " 1",
            "1 ",
            "1.0",
            "--1",
            "+-1",
            "2147483647",
            "2147483648",
            "-2147483648",
            "-2147483649",
            "999999999",
            "1000000000",
            "-999999999",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "999999999999999999",
            "1000000000000000000",
            "0000000000000000000000001",
            "١",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut r = Rng(7);
        for _ in 0..50_000 {
            let digits = r.below(22);
            let mut s = String::new();
            if r.below(3) == 0 {
                s.push('-');
            }
            for _ in 0..digits {
                s.push(char::from(b'0' + r.below(10) as u8));
            }
            cases.push(s);
            cases.push((r.next() as i64).to_string());
            cases.push((r.next() as i32).to_string());
        }
        for s in &cases {
            assert_eq!(parse_i64(s), s.parse::<i64>().ok(), "{s:?} as i64");
            assert_eq!(parse_i32(s), s.parse::<i32>().ok(), "{s:?} as i32");
        }
    }

    fn trades() -> Schema {
        Schema::parse_schema_string("id*:int64,symbol:string,price:double,quantity:int32").unwrap()
    }

    /// `CsvParser::parse` gives what `parse_event` gives, and its fast path never differs.
    fn check(parser: &mut CsvParser, line: &str, schema: &Schema, opts: &CsvOptions) {
        let want = parse_event(line, schema, opts);
        let got = parser.parse(line);
        assert_eq!(got, want, "{line:?} with {opts:?}");
        let bare = line.strip_suffix('\n').unwrap_or(line);
        let bare = bare.strip_suffix('\r').unwrap_or(bare);
        let plain = parser.parse_plain(bare.as_bytes());
        if let Some(ev) = &plain {
            assert_eq!(Ok(ev.clone()), want, "fast path on {line:?} with {opts:?}");
        }
        // The in-place form: the same event pushed after those already there, or nothing.
        let before = vec![Event::insert(vec![Value::Int32(1)])];
        let mut out = before.clone();
        let pushed = parser.parse_plain_into(bare.as_bytes(), &mut out);
        assert_eq!(pushed, plain.is_some(), "{line:?} with {opts:?}");
        assert_eq!(out[..1], before[..], "{line:?} with {opts:?}");
        assert_eq!(out.get(1), plain.as_ref(), "{line:?} with {opts:?}");
        assert_eq!(out.len(), 1 + usize::from(pushed));
    }

    #[test]
    fn rows_fill_a_power_of_two_size_class_when_that_costs_little() {
        let each = std::mem::size_of::<Value>();
        for n in 0..64 {
            let c = row_capacity(n);
            assert!(c >= n && (c - n) * 4 <= n, "{n} -> {c}");
            if c > n {
                // Within one value of the power of two above it.
                let bytes = c * each;
                assert!(bytes.next_power_of_two() - bytes < each, "{n} -> {c}");
            }
        }
        if each == 24 {
            // The benchmark's four fields take the 128-byte class.
            assert_eq!(row_capacity(4), 5);
            assert_eq!(row_capacity(3), 3);
        }
    }

    #[test]
    fn the_string_cache_keeps_a_thousand_values_and_finds_each_by_its_bytes() {
        let mut c = StrCache::default();
        let names: Vec<String> = (0..1000).map(|i| format!("SYM{i:04}")).collect();
        let first: Vec<Arc<str>> = names.iter().map(|n| c.get(n)).collect();
        let mut misses = 0;
        for (n, f) in names.iter().zip(&first) {
            let again = c.get(n);
            assert_eq!(&*again, n.as_str());
            misses += usize::from(!Arc::ptr_eq(&again, f));
        }
        // Three slots a set: only a set that drew four or more of the thousand loses one.
        assert!(misses < 30, "{misses} of 1000 evicted");
        // Not UTF-8: no string, and nothing kept.
        assert_eq!(c.get_bytes(b"\xff\xfe"), None);
        assert_eq!(c.get_bytes(b"\xff\xfe"), None);
        // Longer than the cache keeps: its own allocation each time.
        let long = "x".repeat(STR_CACHE_MAX_LEN + 1);
        let (a, b) = (c.get(&long), c.get(&long));
        assert_eq!(a, b);
        assert!(!Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn the_parser_equals_parse_event_on_edge_cases() {
        let s = trades();
        let lines = [
            "i,n,17,SYM0042,123.45,300",
            "I,N,17,SYM0042,123.45,300",
            "i,n,17,SYM0042,123.45,300\n",
            "i,n,17,SYM0042,123.45,300\r\n",
            "i,n,17,SYM0042,123.45,300\r",
            ",,17,SYM0042,123.45,300",
            "insert,n,17,SYM0042,123.45,300",
            " i,n,17,SYM0042,123.45,300",
            "i, n,17,SYM0042,123.45,300",
            "x,n,17,SYM0042,123.45,300",
            "i,x,17,SYM0042,123.45,300",
            "i,nn,17,SYM0042,123.45,300",
            "u,p,17,,,",
            "u,p,17,,,\r\n",
            "d,n,17",
            "d,n,17,",
            "d,n,,",
            "s,n,17,a",
            "p,r,17,a,1,2",
            "i,n,17,SYM0042,123.45",
            "i,n,17,SYM0042,123.45,300,",
            "i,n,17,SYM0042,123.45,300,extra",
            "i,n,17,SYM0042,123.45,300,,",
            "i,n",
            "i",
            "i,",
            "i,n,",
            "i,n,-17,SYM0042,-123.45,-300",
            "i,n,+17,SYM0042,+123.45,+300",
            "i,n, 17 ,SYM0042, 123.45 , 300 ",
            "i,n,17,  SYM 42 ,123.45,300",
            "i,n,17,SYM0042,1e3,300",
            "i,n,17,SYM0042,inf,300",
            "i,n,17,SYM0042,NaN,300",
            "i,n,17,SYM0042,.5,300",
            "i,n,17,SYM0042,5.,300",
            "i,n,17,SYM0042,.,300",
            "i,n,17,SYM0042,-,300",
            "i,n,17,SYM0042,123.45,3000000000",
            "i,n,17,SYM0042,123.45,2147483647",
            "i,n,17,SYM0042,123.45,-2147483648",
            "i,n,9223372036854775807,a,1,2",
            "i,n,9223372036854775808,a,1,2",
            "i,n,-9223372036854775808,a,1,2",
            "i,n,123456789012345678,a,1,2",
            "i,n,1234567890123456789,a,1,2",
            "i,n,17,SYM0042,9007199254740993,300",
            "i,n,17,SYM0042,0.1234567890123456789012,300",
            "i,n,17,SYM0042,0.12345678901234567890123,300",
            "i,n,17,\"SYM,0042\",123.45,300",
            "i,n,17,\"SYM\"\"0042\",123.45,300",
            "i,n,17,\"SYM\\\"0042\",123.45,300",
            "i,n,17, \"SYM\" ,123.45,300",
            "i,n,\"17\",SYM0042,\"123.45\",300",
            "i,n,17,SYM\"0042,123.45,300",
            "i,n,17,\"unterminated,123.45,300",
            "i,n,17,,123.45,300",
            "i,n,,SYM0042,,",
            "i,n,17,héllo wörld,123.45,300",
            "i,n,17,日本語,123.45,300",
            "i,n,17,a very long string value that is longer than the cache keeps,1.5,2",
            "i,n,17,SYM0042,1,2",
            "i,n,17,SYM0042,1,2",
            "i,n,17,ＳＹＭ,1,2",
            "i,n,1٣,a,1,2",
            "i,n,17,SYM0042,12٣.45,300",
        ];
        let mut p = CsvParser::new(&s, &CsvOptions::new());
        for line in lines {
            check(&mut p, line, &s, &CsvOptions::new());
        }
        // Other delimiters, including ones the fast path leaves to `parse`.
        for d in [b';', b'|', b'\t', b' ', b'.', b'-', b'1', b'"', b'e'] {
            let o = CsvOptions {
                delimiter: d,
                ..CsvOptions::new()
            };
            let mut p = CsvParser::new(&s, &o);
            for line in lines {
                let line = line.replace(',', std::str::from_utf8(&[d]).unwrap());
                check(&mut p, &line, &s, &o);
            }
        }
        // Without opcode and flags columns, with a missing autogen key, with upserts.
        let o = CsvOptions {
            add_opcode: true,
            add_flags: true,
            missing_field: Some(0),
            upsert: true,
            ..CsvOptions::new()
        };
        let mut p = CsvParser::new(&s, &o);
        for line in [
            "SYM0042,123.45,300",
            "SYM0042,123.45",
            "SYM0042,123.45,300,",
            ",,",
            "\"a,b\",1,2",
        ] {
            check(&mut p, line, &s, &o);
        }
    }

    #[test]
    fn the_parser_equals_parse_event_on_every_type() {
        let s = Schema::parse_schema_string(
            "k*:int64,i:int32,d:double,m:money,s:string,dt:date,st:stamp,t:string",
        )
        .unwrap();
        let mut p = CsvParser::new(&s, &CsvOptions::new());
        for line in [
            "i,n,1,2,3.5,4.25,x,2024-01-02 03:04:05,2024-01-02 03:04:05.123456,y",
            "i,n,1,2,3.5,4.25,x,1700000000,1700000000000000,y",
            "i,n,1,2,3.5,4.25,x,,,",
            "i,n,1,2,3.5,bad,x,,,",
            "i,n,1,2,3.5,4.25,x,notadate,,",
        ] {
            check(&mut p, line, &s, &CsvOptions::new());
        }
    }

    #[test]
    fn the_parser_equals_parse_event_on_random_lines() {
        let s = trades();
        let pieces = [
            "",
            "i",
            "n",
            "u",
            "d",
            "p",
            "x",
            "I",
            "N",
            "-",
            "+",
            ".",
            "0",
            "1",
            "7",
            "42",
            "123.45",
            "-0",
            "1e5",
            " ",
            "\"",
            "\"\"",
            "\\\"",
            "SYM0042",
            "é",
            "日本",
            ",",
            ",",
            ",",
            ",",
            "\r",
            "9999999999",
            "99999999999999999999",
        ];
        let mut r = Rng(3);
        let mut p = CsvParser::new(&s, &CsvOptions::new());
        for _ in 0..100_000 {
            let mut line = String::new();
            // Mostly well-formed lines with one field disturbed, some pure noise.
            if r.below(2) == 0 {
                let mut fields = [
                    r.pick(&["i", "n", "u", "d", "p", "", "x"]).to_string(),
                    r.pick(&["n", "p", "r", "", "q"]).to_string(),
                    r.below(1_000_000).to_string(),
                    format!("SYM{:04}", r.below(50)),
                    format!("{}.{:02}", r.below(1000), r.below(100)),
                    r.below(1000).to_string(),
                ];
                let f = r.below(fields.len());
                let extra = r.pick(&pieces);
                match r.below(3) {
                    0 => fields[f].push_str(extra),
                    1 => fields[f].insert_str(0, extra),
                    _ => fields[f] = extra.to_string(),
                }
                line = fields.join(",");
            } else {
                for _ in 0..r.below(14) {
                    line.push_str(r.pick(&pieces));
                }
            }
            check(&mut p, &line, &s, &CsvOptions::new());
        }
    }

    #[test]
    fn byte_helpers_equal_their_plain_forms() {
        let mut r = Rng(5);
        let alphabet = b"ab,\"\n;\xff\x80";
        for _ in 0..20_000 {
            let n = r.below(STR_CACHE_MAX_LEN + 1);
            let a: Vec<u8> = (0..n).map(|_| alphabet[r.below(alphabet.len())]).collect();
            let mut b = a.clone();
            if n > 0 && r.below(2) == 0 {
                let i = r.below(n);
                b[i] = alphabet[r.below(alphabet.len())];
            }
            if r.below(8) == 0 {
                b.push(b'a');
            }
            assert_eq!(short_eq(&a, &b), a == b, "{a:?} {b:?}");
            if a == b {
                assert_eq!(str_hash(&a), str_hash(&b));
            }
            for d in [b',', b';', b'\n', 0xff] {
                assert_eq!(
                    find_delim_or_quote(&a, d),
                    a.iter().position(|&c| c == d || c == b'"'),
                    "{a:?} {d}"
                );
            }
        }
    }

    #[test]
    fn repeated_strings_share_one_allocation_and_compare_by_content() {
        let s = trades();
        let mut p = CsvParser::new(&s, &CsvOptions::new());
        let a = p.parse("i,n,1,SYM0042,1.5,2").unwrap();
        let b = p.parse("i,n,2,SYM0042,1.5,2").unwrap();
        let (Value::String(x), Value::String(y)) = (&a.row[1], &b.row[1]) else {
            panic!("strings expected");
        };
        assert!(Arc::ptr_eq(x, y));
        // Many distinct values: each is still its own text.
        for i in 0..5000 {
            let line = format!("i,n,{i},S{},1.5,2", i % 3000);
            let ev = p.parse(&line).unwrap();
            assert_eq!(
                ev.row[1],
                Value::String(Arc::from(format!("S{}", i % 3000)))
            );
        }
    }
}
