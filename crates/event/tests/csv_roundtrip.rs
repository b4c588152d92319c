//! What the CSV writer writes, the CSV reader reads back: any string, including line feeds,
//! carriage returns, quotes, commas and backslashes, stays on one line and comes back equal.

use proptest::prelude::*;
use sluice_event::csv::{parse_event, split_line, write_event, CsvOptions, CsvParser};
use sluice_event::{Event, Row, Schema, Value};

fn schema() -> Schema {
    Schema::parse_schema_string("id*:int32,s:string,t:string,x:double").unwrap()
}

fn event(s: &str, t: &str) -> Event {
    let row: Row = [
        Value::Int32(7),
        Value::str(s),
        Value::str(t),
        Value::Double(1.5),
    ]
    .into_iter()
    .collect();
    Event::insert(row)
}

fn round_trip(s: &str, t: &str) {
    let ev = event(s, t);
    let mut line = String::new();
    write_event(&ev, None, &mut line);
    assert!(
        !line.contains(['\n', '\r']),
        "{s:?}: the line is cut: {line:?}"
    );
    let back = parse_event(&line, &schema(), &CsvOptions::new())
        .unwrap_or_else(|e| panic!("{s:?}: written as {line:?}, refused: {e}"));
    assert_eq!(back.row, ev.row, "{s:?}: written as {line:?}");
    // The cached parser of the connectors reads it the same, with a line end too.
    let mut p = CsvParser::new(&schema(), &CsvOptions::new());
    let back = p.parse(&format!("{line}\r\n")).unwrap();
    assert_eq!(back.row, ev.row, "{s:?}: written as {line:?}");
}

#[test]
fn strings_that_need_quoting_read_back_equal() {
    for s in [
        "a\nb",
        "a\r\nb",
        "\r",
        "line end\n",
        "say \"hi\"",
        "\"",
        "a,b",
        "back\\slash",
        "back\\slash, quoted",
        "\\\"",
        "\\n is not a line feed,",
        "ends with a backslash\\",
        "  blanks, kept  ",
        "x\"",
    ] {
        round_trip(s, "plain");
        round_trip("plain", s);
    }
}

#[test]
fn escapes_the_reader_accepts() {
    let mut out = Vec::new();
    split_line(r#"a,"x\ny\r\\z\"q""w",c"#, b',', &mut out).unwrap();
    assert_eq!(out, ["a", "x\ny\r\\z\"q\"w", "c"]);
    // A backslash before another character is kept as written.
    split_line(r#""C:\data\x""#, b',', &mut out).unwrap();
    assert_eq!(out, [r"C:\data\x"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_non_empty_string_reads_back_equal(
        s in "[a-z ,\"\n\r\\\\\t'é€]{1,24}",
        t in any::<String>().prop_filter("an empty field is null", |t| !t.is_empty()),
    ) {
        round_trip(&s, &t);
    }
}
