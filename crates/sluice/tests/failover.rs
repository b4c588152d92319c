//! Hot failover end to end: three (or two) real `sluice server` processes running the same
//! project on a real Kafka-protocol broker and ZooKeeper (scripts/services.sh start). The output
//! topic must equal, record for record (output IDs and payloads), what the engine computes
//! offline from the same input records: no gap, no duplicate, whatever is killed or paused.

#[path = "support/cluster.rs"]
mod cluster;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster::*;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const SESSION_MS: u64 = 1000;

/// This file's setup (topics and paths named `sluice-fo-…`).
fn setup(test: &str, buffered: usize) -> Option<Setup> {
    cluster::setup("fo", test, buffered, SESSION_MS)
}

impl Setup {
    fn start(&self, name: &str) -> Instance {
        Instance::start(Path::new(BIN), &self.dir, name)
    }

    /// Starts `n` instances; the first loads first and is the active one.
    fn cluster(&self, n: usize) -> Vec<Instance> {
        let insts: Vec<Instance> = (0..n).map(|i| self.start(&format!("s{i}"))).collect();
        insts[0].load(&self.xml);
        wait_for(Duration::from_secs(15), "s0 active", || insts[0].primary());
        for i in &insts[1..] {
            i.load(&self.xml);
            wait_for(Duration::from_secs(15), "a standby", || {
                i.status().contains("role=\"standby\"")
            });
            assert!(!i.primary(), "{} must be standby", i.name);
        }
        insts
    }

    /// The seed's runbook on a standby: stop, persist to `snap`, start, connectorsStarted; it
    /// must join the election as a standby again.
    fn seed_cycle(&self, s: &Instance, snap: &str) {
        s.put_ok("projects/fo/state?value=stopped", "");
        s.put_ok(
            &format!("projects/fo/state?value=persisted&path={snap}"),
            "",
        );
        s.put_ok("projects/fo/state?value=running", "");
        s.put_ok("projects/fo/state?value=connectorsStarted", "");
        wait_for(
            Duration::from_secs(15),
            "standby again after the cycle",
            || s.status().contains("role=\"standby\""),
        );
    }

    /// A new instance `name` brought back from `snap`: load without starting, restore, start,
    /// connectorsStarted.
    fn restored(&self, name: &str, snap: &str) -> Instance {
        let s = self.start(name);
        s.put_ok("projects/fo?start=false&connectors=false", &self.xml);
        let b = s.put_ok(&format!("projects/fo/state?value=restored&path={snap}"), "");
        assert!(b.contains("restored"), "{b}");
        s.put_ok("projects/fo/state?value=running", "");
        s.put_ok("projects/fo/state?value=connectorsStarted", "");
        s
    }

    /// Waits for the whole input to be on the topic, then for the output topic to reach the
    /// expected length, and compares them.
    fn check_exactly_once(&self, insts: &[Instance], count: usize) {
        let input = read_topic(&self.s.brokers, &self.input);
        assert_eq!(input.len(), count, "input records");
        let expected = expected_output(&self.xml, &input);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let hw = high_watermark(&self.s.brokers, &self.output) as usize;
            if hw >= expected.len() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let actual = read_topic(&self.s.brokers, &self.output);
        if let Err(e) = compare(&actual, &expected) {
            for i in insts {
                eprintln!("---- {} status: {}", i.name, i.status());
                let log = i.log_text();
                for l in log.lines().filter(|l| {
                    l.contains("failover")
                        || l.contains("active")
                        || l.contains("GAP")
                        || l.contains("zookeeper")
                }) {
                    eprintln!("[{}] {l}", i.name);
                }
            }
            panic!("output is not exactly once: {e}");
        }
        println!("output exactly once: {} record(s)", actual.len());
    }
}

