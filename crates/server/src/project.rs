//! One loaded project: a thread that owns its [`Engine`] and takes [`Cmd`]s over a channel
//! (the single writer of the project's state). Its file publishers, when started, are read
//! block by block between commands, so queries and client publishes are served while a file
//! is being read; output goes to fs subscribers and to client subscribers through the
//! [`Sink`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_connector::{FsPublisher, FsSubscriber};
use sluice_engine::{Engine, Sink, WindowId};
use sluice_event::{Event, EventBlock, MsgId, Row, Schema};
use sluice_model::{ConnectorDirection, ConnectorSpec, ProjectSpec};
use sluice_runtime::BadEvents;
use tokio::sync::oneshot;

use crate::kafka::{KafkaPub, KafkaStatus, KafkaSub, SharedStatus};
use crate::reply::ApiError;
use crate::subqueue::SubSender;
use sluice_ha::OutputId;
use sluice_kafka::KafkaPublisher;

/// A window of a compiled project, as the API shows it.
#[derive(Clone, Debug)]
pub struct WinInfo {
    pub cq: String,
    pub name: String,
    /// The element name, e.g. `window-source`.
    pub element: String,
    pub schema: Schema,
    pub id: WindowId,
    pub source: bool,
}

/// The windows of a compiled project.
#[derive(Clone, Debug, Default)]
pub struct ProjectInfo {
    pub windows: Vec<WinInfo>,
}

impl ProjectInfo {
    /// Reads the windows of a compiled engine (element names from the spec).
    pub fn new(engine: &Engine, spec: &ProjectSpec) -> ProjectInfo {
        let windows = engine
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let element = spec
                    .contqueries
                    .iter()
                    .filter(|c| c.name == n.cq)
                    .flat_map(|c| c.windows.iter())
                    .find(|w| w.name == n.name)
                    .map_or_else(|| n.imp.kind().to_string(), |w| w.element.clone());
                WinInfo {
                    cq: n.cq.clone(),
                    name: n.name.clone(),
                    element,
                    schema: n.schema.clone(),
                    id: WindowId(i as u32),
                    source: matches!(n.imp, sluice_engine::window::WindowImpl::Source(_)),
                }
            })
            .collect();
        ProjectInfo { windows }
    }

    /// The window `cq/name`.
    pub fn window(&self, cq: &str, name: &str) -> Option<&WinInfo> {
        self.windows.iter().find(|w| w.cq == cq && w.name == name)
    }
}

/// Window output sent to a client subscriber.
#[derive(Clone, Debug)]
pub struct SubMsg {
    /// The input block's message ID (0 for the snapshot).
    pub id: MsgId,
    /// True for the snapshot of current rows sent first.
    pub snapshot: bool,
    pub events: Arc<Vec<Event>>,
}

/// What an injection did.
#[derive(Clone, Debug, Default)]
pub struct InjectOutcome {
    pub events: u64,
    /// True when the project was stopped when the blocks reached it: nothing was injected.
    pub stopped: bool,
    /// Refused events with their reasons.
    pub refused: Vec<String>,
}

/// A command to a project thread.
pub enum Cmd {
    /// Starts (true) or stops (false) processing. Stopping stops the connectors.
    SetRunning(bool, oneshot::Sender<()>),
    /// Opens the fs connectors and starts reading the publishers' files.
    StartConnectors(oneshot::Sender<Result<String, ApiError>>),
    /// Runs blocks through a source window.
    Inject {
        window: WindowId,
        blocks: Vec<EventBlock>,
        reply: Option<oneshot::Sender<InjectOutcome>>,
    },
    /// As `Inject`, for events read from a file named by the request (`eventUrl=`): refusals
    /// and bad-event records give reasons only, never the events' values.
    InjectFile {
        window: WindowId,
        blocks: Vec<EventBlock>,
        reply: oneshot::Sender<InjectOutcome>,
    },
    /// Records input text a client publisher could not read.
    BadLine {
        connector: String,
        line: u64,
        text: String,
        reason: String,
    },
    /// The current rows of a window, sorted by key.
    Rows {
        window: WindowId,
        reply: oneshot::Sender<Vec<Row>>,
    },
    /// Row counts of all windows.
    Counts(oneshot::Sender<Vec<usize>>),
    /// Adds a client subscriber (snapshot first when asked).
    Subscribe {
        window: WindowId,
        snapshot: bool,
        tx: SubSender,
        reply: oneshot::Sender<()>,
    },
    /// Answers once every earlier command is done, with the events injected so far.
    Sync(oneshot::Sender<u64>),
    /// Takes a consistent snapshot between blocks and writes it to the directory (off the
    /// processing thread); answers when it is committed.
    Persist {
        dir: PathBuf,
        reply: oneshot::Sender<Result<String, ApiError>>,
    },
    /// Verifies and restores a snapshot (the project must not be running). With `suggest`, a
    /// refusal because Kafka retention removed the snapshot's offsets names the newest usable
    /// snapshot beside it (same parent directory).
    Restore {
        dir: PathBuf,
        suggest: bool,
        reply: oneshot::Sender<Result<String, ApiError>>,
    },
    /// Ends the thread.
    Shutdown,
}

/// The sending side of a project thread.
#[derive(Clone)]
pub struct ProjectHandle {
    tx: SyncSender<Cmd>,
    /// The project's Kafka connectors as REST shows them (refreshed by the project thread).
    pub status: SharedStatus,
}

