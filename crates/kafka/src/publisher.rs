//! The Kafka publisher connector (`type=pub`): one topic partition into a source window.
//!
//! Properties: `kafkahostport`, `kafkatopic` (required); `kafkapartition` (default 0);
//! `kafkatype` `csv` (default) | `json` | `binary`; `kafkainitialoffset` `smallest` (default) |
//! `largest` | an offset; `useoffsetmsgid`, `useclientmsgid`; `kafkaglobalconfig`,
//! `kafkatopicconfig` (`k=v;k=v` librdkafka settings, applied over Sluice's); `dateformat`,
//! `transactional`, `addcsvopcode`, `addcsvflags`, `noautogenfield`, `publishwithupsert`,
//! `ignorecsvparseerrors`, `csvfielddelimiter`, `maxevents` as for the fs connector. One
//! record is one block, so `blocksize` does not apply. `kafkaconsumergroupid` is refused (no
//! consumer group yet; positions live in snapshots). A topic with more than one partition
//! needs an explicit `kafkapartition`: the other partitions are not read.

use std::fmt;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_event::csv::{self, CsvOptions};
use sluice_event::{EventBlock, MsgId, Schema};
use sluice_model::ConnectorSpec;

use crate::{admin, bad, binary, common, json, Format, KafkaError, OPEN_TIMEOUT};

/// A record (or a line of a CSV record) that could not become events. Consumption goes on.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The offending text: the CSV line, the JSON text, or a hex dump of a binary payload's
    /// first bytes (cut at 1000 characters).
    pub text: String,
    pub reason: String,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "topic '{}' partition {} offset {}: {}",
            self.topic, self.partition, self.offset, self.reason
        )
    }
}

/// What one read from a [`KafkaPublisher`] gives: one record as one block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PubBatch {
    /// The record's events. Empty when the whole record was bad (or held only blank lines).
    pub block: EventBlock,
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp (CreateTime or LogAppendTime, as the broker gives it) in
    /// microseconds since the epoch; `None` when the record has none. This is the time the
    /// engine sees for the block, so that every instance computes the same output.
    pub timestamp: Option<i64>,
    pub bad: Vec<BadRecord>,
}

/// Where reading starts when there is no snapshot position (`kafkainitialoffset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialOffset {
    Smallest,
    Largest,
    At(i64),
}

/// Reads one topic partition into event blocks, one block per record.
///
/// No consumer group: the partition is assigned at a start offset (a snapshot's position, or
/// `kafkainitialoffset`), and the position lives in snapshots. Hot failover forbids consumer
/// groups anyway; `kafkaconsumergroupid` is refused until consumer groups exist.
pub struct KafkaPublisher {
    name: String,
    topic: String,
    partition: i32,
    format: Format,
    schema: Schema,
    opts: CsvOptions,
    transactional: bool,
    ignore_parse_errors: bool,
    use_offset_msgid: bool,
    use_client_msgid: bool,
    max_events: Option<u64>,
    consumer: BaseConsumer,
    position: i64,
    start: i64,
    /// Records read (the message ID without `useoffsetmsgid`).
    records: u64,
    events: u64,
    /// Partitions of the topic when it was opened.
    partitions: usize,
}

fn text_of(payload: &[u8], format: Format) -> String {
    const MAX: usize = 1000;
    match format {
        Format::Binary => {
            let mut s = format!("{} bytes:", payload.len());
            for b in payload.iter().take(64) {
                s.push_str(&format!(" {b:02x}"));
            }
            s
        }
        _ => {
            let t = String::from_utf8_lossy(payload);
            t.chars().take(MAX).collect()
        }
    }
}