/// kill -9 of the active at random moments, twice in a row once (a freshly promoted active),
/// restarting each killed instance as a standby that replays the input from the start.
#[test]
fn kill_active_repeatedly_output_exactly_once() {
    let Some(t) = setup("kill", 10_000) else {
        return;
    };
    let t0 = Instant::now();
    let mut insts = t.cluster(3);
    assert!(
        insts[0].log_has("Created zookeeper node /sluice-it/"),
        "{}",
        insts[0].log_text()
    );
    assert!(insts[0].log_has("Hot failover state switched to active"));
    assert!(insts[1].log_has("Watching zookeeper node /sluice-it/"));
    assert!(insts[1].log_has("Hot failover state switched to standby"));
    const COUNT: u64 = 3000;
    let prod = InputProducer::start(&t.s.brokers, &t.input, COUNT, 250);
    let mut rng = Rng::seeded();
    let mut restarts = 0;
    // Rounds of kills: 1, then 2 in a row (the second kills the freshly promoted active), then 1.
    for round in [1, 2, 1] {
        std::thread::sleep(rng.millis(700, 2500));
        let mut killed = Vec::new();
        for k in 0..round {
            let a = wait_primary(&insts, Duration::from_secs(20));
            if k > 0 {
                std::thread::sleep(rng.millis(0, 150));
            }
            println!("{:?}: kill -9 {} (active)", t0.elapsed(), insts[a].name);
            insts[a].kill();
            killed.push(a);
        }
        for a in killed {
            restarts += 1;
            let new = t.start(&format!("s{a}r{restarts}"));
            new.load(&t.xml);
            insts[a] = new;
        }
    }
    let a = wait_primary(&insts, Duration::from_secs(20));
    wait_for(Duration::from_secs(60), "input written", || prod.finished());
    prod.join();
    t.check_exactly_once(&insts, COUNT as usize);
    let st = insts[a].status();
    assert!(st.contains("gaps=\"0\""), "{st}");
    println!("{:?} in all", t0.elapsed());
}

/// SIGSTOP of the active past its session timeout: a standby takes over; after SIGCONT the
/// paused instance must not write again (its lease ran out): output stays exactly once.
#[test]
fn paused_active_does_not_write_after_resuming() {
    let Some(t) = setup("pause", 10_000) else {
        return;
    };
    let insts = t.cluster(2);
    const COUNT: u64 = 1500;
    let prod = InputProducer::start(&t.s.brokers, &t.input, COUNT, 250);
    let mut rng = Rng::seeded();
    std::thread::sleep(rng.millis(500, 1500));
    insts[0].signal("STOP");
    let stopped = Instant::now();
    wait_for(Duration::from_secs(15), "s1 active", || insts[1].primary());
    println!("s1 active {:?} after SIGSTOP of s0", stopped.elapsed());
    // Well past the session timeout before resuming.
    std::thread::sleep(Duration::from_millis(SESSION_MS));
    insts[0].signal("CONT");
    wait_for(
        Duration::from_secs(15),
        "s0 no longer primary after SIGCONT",
        || !insts[0].primary() && insts[0].status().contains("role=\"standby\""),
    );
    assert!(insts[1].primary());
    wait_for(Duration::from_secs(60), "input written", || prod.finished());
    prod.join();
    t.check_exactly_once(&insts, COUNT as usize);
    assert!(
        insts[0].log_has("cannot prove hot failover leadership"),
        "{}",
        insts[0].log_text()
    );
}

/// The seed's bug: a standby that was stopped, persisted, started and given its connectors
/// again through REST must still take over when the active dies. Then a fresh instance
/// restored from that snapshot (load without start, restore, start, connectorsStarted)
/// catches up from the snapshot's offsets and takes over too; finally a graceful stop of the
/// active hands over at once.
#[test]
fn persisted_and_restored_standbys_take_over() {
    let Some(t) = setup("persist", 10_000) else {
        return;
    };
    let mut insts = t.cluster(2);
    const COUNT: u64 = 2000;
    let prod = InputProducer::start(&t.s.brokers, &t.input, COUNT, 250);
    wait_for(Duration::from_secs(20), "some input", || {
        prod.written.load(std::sync::atomic::Ordering::Relaxed) > 300
    });
    let snap = t.dir.join("snap");
    let snap = snap.display().to_string();
    let s1 = &insts[1];
    t.seed_cycle(s1, &snap);
    // A third instance from the snapshot.
    let s2 = t.restored("s2", &snap);
    assert!(s2.log_has("resuming topic"), "{}", s2.log_text());
    insts.push(s2);
    std::thread::sleep(Duration::from_millis(300));
    insts[0].kill();
    wait_for(
        Duration::from_secs(15),
        "persisted standby s1 active",
        || insts[1].primary(),
    );
    std::thread::sleep(Duration::from_millis(500));
    // Graceful: stopping the project leaves the election at once.
    let stop = Instant::now();
    insts[1].put_ok("projects/fo/state?value=stopped", "");
    wait_for(Duration::from_secs(15), "restored s2 active", || {
        insts[2].primary()
    });
    println!("graceful hand-over in {:?}", stop.elapsed());
    wait_for(Duration::from_secs(60), "input written", || prod.finished());
    prod.join();
    t.check_exactly_once(&insts, COUNT as usize);
    // The restored instance reports its lag and that it is in sync (measured once a second).
    wait_for(Duration::from_secs(10), "s2 in sync", || {
        insts[2].status().contains("in-sync=\"true\"")
    });
    assert!(
        insts[2].log_has("in sync with topic"),
        "{}",
        insts[2].log_text()
    );
}