/// Capacity of a project's command queue (senders wait when it is full).
const QUEUE: usize = 4096;

impl ProjectHandle {
    /// The Kafka connectors' status now.
    pub fn kafka_status(&self) -> KafkaStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends a command, waiting (off the async workers) when the queue is full. False when
    /// the project thread is gone.
    pub fn send(&self, cmd: Cmd) -> bool {
        match self.tx.try_send(cmd) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(cmd)) => {
                let tx = self.tx.clone();
                match tokio::runtime::Handle::try_current() {
                    Ok(_) => tokio::task::block_in_place(move || tx.send(cmd).is_ok()),
                    Err(_) => tx.send(cmd).is_ok(),
                }
            }
        }
    }

    /// Sends a command built around a reply channel and waits for the reply.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return None;
        }
        rx.await.ok()
    }
}

/// Settings a project thread needs from the server.
#[derive(Clone, Debug)]
pub struct ThreadConfig {
    pub badevents: Option<PathBuf>,
    /// Where relative `fsname`s resolve.
    pub base: PathBuf,
    /// Seconds between "current publish rate" lines.
    pub rate_interval: Duration,
}

/// Starts the thread of a compiled project.
pub fn spawn(
    spec: Arc<ProjectSpec>,
    engine: Engine,
    cfg: ThreadConfig,
) -> std::io::Result<ProjectHandle> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let bad = BadEvents::open(cfg.badevents.as_deref())?;
    let paths = engine
        .nodes()
        .iter()
        .map(|n| format!("{}/{}", spec.name, n.path))
        .collect();
    let name = spec.name.clone();
    for p in crate::kafka::implied_offset_msgids(&spec) {
        tracing::info!(target: "esp.connectors", "connector {p}: useoffsetmsgid=true (implied by the project's hot failover subscriber: output IDs must be the same on every instance)");
    }
    let heartbeat = Duration::from_secs(u64::from(spec.heartbeat_interval_secs.max(1)));
    let status = SharedStatus::default();
    let mut t = ProjectThread {
        spec,
        reads_clock: engine.reads_clock(),
        engine,
        cfg,
        running: false,
        heartbeat,
        publishers: Vec::new(),
        sink: ProjectSink {
            paths,
            fs: BTreeMap::new(),
            kafka: BTreeMap::new(),
            clients: BTreeMap::new(),
            bad,
            capture: None,
            quote: true,
            io_error: None,
        },
        client_seq: 0,
        injected: 0,
        resume: BTreeMap::new(),
        kpubs: Vec::new(),
        resume_kafka: BTreeMap::new(),
        marks: BTreeMap::new(),
        status: status.clone(),
        next_status: Instant::now(),
        next_lag: Instant::now(),
        persist_lock: Arc::new(std::sync::Mutex::new(())),
        in_sync: false,
    };
    std::thread::Builder::new()
        .name(format!("project-{name}"))
        .spawn(move || t.run(rx))?;
    Ok(ProjectHandle { tx, status })
}

struct ProjectSink {
    paths: Vec<String>,
    fs: BTreeMap<WindowId, Vec<FsSubscriber>>,
    kafka: BTreeMap<WindowId, Vec<KafkaSub>>,
    clients: BTreeMap<WindowId, Vec<SubSender>>,
    bad: BadEvents,
    /// Refusals of the current injection, for its reply.
    capture: Option<Vec<String>>,
    /// False while injecting events read from a file named by the request: refusals then
    /// record reasons only.
    quote: bool,
    io_error: Option<String>,
}

impl Sink for ProjectSink {
    fn output(&mut self, window: WindowId, id: MsgId, events: &[Event]) {
        if let Some(subs) = self.fs.get_mut(&window) {
            for s in subs {
                if let Err(e) = s.write(events) {
                    if self.io_error.is_none() {
                        tracing::error!(target: "esp.connectors", "connector {}: write failed: {e}", s.name());
                        self.io_error = Some(e.to_string());
                    }
                }
            }
        }
        if let Some(subs) = self.kafka.get_mut(&window) {
            for s in subs {
                s.output(id, events);
            }
        }
        if let Some(clients) = self.clients.get_mut(&window) {
            let msg = SubMsg {
                id,
                snapshot: false,
                events: Arc::new(events.to_vec()),
            };
            // Never waits for a client: one that fell behind its bound is dropped (subqueue).
            clients.retain_mut(|c| c.offer(msg.clone()));
        }
    }

    fn bad_event(&mut self, window: WindowId, event: &Event, reason: &str) {
        let path = &self.paths[window.0 as usize];
        if !self.quote {
            let reason = format!(
                "{} (values not recorded: the event was read from a file named by the request)",
                crate::events::unquoted(reason)
            );
            tracing::warn!(target: "esp.windows", "window {path}: bad event refused: {reason}");
            let blank = Event {
                opcode: event.opcode,
                flags: event.flags,
                row: vec![sluice_event::Value::Null; event.row.len()],
                old: None,
            };
            self.bad.event(path, &blank, &reason);
            if let Some(c) = &mut self.capture {
                c.push(format!("{path}: {reason}"));
            }
            return;
        }
        tracing::warn!(target: "esp.windows", "window {path}: bad event refused: {reason}");
        self.bad.event(path, event, reason);
        if let Some(c) = &mut self.capture {
            let mut text = String::new();
            sluice_event::csv::write_event(event, None, &mut text);
            c.push(format!("{path}: {reason}: {text}"));
        }
    }
}

