//! Event text in and out of the server: CSV, XML and JSON bodies of injections and client
//! publishers, and the `<events>` / JSON / CSV forms of window contents and subscriber output.
//!
//! Dates are written as integer seconds and stamps as integer microseconds in XML and JSON;
//! CSV output uses the subscriber's `dateformat` (default `%Y-%m-%d %H:%M:%S`).

use sluice_event::csv::{self, CsvOptions};
use sluice_event::time::DateFormat;
use sluice_event::{Event, EventBlock, Flags, MsgId, Opcode, Schema, Value};

use crate::reply::{escape, escape_attr};

/// An event text format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    Csv,
    Xml,
    Json,
}

impl EventFormat {
    /// Parses `csv`, `xml` or `json`.
    pub fn parse(s: &str) -> Option<EventFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Some(EventFormat::Csv),
            "xml" => Some(EventFormat::Xml),
            "json" => Some(EventFormat::Json),
            _ => None,
        }
    }

    /// Guesses the format of a body: `<` starts XML, `{` or `[` JSON, anything else CSV.
    pub fn detect(text: &str) -> EventFormat {
        match text.trim_start().chars().next() {
            Some('<') => EventFormat::Xml,
            Some('{') | Some('[') => EventFormat::Json,
            _ => EventFormat::Csv,
        }
    }
}

/// How event text is read.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    pub dateformat: Option<DateFormat>,
    /// Events per block for CSV and JSON (XML keeps its own `<transaction>` blocks).
    pub blocksize: usize,
    /// Opcode of XML/JSON events that carry none.
    pub opcode: Opcode,
    /// Whether problems may quote the input (cut short). False for text read from a file
    /// named by the request: problems then give positions and reasons only.
    pub quote_input: bool,
}

impl Default for ParseOptions {
    fn default() -> ParseOptions {
        ParseOptions {
            dateformat: None,
            blocksize: 1,
            opcode: Opcode::Insert,
            quote_input: true,
        }
    }
}

/// Longest piece of input quoted in a problem.
const QUOTE_MAX: usize = 200;

/// A problem's reason without the input it quotes: every span in quotes ('…', "…", `…`) or
/// angle brackets becomes `…`. For input read from a file named by the request.
pub fn unquoted(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut close: Option<char> = None;
    for c in reason.chars() {
        match close {
            Some(end) if c == end => {
                out.push(c);
                close = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                let end = match c {
                    '\'' => Some('\''),
                    '"' => Some('"'),
                    '`' => Some('`'),
                    '<' => Some('>'),
                    _ => None,
                };
                if let Some(end) = end {
                    out.push('…');
                    close = Some(end);
                }
            }
        }
    }
    out
}

/// A CSV problem's reason without the input it quotes (field names come from the schema).
fn csv_reason(e: &csv::CsvError) -> String {
    match e {
        csv::CsvError::Opcode(_) => "unknown opcode (use i, u, d, p or s)".into(),
        csv::CsvError::Flags(_) => "unknown flags (use n, p or r)".into(),
        csv::CsvError::Value { field, ty, .. } => {
            format!("field '{field}' ({ty}): cannot read the value")
        }
        other => other.to_string(),
    }
}

