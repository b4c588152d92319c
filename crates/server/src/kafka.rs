//! Kafka connectors inside a project thread, and hot failover of Kafka subscribers
//! (docs/failover.md).
//!
//! - [`KafkaPub`]: a `class="kafka"` publisher, polled without blocking between commands; its
//!   next offset goes into snapshots as `Position::Kafka`; its lag is measured once a second.
//! - [`KafkaSub`]: a `class="kafka"` subscriber. Each output block of its window becomes one
//!   record with an [`OutputId`]: the input block's message ID and the block's position among
//!   the outputs that input caused for this subscriber (outputs of heartbeats continue the
//!   last input ID with the next position). With `hotfailover=true` it joins the ZooKeeper
//!   election ([`ZkElection`]); only the active instance writes, and only while its lease is
//!   valid; every instance keeps its last `numbufferedmsgs` blocks in a [`StandbyBuffer`] and
//!   on becoming active publishes exactly what follows the last record of the output topic.
//!
//! Invariant: a failover subscriber sends a record only after `may_write()` said yes for that
//! very block; when leadership cannot be proven it purges the producer queue and buffers.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sluice_engine::WindowId;
use sluice_event::{Event, MsgId};
use sluice_ha::{GapRange, OutputId, Role, StandbyBuffer, Takeover, ZkElection};
use sluice_kafka::{KafkaPublisher, KafkaSubscriber};
use sluice_model::{ConnectorDirection, ConnectorSpec, ProjectSpec};

/// Default `numbufferedmsgs`.
pub const DEFAULT_BUFFERED: usize = 10_000;
/// Default election path (`zookeeperpath`).
pub const DEFAULT_ZK_PATH: &str = "/ESP";
/// Default ZooKeeper session timeout (`zookeepersessiontimeout`, ms).
pub const DEFAULT_SESSION_MS: u64 = 1000;
/// A Kafka input at most this many offsets behind the end of its partition is in sync (a live
/// stream is seldom exactly at the end when the lag is measured).
pub const IN_SYNC_LAG: i64 = 100;
/// Once in sync, an input this far behind is reported out of sync.
const OUT_OF_SYNC_LAG: i64 = 10_000;
/// How long a new active waits for the last record of the output topic.
const READ_LAST_TIMEOUT: Duration = Duration::from_secs(5);

/// The runtime the ZooKeeper elections of this process run on (one small worker).
fn ha_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-ha")
            .enable_all()
            .build()
            .expect("the hot failover runtime starts")
    })
}

/// The Kafka connectors of one project as REST shows them (`GET projectStatus/{p}`).
#[derive(Clone, Debug, Default)]
pub struct KafkaStatus {
    pub inputs: Vec<InputStatus>,
    pub outputs: Vec<OutputStatus>,
}

impl KafkaStatus {
    /// False when some hot failover subscriber of the project is not publishing now.
    pub fn primary(&self) -> bool {
        self.outputs
            .iter()
            .filter(|o| o.hotfailover)
            .all(|o| o.publishing)
    }
}

#[derive(Clone, Debug, Default)]
pub struct InputStatus {
    pub connector: String,
    pub topic: String,
    pub partition: i32,
    /// The next offset to read.
    pub position: i64,
    /// Offsets behind the end of the partition (None until first measured).
    pub lag: Option<i64>,
    /// Within [`IN_SYNC_LAG`] of the end since it first got there.
    pub in_sync: bool,
    pub events: u64,
    pub bad_records: u64,
}

#[derive(Clone, Debug, Default)]
pub struct OutputStatus {
    pub connector: String,
    pub topic: String,
    pub partition: i32,
    pub hotfailover: bool,
    /// `active`, `standby` or `unknown` (no failover: `active`).
    pub role: String,
    /// True while this instance writes to the topic.
    pub publishing: bool,
    pub node: Option<String>,
    pub watching: Option<String>,
    pub last_output_id: Option<String>,
    pub sent: u64,
    pub buffered: usize,
    pub gaps: u64,
    pub last_gap: Option<String>,
    pub takeovers: u64,
    pub purges: u64,
    pub delivery_failures: u64,
}

/// A running Kafka publisher.
pub struct KafkaPub {
    pub window: WindowId,
    /// `project/cq/window/connector`.
    pub name: String,
    pub publisher: KafkaPublisher,
    pub events: u64,
    pub bad: u64,
    pub rate_mark: (Instant, u64),
    pub lag: Option<i64>,
    pub in_sync: bool,
    pub errors: u64,
    pub last_error: Option<Instant>,
}

