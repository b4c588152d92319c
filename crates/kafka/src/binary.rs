//! The binary event-block format (docs/formats/binary-events.md): one block per Kafka record,
//! carrying its message ID and, for output blocks, its output ID.
//!
//! Decoding never panics: every malformed input gives a [`BinaryError`] naming the problem
//! and the byte offset.

use std::sync::Arc;

use sluice_event::{Event, EventBlock, FieldType, Flags, MsgId, Opcode, Schema, Value};

use crate::OutputId;

/// The first four bytes of every block.
pub const MAGIC: [u8; 4] = *b"SLBK";
/// The format version this build writes and the newest it reads.
pub const VERSION: u8 = 1;
/// Bytes of the fixed header before the field types.
const FIXED: usize = 30;
const FLAG_OUTPUT_ID: u8 = 1;

/// Why bytes are not a block this build can read (or an event cannot be written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    #[error("not a Sluice binary block (magic {found:02x?}, expected \"SLBK\")")]
    Magic { found: Vec<u8> },
    #[error("binary block version {found} is newer than this sluice reads ({VERSION})")]
    Version { found: u8 },
    #[error("binary block truncated at byte {at}: {what} needs {need} more bytes, {left} left")]
    Truncated {
        at: usize,
        what: &'static str,
        need: usize,
        left: usize,
    },
    #[error("binary block byte {at}: {what}")]
    Invalid { at: usize, what: String },
    #[error(
        "binary block: field {index} ('{name}'): the block has {block}, the window has {window}"
    )]
    TypeMismatch {
        index: usize,
        name: String,
        block: String,
        window: FieldType,
    },
    #[error("binary block has {block} fields, the window's schema has {window}")]
    FieldCount { block: usize, window: usize },
    #[error("binary block has {left} bytes left over after its last event (byte {at})")]
    Trailing { at: usize, left: usize },
    #[error("cannot encode field {index} ('{name}', {ty}): the event holds {value:?}")]
    Encode {
        index: usize,
        name: String,
        ty: FieldType,
        value: String,
    },
    #[error("cannot encode: {0}")]
    TooLarge(String),
}

/// The fixed part of a block: everything but the events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    pub version: u8,
    pub msg_id: MsgId,
    pub transactional: bool,
    pub output_id: Option<OutputId>,
    pub field_types: Vec<FieldType>,
    pub event_count: u32,
}

fn type_code(t: FieldType) -> u8 {
    match t {
        FieldType::Int32 => 1,
        FieldType::Int64 => 2,
        FieldType::Double => 3,
        FieldType::Money => 4,
        FieldType::String => 5,
        FieldType::Date => 6,
        FieldType::Stamp => 7,
    }
}

fn type_of(code: u8) -> Option<FieldType> {
    Some(match code {
        1 => FieldType::Int32,
        2 => FieldType::Int64,
        3 => FieldType::Double,
        4 => FieldType::Money,
        5 => FieldType::String,
        6 => FieldType::Date,
        7 => FieldType::Stamp,
        _ => return None,
    })
}

fn opcode_code(o: Opcode) -> u8 {
    match o {
        Opcode::Insert => 0,
        Opcode::Update => 1,
        Opcode::Delete => 2,
        Opcode::Upsert => 3,
        Opcode::SafeDelete => 4,
    }
}

fn opcode_of(c: u8) -> Option<Opcode> {
    Some(match c {
        0 => Opcode::Insert,
        1 => Opcode::Update,
        2 => Opcode::Delete,
        3 => Opcode::Upsert,
        4 => Opcode::SafeDelete,
        _ => return None,
    })
}

fn flags_code(f: Flags) -> u8 {
    match f {
        Flags::Normal => 0,
        Flags::Partial => 1,
        Flags::Retention => 2,
    }
}

fn flags_of(c: u8) -> Option<Flags> {
    Some(match c {
        0 => Flags::Normal,
        1 => Flags::Partial,
        2 => Flags::Retention,
        _ => return None,
    })
}