struct PubState {
    window: WindowId,
    /// `project/cq/window/connector`.
    name: String,
    publisher: FsPublisher,
    events: u64,
    bad: u64,
    rate_mark: (Instant, u64),
    done: bool,
}

struct ProjectThread {
    /// Whether the project's output can depend on the time (`Engine::reads_clock`); when not,
    /// the clock is not read per block.
    reads_clock: bool,
    spec: Arc<ProjectSpec>,
    engine: Engine,
    cfg: ThreadConfig,
    running: bool,
    heartbeat: Duration,
    publishers: Vec<PubState>,
    sink: ProjectSink,
    client_seq: u64,
    injected: u64,
    /// Input positions of publishers not running now (stopped, or from a restored snapshot),
    /// by `project/cq/window/connector`: they resume there when connectors start.
    resume: BTreeMap<String, u64>,
    /// Running Kafka publishers.
    kpubs: Vec<KafkaPub>,
    /// Next offsets of Kafka publishers not running now (stopped, or from a restored
    /// snapshot), by `project/cq/window/connector`.
    resume_kafka: BTreeMap<String, (String, i32, i64)>,
    /// Last output IDs of Kafka subscribers not running now, by full connector name.
    marks: BTreeMap<String, OutputId>,
    status: SharedStatus,
    next_status: Instant,
    next_lag: Instant,
    /// Serialises snapshot writes of this project.
    persist_lock: Arc<std::sync::Mutex<()>>,
    /// Every Kafka input in sync (logged when it changes).
    in_sync: bool,
}

/// Blocks of one publisher read between two looks at the command queue.
const CHUNK: usize = 256;
/// Longest wait for a command while Kafka connectors run.
const KAFKA_WAIT: Duration = Duration::from_millis(5);

impl ProjectThread {
    /// The time handed to the engine with a block: the clock's, when the project can use it.
    /// The engine time of a block read from Kafka: the record's timestamp (0 for a record
    /// without one, which time-based retention then never removes on its own).
    fn kafka_block_time(&self, record: Option<i64>) -> i64 {
        if self.reads_clock {
            record.unwrap_or(0)
        } else {
            0
        }
    }

    fn block_time(&self) -> i64 {
        if self.reads_clock {
            sluice_runtime::now_micros()
        } else {
            0
        }
    }

    fn run(&mut self, rx: Receiver<Cmd>) {
        let mut next_beat = Instant::now() + self.heartbeat;
        let mut next_rate = Instant::now() + self.cfg.rate_interval;
        let mut kafka_got = false;
        loop {
            let fs_busy = self.running && self.publishers.iter().any(|p| !p.done);
            let busy = fs_busy || kafka_got;
            let kafka_live = !self.kpubs.is_empty() || !self.sink.kafka.is_empty();
            // Commands first: up to a bounded number while publishers are busy.
            let mut handled = 0;
            loop {
                let cmd = if busy || handled > 0 {
                    match rx.try_recv() {
                        Ok(c) => c,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return self.finish(),
                    }
                } else {
                    let mut wait = next_beat.saturating_duration_since(Instant::now());
                    if kafka_live {
                        // Kafka input is polled, not pushed: look again soon.
                        wait = wait.min(KAFKA_WAIT);
                    }
                    match rx.recv_timeout(wait) {
                        Ok(c) => c,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return self.finish(),
                    }
                };
                if !self.handle(cmd) {
                    return self.finish();
                }
                handled += 1;
                if busy && handled >= 64 {
                    break;
                }
            }
            let now = Instant::now();
            if now >= next_beat {
                next_beat = now + self.heartbeat;
                // With Kafka input, time advances with the records only (pump_kafka): a
                // wall-clock heartbeat would make a replaying instance differ from the live one.
                if self.running && self.kpubs.is_empty() {
                    self.engine
                        .advance_time(sluice_runtime::now_micros(), &mut self.sink);
                    self.flush_subscribers();
                }
            }
            if now >= next_rate {
                next_rate = now + self.cfg.rate_interval;
                self.log_rates(now);
            }
            if fs_busy {
                self.pump();
            }
            kafka_got = self.running && !self.kpubs.is_empty() && self.pump_kafka();
            if kafka_live {
                self.poll_kafka(now);
            }
        }
    }

    /// Reads up to [`CHUNK`] records from each Kafka publisher without waiting. True when
    /// some record came.
    fn pump_kafka(&mut self) -> bool {
        let mut got = false;
        for i in 0..self.kpubs.len() {
            for _ in 0..CHUNK {
                let p = &mut self.kpubs[i];
                let batch = match p.publisher.next_batch(Duration::ZERO) {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => {
                        p.errors += 1;
                        if p.last_error
                            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                        {
                            p.last_error = Some(Instant::now());
                            tracing::error!(target: "esp.connectors", "connector {}: {e} ({} error(s) so far); retrying", p.name, p.errors);
                        }
                        break;
                    }
                };
                got = true;
                for b in &batch.bad {
                    p.bad += 1;
                    let reason = format!(
                        "topic '{}' partition {} offset {}: {}",
                        b.topic, b.partition, b.offset, b.reason
                    );
                    tracing::warn!(target: "esp.connectors", "connector {}: bad record: {reason}", p.name);
                    self.sink
                        .bad
                        .line(&p.name, b.offset.max(0) as u64, &b.text, &reason);
                }
                if batch.block.events.is_empty() {
                    continue;
                }
                let n = batch.block.events.len() as u64;
                p.events += n;
                self.injected += n;
                let window = p.window;
                // Time comes with the record (docs/semantics.md, "Time"): the block and the
                // time-based retention it triggers see the record's timestamp, never the
                // wall clock, so every instance, live or replaying, computes the same output.
                let time = self.kafka_block_time(batch.timestamp);
                let _ = self
                    .engine
                    .inject(window, batch.block, time, &mut self.sink);
                if self.reads_clock {
                    self.engine.advance_time(time, &mut self.sink);
                }
            }
        }
        if got {
            self.flush_subscribers();
        }
        got
    }

