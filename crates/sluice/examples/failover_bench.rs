//! Hot failover benchmark (docs/failover.md): failover time from kill -9 of the active to the
//! first output record of the new active, and end-to-end throughput Kafka in → Kafka out on
//! one instance. Needs the broker and ZooKeeper (scripts/services.sh start) and a built
//! `sluice` binary:
//!
//! ```text
//! cargo build --release -p sluice && source .tmp/services/services.env
//! cargo run --release -p sluice --example failover_bench [-- RECORDS KILLS]
//! ```
//!
//! `SLUICE_BIN` overrides the binary (default: `sluice` beside the examples directory).

#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let kills: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let Some(s) = services("failover_bench") else {
        std::process::exit(2)
    };
    let bin = example_bin();
    println!("binary {}", bin.display());
    throughput(&s, &bin, records);
    failover_time(&s, &bin, kills);
}

fn xml(s: &Services, input: &str, output: &str, test: &str, session_ms: u64) -> String {
    model(&ModelOpts {
        brokers: &s.brokers,
        zookeeper: &s.zookeeper,
        input,
        output,
        zkpath: &format!("/sluice-bench/{}", unique(test)),
        buffered: 10_000,
        session_ms,
    })
}

/// Preloads the input topic, then times one instance from load to the last output record.
fn throughput(s: &Services, bin: &std::path::Path, records: u64) {
    let input = unique("sluice-bench-in");
    let output = unique("sluice-bench-out");
    create_topic(&s.brokers, &input);
    create_topic(&s.brokers, &output);
    let producer: BaseProducer = config(&s.brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for i in 0..records {
        let line = input_line(i);
        let mut rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&input).payload(line.as_bytes()).partition(0);
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
        .flush(Duration::from_secs(120))
        .expect("input flushed");
    let dir = tempdir("bench-tp");
    let inst = Instance::start(bin, &dir, "tp");
    let t0 = Instant::now();
    inst.load(&xml(s, &input, &output, "tp", 1000));
    let mut first = None;
    wait_for(Duration::from_secs(600), "all output", || {
        let hw = high_watermark(&s.brokers, &output);
        if hw > 0 && first.is_none() {
            first = Some(t0.elapsed());
        }
        hw as u64 >= records
    });
    let secs = t0.elapsed().as_secs_f64();
    let first = first.unwrap_or_default();
    let steady = (secs - first.as_secs_f64()).max(1e-3);
    println!(
        "throughput: {records} input records -> {records} output records (hot failover subscriber, one instance) in {secs:.2} s from the load: {:.0} records/s; after the first output record ({first:?}: project load, topic checks, election): {:.0} records/s",
        records as f64 / secs,
        records as f64 / steady,
    );
}

/// Two instances, input at 500 records/s; kill -9 the active `kills` times and time the first
/// record written by the new active.
fn failover_time(s: &Services, bin: &std::path::Path, kills: usize) {
    let input = unique("sluice-bench-fin");
    let output = unique("sluice-bench-fout");
    create_topic(&s.brokers, &input);
    create_topic(&s.brokers, &output);
    let session_ms = 1000;
    let model = xml(s, &input, &output, "fo", session_ms);
    let dir = tempdir("bench-fo");
    let mut insts = vec![
        Instance::start(bin, &dir, "a0"),
        Instance::start(bin, &dir, "b0"),
    ];
    insts[0].load(&model);
    wait_for(Duration::from_secs(15), "a0 active", || insts[0].primary());
    insts[1].load(&model);
    let _input = InputProducer::start(&s.brokers, &input, 1_000_000, 500);
    let mut times = Vec::new();
    let mut rng = Rng::seeded();
    for k in 0..kills {
        std::thread::sleep(rng.millis(1000, 2000));
        let a = wait_primary(&insts, Duration::from_secs(20));
        wait_for(Duration::from_secs(30), "standby in sync", || {
            insts[1 - a].status().contains("in-sync=\"true\"")
        });
        insts[a].kill();
        let killed = Instant::now();
        let hw0 = high_watermark(&s.brokers, &output);
        wait_for(
            Duration::from_secs(30),
            "output from the new active",
            || high_watermark(&s.brokers, &output) > hw0,
        );
        let t = killed.elapsed();
        println!("kill {k}: first output record of the new active {t:?} after kill -9 (session timeout {session_ms} ms)");
        times.push(t);
        let new = Instance::start(bin, &dir, &format!("r{k}"));
        new.load(&model);
        insts[a] = new;
    }
    // The servers go now; the producer thread ends with the process.
    drop(insts);
    times.sort();
    if !times.is_empty() {
        println!(
            "failover time over {} kill(s): min {:?}, median {:?}, max {:?}",
            times.len(),
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    std::process::exit(0);
}
