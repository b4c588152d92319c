//! A hot failover cluster of real `sluice server` processes on a real Kafka-protocol broker and
//! ZooKeeper, for tests/failover.rs and examples/failover_bench.rs: instances, the model, an
//! input producer, the output topic as records, and the expected output computed offline by
//! the engine from the same input records.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_engine::{CollectSink, Engine};
use sluice_event::csv::CsvOptions;
use sluice_event::{EventBlock, MsgId};
use sluice_kafka::OutputId;

pub const T: Duration = Duration::from_secs(10);

/// Where the broker and ZooKeeper are. Holding it also holds the test binary's one-at-a-time
/// lock: each test runs two or three server processes, a producer and consumers, and running
/// several such tests at once on two cores starved the broker (a flaky stall in CI).
#[derive(Debug)]
pub struct Services {
    pub brokers: String,
    pub zookeeper: String,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The services from the environment; `None` (after printing SKIPPED) when absent, a panic when
/// `SLUICE_REQUIRE` names a missing one.
pub fn services(test: &str) -> Option<Services> {
    let get = |v: &str| std::env::var(v).ok().filter(|s| !s.trim().is_empty());
    let (b, z) = (get("SLUICE_KAFKA_BROKERS"), get("SLUICE_ZOOKEEPER"));
    if let (Some(brokers), Some(zookeeper)) = (b.clone(), z.clone()) {
        // A test that panicked poisons the lock; the next one still runs.
        let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        return Some(Services {
            brokers,
            zookeeper,
            _one_at_a_time: guard,
        });
    }
    let required = std::env::var("SLUICE_REQUIRE").unwrap_or_default();
    for (name, have) in [("kafka", b.is_some()), ("zookeeper", z.is_some())] {
        if !have && required.split(',').any(|s| s.trim() == name) {
            panic!("{test}: SLUICE_REQUIRE contains {name} but it is not given: run scripts/services.sh start (and source .tmp/services/services.env)");
        }
    }
    println!("SKIPPED {test}: set SLUICE_KAFKA_BROKERS and SLUICE_ZOOKEEPER or run scripts/services.sh start");
    None
}

/// One test's world: the services, its own input and output topics and election path, the
/// model XML (also written to `model` for `--model` and `file://` loads) and a directory.
pub struct Setup {
    pub s: Services,
    pub input: String,
    pub output: String,
    pub xml: String,
    pub dir: PathBuf,
    pub model: PathBuf,
}

/// Sets up `test` (topics and znode path named `sluice-<prefix>-<test>-…`); `None` when the
/// services are absent (see [`services`]).
pub fn setup(prefix: &str, test: &str, buffered: usize, session_ms: u64) -> Option<Setup> {
    let s = services(test)?;
    let input = unique(&format!("sluice-{prefix}-{test}-in"));
    let output = unique(&format!("sluice-{prefix}-{test}-out"));
    create_topic(&s.brokers, &input);
    create_topic(&s.brokers, &output);
    let zkpath = format!("/sluice-it/{}", unique(test));
    let xml = model(&ModelOpts {
        brokers: &s.brokers,
        zookeeper: &s.zookeeper,
        input: &input,
        output: &output,
        zkpath: &zkpath,
        buffered,
        session_ms,
    });
    let dir = tempdir(test);
    let model = dir.join("fo.xml");
    std::fs::write(&model, &xml).expect("model written");
    Some(Setup {
        s,
        input,
        output,
        xml,
        dir,
        model,
    })
}

/// The `sluice` binary for the examples: `SLUICE_BIN`, else the one beside the examples
/// directory of the build.
pub fn example_bin() -> PathBuf {
    if let Ok(b) = std::env::var("SLUICE_BIN") {
        return PathBuf::from(b);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("sluice"))
        .expect("the sluice binary beside the examples directory")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits for `f` to hold, checking every 20 ms, at most `limit`; panics with `what`.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tiny deterministic random source (xorshift), seeded and printed by the tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn seeded() -> Rng {
        let seed = std::env::var("SLUICE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        println!("random seed {seed} (SLUICE_TEST_SEED={seed} repeats it)");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A duration in [lo, hi) milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo).max(1))
    }
}

/// The test model: Kafka CSV in (offsets as message IDs) → aggregate by symbol → compute →
/// Kafka CSV out with hot failover.
pub struct ModelOpts<'a> {
    pub brokers: &'a str,
    pub zookeeper: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub zkpath: &'a str,
    pub buffered: usize,
    pub session_ms: u64,
}

pub fn model(o: &ModelOpts<'_>) -> String {
    format!(
        r#"<project name="fo" pubsub="none" threads="1">
  <contqueries>
    <contquery name="cq">
      <windows>
        <window-source name="trades" index="pi_HASH">
          <schema-string>id*:int64,sym:string,qty:int64</schema-string>
          <connectors>
            <connector class="kafka" name="in">
              <properties>
                <property name="type">pub</property>
                <property name="kafkahostport">{b}</property>
                <property name="kafkatopic">{i}</property>
                <property name="kafkapartition">0</property>
                <property name="kafkatype">csv</property>
                <property name="urlhostport">unused:33333</property>
                <property name="kafkainitialoffset">smallest</property>
                <property name="useoffsetmsgid">true</property>
              </properties>
            </connector>
          </connectors>
        </window-source>
        <window-aggregate name="bySym">
          <schema-string>sym*:string,n:int64,total:int64</schema-string>
          <output>
            <field-expr>ESP_aCount()</field-expr>
            <field-expr>ESP_aSum(qty)</field-expr>
          </output>
        </window-aggregate>
        <window-compute name="out">
          <schema-string>sym*:string,n:int64,total:int64,twice:int64</schema-string>
          <output>
            <field-expr>n</field-expr>
            <field-expr>total</field-expr>
            <field-expr>total*2</field-expr>
          </output>
          <connectors>
            <connector class="kafka" name="ko">
              <properties>
                <property name="type">sub</property>
                <property name="kafkahostport">{b}</property>
                <property name="kafkatopic">{o}</property>
                <property name="kafkapartition">0</property>
                <property name="kafkatype">csv</property>
                <property name="urlhostport">unused:33333</property>
                <property name="snapshot">false</property>
                <property name="hotfailover">true</property>
                <property name="zookeeperhostport">{z}</property>
                <property name="zookeeperpath">{p}</property>
                <property name="zookeepersessiontimeout">{s}</property>
                <property name="numbufferedmsgs">{n}</property>
              </properties>
            </connector>
          </connectors>
        </window-compute>
      </windows>
      <edges>
        <edge source="trades" target="bySym"/>
        <edge source="bySym" target="out"/>
      </edges>
    </contquery>
  </contqueries>
</project>
"#,
        b = o.brokers,
        i = o.input,
        o = o.output,
        z = o.zookeeper,
        p = o.zkpath,
        s = o.session_ms,
        n = o.buffered,
    )
}

/// One `sluice server` process and its log lines.
pub struct Instance {
    pub name: String,
    pub child: Child,
    pub url: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub alive: bool,
}

impl Instance {
    /// Starts `sluice server` (no model) and waits for its HTTP address.
    pub fn start(bin: &Path, dir: &Path, name: &str) -> Instance {
        Instance::start_with(bin, dir, name, &[])
    }

