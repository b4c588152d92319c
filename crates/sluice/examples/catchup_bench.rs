//! Catch-up benchmark (docs/operations.md): how fast an instance restored with
//! `--restore-from` replays Kafka, and how long it takes from its start to in-sync, for a
//! snapshot BEHIND input records older than the end of the topic. Needs the broker and
//! ZooKeeper (scripts/services.sh start) and a built `sluice` binary:
//!
//! ```text
//! cargo build --release -p sluice && source .tmp/services/services.env
//! cargo run --release -p sluice --example catchup_bench [-- BEHIND]    # default 1000000
//! ```
//!
//! The scenario of the runbook: an active instance runs the test model (aggregate by symbol,
//! compute, Kafka subscriber with hot failover); a snapshot is taken early (after 10 000
//! records); BEHIND more records arrive and the active processes them; then a second instance
//! starts with `--model M --restore-from DIR` and replays the BEHIND records from the
//! snapshot's offset as a standby. `SLUICE_BIN` overrides the binary.

#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn produce(brokers: &str, topic: &str, from: u64, count: u64) {
    let producer: BaseProducer = config(brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for i in from..from + count {
        let line = input_line(i);
        let mut rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).payload(line.as_bytes()).partition(0);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .expect("input flushed");
}

fn main() {
    let behind: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let Some(s) = services("catchup_bench") else {
        std::process::exit(2)
    };
    let bin = example_bin();
    println!("binary {}", bin.display());
    let input = unique("sluice-cbench-in");
    let output = unique("sluice-cbench-out");
    create_topic(&s.brokers, &input);
    create_topic(&s.brokers, &output);
    let xml = model(&ModelOpts {
        brokers: &s.brokers,
        zookeeper: &s.zookeeper,
        input: &input,
        output: &output,
        zkpath: &format!("/sluice-bench/{}", unique("catchup")),
        buffered: 10_000,
        session_ms: 1000,
    });
    let dir = tempdir("bench-catchup");
    let model_file = dir.join("fo.xml");
    std::fs::write(&model_file, &xml).expect("model written");
    let snaps = dir.join("snaps");

    let active = Instance::start(&bin, &dir, "active");
    active.load(&xml);
    const EARLY: u64 = 10_000;
    produce(&s.brokers, &input, 0, EARLY);
    let read_all = |i: &Instance, hw: i64| {
        wait_for(
            Duration::from_secs(900),
            "the instance reads all input",
            || next_offset(&i.status()) == Some(hw),
        )
    };
    read_all(&active, EARLY as i64);
    let snap = snaps.join("fo").join("20200101T000000.000Z-000001");
    active.put_ok(
        &format!("projects/fo/state?value=persisted&path={}", snap.display()),
        "",
    );
    let t = Instant::now();
    produce(&s.brokers, &input, EARLY, behind);
    println!(
        "produced {behind} records behind the snapshot in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let hw = high_watermark(&s.brokers, &input);
    read_all(&active, hw);

    let t0 = Instant::now();
    let restored = Instance::start_with(
        &bin,
        &dir,
        "restored",
        &[
            "--model",
            &model_file.display().to_string(),
            "--restore-from",
            &snaps.display().to_string(),
        ],
    );
    let started = t0.elapsed();
    let mut replayed_at = None;
    wait_for(Duration::from_secs(900), "in sync", || {
        let st = restored.status();
        if replayed_at.is_none() && next_offset(&st) == Some(hw) {
            replayed_at = Some(t0.elapsed());
        }
        replayed_at.is_some() && sluice_client::sync_state(&st).in_sync
    });
    let in_sync = t0.elapsed();
    let replayed = replayed_at.expect("replayed");
    let replay_secs = (replayed - started).as_secs_f64().max(1e-3);
    println!(
        "restore + start (process start to HTTP up, snapshot verified and offsets checked): {:.2} s",
        started.as_secs_f64()
    );
    println!(
        "catch-up: {behind} records replayed from Kafka in {replay_secs:.2} s after the start: {:.0} events/s",
        behind as f64 / replay_secs
    );
    println!(
        "total from process start: every record read after {:.2} s, in-sync reported after {:.2} s (lag measured once a second)",
        replayed.as_secs_f64(),
        in_sync.as_secs_f64()
    );
    assert!(restored.log_has("in sync with topic"));
}