/// Reads event text into blocks (message IDs left 0 for the project to number). On failure,
/// one line per problem (`line N: reason: text` for CSV, `event N: reason` otherwise; without
/// the text when `opts.quote_input` is false) and no event is taken.
pub fn parse_body(
    text: &str,
    fmt: EventFormat,
    schema: &Schema,
    opts: &ParseOptions,
) -> Result<Vec<EventBlock>, Vec<String>> {
    let bs = opts.blocksize.max(1);
    let group = |events: Vec<Event>| -> Vec<EventBlock> {
        events
            .chunks(bs)
            .map(|c| EventBlock::new(MsgId(0), c.to_vec()))
            .collect()
    };
    match fmt {
        EventFormat::Csv => {
            let copts = CsvOptions {
                dateformat: opts.dateformat.clone(),
                ..CsvOptions::new()
            };
            let mut events = Vec::new();
            let mut errors = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match csv::parse_event(line, schema, &copts) {
                    Ok(e) => events.push(e),
                    Err(e) if opts.quote_input => errors.push(format!(
                        "line {}: {e}: {}",
                        i + 1,
                        crate::reply::cut(line, QUOTE_MAX)
                    )),
                    Err(e) => errors.push(format!("line {}: {}", i + 1, csv_reason(&e))),
                }
            }
            if errors.is_empty() {
                Ok(group(events))
            } else {
                Err(errors)
            }
        }
        EventFormat::Xml => {
            let blocks =
                sluice_connector::xml_events::parse_events(text, schema, opts.dateformat.as_ref())
                    .map_err(|e| {
                        vec![if opts.quote_input {
                            crate::reply::cut(&e.to_string(), QUOTE_MAX)
                        } else {
                            unquoted(&e.to_string())
                        }]
                    })?;
            Ok(blocks
                .into_iter()
                .map(|(tx, events)| EventBlock {
                    id: MsgId(0),
                    transactional: tx,
                    events,
                })
                .collect())
        }
        EventFormat::Json => {
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| vec![format!("malformed JSON: {e}")])?;
            let items = match v {
                serde_json::Value::Array(a) => a,
                serde_json::Value::Object(mut m) => match m.remove("events") {
                    Some(serde_json::Value::Array(a)) => a,
                    _ => vec![serde_json::Value::Object(m)],
                },
                _ => {
                    return Err(vec![
                        "expected a JSON array of event objects, or {\"events\": [...]}".into(),
                    ])
                }
            };
            let mut events = Vec::new();
            let mut errors = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match json_event(item, schema, opts) {
                    Ok(e) => events.push(e),
                    Err(e) if opts.quote_input => errors.push(format!(
                        "event {}: {}",
                        i + 1,
                        crate::reply::cut(&e, QUOTE_MAX)
                    )),
                    Err(e) => errors.push(format!("event {}: {}", i + 1, unquoted(&e))),
                }
            }
            if errors.is_empty() {
                Ok(group(events))
            } else {
                Err(errors)
            }
        }
    }
}

fn json_event(
    item: &serde_json::Value,
    schema: &Schema,
    opts: &ParseOptions,
) -> Result<Event, String> {
    let obj = item
        .as_object()
        .ok_or("expected an object of field names and values")?;
    let obj = match obj.get("values").and_then(|v| v.as_object()) {
        Some(values) => values,
        None => obj,
    };
    let mut opcode = opts.opcode;
    let mut flags = Flags::Normal;
    if let Some(o) = item.get("opcode").and_then(|v| v.as_str()) {
        opcode = Opcode::parse(o).ok_or_else(|| format!("unknown opcode '{o}'"))?;
    }
    if let Some(f) = item.get("flags").and_then(|v| v.as_str()) {
        flags = match f.to_ascii_lowercase().as_str() {
            "normal" => Flags::Normal,
            "partialupdate" | "partial" => Flags::Partial,
            "retention" => Flags::Retention,
            _ => Flags::parse(f).ok_or_else(|| format!("unknown flags '{f}'"))?,
        };
    }
    let mut row = vec![Value::Null; schema.len()];
    for (k, v) in obj {
        if (k == "opcode" || k == "flags") && schema.index_of(k).is_none() {
            continue;
        }
        let i = schema
            .index_of(k)
            .ok_or_else(|| format!("'{k}' is not a field of the window ({schema})"))?;
        let ty = schema.field(i).ty;
        let text = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => return Err(format!("field '{k}': cannot read {other}")),
        };
        row[i] = csv::parse_value(&text, ty, opts.dateformat.as_ref())
            .ok_or_else(|| format!("field '{k}' ({ty}): cannot read '{text}'"))?;
    }
    Ok(Event {
        opcode,
        flags,
        row,
        old: None,
    })
}

