//! The CSV text form of events: `opcode,flags,field1,...,fieldN`.
//!
//! Parsing rules (docs/formats/csv-events.md): opcode and flag letters are case-insensitive and
//! an empty opcode is insert; an empty field is null; numeric fields may carry surrounding
//! blanks, string fields keep theirs; a field may be double-quoted, with `""` or `\"` standing
//! for a quote inside it.

use std::fmt::Write;
use std::sync::Arc;

use crate::event::{Event, Flags, Opcode};
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
                    b'\\' if bytes.get(k + 1) == Some(&b'"') => {
                        s.push('"');
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
    if text.is_empty() {
        return Some(Value::Null);
    }
    if ty == FieldType::String {
        return Some(Value::String(Arc::from(text)));
    }
    let t = text.trim_ascii();
    if t.is_empty() {
        return Some(Value::Null);
    }
    Some(match ty {
        FieldType::String => unreachable!("handled above"),
        FieldType::Int32 => Value::Int32(t.parse().ok()?),
        FieldType::Int64 => Value::Int64(t.parse().ok()?),
        FieldType::Double => Value::Double(parse_double(t)?),
        FieldType::Money => Value::Money(value::parse_money(t)?),
        FieldType::Date => Value::Date(time::parse_date(text, fmt)?),
        FieldType::Stamp => Value::Stamp(time::parse_stamp(text, fmt)?),
    })
}

fn parse_double(s: &str) -> Option<f64> {
    let v: f64 = s.parse().ok()?;
    // Rust accepts "inf" and "NaN"; ESP data does not use them and they poison aggregates.
    v.is_finite().then_some(v)
}

/// Parses one CSV line into an event of `schema`.
pub fn parse_event(line: &str, schema: &Schema, opts: &CsvOptions) -> Result<Event, CsvError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if memchr::memchr(b'"', line.as_bytes()).is_none() {
        // Fast path: no quoting, no allocation for the split.
        parse_fields(Fields::new(line, opts.delim()), schema, opts)
    } else {
        let mut cols = Vec::new();
        split_line(line, opts.delim(), &mut cols)?;
        parse_fields(cols.iter().map(|c| c.as_ref()), schema, opts)
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
    let fmt = opts.dateformat.as_ref();
    let mut row = Vec::with_capacity(schema.len());
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
        let v = parse_value(text, field.ty, fmt).ok_or_else(|| CsvError::Value {
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

/// Appends one value's CSV text (quoted when it contains the delimiter, a quote or a newline).
pub fn write_value(v: &Value, fmt: Option<&DateFormat>, out: &mut String) {
    match v {
        Value::Null => {}
        Value::String(s) => {
            if s.contains([',', '"', '\n', '\r']) {
                out.push('"');
                for ch in s.chars() {
                    if ch == '"' {
                        out.push('"');
                    }
                    out.push(ch);
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