    /// Failover roles, delivery failures, lag and the REST status of the Kafka connectors.
    fn poll_kafka(&mut self, now: Instant) {
        let mut dirty = false;
        for subs in self.sink.kafka.values_mut() {
            for s in subs {
                s.poll();
                dirty |= std::mem::take(&mut s.dirty);
            }
        }
        if now >= self.next_lag {
            self.next_lag = now + Duration::from_secs(1);
            for p in &mut self.kpubs {
                p.measure_lag();
            }
            let all = !self.kpubs.is_empty() && self.kpubs.iter().all(|p| p.in_sync);
            if all != self.in_sync {
                self.in_sync = all;
                let lag: i64 = self.kpubs.iter().filter_map(|p| p.lag).sum();
                if all {
                    tracing::info!(target: "esp.server", "project {}: in sync: every Kafka input ({}) within {} offset(s) of the end of its partition (lag {lag})", self.spec.name, self.kpubs.len(), crate::kafka::IN_SYNC_LAG);
                } else {
                    tracing::warn!(target: "esp.server", "project {}: not in sync any more (lag {lag})", self.spec.name);
                }
            }
            dirty = true;
        }
        if dirty || now >= self.next_status {
            self.next_status = now + Duration::from_millis(250);
            self.refresh_status();
        }
    }

    fn refresh_status(&mut self) {
        let st = KafkaStatus {
            inputs: self.kpubs.iter().map(|p| p.status()).collect(),
            outputs: self
                .sink
                .kafka
                .values()
                .flat_map(|v| v.iter().map(|s| s.status()))
                .collect(),
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = st;
    }

    fn finish(&mut self) {
        self.stop_connectors();
        self.sink.bad.flush();
    }

    /// Handles one command; false to end the thread.
    fn handle(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::SetRunning(on, reply) => {
                if !on {
                    self.stop_connectors();
                }
                self.running = on;
                let _ = reply.send(());
            }
            Cmd::StartConnectors(reply) => {
                let r = self.start_connectors();
                let _ = reply.send(r);
            }
            Cmd::Inject {
                window,
                blocks,
                reply,
            } => self.inject(window, blocks, reply, true),
            Cmd::InjectFile {
                window,
                blocks,
                reply,
            } => self.inject(window, blocks, Some(reply), false),
            Cmd::BadLine {
                connector,
                line,
                text,
                reason,
            } => self.sink.bad.line(&connector, line, &text, &reason),
            Cmd::Rows { window, reply } => {
                let rows = self
                    .engine
                    .rows_sorted(window)
                    .into_iter()
                    .map(std::borrow::Cow::into_owned)
                    .collect();
                let _ = reply.send(rows);
            }
            Cmd::Counts(reply) => {
                let counts = (0..self.engine.nodes().len())
                    .map(|i| self.engine.row_count(WindowId(i as u32)))
                    .collect();
                let _ = reply.send(counts);
            }
            Cmd::Subscribe {
                window,
                snapshot,
                mut tx,
                reply,
            } => {
                self.engine.observe(window, true);
                if snapshot {
                    let events: Vec<Event> = self
                        .engine
                        .rows_sorted(window)
                        .into_iter()
                        .map(|r| Event::insert(r.into_owned()))
                        .collect();
                    let msg = SubMsg {
                        id: MsgId(0),
                        snapshot: true,
                        events: Arc::new(events),
                    };
                    if !tx.offer(msg) {
                        let _ = reply.send(());
                        return true;
                    }
                }
                self.sink.clients.entry(window).or_default().push(tx);
                let _ = reply.send(());
            }
            Cmd::Sync(reply) => {
                let _ = reply.send(self.injected);
            }
            Cmd::Persist { dir, reply } => self.persist(dir, reply),
            Cmd::Restore {
                dir,
                suggest,
                reply,
            } => {
                let _ = reply.send(self.restore(&dir, suggest));
            }
            Cmd::Shutdown => return false,
        }
        true
    }