/// Writes one row as `<event window=… opcode=…><f>v</f>…</event>` (null fields omitted).
pub fn xml_event(
    window: Option<&str>,
    opcode: Option<Opcode>,
    schema: &Schema,
    row: &[Value],
    out: &mut String,
) {
    out.push_str("<event");
    if let Some(w) = window {
        out.push_str(" window=\"");
        escape_attr(w, out);
        out.push('"');
    }
    if let Some(o) = opcode {
        out.push_str(" opcode=\"");
        out.push_str(o.name());
        out.push('"');
    }
    out.push('>');
    for (f, v) in schema.fields().iter().zip(row) {
        if v.is_null() {
            continue;
        }
        out.push('<');
        out.push_str(&f.name);
        if f.key {
            out.push_str(" key=\"true\"");
        }
        out.push('>');
        escape(&v.to_string(), out);
        out.push_str("</");
        out.push_str(&f.name);
        out.push('>');
    }
    out.push_str("</event>");
}

/// A value as JSON: numbers as numbers (dates as seconds, stamps as microseconds), money and
/// strings as strings.
pub fn json_value(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Int32(x) => J::from(*x),
        Value::Int64(x) | Value::Date(x) | Value::Stamp(x) => J::from(*x),
        Value::Double(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Value::Money(_) | Value::String(_) => J::String(v.to_string()),
    }
}

/// A row as a JSON object of field names and values.
pub fn json_row(schema: &Schema, row: &[Value]) -> serde_json::Map<String, serde_json::Value> {
    schema
        .fields()
        .iter()
        .zip(row)
        .map(|(f, v)| (f.name.clone(), json_value(v)))
        .collect()
}

/// Output events of one block in a subscriber's format.
pub fn format_block(
    fmt: EventFormat,
    window: &str,
    id: MsgId,
    snapshot: bool,
    schema: &Schema,
    events: &[Event],
    dateformat: Option<&DateFormat>,
) -> String {
    let mut s = String::new();
    match fmt {
        EventFormat::Csv => {
            for e in events {
                csv::write_event(e, dateformat, &mut s);
                s.push('\n');
            }
        }
        EventFormat::Xml => {
            s.push_str("<events window=\"");
            escape_attr(window, &mut s);
            s.push_str(&format!("\" id=\"{id}\""));
            if snapshot {
                s.push_str(" snapshot=\"true\"");
            }
            s.push('>');
            for e in events {
                xml_event(None, Some(e.opcode), schema, &e.row, &mut s);
            }
            s.push_str("</events>");
        }
        EventFormat::Json => {
            let evs: Vec<serde_json::Value> = events
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "opcode": e.opcode.name(),
                        "flags": e.flags.letter().to_string(),
                        "values": json_row(schema, &e.row),
                    })
                })
                .collect();
            s = serde_json::json!({
                "window": window,
                "id": id.0,
                "snapshot": snapshot,
                "events": evs,
            })
            .to_string();
        }
    }
    s
}

