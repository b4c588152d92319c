//! KafkaSubscriber against the broker: records with the output-ID header, payload formats,
//! reading the last output ID back, purge.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sluice_event::{Event, Flags, MsgId, Schema, Value};
use sluice_kafka::{admin, binary, KafkaError, KafkaSubscriber, OutputId, OUTPUT_ID_HEADER};
use sluice_model::ConnectorDirection::Subscribe;

use crate::common::{broker, config, create, produce, spec, topic, T};

fn schema() -> Schema {
    Schema::parse_schema_string("ID*:int64,symbol:string,price:double").unwrap()
}

fn open(b: &str, t: &str, extra: &[(&str, &str)]) -> KafkaSubscriber {
    // The first occurrence of a property wins: the test's own come first.
    let mut props = extra.to_vec();
    props.extend([
        ("kafkahostport", b),
        ("kafkatopic", t),
        ("kafkapartition", "0"),
    ]);
    KafkaSubscriber::open(&spec("sub", Subscribe, &props), &schema()).unwrap()
}

fn ev(id: i64, sym: &str) -> Event {
    Event::insert(vec![
        Value::Int64(id),
        Value::str(sym),
        Value::Double(id as f64),
    ])
}

/// Every record of partition 0: (offset, output-ID header, payload).
fn records(b: &str, t: &str) -> Vec<(i64, Option<String>, Vec<u8>)> {
    let c: BaseConsumer = config(b)
        .set("group.id", "sluice-it")
        .set("fetch.wait.max.ms", "50")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let (low, _) = admin::watermarks(&config(b), t, 0, T).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(t, 0, Offset::Offset(low)).unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + T;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(RdError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("{e}"),
            Some(Ok(m)) => {
                let h = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == OUTPUT_ID_HEADER)
                        .map(|h| String::from_utf8_lossy(h.value.unwrap_or(&[])).into_owned())
                });
                out.push((m.offset(), h, m.payload().unwrap_or(&[]).to_vec()));
            }
        }
    }
    panic!("no end of partition within {T:?}");
}

#[test]
fn binary_records_carry_output_ids_and_the_last_reads_back() {
    let b = broker!("binary_records_carry_output_ids_and_the_last_reads_back");
    let t = topic("sub-bin");
    let mut s = open(&b, &t, &[("kafkatype", "binary")]);
    assert_eq!(s.read_last_output_id(T).unwrap(), None, "empty topic");
    let ids = [
        OutputId::new(5, 0),
        OutputId::new(5, 1),
        OutputId::new(7, 0),
    ];
    for (i, id) in ids.iter().enumerate() {
        assert!(s
            .send(*id, &[ev(i as i64, "a"), ev(10 + i as i64, "b")])
            .unwrap());
    }
    s.flush(T).unwrap();
    let st = s.stats();
    assert_eq!(
        (st.delivered, st.failed, st.last_delivered),
        (3, 0, Some(ids[2]))
    );
    let recs = records(&b, &t);
    assert_eq!(
        recs.iter()
            .map(|r| r.1.clone().unwrap())
            .collect::<Vec<_>>(),
        vec!["5.0", "5.1", "7.0"]
    );
    let d = binary::decode_block(&recs[1].2, &schema()).unwrap();
    assert_eq!(d.output_id, Some(ids[1]));
    assert_eq!(d.block.id, MsgId(5));
    assert_eq!(d.block.events, vec![ev(1, "a"), ev(11, "b")]);
    assert_eq!(s.read_last_output_id(T).unwrap(), Some(ids[2]));

    // A record without the header: the binary payload's output ID is the fallback.
    let block = binary::encode_block(
        &schema(),
        MsgId(9),
        false,
        Some(OutputId::new(9, 2)),
        &[&ev(1, "x")],
    )
    .unwrap();
    produce(&b, &t, &[(&block, &[])]);
    assert_eq!(s.read_last_output_id(T).unwrap(), Some(OutputId::new(9, 2)));
    // A foreign record: a clear error naming its offset.
    produce(&b, &t, &[(b"hello", &[])]);
    let e = s.read_last_output_id(T).unwrap_err();
    assert!(matches!(e, KafkaError::NoOutputId { offset: 4, .. }), "{e}");
}

#[test]
fn csv_and_json_payloads_and_rmretdel() {
    let b = broker!("csv_and_json_payloads_and_rmretdel");
    let (tc, tj) = (topic("sub-csv"), topic("sub-json"));
    let mut s = open(&b, &tc, &[("kafkatype", "csv"), ("rmretdel", "true")]);
    let retdel =
        Event::delete(vec![Value::Int64(1), Value::Null, Value::Null]).with_flags(Flags::Retention);
    assert!(s
        .send(
            OutputId::new(1, 0),
            &[ev(1, "ibm"), retdel.clone(), ev(2, "x,y")]
        )
        .unwrap());
    assert!(!s
        .send(OutputId::new(2, 0), std::slice::from_ref(&retdel))
        .unwrap());
    s.flush(T).unwrap();
    let recs = records(&b, &tc);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].1.as_deref(), Some("1.0"));
    assert_eq!(
        String::from_utf8_lossy(&recs[0].2),
        "I,N,1,ibm,1\nI,N,2,\"x,y\",2\n"
    );
    assert_eq!(s.read_last_output_id(T).unwrap(), Some(OutputId::new(1, 0)));

    let mut s = open(&b, &tj, &[("kafkatype", "json")]);
    assert!(s
        .send(OutputId::new(3, 4), &[ev(1, "ibm"), retdel])
        .unwrap());
    s.flush(T).unwrap();
    let recs = records(&b, &tj);
    assert_eq!(
        String::from_utf8_lossy(&recs[0].2),
        r#"[{"opcode":"i","flags":"n","ID":1,"symbol":"ibm","price":1.0},{"opcode":"d","flags":"r","ID":1,"symbol":null,"price":null}]"#
    );
    assert_eq!(s.read_last_output_id(T).unwrap(), Some(OutputId::new(3, 4)));
}

#[test]
fn purge_drops_queued_records() {
    let b = broker!("purge_drops_queued_records");
    let t = topic("sub-purge");
    create(&b, &t);
    // A long linger keeps records in the client's queue, so the purge finds them there. (Not
    // longer than the flush below: librdkafka may miss the flush's wake-up while the idempotent
    // producer still waits for its producer ID, and then sends only when the linger ends.)
    let mut s = open(
        &b,
        &t,
        &[
            ("kafkatype", "binary"),
            ("kafkaglobalconfig", "linger.ms=3000"),
        ],
    );
    for i in 0..5 {
        s.send(OutputId::new(i, 0), &[ev(i as i64, "q")]).unwrap();
    }
    assert!(s.in_flight() >= 5);
    s.purge().unwrap();
    let st = s.stats();
    assert_eq!((st.purged, st.delivered, st.failed), (5, 0, 0), "{st:?}");
    // The producer (idempotent) goes on working after a purge.
    s.send(OutputId::new(8, 0), &[ev(8, "after")]).unwrap();
    s.flush(T).unwrap();
    assert_eq!(admin::watermarks(&config(&b), &t, 0, T).unwrap(), (0, 1));
    assert_eq!(s.read_last_output_id(T).unwrap(), Some(OutputId::new(8, 0)));
    assert_eq!(s.stats().delivered, 1);
}