    /// Runs client blocks through a source window; `quote`: refusals may show the values.
    fn inject(
        &mut self,
        window: WindowId,
        blocks: Vec<EventBlock>,
        reply: Option<oneshot::Sender<InjectOutcome>>,
        quote: bool,
    ) {
        let mut outcome = InjectOutcome::default();
        if !self.running {
            let why = format!("project '{}' is stopped: events refused", self.spec.name);
            tracing::warn!(target: "esp.windows", "{why}");
            outcome.stopped = true;
            outcome.refused.push(why);
            if let Some(r) = reply {
                let _ = r.send(outcome);
            }
            return;
        }
        if reply.is_some() {
            self.sink.capture = Some(Vec::new());
        }
        self.sink.quote = quote;
        for mut b in blocks {
            self.client_seq += 1;
            if b.id == MsgId(0) {
                b.id = MsgId(self.client_seq);
            }
            outcome.events += b.events.len() as u64;
            self.injected += b.events.len() as u64;
            if let Err(e) = self
                .engine
                .inject(window, b, self.block_time(), &mut self.sink)
            {
                let e = e.to_string();
                outcome.refused.push(if quote {
                    e
                } else {
                    crate::events::unquoted(&e)
                });
            }
        }
        self.sink.quote = true;
        self.flush_subscribers();
        if let Some(r) = reply {
            outcome
                .refused
                .extend(self.sink.capture.take().unwrap_or_default());
            let _ = r.send(outcome);
        }
    }

    /// The input position of every publish connector, running or not.
    fn positions(&self) -> Vec<sluice_persist::Position> {
        let mut at: BTreeMap<String, u64> = self.resume.clone();
        for p in &self.publishers {
            at.insert(p.name.clone(), p.publisher.position());
        }
        let mut out: Vec<sluice_persist::Position> = at
            .into_iter()
            .map(|(connector, line)| sluice_persist::Position::Fs { connector, line })
            .collect();
        let mut kafka = self.resume_kafka.clone();
        for p in &self.kpubs {
            kafka.insert(
                p.name.clone(),
                (
                    p.publisher.topic().to_string(),
                    p.publisher.partition(),
                    p.publisher.position(),
                ),
            );
        }
        out.extend(
            kafka
                .into_iter()
                .map(
                    |(connector, (topic, partition, offset))| sluice_persist::Position::Kafka {
                        connector,
                        topic,
                        partition,
                        offset,
                    },
                ),
        );
        out
    }

    /// The last output ID of every Kafka subscriber, running or not.
    fn output_marks(&self) -> Vec<sluice_persist::OutputMark> {
        let mut marks = self.marks.clone();
        for s in self.sink.kafka.values().flatten() {
            if let Some(l) = s.last {
                marks.insert(s.name.clone(), l);
            }
        }
        marks
            .into_iter()
            .map(|(connector, id)| sluice_persist::OutputMark {
                connector,
                last_output_id: id.to_string(),
            })
            .collect()
    }