/// A schema in a subscriber's format.
pub fn format_schema(fmt: EventFormat, window: &str, schema: &Schema) -> String {
    match fmt {
        EventFormat::Json => {
            let fields: Vec<serde_json::Value> = schema
                .fields()
                .iter()
                .map(|f| serde_json::json!({"name": f.name, "type": f.ty.name(), "key": f.key}))
                .collect();
            serde_json::json!({"schema": {"window": window, "fields": fields}}).to_string()
        }
        _ => {
            let mut s = String::from("<schema window=\"");
            escape_attr(window, &mut s);
            s.push_str("\"><fields>");
            for f in schema.fields() {
                s.push_str(&format!(
                    "<field name=\"{}\" type=\"{}\"{}/>",
                    f.name,
                    f.ty.name(),
                    if f.key { " key=\"true\"" } else { "" }
                ));
            }
            s.push_str("</fields></schema>");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::parse_schema_string("ID*:int64,symbol:string,price:double,t:stamp").unwrap()
    }

    #[test]
    fn bodies_of_each_format_parse() {
        let s = schema();
        let o = ParseOptions::default();
        let csv = parse_body(
            "i,n,1,IBM,10.5,7\n\np,n,2,SAP,1,\n",
            EventFormat::Csv,
            &s,
            &o,
        )
        .unwrap();
        assert_eq!(csv.len(), 2);
        assert_eq!(csv[1].events[0].opcode, Opcode::Upsert);
        let json = parse_body(
            r#"[{"ID":1,"symbol":"IBM","price":10.5},{"opcode":"d","ID":2}]"#,
            EventFormat::Json,
            &s,
            &o,
        )
        .unwrap();
        assert_eq!(json[0].events[0].row[2], Value::Double(10.5));
        assert_eq!(json[1].events[0].opcode, Opcode::Delete);
        let xml = parse_body(
            "<events><event><ID>3</ID><symbol>A</symbol></event></events>",
            EventFormat::Xml,
            &s,
            &o,
        )
        .unwrap();
        assert_eq!(xml[0].events[0].row[0], Value::Int64(3));
    }

    #[test]
    fn bad_bodies_name_each_problem() {
        let s = schema();
        let o = ParseOptions::default();
        let e = parse_body(
            "i,n,1,IBM,x,\ni,n,2,A,1,\nq,n,3,A,1,",
            EventFormat::Csv,
            &s,
            &o,
        )
        .unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(e[0].starts_with("line 1: field 'price'"), "{e:?}");
        assert!(e[1].starts_with("line 3: unknown opcode"), "{e:?}");
        let e = parse_body(r#"[{"nope":1}]"#, EventFormat::Json, &s, &o).unwrap_err();
        assert!(e[0].contains("'nope' is not a field"), "{e:?}");
        assert!(parse_body("{", EventFormat::Json, &s, &o).is_err());
    }

    #[test]
    fn problems_of_file_input_quote_nothing() {
        let s = schema();
        let o = ParseOptions {
            quote_input: false,
            ..ParseOptions::default()
        };
        let e = parse_body(
            "root:$6$secret:19000\ni,n,1,IBM,x$secret,\n",
            EventFormat::Csv,
            &s,
            &o,
        )
        .unwrap_err();
        assert_eq!(
            e,
            vec![
                "line 1: unknown opcode (use i, u, d, p or s)".to_string(),
                "line 2: field 'price' (double): cannot read the value".to_string()
            ]
        );
        let e = parse_body(
            r#"[{"secret1":1},{"ID":"secret2"},{"opcode":"secret3"}]"#,
            EventFormat::Json,
            &s,
            &o,
        )
        .unwrap_err();
        assert!(e.iter().all(|l| !l.contains("secret")), "{e:?}");
        for doc in [
            "<events><event><secret>1</secret></event></events>",
            "<events><event><ID>secret</ID></event></events>",
            "<events><secret/></events>",
            "<events><event opcode=\"secret\"></event></events>",
            "<events><a></secret></events>",
        ] {
            let e = parse_body(doc, EventFormat::Xml, &s, &o).unwrap_err();
            assert!(e.iter().all(|l| !l.contains("secret")), "{doc}: {e:?}");
        }
        assert_eq!(unquoted("a 'b' \"c\" `d` <e> 'f"), "a '…' \"…\" `…` <…> '…");
    }

    #[test]
    fn xml_output_uses_integer_stamps() {
        let s = schema();
        let mut out = String::new();
        let row = vec![
            Value::Int64(1),
            Value::str("a<b"),
            Value::Null,
            Value::Stamp(1_500_000),
        ];
        xml_event(Some("p/cq/w"), None, &s, &row, &mut out);
        assert_eq!(
            out,
            "<event window=\"p/cq/w\"><ID key=\"true\">1</ID><symbol>a&lt;b</symbol><t>1500000</t></event>"
        );
    }
}
