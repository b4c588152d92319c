//! The Kafka subscriber connector (`type=sub`): a window's output into one topic partition,
//! one record per output block, each carrying its [`OutputId`].
//!
//! Properties: `kafkahostport`, `kafkatopic` (required); `kafkapartition` (default 0; -1 lets
//! the client's partitioner choose, which hot failover cannot use); `kafkatype` `csv`
//! (default) | `json` | `binary`; `snapshot`, `collapse`, `rmretdel`, `dateformat`;
//! `kafkaglobalconfig`, `kafkatopicconfig` (`k=v;k=v`, applied over Sluice's defaults:
//! `enable.idempotence=true`, `acks=all`, `linger.ms=2`, `message.timeout.ms=60000`).
//! Failover properties (`hotfailover`, `zookeeperhostport`, `numbufferedmsgs`) belong to the
//! HA layer above this connector.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_event::csv;
use sluice_event::time::DateFormat;
use sluice_event::{Event, Flags, MsgId, Opcode, Schema};
use sluice_model::ConnectorSpec;

use crate::{
    admin, bad, binary, common, json, Format, KafkaError, OutputId, OPEN_TIMEOUT, OUTPUT_ID_HEADER,
};

/// What became of the records sent so far (delivery reports arrive asynchronously).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Records the broker acknowledged.
    pub delivered: u64,
    /// Records the broker or the client refused (errors other than a purge).
    pub failed: u64,
    /// Records dropped by [`KafkaSubscriber::purge`]: from the client's queue (never sent), or
    /// in flight (their outcome is unknown: they may have landed).
    pub purged: u64,
    /// The greatest output ID acknowledged by the broker.
    pub last_delivered: Option<OutputId>,
    /// The first delivery error not yet reported by [`KafkaSubscriber::flush`].
    pub first_error: Option<String>,
}

/// Counts delivery reports (shared by the producers a subscriber creates).
#[derive(Clone, Default)]
pub struct DeliveryContext {
    stats: Arc<Mutex<DeliveryStats>>,
}

impl DeliveryContext {
    fn lock(&self) -> MutexGuard<'_, DeliveryStats> {
        // A panic while holding the lock leaves plain counters: still usable.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<OutputId>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<OutputId>) {
        let mut s = self.lock();
        match result {
            Ok(_) => {
                s.delivered += 1;
                if s.last_delivered.is_none_or(|l| *id > l) {
                    s.last_delivered = Some(*id);
                }
            }
            Err((
                RdError::MessageProduction(
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight,
                ),
                _,
            )) => s.purged += 1,
            Err((e, _)) => {
                s.failed += 1;
                if s.first_error.is_none() {
                    s.first_error = Some(format!("output {id}: {e}"));
                }
            }
        }
    }
}

/// Writes a window's output to one topic partition.
pub struct KafkaSubscriber {
    name: String,
    topic: String,
    partition: i32,
    format: Format,
    schema: Schema,
    dateformat: Option<DateFormat>,
    /// `snapshot=true`: the window's current rows are sent first, as inserts.
    pub snapshot: bool,
    /// `collapse`: accepted; output is always collapsed (an update is one event with its new
    /// row).
    pub collapse: bool,
    rmretdel: bool,
    config: ClientConfig,
    producer_config: ClientConfig,
    context: DeliveryContext,
    producer: ThreadedProducer<DeliveryContext>,
    /// Failures already reported by `flush`.
    reported_failures: u64,
    buf: String,
}

/// How long `send` waits for room when the client's queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(30);

