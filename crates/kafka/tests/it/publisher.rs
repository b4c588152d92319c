//! KafkaPublisher against the broker: formats, offsets as message IDs, initial offsets,
//! malformed records, resume, and the restore check after DeleteRecords.

use std::time::Duration;

use sluice_event::{Event, Flags, MsgId, Opcode, Schema, Value};
use sluice_kafka::{admin, binary, KafkaError, KafkaPublisher, OutputId};
use sluice_model::ConnectorDirection::Publish;

use crate::common::{broker, config, create, produce, read_n, spec, topic, Rec, T};

fn schema() -> Schema {
    Schema::parse_schema_string("ID*:int64,symbol:string,price:double").unwrap()
}

fn open(
    b: &str,
    t: &str,
    extra: &[(&str, &str)],
    resume: Option<i64>,
) -> Result<KafkaPublisher, KafkaError> {
    // The first occurrence of a property wins: the test's own come first.
    let mut props = extra.to_vec();
    props.extend([
        ("kafkahostport", b),
        ("kafkatopic", t),
        ("kafkapartition", "0"),
    ]);
    KafkaPublisher::open(&spec("pub", Publish, &props), &schema(), None, resume)
}

fn row(id: i64, sym: &str, price: f64) -> Vec<Value> {
    vec![Value::Int64(id), Value::str(sym), Value::Double(price)]
}

#[test]
fn csv_records_become_blocks_with_offsets_as_msgids() {
    let b = broker!("csv_records_become_blocks_with_offsets_as_msgids");
    let t = topic("pub-csv");
    create(&b, &t);
    produce(
        &b,
        &t,
        &[
            (b"i,n,1,ibm,10.5\n", &[]),
            (b"i,n,2,ms,3\r\np,n,3,sas,1\n", &[]),
            (b"u,n,1,ibm,11", &[]),
        ],
    );
    let mut p = open(
        &b,
        &t,
        &[("kafkatype", "csv"), ("useoffsetmsgid", "true")],
        None,
    )
    .unwrap();
    assert_eq!(p.position(), 0);
    assert_eq!(p.lag(T).unwrap(), 3);
    let got = read_n(&mut p, 3);
    assert_eq!(
        got.iter().map(|g| g.block.id).collect::<Vec<_>>(),
        vec![MsgId(0), MsgId(1), MsgId(2)]
    );
    assert_eq!(
        got[0].block.events,
        vec![Event::insert(row(1, "ibm", 10.5))]
    );
    assert_eq!(got[1].block.events.len(), 2);
    assert_eq!(got[1].block.events[1].opcode, Opcode::Upsert);
    assert_eq!(got[2].block.events[0].opcode, Opcode::Update);
    assert!(got
        .iter()
        .all(|g| g.bad.is_empty() && !g.block.transactional));
    assert_eq!(p.position(), 3);
    assert_eq!(p.lag(T).unwrap(), 0);
    assert_eq!(p.next_batch(Duration::from_millis(100)).unwrap(), None);
}