/// A standby buffer too small to cover the failover time: the new active reports the gap in
/// its log and in REST, and still publishes what it has.
#[test]
fn too_small_buffer_is_reported_as_gap() {
    let Some(t) = setup("gap", 3) else { return };
    let mut insts = t.cluster(2);
    const COUNT: u64 = 800;
    let prod = InputProducer::start(&t.s.brokers, &t.input, COUNT, 250);
    wait_for(Duration::from_secs(20), "some output", || {
        high_watermark(&t.s.brokers, &t.output) > 50
    });
    insts[0].kill();
    wait_for(Duration::from_secs(15), "s1 active", || insts[1].primary());
    wait_for(Duration::from_secs(10), "gap in REST", || {
        insts[1].status().contains("gaps=\"1\"")
    });
    let st = insts[1].status();
    assert!(st.contains("last-gap=\"after "), "{st}");
    assert!(
        insts[1].log_has("hot failover GAP"),
        "{}",
        insts[1].log_text()
    );
    wait_for(Duration::from_secs(60), "input written", || prod.finished());
    prod.join();
}

/// The seed's cycle on a model that leaves two things implicit: wall-clock retention
/// (`bytime_sliding` without a field) on the source, and no `useoffsetmsgid` on the Kafka
/// publisher. Time comes with the Kafka record and hot failover implies offsets as message
/// IDs, so a standby that was stopped, persisted and started again, and a third instance
/// restored from that snapshot that catches up, number and compute their output exactly as an
/// instance that never failed: the output topic, after kill -9 of the active while input
/// flows, equals the offline computation from the input records and their timestamps.
#[test]
fn seed_cycle_with_wall_clock_retention_and_implied_offset_ids() {
    let Some(mut t) = setup("time", 10_000) else {
        return;
    };
    let before = t.xml.clone();
    t.xml = t
        .xml
        .replace("<property name=\"useoffsetmsgid\">true</property>", "")
        .replace(
            "<schema-string>id*:int64,sym:string,qty:int64</schema-string>",
            "<schema-string>id*:int64,sym:string,qty:int64</schema-string>\
             <retention type=\"bytime_sliding\">1 seconds</retention>",
        );
    assert_ne!(t.xml, before);
    assert!(!t.xml.contains("useoffsetmsgid") && t.xml.contains("bytime_sliding"));
    let mut insts = t.cluster(2);
    assert!(
        insts[0].log_has("useoffsetmsgid=true (implied by the project's hot failover subscriber"),
        "{}",
        insts[0].log_text()
    );
    const COUNT: u64 = 1500;
    let prod = InputProducer::start(&t.s.brokers, &t.input, COUNT, 250);
    wait_for(Duration::from_secs(20), "some input", || {
        prod.written.load(std::sync::atomic::Ordering::Relaxed) > 300
    });
    // The seed's runbook on the standby.
    let snap = t.dir.join("snap").display().to_string();
    let s1 = &insts[1];
    t.seed_cycle(s1, &snap);
    // A third instance restored from that snapshot catches up from its offsets.
    let s2 = t.restored("s2", &snap);
    insts.push(s2);
    wait_for(Duration::from_secs(15), "s2 standby", || {
        insts[2].status().contains("role=\"standby\"")
    });
    insts[0].kill();
    wait_for(Duration::from_secs(15), "s1 active", || insts[1].primary());
    wait_for(Duration::from_secs(60), "input written", || prod.finished());
    prod.join();
    t.check_exactly_once(&insts, COUNT as usize);
    // Retention removed rows: the last counts per symbol add up to fewer than the input.
    let out = read_topic(&t.s.brokers, &t.output);
    let mut counts = std::collections::BTreeMap::new();
    for r in &out {
        for line in String::from_utf8_lossy(&r.payload).lines() {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < 4 {
                continue;
            }
            if f[0].eq_ignore_ascii_case("d") {
                counts.remove(f[2]);
            } else {
                counts.insert(f[2].to_string(), f[3].parse::<u64>().unwrap_or(0));
            }
        }
    }
    let held: u64 = counts.values().sum();
    assert!(
        held < COUNT,
        "retention never removed a row ({held} of {COUNT} held): the test does not exercise time"
    );
}