    /// Starts `sluice server` with extra options (`--model`, `--persist-dir`, …) and waits
    /// for its HTTP address.
    pub fn start_with(bin: &Path, dir: &Path, name: &str, extra: &[&str]) -> Instance {
        let mut child = Command::new(bin)
            .args(["server", "-http", "0", "--loglevel", "info"])
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice server starts");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = log.clone();
        let tag = name.to_string();
        let echo = std::env::var("SLUICE_TEST_ECHO").is_ok();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{tag}] {line}");
                }
                if !sent {
                    if let Some(a) = line.split("HTTP server listening on ").nth(1) {
                        let _ = tx.send(a.trim().to_string());
                        sent = true;
                    }
                }
                l2.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs its HTTP address");
        Instance {
            name: name.to_string(),
            child,
            url: format!("http://{addr}/SASESP"),
            log,
            alive: true,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One REST call: status and body.
    pub fn call(&self, method: &str, rest: &str, body: Option<&str>) -> (u16, String) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let url = format!("{}/{rest}", self.url);
        let r = agent.request(method, &url);
        let res = match body {
            Some(b) => r.send_string(b),
            None => r.call(),
        };
        match res {
            Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
            Err(e) => (0, format!("{method} {url}: {e}")),
        }
    }

    /// `PUT`, expecting success.
    pub fn put_ok(&self, rest: &str, body: &str) -> String {
        let (s, b) = self.call("PUT", rest, Some(body));
        assert_eq!(s, 200, "{}: PUT {rest}: {b}", self.name);
        b
    }