impl KafkaPub {
    pub fn new(window: WindowId, name: String, publisher: KafkaPublisher) -> KafkaPub {
        KafkaPub {
            window,
            name,
            publisher,
            events: 0,
            bad: 0,
            rate_mark: (Instant::now(), 0),
            lag: None,
            in_sync: false,
            errors: 0,
            last_error: None,
        }
    }

    /// Asks the broker for the lag (bounded); logs once when the input is caught up.
    pub fn measure_lag(&mut self) {
        match self.publisher.lag(Duration::from_millis(300)) {
            Ok(lag) => {
                self.lag = Some(lag);
                if lag <= IN_SYNC_LAG && !self.in_sync {
                    self.in_sync = true;
                    tracing::info!(target: "esp.connectors", "connector {}: in sync with topic '{}' partition {} at offset {} (lag {lag})", self.name, self.publisher.topic(), self.publisher.partition(), self.publisher.position());
                } else if lag > OUT_OF_SYNC_LAG && self.in_sync {
                    self.in_sync = false;
                    tracing::warn!(target: "esp.connectors", "connector {}: behind topic '{}' partition {} by {lag} offset(s)", self.name, self.publisher.topic(), self.publisher.partition());
                }
            }
            Err(e) => {
                tracing::debug!(target: "esp.connectors", "connector {}: lag unknown: {e}", self.name)
            }
        }
    }

    pub fn status(&self) -> InputStatus {
        InputStatus {
            connector: self.name.clone(),
            topic: self.publisher.topic().to_string(),
            partition: self.publisher.partition(),
            position: self.publisher.position(),
            lag: self.lag,
            in_sync: self.in_sync,
            events: self.events,
            bad_records: self.bad,
        }
    }
}

/// The project's active Kafka subscribers with `hotfailover=true`. The direction is the
/// parsed one, so every form the model accepts counts (`type` property `sub` or `subscribe`,
/// a `type` attribute on `<connector>`).
pub fn failover_subscribers(spec: &ProjectSpec) -> impl Iterator<Item = &ConnectorSpec> {
    spec.contqueries
        .iter()
        .flat_map(|cq| cq.windows.iter())
        .flat_map(|w| w.connectors.iter())
        .filter(|c| {
            c.active
                && c.class == "kafka"
                && c.direction == ConnectorDirection::Subscribe
                && c.flag("hotfailover", false)
        })
}

/// Hot failover implies offsets as message IDs (docs/failover.md, "Message IDs"). Without
/// them a Kafka publisher numbers its records from 1 at every open, so a standby that was
/// stopped and started again (or restored) would number its output differently from the
/// active. For a project with a hot failover subscriber, this is the publisher spec with
/// `useoffsetmsgid=true` when the property is unset; an explicit `useoffsetmsgid=false` is
/// refused with the reason. Other projects get the spec unchanged.
pub fn publisher_spec(project: &ProjectSpec, c: &ConnectorSpec) -> Result<ConnectorSpec, String> {
    if c.class != "kafka" || failover_subscribers(project).next().is_none() {
        return Ok(c.clone());
    }
    match c.prop("useoffsetmsgid") {
        None => {
            let mut c = c.clone();
            c.properties
                .push(("useoffsetmsgid".to_string(), "true".to_string()));
            Ok(c)
        }
        Some(_) if c.flag("useoffsetmsgid", false) => Ok(c.clone()),
        Some(v) => Err(format!(
            "property 'useoffsetmsgid' = '{v}': the project has a hot failover subscriber, whose output IDs must be the same on every instance, so its Kafka publishers number blocks by offset: remove the property or set it to true"
        )),
    }
}

/// The Kafka publishers of `project` that get `useoffsetmsgid=true` from its hot failover
/// subscriber (logged once when the project is loaded).
pub fn implied_offset_msgids(project: &ProjectSpec) -> Vec<String> {
    if failover_subscribers(project).next().is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for cq in &project.contqueries {
        for w in &cq.windows {
            for c in &w.connectors {
                if c.class == "kafka"
                    && c.direction == ConnectorDirection::Publish
                    && c.prop("useoffsetmsgid").is_none()
                {
                    out.push(format!(
                        "{}/{}/{}/{}",
                        project.name, cq.name, w.name, c.name
                    ));
                }
            }
        }
    }
    out
}

/// Hot failover settings of a subscriber (`hotfailover=true`).
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverSpec {
    pub hosts: String,
    pub path: String,
    pub session: Duration,
    pub buffered: usize,
}