#[test]
fn json_and_binary_records() {
    let b = broker!("json_and_binary_records");
    let (tj, tb) = (topic("pub-json"), topic("pub-bin"));
    create(&b, &tj);
    create(&b, &tb);
    produce(
        &b,
        &tj,
        &[(
            br#"[{"opcode":"i","flags":"n","ID":1,"symbol":"ibm","price":1.5},{"ID":2,"symbol":"x","price":"2"}]"#,
            &[],
        )],
    );
    let mut p = open(
        &b,
        &tj,
        &[("kafkatype", "json"), ("useoffsetmsgid", "true")],
        None,
    )
    .unwrap();
    let got = read_n(&mut p, 1);
    assert_eq!(
        got[0].block.events,
        vec![
            Event::insert(row(1, "ibm", 1.5)),
            Event::insert(row(2, "x", 2.0))
        ]
    );

    let evs = [
        Event::insert(row(1, "a", 1.0)),
        Event::delete(vec![Value::Int64(1), Value::Null, Value::Null]).with_flags(Flags::Retention),
    ];
    let refs: Vec<&Event> = evs.iter().collect();
    let bytes = binary::encode_block(&schema(), MsgId(900), true, None, &refs).unwrap();
    produce(&b, &tb, &[(b"x", &[]), (&bytes, &[])]);
    // Offsets as IDs, and the block's own ID with useclientmsgid.
    let mut p = open(
        &b,
        &tb,
        &[
            ("kafkatype", "binary"),
            ("useoffsetmsgid", "true"),
            ("kafkainitialoffset", "1"),
        ],
        None,
    )
    .unwrap();
    let got = read_n(&mut p, 1);
    assert_eq!(got[0].block.id, MsgId(1));
    assert!(got[0].block.transactional);
    assert_eq!(got[0].block.events, evs.to_vec());
    let mut p = open(
        &b,
        &tb,
        &[
            ("kafkatype", "binary"),
            ("useclientmsgid", "true"),
            ("kafkainitialoffset", "1"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(read_n(&mut p, 1)[0].block.id, MsgId(900));
}

#[test]
fn initial_offsets_smallest_largest_and_n() {
    let b = broker!("initial_offsets_smallest_largest_and_n");
    let t = topic("pub-init");
    create(&b, &t);
    produce(
        &b,
        &t,
        &[
            (b"i,n,1,a,1", &[]),
            (b"i,n,2,b,2", &[]),
            (b"i,n,3,c,3", &[]),
        ],
    );
    let ids = &[("useoffsetmsgid", "true")];
    let mut p = open(&b, &t, &[ids[0], ("kafkainitialoffset", "smallest")], None).unwrap();
    assert_eq!(p.start_offset(), 0);
    assert_eq!(read_n(&mut p, 1)[0].offset, 0);

    let mut p = open(&b, &t, &[ids[0], ("kafkainitialoffset", "2")], None).unwrap();
    assert_eq!(read_n(&mut p, 1)[0].block.id, MsgId(2));

    let mut p = open(&b, &t, &[ids[0], ("kafkainitialoffset", "largest")], None).unwrap();
    assert_eq!(p.position(), 3);
    assert_eq!(p.next_batch(Duration::from_millis(300)).unwrap(), None);
    produce(&b, &t, &[(b"i,n,4,d,4", &[])]);
    let got = read_n(&mut p, 1);
    assert_eq!((got[0].offset, got[0].block.id), (3, MsgId(3)));

    let e = open(&b, &t, &[("kafkainitialoffset", "99")], None)
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            KafkaError::OffsetPastEnd {
                offset: 99,
                high: 4,
                ..
            }
        ),
        "{e}"
    );
    let e = open(&b, &t, &[("kafkainitialoffset", "soon")], None)
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("property 'kafkainitialoffset' = 'soon'"),
        "{e}"
    );

    // Without useoffsetmsgid: the connector's own sequence.
    let mut p = open(&b, &t, &[("kafkainitialoffset", "1")], None).unwrap();
    let got = read_n(&mut p, 3);
    assert_eq!(
        got.iter()
            .map(|g| (g.offset, g.block.id))
            .collect::<Vec<_>>(),
        vec![(1, MsgId(1)), (2, MsgId(2)), (3, MsgId(3))]
    );
}

#[test]
fn malformed_records_are_reported_and_reading_goes_on() {
    let b = broker!("malformed_records_are_reported_and_reading_goes_on");
    let t = topic("pub-bad");
    create(&b, &t);
    produce(
        &b,
        &t,
        &[
            (b"i,n,1,a,1", &[]),
            (b"i,n,2,b,notanumber\ni,n,3,c,3", &[]),
            (b"i,n,4,d,4", &[]),
        ],
    );
    let mut p = open(&b, &t, &[("useoffsetmsgid", "true")], None).unwrap();
    let got = read_n(&mut p, 3);
    assert_eq!(
        got[1].block.events.len(),
        1,
        "the good line of record 1 is kept"
    );
    assert_eq!(got[1].bad.len(), 1);
    let bad = &got[1].bad[0];
    assert_eq!(
        (bad.topic.as_str(), bad.partition, bad.offset),
        (t.as_str(), 0, 1)
    );
    assert_eq!(bad.text, "i,n,2,b,notanumber");
    assert!(bad.reason.contains("field 'price'"), "{}", bad.reason);
    assert!(bad
        .to_string()
        .starts_with(&format!("topic '{t}' partition 0 offset 1: ")));
    assert_eq!(got[2].block.events[0].row[0], Value::Int64(4));

    // Transactional: the bad line rejects its whole record. Binary garbage is reported too.
    let mut p = open(
        &b,
        &t,
        &[("transactional", "true"), ("kafkainitialoffset", "1")],
        None,
    )
    .unwrap();
    let got = read_n(&mut p, 1);
    assert!(got[0].block.events.is_empty() && got[0].block.transactional);
    assert_eq!(got[0].bad.len(), 2, "{:?}", got[0].bad);
    let mut p = open(&b, &t, &[("kafkatype", "binary")], None).unwrap();
    let got = read_n(&mut p, 1);
    assert!(
        got[0].bad[0].reason.contains("not a Sluice binary block"),
        "{:?}",
        got[0].bad
    );
    assert!(
        got[0].bad[0].text.starts_with("9 bytes: 69 2c 6e"),
        "{}",
        got[0].bad[0].text
    );

    // ignorecsvparseerrors drops them silently.
    let mut p = open(
        &b,
        &t,
        &[
            ("ignorecsvparseerrors", "true"),
            ("kafkainitialoffset", "1"),
        ],
        None,
    )
    .unwrap();
    assert!(read_n(&mut p, 1)[0].bad.is_empty());
}

