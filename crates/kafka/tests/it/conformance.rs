//! Broker conformance: exactly the broker behaviours Sluice relies on, checked with the same
//! client library (librdkafka through rdkafka) the connectors use. docs/kafka-brokers.md lists
//! which brokers pass. The test prints one line per check and fails if any check fails.

use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use sluice_kafka::admin;

use crate::common::{broker, config, topic, T};

struct Checks(Vec<(&'static str, Result<(), String>)>);

impl Checks {
    fn check(&mut self, name: &'static str, r: Result<(), String>) {
        println!(
            "conformance: {name}: {}",
            match &r {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAILED: {e}"),
            }
        );
        self.0.push((name, r));
    }
}

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

/// Collects delivery offsets.
#[derive(Default)]
struct Offsets(std::sync::Mutex<Vec<Result<i64, String>>>);
impl ClientContext for Offsets {}
impl ProducerContext for Offsets {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        self.0.lock().unwrap().push(
            r.as_ref()
                .map(|m| m.offset())
                .map_err(|(e, _)| e.to_string()),
        );
    }
}

fn consumer(brokers: &str) -> BaseConsumer {
    config(brokers)
        .set("group.id", "sluice-conformance")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap()
}

/// A record read back: offset, payload, headers.
type Got = (i64, Vec<u8>, Vec<(String, Vec<u8>)>);

/// Reads from `from` until end of partition.
fn read_from(brokers: &str, topic: &str, from: i64) -> Result<Vec<Got>, String> {
    let c = consumer(brokers);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(from))
        .map_err(|e| e.to_string())?;
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + T;
    let mut out = Vec::new();
    loop {
        if Instant::now() > deadline {
            return Err(format!("no end of partition within {T:?}"));
        }
        match c.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(out),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(m)) => {
                let hs = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or(&[]).to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((m.offset(), m.payload().unwrap_or(&[]).to_vec(), hs));
            }
        }
    }
}

#[test]
fn broker_conformance() {
    let b = broker!("broker_conformance");
    let cfg = config(&b);
    let t = topic("conf");
    let mut c = Checks(Vec::new());

    c.check(
        "create topic (CreateTopics), then again: already exists",
        admin::create_topic(&cfg, &t, 1, T)
            .map_err(|e| e.to_string())
            .and_then(|created| ensure(created, || "first create said 'exists'".into()))
            .and_then(|_| admin::create_topic(&cfg, &t, 1, T).map_err(|e| e.to_string()))
            .and_then(|created| ensure(!created, || "second create did not say 'exists'".into())),
    );
    c.check(
        "metadata lists the topic with 1 partition",
        admin::topic_partitions(&cfg, &t, T)
            .map_err(|e| e.to_string())
            .and_then(|p| ensure(p == Some(1), || format!("partitions: {p:?}"))),
    );
    c.check(
        "empty partition: watermarks 0/0",
        admin::watermarks(&cfg, &t, 0, T)
            .map_err(|e| e.to_string())
            .and_then(|w| ensure(w == (0, 0), || format!("watermarks {w:?}"))),
    );

    // Idempotent producer, 10 records with headers.
    let producer: ThreadedProducer<Offsets> = config(&b)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create_with_context(Offsets::default())
        .unwrap();
    for i in 0..10 {
        let payload = format!("record {i}");
        let h = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: "sluice-output-id",
                value: Some(format!("{i}.0").as_bytes()),
            })
            .insert(rdkafka::message::Header {
                key: "bin",
                value: Some(&[0u8, 255, i as u8][..]),
            });
        producer
            .send(
                BaseRecord::to(&t)
                    .partition(0)
                    .payload(payload.as_bytes())
                    .key("k")
                    .headers(h),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let flushed = producer.flush(T);
    let offsets = producer.context().0.lock().unwrap().clone();
    c.check(
        "idempotent producer: 10 records acknowledged at offsets 0..9",
        flushed.map_err(|e| e.to_string()).and_then(|_| {
            ensure(offsets == (0..10).map(Ok).collect::<Vec<_>>(), || {
                format!("deliveries {offsets:?}")
            })
        }),
    );
    drop(producer);
    c.check(
        "watermarks after produce: 0/10",
        admin::watermarks(&cfg, &t, 0, T)
            .map_err(|e| e.to_string())
            .and_then(|w| ensure(w == (0, 10), || format!("watermarks {w:?}"))),
    );
    let from4 = read_from(&b, &t, 4);
    c.check(
        "consume from a given offset (assign at 4): offsets 4..9 in order, payloads intact",
        from4.as_ref().map_err(Clone::clone).and_then(|rs| {
            let offs: Vec<i64> = rs.iter().map(|r| r.0).collect();
            ensure(offs == (4..10).collect::<Vec<_>>(), || {
                format!("offsets {offs:?}")
            })?;
            ensure(rs[0].1 == b"record 4", || {
                format!("payload {:?}", String::from_utf8_lossy(&rs[0].1))
            })
        }),
    );
    c.check(
        "record headers round trip (text and binary values, order kept)",
        from4.as_ref().map_err(Clone::clone).and_then(|rs| {
            let h = &rs[0].2;
            ensure(
                h == &vec![
                    ("sluice-output-id".to_string(), b"4.0".to_vec()),
                    ("bin".to_string(), vec![0, 255, 4]),
                ],
                || format!("headers {h:?}"),
            )
        }),
    );
    c.check(
        "read the last record (assign at high watermark - 1)",
        read_from(&b, &t, 9).and_then(|rs| {
            ensure(
                rs.len() == 1 && rs[0].0 == 9 && rs[0].2[0].1 == b"9.0",
                || format!("got {:?}", rs.iter().map(|r| r.0).collect::<Vec<_>>()),
            )
        }),
    );
    c.check(
        "DeleteRecords before 6 moves the low watermark to 6",
        admin::delete_records(&cfg, &t, 0, 6, T)
            .map_err(|e| e.to_string())
            .and_then(|low| ensure(low == 6, || format!("returned low {low}")))
            .and_then(|_| admin::watermarks(&cfg, &t, 0, T).map_err(|e| e.to_string()))
            .and_then(|w| ensure(w == (6, 10), || format!("watermarks {w:?}"))),
    );
    c.check(
        "reading below the low watermark fails (offset out of range), not a silent jump",
        match read_from(&b, &t, 2) {
            Err(e) => ensure(
                e.to_lowercase().contains("range") || e.to_lowercase().contains("reset"),
                || format!("unexpected error {e}"),
            ),
            Ok(rs) => Err(format!(
                "read {:?}",
                rs.iter().map(|r| r.0).collect::<Vec<_>>()
            )),
        },
    );
    c.check(
        "reading from the new low watermark gives 6..9",
        read_from(&b, &t, 6).and_then(|rs| {
            let offs: Vec<i64> = rs.iter().map(|r| r.0).collect();
            ensure(offs == (6..10).collect::<Vec<_>>(), || {
                format!("offsets {offs:?}")
            })
        }),
    );
    let failed: Vec<_> = c.0.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "broker conformance failures: {failed:#?}"
    );
}
