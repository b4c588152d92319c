//! Kafka connectors: a topic partition into a source window ([`KafkaPublisher`]) and a
//! window's output into a topic partition ([`KafkaSubscriber`]), through librdkafka (the
//! `rdkafka` crate, bundled librdkafka built with cmake).
//!
//! Layout:
//! - [`publisher`]: [`KafkaPublisher`]: one record becomes one [`EventBlock`] whose message
//!   ID is the record's offset (`useoffsetmsgid=true`) or the connector's own sequence. It
//!   reads one partition with `assign` (no consumer group: positions live in snapshots) and
//!   checks on a restore that the broker still holds the offsets it needs.
//! - [`subscriber`]: [`KafkaSubscriber`]: one output block becomes one record, with its
//!   [`OutputId`] in the `sluice-output-id` header (and inside binary payloads);
//!   [`KafkaSubscriber::read_last_output_id`] reads it back from the end of the topic for hot
//!   failover.
//! - [`binary`]: the binary event-block format (docs/formats/binary-events.md).
//! - [`json`]: the JSON event form (docs/formats/json-events.md).
//! - [`admin`]: topic creation, DeleteRecords and watermarks, bounded in time.
//!
//! Invariant: every call that talks to the broker takes or applies a timeout; nothing here
//! waits unboundedly. Nothing is dropped quietly: an undecodable record is returned as a
//! [`BadRecord`], a failed delivery as an error from [`KafkaSubscriber::flush`].
//!
//! [`EventBlock`]: sluice_event::EventBlock

use std::time::Duration;

use rdkafka::ClientConfig;
use sluice_model::ConnectorSpec;

pub mod admin;
pub mod binary;
pub mod json;
pub mod publisher;
pub mod subscriber;

pub use publisher::{BadRecord, KafkaPublisher, PubBatch};
pub use subscriber::{DeliveryStats, KafkaSubscriber};

/// The record header that carries an output block's [`OutputId`] as `INPUT.SEQ` text.
pub const OUTPUT_ID_HEADER: &str = "sluice-output-id";

/// How long opening a connector may talk to the broker (metadata, topic creation,
/// watermarks) before it fails.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// The deterministic ID of an output block (DESIGN.md decision 2), defined once in
/// `sluice-ha` and carried here in the `sluice-output-id` header and binary payloads.
pub use sluice_ha::{BadOutputId, OutputId};

/// How records' payloads carry events (`kafkatype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// CSV lines, one event per line (docs/formats/csv-events.md).
    Csv,
    /// A JSON array of event objects (docs/formats/json-events.md).
    Json,
    /// One binary event block (docs/formats/binary-events.md).
    Binary,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Binary => "binary",
        }
    }
}

/// A Kafka connector that cannot start or cannot go on, with what to fix. Every message names
/// the connector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    #[error("connector '{connector}': property '{property}' is required")]
    Missing { connector: String, property: String },
    #[error("connector '{connector}': property '{property}' = '{value}': {why}")]
    Bad {
        connector: String,
        property: String,
        value: String,
        why: String,
    },
    /// The topic has partitions that a publisher without an explicit `kafkapartition` would
    /// silently never read.
    #[error("connector '{connector}': topic '{topic}' has {partitions} partitions and this publisher reads only one: set property 'kafkapartition' to the partition to read (one publisher per partition); reading every partition (kafkapartition=-1) is not supported yet")]
    UnreadPartitions {
        connector: String,
        topic: String,
        partitions: usize,
    },
    /// librdkafka refused or failed an operation.
    #[error("connector '{connector}': {what}: {source}")]
    Client {
        connector: String,
        what: String,
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// The broker no longer holds offsets a restore (or `kafkainitialoffset`) needs: Kafka
    /// retention (or DeleteRecords) removed them.
    #[error("connector '{connector}': topic '{topic}' partition {partition}: offsets {from} to {last_missing} are no longer on the broker (its earliest offset is now {low}); reading from offset {from} would skip them. Kafka retention removed what the restore needs: restore a newer snapshot, or raise the topic's retention.ms above the snapshot interval plus the recovery time")]
    OffsetsGone {
        connector: String,
        topic: String,
        partition: i32,
        from: i64,
        last_missing: i64,
        low: i64,
    },
    /// An offset past the end of the partition (a snapshot of another topic, or a topic that
    /// was deleted and created again).
    #[error("connector '{connector}': topic '{topic}' partition {partition}: offset {offset} is past the end of the partition (next offset {high}); was the topic deleted and created again?")]
    OffsetPastEnd {
        connector: String,
        topic: String,
        partition: i32,
        offset: i64,
        high: i64,
    },
    #[error("connector '{connector}': {what} did not finish within {timeout:?}")]
    Timeout {
        connector: String,
        what: String,
        timeout: Duration,
    },
    /// Records the broker did not accept.
    #[error("connector '{connector}': {failed} record(s) to topic '{topic}' were not delivered; first error: {first}")]
    Delivery {
        connector: String,
        topic: String,
        failed: u64,
        first: String,
    },
    /// The last record of an output topic carries no output ID.
    #[error("connector '{connector}': the last record of topic '{topic}' partition {partition} (offset {offset}) carries no sluice output ID ({why}); was it written by another program?")]
    NoOutputId {
        connector: String,
        topic: String,
        partition: i32,
        offset: i64,
        why: String,
    },
    #[error("connector '{connector}': cannot encode an output block: {source}")]
    Encode {
        connector: String,
        #[source]
        source: binary::BinaryError,
    },
}