/// Encodes `events` of `schema` as one block. Values whose type differs from their field's are
/// converted when the conversion is exact enough (`Value::coerce`), else refused.
pub fn encode_block(
    schema: &Schema,
    msg_id: MsgId,
    transactional: bool,
    output_id: Option<OutputId>,
    events: &[&Event],
) -> Result<Vec<u8>, BinaryError> {
    let n = schema.len();
    let n16 = u16::try_from(n).map_err(|_| BinaryError::TooLarge(format!("{n} fields")))?;
    let count = u32::try_from(events.len())
        .map_err(|_| BinaryError::TooLarge(format!("{} events", events.len())))?;
    let mut out = Vec::with_capacity(FIXED + n + 4 + events.len() * (2 + n.div_ceil(8) + 8 * n));
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(u8::from(transactional));
    out.push(if output_id.is_some() {
        FLAG_OUTPUT_ID
    } else {
        0
    });
    out.push(0);
    out.extend_from_slice(&msg_id.0.to_le_bytes());
    let oid = output_id.unwrap_or_default();
    out.extend_from_slice(&oid.input.to_le_bytes());
    out.extend_from_slice(&oid.seq.to_le_bytes());
    out.extend_from_slice(&n16.to_le_bytes());
    for f in schema.fields() {
        out.push(type_code(f.ty));
    }
    out.extend_from_slice(&count.to_le_bytes());
    let bitmap_len = n.div_ceil(8);
    for ev in events {
        out.push(opcode_code(ev.opcode));
        out.push(flags_code(ev.flags));
        let bitmap_at = out.len();
        out.resize(bitmap_at + bitmap_len, 0);
        for (i, field) in schema.fields().iter().enumerate() {
            let v = ev.row.get(i).unwrap_or(&Value::Null);
            if v.is_null() {
                out[bitmap_at + i / 8] |= 1 << (i % 8);
                continue;
            }
            let coerced;
            let v = if v.field_type() == Some(field.ty) {
                v
            } else {
                coerced = v.coerce(field.ty).ok_or_else(|| BinaryError::Encode {
                    index: i,
                    name: field.name.clone(),
                    ty: field.ty,
                    value: format!("{v:?}"),
                })?;
                &coerced
            };
            match v {
                Value::Int32(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::Int64(x) | Value::Money(x) | Value::Date(x) | Value::Stamp(x) => {
                    out.extend_from_slice(&x.to_le_bytes())
                }
                Value::Double(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
                Value::String(s) => {
                    let len = u32::try_from(s.len()).map_err(|_| {
                        BinaryError::TooLarge(format!("a string of {} bytes", s.len()))
                    })?;
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                Value::Null => unreachable!("nulls are in the bitmap"),
            }
        }
    }
    Ok(out)
}

/// A cursor over the bytes with bounds-checked reads.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, need: usize, what: &'static str) -> Result<&'a [u8], BinaryError> {
        let left = self.buf.len() - self.at;
        if need > left {
            return Err(BinaryError::Truncated {
                at: self.at,
                what,
                need,
                left,
            });
        }
        let s = &self.buf[self.at..self.at + need];
        self.at += need;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], BinaryError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, BinaryError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, BinaryError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, BinaryError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, BinaryError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, BinaryError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn invalid(&self, at: usize, what: String) -> BinaryError {
        BinaryError::Invalid { at, what }
    }
}

fn read_header_from(r: &mut Reader<'_>) -> Result<BlockHeader, BinaryError> {
    let magic = r.take(4.min(r.left()), "magic")?;
    if magic != MAGIC {
        return Err(BinaryError::Magic {
            found: magic.to_vec(),
        });
    }
    let version = r.u8("version")?;
    if version > VERSION {
        return Err(BinaryError::Version { found: version });
    }
    if version == 0 {
        return Err(r.invalid(4, "version 0 does not exist".into()));
    }
    let at = r.at;
    let transactional = match r.u8("block type")? {
        0 => false,
        1 => true,
        t => {
            return Err(r.invalid(
                at,
                format!("unknown block type {t} (0 normal, 1 transactional)"),
            ))
        }
    };
    let at = r.at;
    let hflags = r.u8("header flags")?;
    if hflags & !FLAG_OUTPUT_ID != 0 {
        return Err(r.invalid(at, format!("unknown header flags {hflags:#04x}")));
    }
    let at = r.at;
    if r.u8("reserved")? != 0 {
        return Err(r.invalid(at, "reserved byte is not 0".into()));
    }
    let msg_id = MsgId(r.u64("message ID")?);
    let input = r.u64("output ID")?;
    let seq = r.u32("output ID sequence")?;
    let output_id = (hflags & FLAG_OUTPUT_ID != 0).then_some(OutputId { input, seq });
    let n = r.u16("field count")? as usize;
    let types_at = r.at;
    let codes = r.take(n, "field types")?;
    let mut field_types = Vec::with_capacity(n);
    for (i, &c) in codes.iter().enumerate() {
        field_types.push(
            type_of(c)
                .ok_or_else(|| r.invalid(types_at + i, format!("unknown field type code {c}")))?,
        );
    }
    let event_count = r.u32("event count")?;
    Ok(BlockHeader {
        version,
        msg_id,
        transactional,
        output_id,
        field_types,
        event_count,
    })
}

/// Reads the header of a block (message ID, output ID, block type, field types) without a
/// schema and without reading the events.
pub fn read_header(bytes: &[u8]) -> Result<BlockHeader, BinaryError> {
    read_header_from(&mut Reader { buf: bytes, at: 0 })
}

/// A decoded block: the events, its message ID and its output ID (when it has one).
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedBlock {
    pub block: EventBlock,
    pub output_id: Option<OutputId>,
}

/// Decodes a whole block against `schema`.
pub fn decode_block(bytes: &[u8], schema: &Schema) -> Result<DecodedBlock, BinaryError> {
    let mut r = Reader { buf: bytes, at: 0 };
    let h = read_header_from(&mut r)?;
    let n = schema.len();
    if h.field_types.len() != n {
        return Err(BinaryError::FieldCount {
            block: h.field_types.len(),
            window: n,
        });
    }
    for (i, (bt, f)) in h.field_types.iter().zip(schema.fields()).enumerate() {
        if *bt != f.ty {
            return Err(BinaryError::TypeMismatch {
                index: i,
                name: f.name.clone(),
                block: bt.to_string(),
                window: f.ty,
            });
        }
    }
    let bitmap_len = n.div_ceil(8);
    // Every event takes at least opcode, flags and its bitmap: refuse impossible counts
    // before allocating.
    let min_event = 2 + bitmap_len;
    let count = h.event_count as usize;
    if count.saturating_mul(min_event) > r.left() {
        return Err(BinaryError::Truncated {
            at: r.at,
            what: "events",
            need: count.saturating_mul(min_event),
            left: r.left(),
        });
    }
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        let at = r.at;
        let oc = r.u8("opcode")?;
        let opcode = opcode_of(oc).ok_or_else(|| r.invalid(at, format!("unknown opcode {oc}")))?;
        let at = r.at;
        let fc = r.u8("flags")?;
        let flags =
            flags_of(fc).ok_or_else(|| r.invalid(at, format!("unknown event flags {fc}")))?;
        let bitmap_at = r.at;
        let bitmap = r.take(bitmap_len, "null bitmap")?;
        // Bits past the last field must be clear.
        if !n.is_multiple_of(8) && bitmap_len > 0 && bitmap[bitmap_len - 1] >> (n % 8) != 0 {
            return Err(r.invalid(
                bitmap_at + bitmap_len - 1,
                "null bitmap has bits set past the last field".into(),
            ));
        }
        let mut row = Vec::with_capacity(n);
        for (i, ty) in h.field_types.iter().enumerate() {
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                row.push(Value::Null);
                continue;
            }
            row.push(match ty {
                FieldType::Int32 => Value::Int32(i32::from_le_bytes(r.array("int32 value")?)),
                FieldType::Int64 => Value::Int64(r.i64("int64 value")?),
                FieldType::Double => Value::Double(f64::from_bits(r.u64("double value")?)),
                FieldType::Money => Value::Money(r.i64("money value")?),
                FieldType::Date => Value::Date(r.i64("date value")?),
                FieldType::Stamp => Value::Stamp(r.i64("stamp value")?),
                FieldType::String => {
                    let len = r.u32("string length")? as usize;
                    let at = r.at;
                    let b = r.take(len, "string bytes")?;
                    let s = std::str::from_utf8(b).map_err(|e| {
                        r.invalid(at, format!("field {i}: string is not UTF-8 ({e})"))
                    })?;
                    Value::String(Arc::from(s))
                }
            });
        }
        events.push(Event {
            opcode,
            flags,
            row,
            old: None,
        });
    }
    if r.left() != 0 {
        return Err(BinaryError::Trailing {
            at: r.at,
            left: r.left(),
        });
    }
    Ok(DecodedBlock {
        block: EventBlock {
            id: h.msg_id,
            transactional: h.transactional,
            events,
        },
        output_id: h.output_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schema() -> Schema {
        Schema::parse_schema_string(
            "id*:int64,a:int32,d:double,m:money,s:string,dt:date,st:stamp,x1:int32,x2:int32",
        )
        .unwrap()
    }

    fn value_for(ty: FieldType) -> impl Strategy<Value = Value> {
        let non_null = match ty {
            FieldType::Int32 => any::<i32>().prop_map(Value::Int32).boxed(),
            FieldType::Int64 => any::<i64>().prop_map(Value::Int64).boxed(),
            // Any bit pattern, NaNs included: the format carries the bits.
            FieldType::Double => any::<u64>()
                .prop_map(|b| Value::Double(f64::from_bits(b)))
                .boxed(),
            FieldType::Money => any::<i64>().prop_map(Value::Money).boxed(),
            FieldType::String => ".{0,12}".prop_map(|s| Value::str(&s)).boxed(),
            FieldType::Date => any::<i64>().prop_map(Value::Date).boxed(),
            FieldType::Stamp => any::<i64>().prop_map(Value::Stamp).boxed(),
        };
        prop_oneof![1 => Just(Value::Null), 4 => non_null]
    }

    fn event_strategy() -> impl Strategy<Value = Event> {
        let s = schema();
        let fields: Vec<_> = s.fields().iter().map(|f| value_for(f.ty)).collect();
        (0u8..5, 0u8..3, fields).prop_map(|(o, f, row)| Event {
            opcode: opcode_of(o).unwrap(),
            flags: flags_of(f).unwrap(),
            row,
            old: None,
        })
    }

    /// Bitwise comparison (doubles by bits, so NaN round trips count).
    fn same(a: &[Event], b: &[Event]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.opcode == y.opcode
                    && x.flags == y.flags
                    && x.row.len() == y.row.len()
                    && x.row.iter().zip(&y.row).all(|(u, v)| match (u, v) {
                        (Value::Double(p), Value::Double(q)) => p.to_bits() == q.to_bits(),
                        _ => u == v && u.field_type() == v.field_type(),
                    })
            })
    }

    proptest! {
        #[test]
        fn round_trip(
            events in proptest::collection::vec(event_strategy(), 0..6),
            id in any::<u64>(),
            tx in any::<bool>(),
            oid in proptest::option::of((any::<u64>(), any::<u32>())),
        ) {
            let s = schema();
            let oid = oid.map(|(input, seq)| OutputId { input, seq });
            let refs: Vec<&Event> = events.iter().collect();
            let bytes = encode_block(&s, MsgId(id), tx, oid, &refs).unwrap();
            let d = decode_block(&bytes, &s).unwrap();
            prop_assert_eq!(d.block.id, MsgId(id));
            prop_assert_eq!(d.block.transactional, tx);
            prop_assert_eq!(d.output_id, oid);
            prop_assert!(same(&d.block.events, &events));
            let h = read_header(&bytes).unwrap();
            prop_assert_eq!(h.output_id, oid);
            prop_assert_eq!(h.event_count as usize, events.len());
        }

        /// Any truncation, any single corrupted byte, any garbage: an error or a block,
        /// never a panic.
        #[test]
        fn corrupted_input_never_panics(
            events in proptest::collection::vec(event_strategy(), 1..4),
            cut in any::<proptest::sample::Index>(),
            flip in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let s = schema();
            let refs: Vec<&Event> = events.iter().collect();
            let bytes = encode_block(&s, MsgId(7), false, None, &refs).unwrap();
            let truncated = &bytes[..cut.index(bytes.len())];
            prop_assert!(decode_block(truncated, &s).is_err());
            let mut flipped = bytes.clone();
            let i = flip.index(flipped.len());
            flipped[i] = byte;
            let _ = decode_block(&flipped, &s);
            let _ = read_header(&flipped);
            let _ = decode_block(&garbage, &s);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&garbage);
            let _ = decode_block(&with_magic, &s);
        }
    }

    fn sample() -> (Schema, Vec<u8>) {
        let s = Schema::parse_schema_string("id*:int64,name:string,price:double").unwrap();
        let ev = Event::insert(vec![Value::Int64(1), Value::str("ibm"), Value::Double(2.5)]);
        let bytes = encode_block(
            &s,
            MsgId(42),
            false,
            Some(OutputId { input: 42, seq: 3 }),
            &[&ev],
        )
        .unwrap();
        (s, bytes)
    }

    #[test]
    fn header_layout_is_as_documented() {
        let (_, b) = sample();
        assert_eq!(&b[0..4], b"SLBK");
        assert_eq!(b[4], 1);
        assert_eq!(b[5], 0);
        assert_eq!(b[6], 1);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 42);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 42);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 3);
        assert_eq!(u16::from_le_bytes(b[28..30].try_into().unwrap()), 3);
        assert_eq!(&b[30..33], &[2, 5, 3]);
        assert_eq!(u32::from_le_bytes(b[33..37].try_into().unwrap()), 1);
        // opcode, flags, bitmap, int64, u32 len + "ibm", f64
        assert_eq!(b.len(), 37 + 3 + 8 + 4 + 3 + 8);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let (s, b) = sample();
        let e = decode_block(b"JUNKJUNK", &s).unwrap_err();
        assert!(e.to_string().contains("not a Sluice binary block"), "{e}");
        let mut newer = b.clone();
        newer[4] = 9;
        assert_eq!(
            decode_block(&newer, &s).unwrap_err().to_string(),
            "binary block version 9 is newer than this sluice reads (1)"
        );
        let e = decode_block(&b[..b.len() - 2], &s).unwrap_err();
        assert!(
            e.to_string().contains("double value needs 8 more bytes"),
            "{e}"
        );
        let mut extra = b.clone();
        extra.push(0);
        assert!(matches!(
            decode_block(&extra, &s),
            Err(BinaryError::Trailing { left: 1, .. })
        ));
        let other = Schema::parse_schema_string("id*:int64,name:string,price:int64").unwrap();
        assert_eq!(
            decode_block(&b, &other).unwrap_err().to_string(),
            "binary block: field 2 ('price'): the block has double, the window has int64"
        );
        let mut bad_utf8 = b.clone();
        bad_utf8[37 + 3 + 8 + 4] = 0xff;
        assert!(decode_block(&bad_utf8, &s)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        let mut huge = b.clone();
        huge[33..37].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_block(&huge, &s),
            Err(BinaryError::Truncated { what: "events", .. })
        ));
        let mut op = b.clone();
        op[37] = 9;
        assert!(decode_block(&op, &s)
            .unwrap_err()
            .to_string()
            .contains("unknown opcode 9"));
        assert!(read_header(&[]).is_err());
    }

    #[test]
    fn mismatched_values_are_coerced_or_refused() {
        let s = Schema::parse_schema_string("id*:int64,v:double").unwrap();
        let ok = Event::insert(vec![Value::Int32(1), Value::Int64(2)]);
        let b = encode_block(&s, MsgId(1), false, None, &[&ok]).unwrap();
        let d = decode_block(&b, &s).unwrap();
        assert_eq!(
            d.block.events[0].row,
            vec![Value::Int64(1), Value::Double(2.0)]
        );
        let bad = Event::insert(vec![Value::str("x"), Value::Null]);
        let e = encode_block(&s, MsgId(1), false, None, &[&bad]).unwrap_err();
        assert!(e.to_string().contains("field 0 ('id', int64)"), "{e}");
    }
}