impl FailoverSpec {
    /// `None` without `hotfailover=true`; an error names the property to fix.
    pub fn of(spec: &ConnectorSpec) -> Result<Option<FailoverSpec>, String> {
        if !spec.flag("hotfailover", false) {
            return Ok(None);
        }
        let hosts = spec
            .prop("zookeeperhostport")
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or("property 'zookeeperhostport' is required with hotfailover=true")?
            .to_string();
        if hosts.contains('@') {
            return Err(format!(
                "property 'zookeeperhostport' = '{hosts}': unresolved @NAME@ placeholder"
            ));
        }
        let path = spec
            .prop("zookeeperpath")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .unwrap_or(DEFAULT_ZK_PATH)
            .to_string();
        let num = |prop: &str, default: u64| -> Result<u64, String> {
            match spec.prop(prop).map(str::trim) {
                None | Some("") => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .map_err(|_| format!("property '{prop}' = '{v}': expected a whole number")),
            }
        };
        let buffered = num("numbufferedmsgs", DEFAULT_BUFFERED as u64)? as usize;
        let session =
            Duration::from_millis(num("zookeepersessiontimeout", DEFAULT_SESSION_MS)?.max(1));
        if spec.prop("kafkapartition").map(str::trim) == Some("-1") {
            return Err(
                "hot failover needs one fixed partition: kafkapartition=-1 cannot be used".into(),
            );
        }
        Ok(Some(FailoverSpec {
            hosts,
            path,
            session,
            buffered,
        }))
    }
}

struct Failover {
    election: Option<ZkElection>,
    buffer: StandbyBuffer<Arc<Vec<Event>>>,
    publishing: bool,
    gaps: u64,
    last_gap: Option<String>,
    takeovers: u64,
    purges: u64,
    /// When a takeover failed (read of the topic), to retry later.
    retry_at: Option<Instant>,
}

/// A running Kafka subscriber.
pub struct KafkaSub {
    pub window: WindowId,
    /// `project/cq/window/connector`.
    pub name: String,
    sub: KafkaSubscriber,
    /// The last output ID produced (sent or not).
    pub last: Option<OutputId>,
    sent: u64,
    failed_seen: u64,
    ha: Option<Failover>,
    /// Set when something changed that REST shows.
    pub dirty: bool,
}

impl KafkaSub {
    /// Opens the subscriber; with hot failover, joins the election (bounded wait).
    pub fn open(
        window: WindowId,
        name: String,
        spec: &ConnectorSpec,
        schema: &sluice_event::Schema,
        last: Option<OutputId>,
    ) -> Result<KafkaSub, String> {
        let fo = FailoverSpec::of(spec)?;
        let mut spec = spec.clone();
        if let Some(f) = &fo {
            // Records still queued in the client when an active is paused past its session
            // must not be sent when it resumes: they time out first (docs/failover.md).
            let mut global = spec.prop("kafkaglobalconfig").unwrap_or("").to_string();
            if !global.contains("message.timeout.ms") {
                let ms = f.session.as_millis().max(1000);
                global = format!("{global};message.timeout.ms={ms}");
                spec.properties.retain(|(k, _)| k != "kafkaglobalconfig");
                spec.properties.push(("kafkaglobalconfig".into(), global));
            }
        }
        let sub = KafkaSubscriber::open(&spec, schema).map_err(|e| e.to_string())?;
        let ha = match fo {
            None => None,
            Some(f) => {
                let (hosts, path, session) = (f.hosts.clone(), f.path.clone(), f.session);
                let joined = ha_runtime().block_on(async move {
                    tokio::time::timeout(
                        session * 4 + Duration::from_secs(5),
                        ZkElection::join(&hosts, &path, session),
                    )
                    .await
                });
                let election = match joined {
                    Ok(Ok(e)) => e,
                    Ok(Err(e)) => return Err(format!("hot failover: {e}")),
                    Err(_) => {
                        return Err(format!(
                            "hot failover: ZooKeeper {} did not answer in time",
                            f.hosts
                        ))
                    }
                };
                tracing::info!(target: "esp.connectors", "connector {name}: hot failover election at {} on {} (session timeout {} ms, numbufferedmsgs {}): {}", f.path, f.hosts, election.session_timeout().as_millis(), f.buffered, election.role());
                Some(Failover {
                    election: Some(election),
                    buffer: StandbyBuffer::new(f.buffered),
                    publishing: false,
                    gaps: 0,
                    last_gap: None,
                    takeovers: 0,
                    purges: 0,
                    retry_at: None,
                })
            }
        };
        let mut s = KafkaSub {
            window,
            name,
            sub,
            last,
            sent: 0,
            failed_seen: 0,
            ha,
            dirty: true,
        };
        s.poll();
        Ok(s)
    }