impl KafkaPublisher {
    /// Opens the publisher of `spec` for a source window of `schema`. `autogen_field` is the
    /// position of the autogen key (used with `noautogenfield`). `resume` is the next offset
    /// to read from a restored snapshot: it wins over `kafkainitialoffset`, and the broker must
    /// still hold it ([`KafkaPublisher::check_offsets_available`]) or opening fails with an
    /// error that names the missing range. A missing topic is created.
    pub fn open(
        spec: &ConnectorSpec,
        schema: &Schema,
        autogen_field: Option<usize>,
        resume: Option<i64>,
    ) -> Result<KafkaPublisher, KafkaError> {
        let c = common(spec)?;
        if c.partition < 0 {
            return Err(bad(
                spec,
                "kafkapartition",
                "-1",
                "a publisher reads one partition: give its number",
            ));
        }
        if let Some(group) = spec
            .prop("kafkaconsumergroupid")
            .filter(|g| !g.trim().is_empty())
        {
            return Err(bad(
                spec,
                "kafkaconsumergroupid",
                group,
                "consumer groups are not implemented yet: remove the property (the publisher reads the partition named by kafkapartition and keeps its position in snapshots)",
            ));
        }
        let initial = match spec.prop("kafkainitialoffset").map(str::trim) {
            None | Some("") => InitialOffset::Smallest,
            Some(t) => match t.to_ascii_lowercase().as_str() {
                "smallest" | "earliest" | "beginning" => InitialOffset::Smallest,
                "largest" | "latest" | "end" => InitialOffset::Largest,
                n => InitialOffset::At(n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(
                    || {
                        bad(
                            spec,
                            "kafkainitialoffset",
                            t,
                            "use smallest, largest or an offset",
                        )
                    },
                )?),
            },
        };
        let opts = spec
            .csv_options(autogen_field)
            .map_err(|b| bad(spec, &b.property, &b.value, &b.why))?;
        let max_events = match spec.prop("maxevents") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(spec, "maxevents", v, "expected a whole number"))?,
            ),
        };
        let client_err = |what: &str, source| KafkaError::Client {
            connector: c.name.clone(),
            what: what.to_string(),
            source: Box::new(source),
        };
        admin::ensure_topic(&c.config, &c.topic, c.partition, OPEN_TIMEOUT)
            .map_err(|e| client_err(&format!("cannot find or create topic '{}'", c.topic), e))?;
        // A publisher reads one partition: the others' events would never arrive. Without an
        // explicit `kafkapartition` that is refused; with one, the caller warns
        // (`unread_partitions`).
        let partitions = admin::topic_partitions(&c.config, &c.topic, OPEN_TIMEOUT)
            .map_err(|e| {
                client_err(
                    &format!("cannot read the partitions of topic '{}'", c.topic),
                    e,
                )
            })?
            .unwrap_or(1);
        let explicit = spec
            .prop("kafkapartition")
            .is_some_and(|p| !p.trim().is_empty());
        if partitions > 1 && !explicit {
            return Err(KafkaError::UnreadPartitions {
                connector: c.name.clone(),
                topic: c.topic.clone(),
                partitions,
            });
        }
        let mut config = c.config.clone();
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // An offset the broker no longer has is an error, never a silent jump.
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "100");
        if config.get("group.id").is_none() {
            // librdkafka refuses `assign` without a group.id; the group is never joined
            // (no subscribe) and no offset is committed.
            config.set("group.id", format!("sluice-{}", c.name));
        }
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| client_err("cannot create the Kafka consumer", e))?;
        let mut p = KafkaPublisher {
            name: c.name,
            topic: c.topic,
            partition: c.partition,
            format: c.format,
            schema: schema.clone(),
            opts,
            transactional: spec.flag("transactional", false),
            ignore_parse_errors: spec.flag("ignorecsvparseerrors", false),
            use_offset_msgid: spec.flag("useoffsetmsgid", false),
            use_client_msgid: spec.flag("useclientmsgid", false),
            max_events,
            consumer,
            position: 0,
            start: 0,
            records: 0,
            events: 0,
            partitions,
        };
        let (low, high) = p.watermarks(OPEN_TIMEOUT)?;
        let start = match (resume, initial) {
            (Some(offset), _) | (None, InitialOffset::At(offset)) => {
                p.check_range(offset, low, high)?;
                offset
            }
            (None, InitialOffset::Smallest) => low,
            (None, InitialOffset::Largest) => high,
        };
        p.seek(start)?;
        Ok(p)
    }

    fn seek(&mut self, offset: i64) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))
            .and_then(|_| self.consumer.assign(&tpl))
            .map_err(|e| {
                self.client_err(&format!("cannot assign partition at offset {offset}"), e)
            })?;
        self.position = offset;
        self.start = offset;
        Ok(())
    }

    fn client_err(&self, what: &str, source: rdkafka::error::KafkaError) -> KafkaError {
        KafkaError::Client {
            connector: self.name.clone(),
            what: what.to_string(),
            source: Box::new(source),
        }
    }

    fn check_range(&self, offset: i64, low: i64, high: i64) -> Result<(), KafkaError> {
        if offset < low {
            return Err(KafkaError::OffsetsGone {
                connector: self.name.clone(),
                topic: self.topic.clone(),
                partition: self.partition,
                from: offset,
                last_missing: low - 1,
                low,
            });
        }
        if offset > high {
            return Err(KafkaError::OffsetPastEnd {
                connector: self.name.clone(),
                topic: self.topic.clone(),
                partition: self.partition,
                offset,
                high,
            });
        }
        Ok(())
    }

    /// The partition's earliest offset and the offset its next record will get, asked of the
    /// broker.
    pub fn watermarks(&self, timeout: Duration) -> Result<(i64, i64), KafkaError> {
        self.consumer
            .fetch_watermarks(&self.topic, self.partition, timeout)
            .map_err(|e| {
                self.client_err(
                    &format!(
                        "cannot read the offsets of topic '{}' partition {}",
                        self.topic, self.partition
                    ),
                    e,
                )
            })
    }

    /// Checks that the broker still holds every record from `offset` on (DESIGN.md decision
    /// 5): the error names the missing range when retention or DeleteRecords removed some.
    pub fn check_offsets_available(&self, offset: i64) -> Result<(), KafkaError> {
        let (low, high) = self.watermarks(OPEN_TIMEOUT)?;
        self.check_range(offset, low, high)
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition read.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset reading started at.
    pub fn start_offset(&self) -> i64 {
        self.start
    }

    /// The input position a snapshot records: the next offset to read.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The partitions of the topic this publisher does not read (it reads one; the events of
    /// these never arrive). Empty for a topic of one partition.
    pub fn unread_partitions(&self) -> Vec<i32> {
        (0..self.partitions as i32)
            .filter(|p| *p != self.partition)
            .collect()
    }

    /// Offsets behind the end of the partition: high watermark − position (asks the broker).
    pub fn lag(&self, timeout: Duration) -> Result<i64, KafkaError> {
        let (_, high) = self.watermarks(timeout)?;
        Ok((high - self.position).max(0))
    }

    /// Whether bad records are dropped silently (`ignorecsvparseerrors`) rather than reported.
    pub fn ignores_parse_errors(&self) -> bool {
        self.ignore_parse_errors
    }

    /// Waits up to `timeout` for the next record and returns it as one block. `None` when no
    /// record came (or after `maxevents`). The block's message ID is the record's offset with
    /// `useoffsetmsgid=true`, the block's own ID with `useclientmsgid=true` and binary records,
    /// else the connector's count of records read (1 for the first). A record that cannot be
    /// decoded comes back as an empty block with its [`BadRecord`]s; with a transactional
    /// block, one bad line rejects the whole record. Consumption goes on either way. An error
    /// (the broker unreachable, an offset out of range) leaves the publisher usable: the
    /// caller reports it and calls again.
    pub fn next_batch(&mut self, timeout: Duration) -> Result<Option<PubBatch>, KafkaError> {
        if self.max_events.is_some_and(|m| self.events >= m) {
            return Ok(None);
        }
        let msg = match self.consumer.poll(timeout) {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(KafkaError::Client {
                    connector: self.name.clone(),
                    what: format!(
                        "reading topic '{}' partition {} at offset {}",
                        self.topic, self.partition, self.position
                    ),
                    source: Box::new(e),
                })
            }
            Some(Ok(m)) => m,
        };
        let offset = msg.offset();
        self.position = offset + 1;
        self.records += 1;
        let payload = msg.payload().unwrap_or(&[]);
        let mut batch = PubBatch {
            block: EventBlock {
                id: MsgId(if self.use_offset_msgid {
                    offset as u64
                } else {
                    self.records
                }),
                transactional: self.transactional,
                events: Vec::new(),
            },
            offset,
            timestamp: msg
                .timestamp()
                .to_millis()
                .filter(|ms| *ms >= 0)
                .map(|ms| ms.saturating_mul(1000)),
            bad: Vec::new(),
        };
        let bad = |text: String, reason: String| BadRecord {
            topic: self.topic.clone(),
            partition: self.partition,
            offset,
            text,
            reason,
        };
        if msg.payload().is_none() {
            batch
                .bad
                .push(bad(String::new(), "the record has no value".into()));
        } else {
            match self.format {
                Format::Csv => {
                    let text = match std::str::from_utf8(payload) {
                        Ok(t) => t,
                        Err(e) => {
                            batch.bad.push(bad(
                                text_of(payload, Format::Csv),
                                format!("the record is not UTF-8 text ({e})"),
                            ));
                            ""
                        }
                    };
                    for line in text.lines() {
                        if line.trim().is_empty() {
                            continue;
                        }
                        match csv::parse_event(line, &self.schema, &self.opts) {
                            Ok(ev) => batch.block.events.push(ev),
                            Err(e) => batch.bad.push(bad(line.to_string(), e.to_string())),
                        }
                    }
                }
                Format::Json => match json::parse_events(payload, &self.schema, &self.opts) {
                    Ok(evs) => batch.block.events = evs,
                    Err(e) => batch
                        .bad
                        .push(bad(text_of(payload, Format::Json), e.to_string())),
                },
                Format::Binary => match binary::decode_block(payload, &self.schema) {
                    Ok(d) => {
                        if self.use_client_msgid && !self.use_offset_msgid {
                            batch.block.id = d.block.id;
                        }
                        batch.block.transactional = d.block.transactional || self.transactional;
                        batch.block.events = d.block.events;
                    }
                    Err(e) => batch
                        .bad
                        .push(bad(text_of(payload, Format::Binary), e.to_string())),
                },
            }
        }
        if !batch.bad.is_empty() && batch.block.transactional {
            // An atomic block with a bad event is rejected whole.
            let n = batch.block.events.len();
            batch.block.events.clear();
            if n > 0 {
                let first = batch.bad[0].reason.clone();
                batch.bad.push(bad(
                    String::new(),
                    format!(
                        "transactional block rejected: {n} good event(s) dropped with it ({first})"
                    ),
                ));
            }
        }
        if self.ignore_parse_errors {
            batch.bad.clear();
        }
        self.events += batch.block.events.len() as u64;
        Ok(Some(batch))
    }
}