    /// Loads the project, started with its connectors.
    pub fn load(&self, xml: &str) {
        self.put_ok("projects/fo?overwrite=true", xml);
    }

    /// Whether `GET server` says `primary-server="true"`.
    pub fn primary(&self) -> bool {
        if !self.alive {
            return false;
        }
        let (s, b) = self.call("GET", "server", None);
        s == 200 && b.contains("primary-server=\"true\"")
    }

    pub fn status(&self) -> String {
        self.call("GET", "projectStatus/fo", None).1
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.alive = false;
    }

    /// Sends a signal by name (STOP, CONT, TERM) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    pub fn log_has(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.alive {
            return;
        }
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The index of the one live instance that says it is primary, waiting up to `limit`.
pub fn wait_primary(insts: &[Instance], limit: Duration) -> usize {
    let mut found = None;
    wait_for(limit, "one primary instance", || {
        let p: Vec<usize> = (0..insts.len()).filter(|&i| insts[i].primary()).collect();
        found = p.first().copied().filter(|_| p.len() == 1);
        found.is_some()
    });
    found.expect("checked")
}

pub fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

pub fn create_topic(brokers: &str, topic: &str) {
    sluice_kafka::admin::create_topic(&config(brokers), topic, 1, T).expect("topic created");
}

/// The CSV line of input record `i`: a unique key, one of 7 symbols, a quantity.
pub fn input_line(i: u64) -> String {
    const SYMS: [&str; 7] = ["AA", "BB", "CC", "DD", "EE", "FF", "GG"];
    format!(
        "i,n,{i},{},{}",
        SYMS[(i * 7919 % 7) as usize],
        (i * 31) % 97 + 1
    )
}

/// Writes `count` input records (one per record) at about `rate` per second on a thread.
pub struct InputProducer {
    pub done: Arc<AtomicBool>,
    pub written: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl InputProducer {
    pub fn start(brokers: &str, topic: &str, count: u64, rate: u64) -> InputProducer {
        InputProducer::start_range(brokers, topic, 0, count, rate)
    }

    /// Writes input records `first..first + count` (see [`input_line`]) at about `rate` per
    /// second.
    pub fn start_range(
        brokers: &str,
        topic: &str,
        first: u64,
        count: u64,
        rate: u64,
    ) -> InputProducer {
        // Not idempotent: an idempotent producer that meets a stalled broker can turn fatal
        // and refuse every later record. One request in flight keeps the order; a retried
        // duplicate is harmless (the expected output is computed from the topic as written).
        let producer: BaseProducer = config(brokers)
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1")
            .set("acks", "all")
            .set("linger.ms", "1")
            .create()
            .expect("producer");
        let topic = topic.to_string();
        let done = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (d2, w2) = (done.clone(), written.clone());
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            for i in 0..count {
                let due = start + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
                let now = Instant::now();
                if due > now {
                    producer.poll(due - now);
                }
                let line = input_line(first + i);
                let mut rec: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(&topic).payload(line.as_bytes()).partition(0);
                let give_up = Instant::now() + Duration::from_secs(30);
                loop {
                    match producer.send(rec) {
                        Ok(()) => break,
                        Err((e, r)) => {
                            assert!(
                                Instant::now() < give_up,
                                "input record {i} not accepted for 30 s: {e}"
                            );
                            rec = r;
                            producer.poll(Duration::from_millis(10));
                        }
                    }
                }
                w2.fetch_add(1, Ordering::Relaxed);
                producer.poll(Duration::ZERO);
            }
            producer
                .flush(Duration::from_secs(30))
                .expect("input flushed");
            d2.store(true, Ordering::SeqCst);
        });
        InputProducer {
            done,
            written,
            handle: Some(handle),
        }
    }

    pub fn finished(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    pub fn join(mut self) {
        if let Some(h) = self.handle.take() {
            h.join().expect("producer thread");
        }
    }
}

/// One record of a topic: offset, the `sluice-output-id` header, payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub offset: i64,
    pub id: Option<String>,
    pub payload: Vec<u8>,
    /// The record's timestamp in microseconds (what the engine sees as its time).
    pub time: Option<i64>,
}