/// Properties shared by both directions.
pub(crate) struct Common {
    pub name: String,
    pub topic: String,
    pub partition: i32,
    pub format: Format,
    pub config: ClientConfig,
}

pub(crate) fn required<'a>(spec: &'a ConnectorSpec, name: &str) -> Result<&'a str, KafkaError> {
    match spec.prop(name).map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(KafkaError::Missing {
            connector: spec.name.clone(),
            property: name.into(),
        }),
    }
}

pub(crate) fn bad(spec: &ConnectorSpec, property: &str, value: &str, why: &str) -> KafkaError {
    KafkaError::Bad {
        connector: spec.name.clone(),
        property: property.into(),
        value: value.into(),
        why: why.into(),
    }
}

/// Parses `k=v;k=v` librdkafka settings (`kafkaglobalconfig`, `kafkatopicconfig`).
pub fn parse_config_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(';') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("'{item}' is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("'{item}' has an empty key"));
        }
        out.push((k.to_string(), v.trim().to_string()));
    }
    Ok(out)
}

pub(crate) fn common(spec: &ConnectorSpec) -> Result<Common, KafkaError> {
    let brokers = required(spec, "kafkahostport")?.to_string();
    let topic = required(spec, "kafkatopic")?.to_string();
    if topic.contains('@') {
        return Err(bad(
            spec,
            "kafkatopic",
            &topic,
            "unresolved @NAME@ placeholder: pass --var NAME=VALUE or set the environment variable",
        ));
    }
    let partition = match spec.prop("kafkapartition").map(str::trim) {
        None | Some("") => 0,
        Some(p) => p.parse::<i32>().ok().filter(|p| *p >= -1).ok_or_else(|| {
            bad(
                spec,
                "kafkapartition",
                p,
                "expected a partition number or -1",
            )
        })?,
    };
    let format = match spec
        .prop("kafkatype")
        .map(|t| t.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("csv") => Format::Csv,
        Some("json") => Format::Json,
        Some("binary") => Format::Binary,
        Some(other) => {
            return Err(bad(
                spec,
                "kafkatype",
                other,
                "supported: csv, json, binary",
            ))
        }
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &brokers)
        .set("client.id", format!("sluice-{}", spec.name))
        .set("allow.auto.create.topics", "false");
    for prop in ["kafkaglobalconfig", "kafkatopicconfig"] {
        if let Some(text) = spec.prop(prop) {
            for (k, v) in parse_config_pairs(text).map_err(|why| bad(spec, prop, text, &why))? {
                config.set(k, v);
            }
        }
    }
    Ok(Common {
        name: spec.name.clone(),
        topic,
        partition,
        format,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_ids_print_parse_and_order() {
        let a = OutputId::new(1042, 0);
        assert_eq!(a.to_string(), "1042.0");
        assert_eq!("1042.0".parse::<OutputId>(), Ok(a));
        assert!("1042".parse::<OutputId>().is_err());
        assert!("1042.-1".parse::<OutputId>().is_err());
        assert!(" x.1".parse::<OutputId>().is_err());
        assert!(OutputId::new(9, 5) < OutputId::new(10, 0));
        assert!(OutputId::new(10, 0) < OutputId::new(10, 1));
    }

    #[test]
    fn config_pairs() {
        assert_eq!(
            parse_config_pairs("enable.sparse.connections=false; linger.ms = 5;").unwrap(),
            vec![
                ("enable.sparse.connections".into(), "false".into()),
                ("linger.ms".into(), "5".into())
            ]
        );
        assert!(parse_config_pairs("a=1;oops").is_err());
    }
}