#[test]
fn resume_and_restore_check_after_delete_records() {
    let b = broker!("resume_and_restore_check_after_delete_records");
    let t = topic("pub-resume");
    create(&b, &t);
    let recs: Vec<Vec<u8>> = (0..6)
        .map(|i| format!("i,n,{i},s,{i}").into_bytes())
        .collect();
    let recs: Vec<Rec<'_>> = recs.iter().map(|r| (&r[..], &[][..])).collect();
    produce(&b, &t, &recs);
    // A restore resumes at the snapshot's position, whatever kafkainitialoffset says.
    let mut p = open(
        &b,
        &t,
        &[
            ("useoffsetmsgid", "true"),
            ("kafkainitialoffset", "largest"),
        ],
        Some(4),
    )
    .unwrap();
    let got = read_n(&mut p, 2);
    assert_eq!(got.iter().map(|g| g.offset).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(p.position(), 6);

    // Retention (here DeleteRecords) removes offsets 0..2.
    assert_eq!(admin::delete_records(&config(&b), &t, 0, 3, T).unwrap(), 3);
    p.check_offsets_available(3).unwrap();
    p.check_offsets_available(6).unwrap();
    let e = p.check_offsets_available(1).unwrap_err();
    assert!(
        matches!(
            e,
            KafkaError::OffsetsGone {
                from: 1,
                last_missing: 2,
                low: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = open(&b, &t, &[], Some(1))
        .err()
        .expect("restore from a deleted offset must fail");
    let text = e.to_string();
    assert!(
        text.contains(&format!("topic '{t}' partition 0: offsets 1 to 2 are no longer on the broker (its earliest offset is now 3)")),
        "{text}"
    );
    let e = open(&b, &t, &[], Some(7)).err().unwrap();
    assert!(
        matches!(
            e,
            KafkaError::OffsetPastEnd {
                offset: 7,
                high: 6,
                ..
            }
        ),
        "{e}"
    );
    // Smallest now starts at the new earliest offset.
    let mut p = open(&b, &t, &[("useoffsetmsgid", "true")], None).unwrap();
    assert_eq!(read_n(&mut p, 1)[0].block.id, MsgId(3));
    let _ = OutputId::default();
}

#[test]
fn configuration_errors_name_the_property() {
    let b = broker!("configuration_errors_name_the_property");
    let s = spec("p1", Publish, &[("kafkahostport", &b)]);
    let e = KafkaPublisher::open(&s, &schema(), None, None)
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "connector 'p1': property 'kafkatopic' is required"
    );
    let t = topic("pub-cfg");
    for (k, v, want) in [
        ("kafkatype", "avro", "supported: csv, json, binary"),
        ("kafkapartition", "-1", "one partition"),
        ("kafkaglobalconfig", "linger.ms", "not key=value"),
    ] {
        let e = open(&b, &t, &[(k, v)], None).err().unwrap().to_string();
        assert!(
            e.contains(&format!("property '{k}'")) && e.contains(want),
            "{e}"
        );
    }
    // A missing topic is created.
    let mut p = open(&b, &t, &[], None).unwrap();
    assert_eq!(p.next_batch(Duration::from_millis(100)).unwrap(), None);
    assert_eq!(
        admin::topic_partitions(&config(&b), &t, T).unwrap(),
        Some(1)
    );
}

/// A topic with more partitions than the publisher reads: without an explicit
/// `kafkapartition` the open is refused naming the topic, its partition count and the
/// property; with one it opens and names the partitions it leaves unread.
/// `kafkaconsumergroupid` is refused (consumer groups are not implemented).
#[test]
fn unread_partitions_are_refused_or_named() {
    let b = broker!("unread_partitions_are_refused_or_named");
    let t = topic("pub-parts");
    admin::create_topic(&config(&b), &t, 3, T).expect("create a 3-partition topic");
    let s = spec("p3", Publish, &[("kafkahostport", &b), ("kafkatopic", &t)]);
    let e = KafkaPublisher::open(&s, &schema(), None, None)
        .err()
        .expect("refused without kafkapartition")
        .to_string();
    assert!(
        e.contains(&format!("topic '{t}' has 3 partitions")) && e.contains("'kafkapartition'"),
        "{e}"
    );
    let p = open(&b, &t, &[("kafkapartition", "1")], None).expect("explicit partition opens");
    assert_eq!(p.partition(), 1);
    assert_eq!(p.unread_partitions(), vec![0, 2]);
    let one = topic("pub-parts-one");
    create(&b, &one);
    let p = open(&b, &one, &[], None).expect("one partition");
    assert!(p.unread_partitions().is_empty());
    let e = open(&b, &one, &[("kafkaconsumergroupid", "g1")], None)
        .err()
        .expect("consumer group refused")
        .to_string();
    assert!(
        e.contains("property 'kafkaconsumergroupid'") && e.contains("not implemented"),
        "{e}"
    );
}