    /// `snapshot=true`.
    pub fn wants_snapshot(&self) -> bool {
        self.sub.snapshot
    }

    /// The ID of the next output block caused by input `input` (0: a heartbeat).
    fn next_id(&mut self, input: MsgId) -> OutputId {
        let id = match self.last {
            Some(l) if input.0 <= l.input => l.next(),
            _ => OutputId::new(input.0, 0),
        };
        self.last = Some(id);
        id
    }

    fn send(&mut self, id: OutputId, events: &[Event]) {
        match self.sub.send(id, events) {
            Ok(true) => self.sent += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(target: "esp.connectors", "connector {}: output {id} not sent: {e}", self.name)
            }
        }
    }

    /// One output block of the window.
    pub fn output(&mut self, input: MsgId, events: &[Event]) {
        let id = self.next_id(input);
        if self.ha.is_none() {
            return self.send(id, events);
        }
        self.poll();
        let ha = self.ha.as_mut().expect("failover");
        let block = Arc::new(events.to_vec());
        if let Err(e) = ha.buffer.push(id, block) {
            tracing::error!(target: "esp.connectors", "connector {}: {e}", self.name);
        }
        if ha.publishing && ha.buffer.release(id) {
            self.send(id, events);
        }
    }

    /// Acts on role changes and delivery failures (called between blocks and on every turn of
    /// the project loop).
    pub fn poll(&mut self) {
        let failed = self.sub.stats().failed;
        let new_failures = failed > self.failed_seen;
        if new_failures {
            self.failed_seen = failed;
            self.dirty = true;
            if let Err(e) = self.sub.flush(Duration::ZERO) {
                tracing::error!(target: "esp.connectors", "connector {}: {e}", self.name);
            }
        }
        let Some(ha) = self.ha.as_mut() else { return };
        let may = ha.election.as_ref().is_some_and(|e| e.may_write());
        if ha.publishing && (!may || new_failures) {
            ha.publishing = false;
            ha.purges += 1;
            self.dirty = true;
            if new_failures && may {
                tracing::error!(target: "esp.connectors", "connector {}: records were not delivered: purging and taking over again from the last record of topic '{}'", self.name, self.sub.topic());
            } else {
                tracing::warn!(target: "esp.connectors", "connector {}: cannot prove hot failover leadership (role {}): stops writing and purges the producer queue", self.name, ha.election.as_ref().map_or(Role::Unknown, |e| e.role()));
            }
            if let Err(e) = self.sub.purge() {
                tracing::error!(target: "esp.connectors", "connector {}: {e}", self.name);
            }
        }
        let may = ha.election.as_ref().is_some_and(|e| e.may_write());
        if !ha.publishing && may && ha.retry_at.is_none_or(|t| Instant::now() >= t) {
            self.take_over();
        }
    }

    fn take_over(&mut self) {
        let last = match self.sub.read_last_output_id(READ_LAST_TIMEOUT) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(target: "esp.connectors", "connector {}: cannot take over yet: {e}", self.name);
                if let Some(ha) = self.ha.as_mut() {
                    ha.retry_at = Some(Instant::now() + Duration::from_millis(200));
                }
                return;
            }
        };
        let ha = self.ha.as_mut().expect("failover");
        // The lease may have run out while reading the topic.
        if !ha.election.as_ref().is_some_and(|e| e.may_write()) {
            return;
        }
        ha.retry_at = None;
        ha.takeovers += 1;
        let shown = last.map_or_else(|| "none (empty topic)".to_string(), |l| l.to_string());
        let t = ha.buffer.takeover(last);
        let blocks = match t {
            Takeover::Publish(b) => {
                tracing::info!(target: "esp.connectors", "connector {}: active: last output on topic '{}' is {shown}; publishing {} buffered block(s) after it", self.name, self.sub.topic(), b.len());
                b
            }
            Takeover::Gap {
                missing_from,
                missing_to,
                publish,
            } => {
                ha.gaps += 1;
                let range = GapRange(missing_from, missing_to).to_string();
                tracing::error!(target: "esp.connectors", "connector {}: hot failover GAP: output {range} is lost (last output on topic '{}' is {shown}; numbufferedmsgs={} did not reach back); publishing the {} buffered block(s)", self.name, self.sub.topic(), ha.buffer.capacity(), publish.len());
                ha.last_gap = Some(range);
                publish
            }
            Takeover::Hold { until } => {
                tracing::info!(target: "esp.connectors", "connector {}: active but behind topic '{}' (last output {until}): publishing nothing until its output passes it", self.name, self.sub.topic());
                Vec::new()
            }
        };
        ha.publishing = true;
        self.dirty = true;
        for (id, events) in blocks {
            self.send(id, &events);
        }
    }

    /// Flushes (bounded) and leaves the election.
    pub fn stop(&mut self) {
        if let Some(ha) = self.ha.as_mut() {
            if ha.publishing {
                let _ = self.sub.flush(Duration::from_secs(5));
            }
            ha.publishing = false;
            if let Some(e) = ha.election.take() {
                let _ = ha_runtime().block_on(async move {
                    tokio::time::timeout(Duration::from_secs(3), e.leave()).await
                });
            }
        } else if let Err(e) = self.sub.flush(Duration::from_secs(10)) {
            tracing::error!(target: "esp.connectors", "connector {}: {e}", self.name);
        }
    }

    pub fn status(&self) -> OutputStatus {
        let stats = self.sub.stats();
        let mut s = OutputStatus {
            connector: self.name.clone(),
            topic: self.sub.topic().to_string(),
            partition: self.sub.partition(),
            hotfailover: self.ha.is_some(),
            role: "active".into(),
            publishing: true,
            last_output_id: self.last.map(|l| l.to_string()),
            sent: self.sent,
            delivery_failures: stats.failed,
            ..OutputStatus::default()
        };
        if let Some(ha) = &self.ha {
            let role = ha.election.as_ref().map_or(Role::Unknown, |e| e.role());
            s.role = role.as_str().into();
            s.publishing = ha.publishing;
            if let Some(e) = &ha.election {
                let st = e.state();
                s.node = st.node;
                s.watching = st.watching;
            }
            s.buffered = ha.buffer.len();
            s.gaps = ha.gaps;
            s.last_gap = ha.last_gap.clone();
            s.takeovers = ha.takeovers;
            s.purges = ha.purges;
        }
        s
    }
}

