//! Window-file versions: a restore reads the versions it knows (3, and 4 which only added a
//! column kind) and refuses an older or newer one with an error that names the version.

use sluice_engine::{snapshot::WINDOW_FILE_VERSION, Engine, NullSink, RestoreError};
use sluice_event::{Event, EventBlock, MsgId, Opcode, Value};

/// An aggregate on input with updates: its sums are records (column kind 1), which version 3
/// wrote the same way.
const MODEL: &str = r#"<project name="p"><contqueries><contquery name="cq">
<windows>
  <window-source name="src"><schema-string>id*:int64,g:int64,q:int32</schema-string></window-source>
  <window-aggregate name="agg">
    <schema-string>g*:int64,n:int64,total:int64</schema-string>
    <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(q)</field-expr></output>
  </window-aggregate>
</windows>
<edges><edge source="src" target="agg"/></edges>
</contquery></contqueries></project>"#;

fn engine() -> Engine {
    let spec = sluice_model::parse_project(MODEL, &|_: &str| None).unwrap();
    Engine::new(&spec).unwrap()
}

fn with_version(
    files: &std::collections::BTreeMap<String, Vec<u8>>,
    v: u16,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(k, b)| {
            let mut b = b.clone();
            b[8..10].copy_from_slice(&v.to_le_bytes());
            (k.clone(), b)
        })
        .collect()
}

#[test]
fn versions_three_and_four_are_read_older_and_newer_refused_by_name() {
    assert_eq!(WINDOW_FILE_VERSION, 4);
    let mut e = engine();
    let src = e.window("cq", "src").unwrap();
    let events = (0..500)
        .map(|i| {
            let op = if i % 5 == 4 {
                Opcode::Delete
            } else {
                Opcode::Upsert
            };
            let id = if op == Opcode::Delete { i - 3 } else { i };
            Event::new(
                op,
                vec![
                    Value::Int64(id),
                    Value::Int64(id % 17),
                    Value::Int32(id as i32),
                ],
            )
        })
        .collect();
    e.inject(src, EventBlock::new(MsgId(1), events), 0, &mut NullSink)
        .unwrap();
    let files = e.snapshot_windows();
    assert!(
        files.values().all(|b| b[8..10] == 4u16.to_le_bytes()),
        "version 4 is written"
    );

    let v3 = with_version(&files, 3);
    let mut restored = engine();
    restored
        .restore_windows(&v3)
        .expect("a version 3 file is read");
    assert_eq!(
        restored.snapshot_windows(),
        files,
        "and gives the same state"
    );

    for (v, says) in [
        (
            2u16,
            "window file version 2 was written by an older sluice (this one reads versions 3 to 4)",
        ),
        (
            5,
            "window file version 5 is newer than this sluice supports (4)",
        ),
    ] {
        let mut r = engine();
        let before = r.snapshot_windows();
        let err: RestoreError = r.restore_windows(&with_version(&files, v)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(says), "version {v}: {text}");
        assert_eq!(
            r.snapshot_windows(),
            before,
            "a refused file changes nothing"
        );
    }
}