impl KafkaSubscriber {
    /// Opens the subscriber of `spec` for a window of `schema`; creates a missing topic.
    /// The producer is idempotent (no duplicates from client retries).
    pub fn open(spec: &ConnectorSpec, schema: &Schema) -> Result<KafkaSubscriber, KafkaError> {
        let c = common(spec)?;
        let dateformat = match spec.prop("dateformat") {
            None => None,
            Some(f) => {
                Some(DateFormat::new(f).map_err(|e| bad(spec, "dateformat", f, &e.to_string()))?)
            }
        };
        let client_err = |what: String, source| KafkaError::Client {
            connector: c.name.clone(),
            what,
            source: Box::new(source),
        };
        admin::ensure_topic(&c.config, &c.topic, c.partition, OPEN_TIMEOUT)
            .map_err(|e| client_err(format!("cannot find or create topic '{}'", c.topic), e))?;
        let mut pconfig = c.config.clone();
        for (k, v) in [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "60000"),
        ] {
            // The model's kafkaglobalconfig wins.
            if c.config.get(k).is_none() {
                pconfig.set(k, v);
            }
        }
        let context = DeliveryContext::default();
        let producer: ThreadedProducer<DeliveryContext> = pconfig
            .create_with_context(context.clone())
            .map_err(|e| client_err("cannot create the Kafka producer".into(), e))?;
        Ok(KafkaSubscriber {
            name: c.name,
            topic: c.topic,
            partition: c.partition,
            format: c.format,
            schema: schema.clone(),
            dateformat,
            snapshot: spec.flag("snapshot", false),
            collapse: spec.flag("collapse", false),
            rmretdel: spec.flag("rmretdel", false),
            config: c.config,
            producer_config: pconfig,
            context,
            producer,
            reported_failures: 0,
            buf: String::new(),
        })
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic written.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition written (-1: the client's partitioner chooses).
    pub fn partition(&self) -> i32 {
        self.partition
    }

    fn client_err(&self, what: String, source: RdError) -> KafkaError {
        KafkaError::Client {
            connector: self.name.clone(),
            what,
            source: Box::new(source),
        }
    }

    /// The payload of one output block (`None` when `rmretdel` removed every event).
    pub fn encode(
        &mut self,
        output_id: OutputId,
        events: &[Event],
    ) -> Result<Option<Vec<u8>>, KafkaError> {
        let evs: Vec<&Event> = events
            .iter()
            .filter(|e| {
                !(self.rmretdel && e.flags == Flags::Retention && e.opcode == Opcode::Delete)
            })
            .collect();
        if evs.is_empty() {
            return Ok(None);
        }
        Ok(Some(match self.format {
            Format::Csv => {
                self.buf.clear();
                for ev in &evs {
                    csv::write_event(ev, self.dateformat.as_ref(), &mut self.buf);
                    self.buf.push('\n');
                }
                self.buf.as_bytes().to_vec()
            }
            Format::Json => {
                json::write_events(&evs, &self.schema, self.dateformat.as_ref()).into_bytes()
            }
            Format::Binary => binary::encode_block(
                &self.schema,
                MsgId(output_id.input),
                false,
                Some(output_id),
                &evs,
            )
            .map_err(|source| KafkaError::Encode {
                connector: self.name.clone(),
                source,
            })?,
        }))
    }

    /// Queues one output block as one record with the `sluice-output-id` header. Returns
    /// `false` when nothing was sent (`rmretdel` removed every event). Delivery is
    /// asynchronous: [`KafkaSubscriber::flush`] waits for it and reports failures. When the
    /// client's queue is full, waits for room up to 30 s, then fails.
    pub fn send(&mut self, output_id: OutputId, events: &[Event]) -> Result<bool, KafkaError> {
        let Some(payload) = self.encode(output_id, events)? else {
            return Ok(false);
        };
        let id_text = output_id.to_string();
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: OUTPUT_ID_HEADER,
            value: Some(id_text.as_bytes()),
        });
        let mut record: BaseRecord<'_, [u8], [u8], Box<OutputId>> =
            BaseRecord::with_opaque_to(&self.topic, Box::new(output_id))
                .payload(&payload[..])
                .headers(headers);
        if self.partition >= 0 {
            record = record.partition(self.partition);
        }
        let deadline = Instant::now() + QUEUE_FULL_WAIT;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(true),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    record = r;
                    // Wait for deliveries to make room (bounded), then try again.
                    let _ = self.producer.flush(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    return Err(KafkaError::Client {
                        connector: self.name.clone(),
                        what: format!("cannot queue output {output_id} for topic '{}'", self.topic),
                        source: Box::new(e),
                    })
                }
            }
        }
    }

    /// Waits up to `timeout` for every queued record to be acknowledged. Fails on timeout,
    /// and when records failed since the last call (with the count and the first error).
    pub fn flush(&mut self, timeout: Duration) -> Result<(), KafkaError> {
        let res = self.producer.flush(timeout);
        let (failed, first) = {
            let mut s = self.context.lock();
            (s.failed, s.first_error.take())
        };
        if failed > self.reported_failures {
            let n = failed - self.reported_failures;
            self.reported_failures = failed;
            return Err(KafkaError::Delivery {
                connector: self.name.clone(),
                topic: self.topic.clone(),
                failed: n,
                first: first.unwrap_or_default(),
            });
        }
        match res {
            Ok(()) => Ok(()),
            Err(RdError::Flush(RDKafkaErrorCode::OperationTimedOut)) => Err(KafkaError::Timeout {
                connector: self.name.clone(),
                what: format!(
                    "delivering {} queued record(s) to topic '{}'",
                    self.in_flight(),
                    self.topic
                ),
                timeout,
            }),
            Err(e) => Err(self.client_err(format!("flushing to topic '{}'", self.topic), e)),
        }
    }

    /// Stops writing what is pending: drops every record still queued in the client (never
    /// sent), waits up to 0.5 s for records in flight, then replaces the producer, abandoning
    /// whatever is still in flight (it may have landed). For an active that lost its
    /// leadership. Dropped records count as purged in [`KafkaSubscriber::stats`].
    ///
    /// The producer is replaced because librdkafka does not rewind an idempotent producer's
    /// sequence numbers over purged records: the next record would leave a sequence gap that
    /// a Kafka broker refuses. A new producer gets a new producer ID and starts at 0.
    pub fn purge(&mut self) -> Result<(), KafkaError> {
        self.producer.purge(PurgeConfig::default().queue());
        let _ = self.producer.flush(Duration::from_millis(500));
        let fresh: ThreadedProducer<DeliveryContext> = self
            .producer_config
            .create_with_context(self.context.clone())
            .map_err(|e| self.client_err("cannot create the Kafka producer".into(), e))?;
        // Dropping the old producer purges what is in flight (bounded by rdkafka).
        drop(std::mem::replace(&mut self.producer, fresh));
        Ok(())
    }

    /// Records queued or in flight, plus client events not yet served (librdkafka's
    /// `rd_kafka_outq_len`): 0 means everything sent was acknowledged (or failed).
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Delivery counts so far.
    pub fn stats(&self) -> DeliveryStats {
        self.context.lock().clone()
    }

    /// Reads the output ID of the last record of the topic partition (offset high watermark
    /// − 1), from its `sluice-output-id` header, or from a binary payload's header when the
    /// record has none. `None` when the partition holds no record. Hot failover calls this when
    /// a standby becomes active.
    pub fn read_last_output_id(&self, timeout: Duration) -> Result<Option<OutputId>, KafkaError> {
        if self.partition < 0 {
            return Err(KafkaError::Bad {
                connector: self.name.clone(),
                property: "kafkapartition".into(),
                value: "-1".into(),
                why: "the last output ID needs one fixed partition".into(),
            });
        }
        let found = read_last_record(&self.config, &self.topic, self.partition, timeout, |m| {
            Some((m.offset(), output_id_of(m)))
        })
        .map_err(|e| match e {
            LastError::Client(what, e) => self.client_err(what, e),
            LastError::Timeout => KafkaError::Timeout {
                connector: self.name.clone(),
                what: format!(
                    "reading the last record of topic '{}' partition {}",
                    self.topic, self.partition
                ),
                timeout,
            },
        })?;
        match found {
            None => Ok(None),
            Some((_, Ok(id))) => Ok(Some(id)),
            Some((offset, Err(why))) => Err(KafkaError::NoOutputId {
                connector: self.name.clone(),
                topic: self.topic.clone(),
                partition: self.partition,
                offset,
                why,
            }),
        }
    }
}