    /// Encodes the state here (the pause), writes it on another thread.
    fn persist(&mut self, dir: PathBuf, reply: oneshot::Sender<Result<String, ApiError>>) {
        let t0 = Instant::now();
        let name = self.spec.name.clone();
        let snap = sluice_persist::Snapshot {
            project: name.clone(),
            fingerprint: self.engine.fingerprint(),
            state: sluice_persist::ProjectState {
                project: name.clone(),
                publishers: self.positions(),
                subscribers: self.output_marks(),
            },
            windows: Default::default(),
        };
        // The cut: O(shards), not O(state). Encoding happens on the writer thread.
        let frozen = self.engine.freeze();
        let pause = t0.elapsed();
        let lock = self.persist_lock.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("persist-{name}"))
            .spawn(move || {
                let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
                let t1 = Instant::now();
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let files = frozen.windows().count();
                let r = sluice_runtime::write_frozen(
                    &dir,
                    &snap.project,
                    snap.fingerprint,
                    &snap.state,
                    &frozen,
                    ms,
                );
                let shown = dir.display().to_string();
                let out = match r {
                    Ok(bytes) => {
                        tracing::info!(target: "esp.server", "project {name} persisted to {shown}: {files} window file(s), {bytes} bytes, processing paused {} us, written in {} ms", pause.as_micros(), t1.elapsed().as_millis());
                        Ok(format!("project {name} successfully saved to {shown}"))
                    }
                    // A target holding what Sluice did not write, or one another persist is
                    // writing: the request's conflict, not the server's failure.
                    Err(e @ sluice_persist::PersistError::Foreign { .. }) => {
                        tracing::warn!(target: "esp.server", "project {name}: persist to {shown} refused: {e}");
                        Err(ApiError::conflict(format!("persisting project '{name}' to '{shown}' refused: {e}")))
                    }
                    Err(e @ sluice_persist::PersistError::Busy { .. }) => {
                        Err(ApiError::conflict(format!("persisting project '{name}' to '{shown}' refused: {e}")))
                    }
                    Err(e) => {
                        tracing::error!(target: "esp.server", "project {name}: persist to {shown} failed: {e}");
                        Err(ApiError::new(500, format!("persisting project '{name}' to '{shown}' failed: {e}")))
                    }
                };
                let _ = reply.send(out);
            });
        if let Err(e) = spawned {
            tracing::error!(target: "esp.server", "project {}: cannot start the persist thread: {e}", self.spec.name);
        }
    }

    /// Reads and verifies a snapshot for this project: version, project, fingerprint, every
    /// checksum, output IDs, and that the broker still holds every Kafka offset it resumes
    /// from (DESIGN.md decision 5). Changes nothing.
    fn verify_snapshot(&self, dir: &std::path::Path) -> Result<Verified, Refusal> {
        let name = &self.spec.name;
        let (state, windows) = sluice_runtime::read_snapshot_into(&self.engine, dir, name)
            .map_err(|e| Refusal::Snapshot(e.to_string()))?;
        let mut v = Verified {
            resume: BTreeMap::new(),
            resume_kafka: BTreeMap::new(),
            marks: BTreeMap::new(),
            state,
            windows,
        };
        for m in &v.state.subscribers {
            let id: OutputId = m
                .last_output_id
                .parse()
                .map_err(|e| Refusal::Snapshot(format!("subscriber {}: {e}", m.connector)))?;
            v.marks.insert(m.connector.clone(), id);
        }
        for p in &v.state.publishers {
            match p {
                sluice_persist::Position::Fs { connector, line } => {
                    v.resume.insert(connector.clone(), *line);
                }
                sluice_persist::Position::Kafka {
                    connector,
                    topic,
                    partition,
                    offset,
                } => {
                    self.check_kafka_resume(connector, *offset)?;
                    v.resume_kafka
                        .insert(connector.clone(), (topic.clone(), *partition, *offset));
                }
            }
        }
        Ok(v)
    }

    /// The newest snapshot beside `dir` (same parent, newest name first) that verifies and
    /// whose Kafka offsets the broker still holds.
    fn newest_usable_sibling(&self, dir: &std::path::Path) -> Option<PathBuf> {
        let parent = dir.parent()?;
        let own = dir.file_name();
        crate::recovery::snapshot_dirs(parent)
            .into_iter()
            .filter(|d| d.file_name() != own)
            .find(|d| self.verify_snapshot(d).is_ok())
    }

    /// Verifies the snapshot whole, then replaces the state; nothing changes on error.
    fn restore(&mut self, dir: &std::path::Path, suggest: bool) -> Result<String, ApiError> {
        let name = self.spec.name.clone();
        let shown = dir.display().to_string();
        if self.running {
            return Err(ApiError::conflict(format!(
                "project '{name}' is running: stop it first (value=stopped), then restore it"
            )));
        }
        let refused = |why: String| {
            tracing::error!(target: "esp.server", "project {name}: restore from {shown} refused: {why}");
            ApiError::new(
                422,
                format!("snapshot '{shown}' cannot be restored into project '{name}': {why}"),
            )
        };
        let v = match self.verify_snapshot(dir) {
            Ok(v) => v,
            Err(Refusal::Snapshot(why)) => return Err(refused(why)),
            Err(Refusal::Retention(why)) => {
                let hint = if !suggest {
                    String::new()
                } else {
                    match self.newest_usable_sibling(dir) {
                        Some(d) => format!(
                            "; the newest usable snapshot in {} is {}",
                            dir.parent()
                                .map_or(String::new(), |p| p.display().to_string()),
                            d.display()
                        ),
                        None => format!(
                            "; no other snapshot in {} is usable",
                            dir.parent()
                                .map_or(String::new(), |p| p.display().to_string())
                        ),
                    }
                };
                return Err(refused(format!("{why}{hint}")));
            }
        };
        let windows = v.windows.decoded();
        self.engine
            .finish_restore(v.windows)
            .map_err(|e| refused(e.to_string()))?;
        self.resume = v.resume;
        self.resume_kafka = v.resume_kafka;
        self.marks = v.marks;
        let rows: usize = (0..self.engine.nodes().len())
            .map(|i| self.engine.row_count(WindowId(i as u32)))
            .sum();
        tracing::info!(target: "esp.server", "project {name} restored from {shown}: {} window(s), {rows} row(s), {} input position(s), {} output mark(s)", windows, self.resume.len() + self.resume_kafka.len(), self.marks.len());
        Ok(format!(
            "project '{name}' successfully restored from '{shown}'"
        ))
    }

    fn connectors(&self) -> Vec<(String, String, ConnectorSpec)> {
        let mut out = Vec::new();
        for cq in &self.spec.contqueries {
            for w in &cq.windows {
                for c in &w.connectors {
                    if c.active {
                        out.push((cq.name.clone(), w.name.clone(), c.clone()));
                    }
                }
            }
        }
        out
    }

    /// The connector spec, window and autogen field of `project/cq/window/connector`.
    fn connector_of(&self, full: &str) -> Option<(WindowId, ConnectorSpec, Option<usize>)> {
        let rest = full.strip_prefix(&format!("{}/", self.spec.name))?;
        let mut parts = rest.splitn(3, '/');
        let (cq, w, c) = (parts.next()?, parts.next()?, parts.next()?);
        let (_, _, spec) = self
            .connectors()
            .into_iter()
            .find(|(a, b, s)| a == cq && b == w && s.name == c)?;
        let id = self.engine.window(cq, w)?;
        Some((id, spec, self.autogen(id)))
    }

    fn autogen(&self, id: WindowId) -> Option<usize> {
        match &self.engine.node(id).imp {
            sluice_engine::window::WindowImpl::Source(s) => s.autogen.as_ref().map(|a| a.field),
            _ => None,
        }
    }

    /// Checks that the broker still holds the input a Kafka publisher resumes from.
    fn check_kafka_resume(&self, full: &str, offset: i64) -> Result<(), Refusal> {
        let (id, spec, autogen) = self.connector_of(full).ok_or_else(|| {
            Refusal::Snapshot(format!("the snapshot holds a Kafka input position for connector {full}, which this project does not have"))
        })?;
        let schema = self.engine.node(id).schema.clone();
        KafkaPublisher::open(&spec, &schema, autogen, Some(offset))
            .map(|_| ())
            .map_err(|e| match e {
                sluice_kafka::KafkaError::OffsetsGone { .. } => Refusal::Retention(e.to_string()),
                e => Refusal::Snapshot(e.to_string()),
            })
    }

    fn start_connectors(&mut self) -> Result<String, ApiError> {
        let project = self.spec.name.clone();
        let all = self.connectors();
        let unsupported: Vec<String> = all
            .iter()
            .filter(|(_, _, c)| c.class != "fs" && c.class != "kafka")
            .map(|(cq, w, c)| {
                format!(
                    "connector {cq}/{w}/{} has class '{}', which this server cannot run yet (supported: fs, kafka)",
                    c.name, c.class
                )
            })
            .collect();
        if !unsupported.is_empty() {
            return Err(ApiError::bad(format!(
                "cannot start the connectors of project '{project}': {} connector(s) of an unsupported class",
                unsupported.len()
            ))
            .with_details(unsupported));
        }
        let mut pubs = Vec::new();
        let mut kpubs = Vec::new();
        let mut subs: Vec<(WindowId, FsSubscriber, bool)> = Vec::new();
        let mut ksubs: Vec<KafkaSub> = Vec::new();
        let mut errors = Vec::new();
        for (cq, w, c) in sluice_runtime::runner::order_connectors(&self.spec, all) {
            let id = self.engine.window(&cq, &w).expect("compiled window");
            let node = self.engine.node(id);
            let full = format!("{project}/{cq}/{w}/{}", c.name);
            let kafka = c.class == "kafka";
            match c.direction {
                ConnectorDirection::Publish if kafka => {
                    let resume = self.resume_kafka.get(&full).map(|(_, _, o)| *o);
                    let c = match crate::kafka::publisher_spec(&self.spec, &c) {
                        Ok(c) => c,
                        Err(e) => {
                            errors.push(format!("{full}: {e}"));
                            continue;
                        }
                    };
                    match KafkaPublisher::open(&c, &node.schema, self.autogen(id), resume) {
                        Ok(p) => {
                            let unread = p.unread_partitions();
                            if !unread.is_empty() {
                                tracing::warn!(target: "esp.connectors", "connector {full}: topic '{}' has {} partitions and this publisher reads only partition {}: the events of partition(s) {unread:?} are not read by this project", p.topic(), unread.len() + 1, p.partition());
                            }
                            match resume {
                                Some(at) => {
                                    tracing::info!(target: "esp.connectors", "connector {full}: resuming topic '{}' partition {} at offset {at} (from the snapshot or the last stop)", p.topic(), p.partition())
                                }
                                None => {
                                    tracing::info!(target: "esp.connectors", "connector {full}: reading topic '{}' partition {} from offset {}", p.topic(), p.partition(), p.start_offset())
                                }
                            }
                            kpubs.push(KafkaPub::new(id, full, p));
                        }
                        Err(e) => errors.push(format!("{full}: {e}")),
                    }
                }
                ConnectorDirection::Publish => {
                    let opened = FsPublisher::open(&c, &node.schema, self.autogen(id), &self.cfg.base)
                        .map_err(|e| e.to_string())
                        .and_then(|mut p| match self.resume.get(&full) {
                            Some(&at) => p
                                .skip_to(at)
                                .map(|_| {
                                    tracing::info!(target: "esp.connectors", "connector {full}: resuming at input position {at}");
                                    p
                                })
                                .map_err(|e| format!("cannot resume at input position {at}: {e}")),
                            None => Ok(p),
                        });
                    match opened {
                        Ok(p) => pubs.push(PubState {
                            window: id,
                            name: full,
                            publisher: p,
                            events: 0,
                            bad: 0,
                            rate_mark: (Instant::now(), 0),
                            done: false,
                        }),
                        Err(e) => errors.push(format!("{full}: {e}")),
                    }
                }
                ConnectorDirection::Subscribe if kafka => {
                    let last = self.marks.get(&full).copied();
                    match KafkaSub::open(id, full.clone(), &c, &node.schema, last) {
                        Ok(s) => ksubs.push(s),
                        Err(e) => errors.push(format!("{full}: {e}")),
                    }
                }
                ConnectorDirection::Subscribe => {
                    match FsSubscriber::open(&c, &node.schema, &self.cfg.base) {
                        Ok(s) => {
                            let snap = s.snapshot;
                            subs.push((id, s, snap));
                        }
                        Err(e) => errors.push(format!("{full}: {e}")),
                    }
                }
            }
        }
        if !errors.is_empty() {
            for mut s in ksubs {
                s.stop();
            }
            return Err(ApiError::bad(format!(
                "cannot start the connectors of project '{project}'"
            ))
            .with_details(errors));
        }
        let n = pubs.len() + subs.len() + kpubs.len() + ksubs.len();
        for (id, mut s, snap) in subs {
            if snap {
                let events: Vec<Event> = self
                    .engine
                    .rows_sorted(id)
                    .into_iter()
                    .map(|r| Event::insert(r.into_owned()))
                    .collect();
                if let Err(e) = s.write(&events) {
                    tracing::error!(target: "esp.connectors", "connector {}: write failed: {e}", s.name());
                }
            }
            tracing::info!(target: "esp.connectors", "project {project}: subscriber connector '{}' on window {}: state running", s.name(), self.engine.node(id).path);
            self.engine.observe(id, true);
            self.sink.fs.entry(id).or_default().push(s);
        }
        for mut s in ksubs {
            let id = s.window;
            if s.wants_snapshot() {
                let events: Vec<Event> = self
                    .engine
                    .rows_sorted(id)
                    .into_iter()
                    .map(|r| Event::insert(r.into_owned()))
                    .collect();
                if !events.is_empty() {
                    s.output(MsgId(0), &events);
                }
            }
            tracing::info!(target: "esp.connectors", "connector {}: Kafka subscriber on window {}: state running", s.name, self.engine.node(id).path);
            self.marks.remove(&s.name);
            self.engine.observe(id, true);
            self.sink.kafka.entry(id).or_default().push(s);
        }
        for p in &pubs {
            tracing::info!(target: "esp.connectors", "connector {}: publisher reading {}: state running", p.name, p.publisher.path().display());
        }
        for p in &kpubs {
            self.resume_kafka.remove(&p.name);
        }
        self.publishers = pubs;
        self.kpubs = kpubs;
        self.refresh_status();
        Ok(format!("{n} connector(s) started"))
    }

    fn stop_connectors(&mut self) {
        self.in_sync = false;
        for p in self.publishers.drain(..) {
            // Started again later, it resumes here rather than from the start of its input.
            self.resume.insert(p.name.clone(), p.publisher.position());
            if !p.done {
                tracing::info!(target: "esp.connectors", "connector {}: state stopped after {} event(s)", p.name, p.events);
            }
        }
        for p in self.kpubs.drain(..) {
            let at = p.publisher.position();
            self.resume_kafka.insert(
                p.name.clone(),
                (p.publisher.topic().to_string(), p.publisher.partition(), at),
            );
            tracing::info!(target: "esp.connectors", "connector {}: state stopped after {} event(s), next offset {at}", p.name, p.events);
        }
        for (_, subs) in std::mem::take(&mut self.sink.fs) {
            for mut s in subs {
                let _ = s.flush();
                tracing::info!(target: "esp.connectors", "project {}: subscriber connector '{}': state stopped", self.spec.name, s.name());
            }
        }
        for (_, subs) in std::mem::take(&mut self.sink.kafka) {
            for mut s in subs {
                s.stop();
                if let Some(l) = s.last {
                    self.marks.insert(s.name.clone(), l);
                }
                tracing::info!(target: "esp.connectors", "connector {}: Kafka subscriber: state stopped", s.name);
            }
        }
        self.refresh_status();
    }

    fn flush_subscribers(&mut self) {
        for subs in self.sink.fs.values_mut() {
            for s in subs {
                let _ = s.flush();
            }
        }
        self.sink.bad.flush();
    }

    /// Reads up to [`CHUNK`] blocks from the first publisher not done.
    fn pump(&mut self) {
        let Some(i) = self.publishers.iter().position(|p| !p.done) else {
            return;
        };
        for _ in 0..CHUNK {
            let p = &mut self.publishers[i];
            let batch = match p.publisher.next_batch() {
                Ok(Some(b)) => b,
                Ok(None) => {
                    p.done = true;
                    tracing::info!(target: "esp.connectors", "connector {}: state finished: {} event(s) read, {} bad line(s)", p.name, p.events, p.bad);
                    break;
                }
                Err(e) => {
                    p.done = true;
                    tracing::error!(target: "esp.connectors", "connector {}: state failed: reading {}: {e}", p.name, p.publisher.path().display());
                    break;
                }
            };
            for b in &batch.bad {
                p.bad += 1;
                self.sink.bad.line(&p.name, b.line, &b.text, &b.reason);
            }
            if batch.block.events.is_empty() {
                continue;
            }
            p.events += batch.block.events.len() as u64;
            self.injected += batch.block.events.len() as u64;
            let window = p.window;
            let _ = self
                .engine
                .inject(window, batch.block, self.block_time(), &mut self.sink);
        }
        self.flush_subscribers();
    }

    fn log_rates(&mut self, now: Instant) {
        for p in &mut self.publishers {
            if p.done {
                continue;
            }
            let (t0, e0) = p.rate_mark;
            let secs = now.duration_since(t0).as_secs_f64().max(1e-3);
            let rate = ((p.events - e0) as f64 / secs).round() as u64;
            tracing::info!(target: "esp.connectors", "connector {}: current publish rate: {rate} events/sec", p.name);
            p.rate_mark = (now, p.events);
        }
        for p in &mut self.kpubs {
            let (t0, e0) = p.rate_mark;
            let secs = now.duration_since(t0).as_secs_f64().max(1e-3);
            let rate = ((p.events - e0) as f64 / secs).round() as u64;
            tracing::info!(target: "esp.connectors", "connector {}: current publish rate: {rate} events/sec", p.name);
            p.rate_mark = (now, p.events);
        }
    }
}

/// A snapshot read, verified, decoded and checked against the broker, not applied yet.
struct Verified {
    state: sluice_persist::ProjectState,
    windows: sluice_engine::Restoring,
    resume: BTreeMap<String, u64>,
    resume_kafka: BTreeMap<String, (String, i32, i64)>,
    marks: BTreeMap<String, OutputId>,
}

/// Why a snapshot is refused.
enum Refusal {
    /// It cannot be trusted or does not fit the project.
    Snapshot(String),
    /// Kafka retention removed records it resumes from (the message names the range).
    Retention(String),
}
