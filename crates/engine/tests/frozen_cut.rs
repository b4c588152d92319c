//! A frozen engine is a consistent cut: encoding it after the engine has gone on gives the
//! bytes the engine had at the cut, even for state large enough to span many shards.

use sluice_engine::{Engine, NullSink};
use sluice_event::{Event, EventBlock, MsgId, Value};

const MODEL: &str = r#"<project name="p"><contqueries><contquery name="cq">
<windows>
  <window-source name="src"><schema-string>id*:int64,sym:string,q:int32,px:double</schema-string></window-source>
  <window-aggregate name="agg">
    <schema-string>sym*:string,n:int64,total:int64,hi:double</schema-string>
    <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(q)</field-expr><field-expr>ESP_aMax(px)</field-expr></output>
  </window-aggregate>
  <window-copy name="last"><retention type="bycount_sliding">5000</retention></window-copy>
  <window-source name="dim"><schema-string>sym*:string,name:string</schema-string></window-source>
  <window-join name="j">
    <join type="leftouter"><conditions><fields left="sym" right="sym"/></conditions></join>
    <output><field-selection name="q" source="l_q"/><field-expr name="name" type="string">r_name</field-expr></output>
  </window-join>
</windows>
<edges><edge source="src" target="agg"/><edge source="src" target="last"/>
<edge source="src" target="j" role="left"/><edge source="dim" target="j" role="right"/></edges>
</contquery></contqueries></project>"#;

fn trade(id: i64, op: sluice_event::Opcode) -> Event {
    let row = vec![
        Value::Int64(id),
        Value::str(&format!("S{}", id % 300)),
        Value::Int32((id % 97) as i32),
        Value::Double((id % 1000) as f64 / 10.0),
    ];
    Event::new(op, row)
}

fn feed(e: &mut Engine, from: i64, to: i64) {
    let src = e.window("cq", "src").unwrap();
    for chunk in (from..to).collect::<Vec<_>>().chunks(64) {
        let events = chunk
            .iter()
            .map(|&i| {
                if i % 7 == 3 && i > 64 {
                    trade(i - 64, sluice_event::Opcode::Delete)
                } else {
                    trade(i, sluice_event::Opcode::Upsert)
                }
            })
            .collect();
        e.inject(
            src,
            EventBlock::new(MsgId(chunk[0] as u64), events),
            0,
            &mut NullSink,
        )
        .unwrap();
    }
}

#[test]
fn encoding_a_frozen_engine_later_gives_the_state_at_the_cut() {
    let spec = sluice_model::parse_project(MODEL, &|_: &str| None).unwrap();
    let mut e = Engine::new(&spec).unwrap();
    let dim = e.window("cq", "dim").unwrap();
    let dims = (0..300)
        .map(|i| {
            Event::insert(vec![
                Value::str(&format!("S{i}")),
                Value::str(&format!("name {i}")),
            ])
        })
        .collect();
    e.inject(dim, EventBlock::new(MsgId(0), dims), 0, &mut NullSink)
        .unwrap();
    feed(&mut e, 0, 30_000);
    let at_cut = e.snapshot_windows();
    let frozen = e.freeze();
    // The engine goes on: updates, deletes and inserts touch most shards.
    feed(&mut e, 30_000, 45_000);
    feed(&mut e, 0, 20_000);
    assert_eq!(
        frozen.encode(),
        at_cut,
        "the frozen state changed after the cut"
    );
    assert_ne!(e.snapshot_windows(), at_cut, "the engine did go on");
    // Streamed in pieces (as a persist writes it), every window file has the same bytes.
    let mut streamed = 0;
    for (path, w) in frozen.windows() {
        let mut out = Vec::new();
        w.write_to(&mut out).unwrap();
        assert_eq!(&out, &at_cut[path], "{path} streamed differs from encoded");
        streamed += out.len();
    }
    assert!(
        streamed > 8 * 256 * 1024,
        "the state is large enough to stream in many pieces ({streamed} bytes)"
    );
    // A sink that fails is reported, not ignored.
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (_, big) = frozen
        .windows()
        .max_by_key(|(p, _)| at_cut[*p].len())
        .unwrap();
    assert_eq!(
        big.write_to(&mut Broken).unwrap_err().to_string(),
        "disk full"
    );
    // And the frozen bytes restore to an engine equal to the one at the cut.
    let mut r = Engine::new(&spec).unwrap();
    r.restore_windows(&frozen.encode()).unwrap();
    assert_eq!(r.snapshot_windows(), at_cut);
}

/// Streaming an aggregate whose every column has 8-byte entries (integer keys, counts, 8-byte
/// sums, running doubles) hands the sink pieces of bounded size: the encoder never holds a
/// whole column (which, at 10M groups, made the first persist of a process take twice as
/// long, growing an 80 MB buffer into fresh memory).
#[test]
fn streaming_holds_no_whole_column() {
    let xml = r#"<project name="p"><contqueries><contquery name="cq"><windows>
  <window-source name="src" insert-only="true" index="pi_EMPTY"><schema-string>id*:int64,g:int64,q:int32,px:double</schema-string></window-source>
  <window-aggregate name="agg">
    <schema-string>g*:int64,n:int64,total:int64,hi:double</schema-string>
    <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(q)</field-expr><field-expr>ESP_aMax(px)</field-expr></output>
  </window-aggregate>
</windows><edges><edge source="src" target="agg"/></edges></contquery></contqueries></project>"#;
    let spec = sluice_model::parse_project(xml, &|_: &str| None).unwrap();
    let mut e = Engine::new(&spec).unwrap();
    let src = e.window("cq", "src").unwrap();
    let groups = 200_000i64;
    for from in (0..groups).step_by(4096) {
        let events = (from..(from + 4096).min(groups))
            .map(|i| {
                Event::insert(vec![
                    Value::Int64(i),
                    Value::Int64(i),
                    Value::Int32((i % 100) as i32),
                    Value::Double(i as f64 / 8.0),
                ])
            })
            .collect();
        e.inject(
            src,
            EventBlock::new(MsgId(from as u64), events),
            0,
            &mut NullSink,
        )
        .unwrap();
    }
    /// Records the largest piece it is handed.
    #[derive(Default)]
    struct Pieces {
        bytes: Vec<u8>,
        largest: usize,
    }
    impl std::io::Write for Pieces {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.largest = self.largest.max(b.len());
            self.bytes.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let frozen = e.freeze();
    let (_, agg) = frozen.windows().find(|(p, _)| *p == "cq/agg").unwrap();
    let mut out = Pieces::default();
    agg.write_to(&mut out).unwrap();
    assert!(
        out.bytes.len() > 4 * groups as usize * 8,
        "four 8-byte columns"
    );
    assert!(
        out.largest <= 512 * 1024,
        "a piece of {} bytes: a column was buffered whole",
        out.largest
    );
    assert_eq!(out.bytes, frozen.encode()["cq/agg"]);
}