/// The output ID of a record: its header, else its binary payload's header.
pub fn output_id_of(m: &BorrowedMessage<'_>) -> Result<OutputId, String> {
    let mut why = String::from("no sluice-output-id header");
    if let Some(h) = m.headers() {
        for hd in h.iter() {
            if hd.key == OUTPUT_ID_HEADER {
                let text = String::from_utf8_lossy(hd.value.unwrap_or(&[])).into_owned();
                match text.parse::<OutputId>() {
                    Ok(id) => return Ok(id),
                    Err(e) => why = format!("header: {e}"),
                }
            }
        }
    }
    match m.payload().map(binary::read_header) {
        Some(Ok(h)) => h
            .output_id
            .ok_or_else(|| format!("{why}; its binary block has no output ID")),
        Some(Err(e)) => Err(format!("{why}; payload: {e}")),
        None => Err(format!("{why}; no payload")),
    }
}

pub(crate) enum LastError {
    Client(String, RdError),
    Timeout,
}

/// Reads the last record of a partition (skipping offsets that deliver nothing, such as
/// transaction markers, by looking further back) and maps it with `f`. `None` when the
/// partition is empty.
pub(crate) fn read_last_record<T>(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    timeout: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>) -> Option<T>,
) -> Result<Option<T>, LastError> {
    let deadline = Instant::now() + timeout;
    let mut cfg = config.clone();
    cfg.set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "50");
    if cfg.get("group.id").is_none() {
        // Needed by `assign`; the group is never joined.
        cfg.set("group.id", "sluice-read-last");
    }
    let consumer: BaseConsumer = cfg
        .create()
        .map_err(|e| LastError::Client("cannot create a Kafka consumer".into(), e))?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, timeout)
        .map_err(|e| {
            LastError::Client(
                format!("cannot read the offsets of topic '{topic}' partition {partition}"),
                e,
            )
        })?;
    if high <= low {
        return Ok(None);
    }
    let mut back = 1i64;
    loop {
        let from = (high - back).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .and_then(|_| consumer.assign(&tpl))
            .map_err(|e| LastError::Client(format!("cannot assign at offset {from}"), e))?;
        let mut last = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(LastError::Timeout);
            }
            match consumer.poll(deadline - now) {
                None => return Err(LastError::Timeout),
                Some(Err(RdError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    return Err(LastError::Client(
                        format!("reading topic '{topic}' partition {partition} from offset {from}"),
                        e,
                    ))
                }
                Some(Ok(m)) => {
                    if m.offset() < high {
                        last = f(&m).or(last);
                    }
                    if m.offset() >= high - 1 {
                        break;
                    }
                }
            }
        }
        if last.is_some() || from == low {
            return Ok(last);
        }
        back = back.saturating_mul(64);
    }
}
