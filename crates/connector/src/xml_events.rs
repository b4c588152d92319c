//! The XML event text form (reference 3.2):
//!
//! ```xml
//! <events>
//!   <transaction>            <!-- optional: one transactional block -->
//!     <event><opcode>i</opcode><ID key="true">1</ID><symbol>ibm</symbol></event>
//!   </transaction>
//!   <event opcode="insert">...</event>
//! </events>
//! ```
//!
//! Events outside `<transaction>` form one normal block per event run.

use quick_xml::events::Event as X;
use quick_xml::Reader;
use sluice_event::csv::parse_value;
use sluice_event::time::DateFormat;
use sluice_event::{Event, Flags, Opcode, Schema, Value};

/// A problem in an XML event document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("XML events, event {event}: {message}")]
pub struct XmlEventError {
    /// 1-based index of the event (0 for document-level problems).
    pub event: usize,
    pub message: String,
}

/// Parses an XML event document into blocks: (transactional, events).
pub fn parse_events(
    text: &str,
    schema: &Schema,
    fmt: Option<&DateFormat>,
) -> Result<Vec<(bool, Vec<Event>)>, XmlEventError> {
    let mut reader = Reader::from_str(text);
    let mut blocks: Vec<(bool, Vec<Event>)> = Vec::new();
    let mut loose: Vec<Event> = Vec::new();
    let mut in_tx = false;
    let mut tx: Vec<Event> = Vec::new();
    let mut count = 0usize;
    let mut cur: Option<(Opcode, Flags, Vec<Value>)> = None;
    let mut field: Option<String> = None;
    let mut text_buf = String::new();
    // Elements open now that the document must close: (name, byte where it starts).
    let mut open: Vec<(&'static str, usize)> = Vec::new();
    let err = |event: usize, message: String| XmlEventError { event, message };
    loop {
        let at = reader.buffer_position() as usize;
        let ev = reader.read_event().map_err(|e| {
            let at = reader.error_position() as usize;
            let line = text.as_bytes()[..at.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            err(
                count,
                format!("malformed XML at byte {at} (line {line}): {e}"),
            )
        })?;
        match &ev {
            X::Start(e) if cur.is_none() => match e.name().as_ref() {
                b"events" => open.push(("events", at)),
                b"transaction" => open.push(("transaction", at)),
                b"event" => open.push(("event", at)),
                _ => {}
            },
            X::Start(_) if field.is_none() => {
                // A field is cut short where its event starts.
                let event_at = open.last().map_or(at, |o| o.1);
                open.push(("field", event_at));
            }
            X::End(_) => {
                open.pop();
            }
            _ => {}
        }
        match ev {
            X::Eof => {
                if let Some((what, start)) = open.last() {
                    let line = text.as_bytes()[..*start]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1;
                    let inside = match *what {
                        "event" | "field" => format!("inside event {count}"),
                        other => format!("inside <{other}>"),
                    };
                    return Err(err(
                        count,
                        format!(
                            "the document is cut short: it ends {inside}, opened at byte {start} (line {line}), without closing it; nothing was read"
                        ),
                    ));
                }
                break;
            }
            X::Start(e) | X::Empty(e) if cur.is_none() => {
                let name = String::from_utf8_lossy(e.name().as_ref()).to_string();
                match name.as_str() {
                    "events" => {}
                    "transaction" => {
                        for e in loose.drain(..) {
                            blocks.push((false, vec![e]));
                        }
                        in_tx = true;
                    }
                    "event" => {
                        count += 1;
                        let mut op = Opcode::Insert;
                        for a in e.attributes().flatten() {
                            if a.key.as_ref() == b"opcode" {
                                let v = a.unescape_value().map_err(|e| err(count, e.to_string()))?;
                                op = Opcode::parse(&v).ok_or_else(|| err(count, format!("unknown opcode '{v}'")))?;
                            }
                        }
                        cur = Some((op, Flags::Normal, vec![Value::Null; schema.len()]));
                    }
                    other => return Err(err(count, format!("unexpected element <{other}> (expected <events>, <transaction> or <event>)"))),
                }
            }
            X::Start(e) => {
                field = Some(String::from_utf8_lossy(e.name().as_ref()).to_string());
                text_buf.clear();
            }
            X::Empty(_) => {}
            X::Text(t) if field.is_some() => {
                text_buf.push_str(&t.unescape().map_err(|e| err(count, e.to_string()))?);
            }
            X::CData(t) if field.is_some() => {
                text_buf.push_str(&String::from_utf8_lossy(&t));
            }
            X::End(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).to_string();
                if let Some(f) = field.take() {
                    let (op, flags, row) = cur.as_mut().expect("inside an event");
                    match f.as_str() {
                        "opcode" => {
                            *op = Opcode::parse(&text_buf)
                                .ok_or_else(|| err(count, format!("unknown opcode '{text_buf}'")))?
                        }
                        "flags" => {
                            *flags = Flags::parse(&text_buf)
                                .ok_or_else(|| err(count, format!("unknown flags '{text_buf}'")))?
                        }
                        _ => {
                            let i = schema.index_of(&f).ok_or_else(|| {
                                err(
                                    count,
                                    format!("'{f}' is not a field of the window ({schema})"),
                                )
                            })?;
                            let ty = schema.field(i).ty;
                            row[i] = parse_value(&text_buf, ty, fmt).ok_or_else(|| {
                                err(
                                    count,
                                    format!("field '{f}' ({ty}): cannot read '{text_buf}'"),
                                )
                            })?;
                        }
                    }
                } else if name == "event" {
                    let (op, flags, row) = cur.take().expect("inside an event");
                    let e = Event {
                        opcode: op,
                        flags,
                        row,
                        old: None,
                    };
                    if in_tx {
                        tx.push(e);
                    } else {
                        loose.push(e);
                    }
                } else if name == "transaction" {
                    in_tx = false;
                    blocks.push((true, std::mem::take(&mut tx)));
                }
            }
            _ => {}
        }
    }
    if !loose.is_empty() {
        // Outside transactions, each event is its own block (blocksize 1).
        for e in loose {
            blocks.push((false, vec![e]));
        }
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_and_transactions() {
        let s = Schema::parse_schema_string("ID*:int32,name:string").unwrap();
        let text = r#"<events><transaction><event><opcode>i</opcode><ID key="true">1</ID><name>a &amp; b</name></event>
            <event><opcode>u</opcode><ID>1</ID><name>c</name></event></transaction>
            <event opcode="delete"><ID>1</ID></event></events>"#;
        let b = parse_events(text, &s, None).unwrap();
        assert_eq!(b.len(), 2);
        assert!(b[0].0);
        assert_eq!(b[0].1[0].row[1], Value::str("a & b"));
        assert_eq!(b[1].1[0].opcode, Opcode::Delete);
    }

    #[test]
    fn subscriber_xml_reads_back() {
        let s = Schema::parse_schema_string("ID*:int32,name:string,d:date").unwrap();
        let ev = Event {
            opcode: Opcode::Update,
            flags: Flags::Normal,
            row: vec![
                Value::Int32(7),
                Value::str("a<b & \"c\""),
                Value::Date(86_400),
            ],
            old: None,
        };
        let mut text = String::from("<events>");
        crate::fs::write_xml_event(
            &ev,
            &["ID".into(), "name".into(), "d".into()],
            None,
            &mut text,
        );
        text.push_str("</events>");
        let b = parse_events(&text, &s, None).unwrap();
        assert_eq!(b[0].1[0].opcode, Opcode::Update);
        assert_eq!(b[0].1[0].row, ev.row);
    }

    #[test]
    fn unknown_field_is_named() {
        let s = Schema::parse_schema_string("ID*:int32").unwrap();
        let e = parse_events("<events><event><IDX>1</IDX></event></events>", &s, None).unwrap_err();
        assert!(e.message.contains("'IDX'"), "{e}");
    }

    #[test]
    fn a_document_cut_short_is_refused_with_the_position() {
        let s = Schema::parse_schema_string("ID*:int32,name:string").unwrap();
        for (doc, inside, at) in [
            (
                "<events><event><ID>1</ID>",
                "inside event 1",
                "byte 8 (line 1)",
            ),
            ("<events><event><ID>1", "inside event 1", "byte 8 (line 1)"),
            (
                "<events>\n<event><ID>1</ID></event>\n<event>",
                "inside event 2",
                "byte 35 (line 3)",
            ),
            (
                "<events><transaction><event><ID>1</ID></event>",
                "inside <transaction>",
                "byte 8",
            ),
            (
                "<events><event><ID>1</ID></event>",
                "inside <events>",
                "byte 0",
            ),
        ] {
            let e = parse_events(doc, &s, None).unwrap_err();
            assert!(
                e.message.contains(inside) && e.message.contains(at),
                "{doc}: {e}"
            );
        }
        assert_eq!(parse_events("<events/>", &s, None).unwrap().len(), 0);
        assert_eq!(
            parse_events("<event><ID>1</ID></event>", &s, None)
                .unwrap()
                .len(),
            1
        );
    }
}