/// Shared between a project thread (writer) and REST (readers).
pub type SharedStatus = Arc<Mutex<KafkaStatus>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn model(sub_props: &str, pub_props: &str) -> ProjectSpec {
        let xml = format!(
            "<project name='p' pubsub='none'><contqueries><contquery name='cq'><windows>\
             <window-source name='s'><schema-string>id*:int64</schema-string><connectors>\
             <connector class='kafka' name='in'><properties><property name='type'>pub</property>{pub_props}\
             <property name='kafkahostport'>127.0.0.1:9</property><property name='kafkatopic'>i</property></properties></connector>\
             <connector class='kafka' name='out'><properties><property name='type'>subscribe</property>{sub_props}\
             <property name='kafkahostport'>127.0.0.1:9</property><property name='kafkatopic'>o</property></properties></connector>\
             </connectors></window-source></windows></contquery></contqueries></project>"
        );
        sluice_model::parse_project(&xml, &|_| None).expect("model parses")
    }

    fn input(p: &ProjectSpec) -> &ConnectorSpec {
        &p.contqueries[0].windows[0].connectors[0]
    }

    const HA: &str = "<property name='hotfailover'>true</property><property name='zookeeperhostport'>z:1</property>";

    #[test]
    fn hot_failover_implies_offsets_as_message_ids() {
        let p = model(HA, "");
        assert_eq!(implied_offset_msgids(&p), vec!["p/cq/s/in".to_string()]);
        let c = publisher_spec(&p, input(&p)).unwrap();
        assert_eq!(c.prop("useoffsetmsgid"), Some("true"));
        // Set explicitly: nothing implied, kept as is.
        let p = model(HA, "<property name='useoffsetmsgid'>true</property>");
        assert!(implied_offset_msgids(&p).is_empty());
        assert_eq!(
            publisher_spec(&p, input(&p))
                .unwrap()
                .prop("useoffsetmsgid"),
            Some("true")
        );
        // Explicitly off: refused, naming the property.
        let p = model(HA, "<property name='useoffsetmsgid'>false</property>");
        let e = publisher_spec(&p, input(&p)).unwrap_err();
        assert!(
            e.contains("'useoffsetmsgid'") && e.contains("hot failover"),
            "{e}"
        );
        // Without hot failover nothing changes.
        let p = model("", "");
        assert!(implied_offset_msgids(&p).is_empty());
        assert_eq!(
            publisher_spec(&p, input(&p))
                .unwrap()
                .prop("useoffsetmsgid"),
            None
        );
    }
}
