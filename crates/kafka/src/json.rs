//! The JSON form of events (`kafkatype=json`), documented in docs/formats/json-events.md:
//!
//! ```text
//! [{"opcode":"i","flags":"n","ID":1,"symbol":"ibm","price":164.1}]
//! ```
//!
//! A record holds an array of event objects (or one object). Keys are field names; `opcode`
//! and `flags` are optional (insert, normal).

use std::fmt::Write;

use serde_json::Value as Json;
use sluice_event::csv::{self, CsvOptions};
use sluice_event::time::{self, DateFormat};
use sluice_event::{Event, FieldType, Flags, Opcode, Schema, Value};

/// Why a JSON record could not become events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("expected an array of event objects or one object, found {0}")]
    Shape(&'static str),
    #[error("event {index}: expected an object, found {found}")]
    NotObject { index: usize, found: &'static str },
    #[error("event {index}: unknown opcode {text} (use i, u, d, p or s)")]
    Opcode { index: usize, text: String },
    #[error("event {index}: unknown flags {text} (use n, p or r)")]
    Flags { index: usize, text: String },
    #[error("event {index}: the window has no field '{name}'")]
    UnknownField { index: usize, name: String },
    #[error("event {index}: field '{field}' ({ty}): cannot read {text}")]
    Value {
        index: usize,
        field: String,
        ty: FieldType,
        text: String,
    },
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn value_of(j: &Json, ty: FieldType, fmt: Option<&DateFormat>) -> Option<Value> {
    match j {
        Json::Null => Some(Value::Null),
        Json::String(s) => csv::parse_value(s, ty, fmt),
        Json::Number(n) => match ty {
            FieldType::Int32 => Some(Value::Int32(i32::try_from(n.as_i64()?).ok()?)),
            FieldType::Int64 => Some(Value::Int64(n.as_i64()?)),
            FieldType::Date => Some(Value::Date(n.as_i64()?)),
            FieldType::Stamp => Some(Value::Stamp(n.as_i64()?)),
            FieldType::Double => Some(Value::Double(n.as_f64().filter(|f| f.is_finite())?)),
            // The number's own text, so no binary rounding happens on the way.
            FieldType::Money => Some(Value::Money(sluice_event::value::parse_money(
                &n.to_string(),
            )?)),
            FieldType::String => Some(Value::str(&n.to_string())),
        },
        Json::Bool(_) | Json::Array(_) | Json::Object(_) => None,
    }
}

/// Parses a record's JSON text into events of `schema`. `opts` gives the dateformat and the
/// default opcode (`publishwithupsert`). Any error rejects the whole record.
pub fn parse_events(
    text: &[u8],
    schema: &Schema,
    opts: &CsvOptions,
) -> Result<Vec<Event>, JsonError> {
    let doc: Json = serde_json::from_slice(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
    let items: Vec<Json> = match doc {
        Json::Array(a) => a,
        o @ Json::Object(_) => vec![o],
        other => return Err(JsonError::Shape(kind(&other))),
    };
    let fmt = opts.dateformat.as_ref();
    let default_opcode = if opts.upsert {
        Opcode::Upsert
    } else {
        Opcode::Insert
    };
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let Json::Object(map) = item else {
            return Err(JsonError::NotObject {
                index,
                found: kind(&item),
            });
        };
        let mut opcode = default_opcode;
        let mut flags = Flags::Normal;
        let mut row = vec![Value::Null; schema.len()];
        for (k, v) in &map {
            match k.as_str() {
                "opcode" => {
                    opcode =
                        v.as_str()
                            .and_then(Opcode::parse)
                            .ok_or_else(|| JsonError::Opcode {
                                index,
                                text: v.to_string(),
                            })?
                }
                "flags" => {
                    flags = v
                        .as_str()
                        .and_then(Flags::parse)
                        .ok_or_else(|| JsonError::Flags {
                            index,
                            text: v.to_string(),
                        })?
                }
                name => {
                    let i = schema
                        .index_of(name)
                        .ok_or_else(|| JsonError::UnknownField {
                            index,
                            name: name.to_string(),
                        })?;
                    let ty = schema.field(i).ty;
                    row[i] = value_of(v, ty, fmt).ok_or_else(|| JsonError::Value {
                        index,
                        field: name.to_string(),
                        ty,
                        text: v.to_string(),
                    })?;
                }
            }
        }
        events.push(Event {
            opcode,
            flags,
            row,
            old: None,
        });
    }
    Ok(events)
}

fn push_json_str(s: &str, out: &mut String) {
    // serde_json's escaping of a plain string cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "null".into()));
}

/// Writes events as a JSON array, fields in schema order; updates are written collapsed (the
/// new row). Money is a decimal string (exact), dates and stamps are text in the dateformat
/// (or the default form), non-finite doubles are null.
pub fn write_events(events: &[&Event], schema: &Schema, fmt: Option<&DateFormat>) -> String {
    let mut out = String::with_capacity(64 * events.len() + 2);
    out.push('[');
    let mut tmp = String::new();
    for (n, ev) in events.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"opcode\":\"{}\",\"flags\":\"{}\"",
            ev.opcode.letter().to_ascii_lowercase(),
            ev.flags.letter().to_ascii_lowercase()
        );
        for (i, f) in schema.fields().iter().enumerate() {
            out.push(',');
            push_json_str(&f.name, &mut out);
            out.push(':');
            match ev.row.get(i).unwrap_or(&Value::Null) {
                Value::Null => out.push_str("null"),
                Value::Int32(x) => {
                    let _ = write!(out, "{x}");
                }
                Value::Int64(x) => {
                    let _ = write!(out, "{x}");
                }
                Value::Double(x) if x.is_finite() => {
                    let _ = write!(out, "{x:?}");
                }
                Value::Double(_) => out.push_str("null"),
                Value::Money(m) => {
                    tmp.clear();
                    sluice_event::value::format_money(*m, &mut tmp);
                    push_json_str(&tmp, &mut out);
                }
                Value::String(s) => push_json_str(s, &mut out),
                Value::Date(d) => {
                    tmp.clear();
                    time::format_date(*d, fmt, &mut tmp);
                    push_json_str(&tmp, &mut out);
                }
                Value::Stamp(us) => {
                    tmp.clear();
                    time::format_stamp(*us, fmt, &mut tmp);
                    push_json_str(&tmp, &mut out);
                }
            }
        }
        out.push('}');
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::parse_schema_string(
            "ID*:int64,symbol:string,price:double,m:money,t:stamp,d:date,q:int32",
        )
        .unwrap()
    }

    #[test]
    fn round_trip_in_schema_order() {
        let s = schema();
        let ev = Event::new(
            Opcode::Upsert,
            vec![
                Value::Int64(1),
                Value::str("i\"b,m"),
                Value::Double(3.0),
                Value::Money(12_345_678_900),
                Value::Stamp(1_500_000),
                Value::Date(86_400),
                Value::Null,
            ],
        );
        let text = write_events(&[&ev], &s, None);
        assert_eq!(
            text,
            r#"[{"opcode":"p","flags":"n","ID":1,"symbol":"i\"b,m","price":3.0,"m":"12345.6789","t":"1970-01-01 00:00:01.500000","d":"1970-01-02 00:00:00","q":null}]"#
        );
        let back = parse_events(text.as_bytes(), &s, &CsvOptions::new()).unwrap();
        assert_eq!(back, vec![ev]);
    }

    #[test]
    fn defaults_and_numbers() {
        let s = schema();
        let evs = parse_events(
            br#"{"ID":"7","price":2,"m":0.1,"t":5,"q":3}"#,
            &s,
            &CsvOptions::new(),
        )
        .unwrap();
        assert_eq!(evs[0].opcode, Opcode::Insert);
        assert_eq!(evs[0].row[0], Value::Int64(7));
        assert_eq!(evs[0].row[2], Value::Double(2.0));
        assert_eq!(evs[0].row[3], Value::Money(100_000));
        assert_eq!(evs[0].row[4], Value::Stamp(5));
        assert_eq!(evs[0].row[1], Value::Null);
    }

    #[test]
    fn errors_name_event_and_field() {
        let s = schema();
        let o = CsvOptions::new();
        let e = parse_events(br#"[{"ID":1},{"ID":"x"}]"#, &s, &o).unwrap_err();
        assert_eq!(
            e.to_string(),
            "event 1: field 'ID' (int64): cannot read \"x\""
        );
        let e = parse_events(br#"[{"Id":1}]"#, &s, &o).unwrap_err();
        assert_eq!(e.to_string(), "event 0: the window has no field 'Id'");
        assert!(matches!(
            parse_events(b"[1,", &s, &o),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(
            parse_events(b"3", &s, &o),
            Err(JsonError::Shape("a number"))
        ));
        assert!(matches!(
            parse_events(br#"[{"opcode":"z"}]"#, &s, &o),
            Err(JsonError::Opcode { .. })
        ));
        assert!(parse_events(br#"[{"q":3000000000}]"#, &s, &o).is_err());
    }
}
