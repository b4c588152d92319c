//! Helpers: the broker address, unique topic names, connector specs, raw produce and read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use sluice_kafka::{KafkaPublisher, PubBatch};
use sluice_model::{ConnectorDirection, ConnectorSpec};

pub const T: Duration = Duration::from_secs(10);

/// The broker list, or `None` after printing why the test is skipped. Panics when the
/// environment requires Kafka (`SLUICE_REQUIRE` contains `kafka`) and none is given.
pub fn brokers(test: &str) -> Option<String> {
    match std::env::var("SLUICE_KAFKA_BROKERS") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ => {
            let required = std::env::var("SLUICE_REQUIRE")
                .map(|r| r.split(',').any(|s| s.trim() == "kafka"))
                .unwrap_or(false);
            if required {
                panic!(
                    "{test}: SLUICE_REQUIRE contains kafka but no broker is given: start the broker: scripts/services.sh start (or set SLUICE_KAFKA_BROKERS)"
                );
            }
            println!("SKIPPED {test}: set SLUICE_KAFKA_BROKERS or run scripts/services.sh start");
            None
        }
    }
}

/// `let Some(b) = broker!("name") else { return };`
macro_rules! broker {
    ($name:expr) => {
        match crate::common::brokers($name) {
            Some(b) => b,
            None => return,
        }
    };
}
pub(crate) use broker;

/// A topic name no other test (or earlier run against the same broker) uses.
pub fn topic(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "sluice-it-{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

pub fn spec(name: &str, direction: ConnectorDirection, props: &[(&str, &str)]) -> ConnectorSpec {
    ConnectorSpec {
        class: "kafka".into(),
        name: name.into(),
        direction,
        active: true,
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        line: 1,
    }
}

/// A record to produce: payload and headers.
pub type Rec<'a> = (&'a [u8], &'a [(&'a str, &'a [u8])]);

/// Produces records (payload, headers) in order and waits for them; returns their offsets.
/// (Not idempotent: an idempotent producer waits 0.5 s for its producer ID; the conformance
/// test checks idempotence.)
pub fn produce(brokers: &str, topic: &str, records: &[Rec<'_>]) -> Vec<i64> {
    let producer: BaseProducer = config(brokers)
        .set("enable.idempotence", "false")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    for (payload, headers) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in *headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .payload(*payload)
            .partition(0)
            .headers(h);
        producer.send(rec).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(T).expect("flush");
    let (_, high) = sluice_kafka::admin::watermarks(&config(brokers), topic, 0, T).unwrap();
    (high - records.len() as i64..high).collect()
}

pub fn create(brokers: &str, topic: &str) {
    assert!(sluice_kafka::admin::create_topic(&config(brokers), topic, 1, T).unwrap());
}

/// Reads `n` batches, failing after a deadline.
pub fn read_n(p: &mut KafkaPublisher, n: usize) -> Vec<PubBatch> {
    let deadline = Instant::now() + T;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records arrived within {T:?}",
            out.len()
        );
        if let Some(b) = p.next_batch(Duration::from_millis(200)).unwrap() {
            out.push(b);
        }
    }
    out
}
