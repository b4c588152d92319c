//! Window-file versions: a restore reads the versions it knows (3, and 4) and refuses an older
//! or newer one with an error that names the version; what version 4 added is checked.

use sluice_engine::{snapshot::WINDOW_FILE_VERSION, Engine, NullSink, RestoreError};
use sluice_event::{Event, EventBlock, MsgId, Opcode, Value};

/// An aggregate on input with updates, grouped by a string: its sums are records (column
/// kind 1) and its keys rows of values, which version 3 wrote the same way but for the byte
/// that says how the keys are stored (version 4).
const MODEL: &str = r#"<project name="p"><contqueries><contquery name="cq">
<windows>
  <window-source name="src"><schema-string>id*:int64,g:string,q:int32</schema-string></window-source>
  <window-aggregate name="agg">
    <schema-string>g*:string,n:int64,total:int64</schema-string>
    <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(q)</field-expr></output>
  </window-aggregate>
</windows>
<edges><edge source="src" target="agg"/></edges>
</contquery></contqueries></project>"#;

fn engine() -> Engine {
    let spec = sluice_model::parse_project(MODEL, &|_: &str| None).unwrap();
    Engine::new(&spec).unwrap()
}

/// The model grouped by a key of type `ty`, and an engine of it fed `n` upserts whose key
/// is `key(i)`.
fn keyed_by(ty: &str, n: i64, key: impl Fn(i64) -> Value) -> (sluice_model::ProjectSpec, Engine) {
    let xml = MODEL
        .replace("g:string", &format!("g:{ty}"))
        .replace("g*:string", &format!("g*:{ty}"));
    let spec = sluice_model::parse_project(&xml, &|_: &str| None).unwrap();
    let mut e = Engine::new(&spec).unwrap();
    let src = e.window("cq", "src").unwrap();
    let events = (0..n)
        .map(|i| {
            Event::new(
                Opcode::Upsert,
                vec![Value::Int64(i), key(i), Value::Int32(i as i32)],
            )
        })
        .collect();
    e.inject(src, EventBlock::new(MsgId(1), events), 0, &mut NullSink)
        .unwrap();
    (spec, e)
}

/// Where an aggregate file's key storage byte is: after the 8-byte magic, 2-byte version,
/// kind, next sequence, no globals, group count and function count.
const KEYS_AT: usize = 8 + 2 + 1 + 8 + 4 + 8 + 4;

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

    // Version 3 of the aggregate's file: without the byte that says how its keys are stored.
    let mut v3 = with_version(&files, 3);
    let agg = v3.get_mut("cq/agg").unwrap();
    assert_eq!(agg[KEYS_AT], 0, "keys stored as values");
    agg.remove(KEYS_AT);
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

/// An int32 group key is stored as a raw 8-byte number from version 4: one outside the int32
/// range is refused, not truncated.
#[test]
fn an_int32_key_out_of_range_is_refused() {
    let (spec, e) = keyed_by("int32", 3, |i| Value::Int32(-7 - i as i32));
    let mut files = e.snapshot_windows();
    let agg = files.get_mut("cq/agg").unwrap();
    assert_eq!(agg[KEYS_AT], 1, "keys stored as numbers");
    let second = KEYS_AT + 1 + 8;
    assert_eq!(agg[second..second + 8], (-8i64).to_le_bytes());
    agg[second..second + 8].copy_from_slice(&(i64::from(i32::MAX) + 1).to_le_bytes());
    let mut fresh = Engine::new(&spec).unwrap();
    let err = fresh.restore_windows(&files).unwrap_err().to_string();
    assert!(
        err.contains("group 1: an int32 key out of the int32 range"),
        "{err}"
    );
}

/// A version 3 file kept integer keys as rows of values: they are read back into a column of
/// numbers, and the state is the one version 4 saves.
#[test]
fn version_three_integer_keys_are_read_as_numbers() {
    let (spec, e) = keyed_by("int64", 40, |i| Value::Int64(i % 9 - 4));
    let files = e.snapshot_windows();
    let v4 = &files["cq/agg"];
    assert_eq!(v4[KEYS_AT], 1, "keys stored as numbers");
    let n = u64::from_le_bytes(v4[KEYS_AT - 12..KEYS_AT - 4].try_into().unwrap()) as usize;
    assert_eq!(n, 9);
    // Each number becomes a one-value row: count 1, tag 2 (int64), the number.
    let mut v3 = v4[..KEYS_AT].to_vec();
    v3[8..10].copy_from_slice(&3u16.to_le_bytes());
    for k in 0..n {
        let at = KEYS_AT + 1 + k * 8;
        v3.extend_from_slice(&1u32.to_le_bytes());
        v3.push(2);
        v3.extend_from_slice(&v4[at..at + 8]);
    }
    v3.extend_from_slice(&v4[KEYS_AT + 1 + n * 8..]);
    let mut old = with_version(&files, 3);
    old.insert("cq/agg".into(), v3);
    let mut restored = Engine::new(&spec).unwrap();
    restored
        .restore_windows(&old)
        .expect("a version 3 file is read");
    assert_eq!(restored.snapshot_windows(), files);
}