/// Every record of partition 0 of `topic`, from the start to the high watermark now.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Rec> {
    let c: BaseConsumer = config(brokers)
        .set("group.id", unique("sluice-it-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let (low, high) = c.fetch_watermarks(topic, 0, T).expect("watermarks");
    let mut out = Vec::new();
    if high <= low {
        return out;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.last().is_none_or(|r: &Rec| r.offset < high - 1) {
        assert!(Instant::now() < deadline, "reading {topic} up to {high}");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("record");
            let id = m.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == sluice_kafka::OUTPUT_ID_HEADER)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            out.push(Rec {
                time: m.timestamp().to_millis().map(|ms| ms * 1000),
                offset: m.offset(),
                id,
                payload: m.payload().unwrap_or(&[]).to_vec(),
            });
        }
    }
    out
}

/// Offset of the next record of partition 0.
pub fn high_watermark(brokers: &str, topic: &str) -> i64 {
    sluice_kafka::admin::watermarks(&config(brokers), topic, 0, T)
        .expect("watermarks")
        .1
}

/// What the output topic must hold: the model run in-process over the input records, with
/// the server's output ID rule and CSV payloads. `(id, payload)` in order.
pub fn expected_output(xml: &str, input: &[Rec]) -> Vec<(String, Vec<u8>)> {
    let lookup = |_: &str| None;
    let spec = sluice_model::parse_project(xml, &lookup).expect("model parses");
    let mut eng = Engine::new(&spec).expect("model compiles");
    let src = eng.window("cq", "trades").expect("source");
    let out = eng.window("cq", "out").expect("out");
    eng.observe(out, true);
    let schema = eng.node(src).schema.clone();
    let opts = CsvOptions {
        delimiter: b',',
        ..CsvOptions::default()
    };
    let mut sink = CollectSink::default();
    for r in input {
        let text = String::from_utf8_lossy(&r.payload);
        let events: Vec<_> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| sluice_event::csv::parse_event(l, &schema, &opts).ok())
            .collect();
        if events.is_empty() {
            continue;
        }
        let block = EventBlock {
            id: MsgId(r.offset as u64),
            transactional: false,
            events,
        };
        // The server's rule: a Kafka block's time is its record's timestamp, and time-based
        // retention advances with it.
        let time = if eng.reads_clock() {
            r.time.unwrap_or(0)
        } else {
            0
        };
        eng.inject(src, block, time, &mut sink).expect("inject");
        if eng.reads_clock() {
            eng.advance_time(time, &mut sink);
        }
    }
    let mut last: Option<OutputId> = None;
    let mut expected = Vec::new();
    for (w, id, events) in sink.outputs {
        if w != out || events.is_empty() {
            continue;
        }
        let oid = match last {
            Some(l) if id.0 <= l.input => l.next(),
            _ => OutputId::new(id.0, 0),
        };
        last = Some(oid);
        let mut buf = String::new();
        for ev in &events {
            sluice_event::csv::write_event(ev, None, &mut buf);
            buf.push('\n');
        }
        expected.push((oid.to_string(), buf.into_bytes()));
    }
    expected
}

/// Compares the output topic with the expected sequence: `Ok` when equal, else a description
/// of the first difference (duplicates, gaps, order).
pub fn compare(actual: &[Rec], expected: &[(String, Vec<u8>)]) -> Result<(), String> {
    for (i, (r, (id, payload))) in actual.iter().zip(expected).enumerate() {
        if r.id.as_deref() != Some(id.as_str()) || &r.payload != payload {
            let ctx: Vec<String> = actual[i.saturating_sub(3)..(i + 3).min(actual.len())]
                .iter()
                .map(|r| format!("{}@{}", r.id.as_deref().unwrap_or("-"), r.offset))
                .collect();
            return Err(format!(
                "record {i} (offset {}): got id {:?} payload {:?}, expected id {id} payload {:?}; around: {ctx:?}",
                r.offset,
                r.id,
                String::from_utf8_lossy(&r.payload),
                String::from_utf8_lossy(payload)
            ));
        }
    }
    if actual.len() != expected.len() {
        return Err(format!(
            "{} record(s) on the output topic, {} expected",
            actual.len(),
            expected.len()
        ));
    }
    Ok(())
}

/// A scratch directory for one test.
pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique(&format!("sluice-failover-{tag}")));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The `next-offset` of the first Kafka input in a `projectStatus` reply.
pub fn next_offset(status: &str) -> Option<i64> {
    let p = status.find("next-offset=\"")? + "next-offset=\"".len();
    let end = status[p..].find('"')?;
    status[p..p + end].parse().ok()
}
