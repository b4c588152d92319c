//! Bringing a failed instance back (docs/operations.md): the seed's runbook through the
//! `sluice client` binary, scheduled snapshots on one standby (`--persist-dir`), the
//! one-command restore (`--restore-from`) with its fallbacks, the Kafka retention refusal,
//! and a kill during catch-up. Real `sluice server` processes, the real broker and ZooKeeper
//! (scripts/services.sh start); skipped without them unless `SLUICE_REQUIRE` names them.

#[path = "support/cluster.rs"]
mod cluster;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::*;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const SESSION_MS: u64 = 1000;

/// This file's setup (topics and paths named `sluice-rc-…`).
fn setup(test: &str) -> Option<Setup> {
    cluster::setup("rc", test, 10_000, SESSION_MS)
}

/// `sluice client ARGS`: exit code, stdout, stderr.
fn client(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("client")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("sluice client runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sluice client --url URL --put [file]`, expecting success and a reply containing `want`.
fn client_put(url: &str, file: Option<&Path>, want: &str) {
    let f = file.map(|f| format!("file://{}", f.display()));
    let mut args = vec!["-url", url, "-put"];
    if let Some(f) = &f {
        args.push(f);
    }
    let (code, out, err) = client(&args);
    assert_eq!(code, 0, "sluice client -url {url} -put: {out} {err}");
    assert!(
        out.contains(want),
        "reply of {url}: {out:?}, expected {want:?}"
    );
}

impl Setup {
    fn start(&self, name: &str, extra: &[&str]) -> Instance {
        Instance::start_with(Path::new(BIN), &self.dir, name, extra)
    }

    fn hw(&self) -> i64 {
        high_watermark(&self.s.brokers, &self.input)
    }

    /// Waits until every live instance has read the whole input topic.
    fn all_read(&self, insts: &[&Instance]) {
        let hw = self.hw();
        for i in insts {
            wait_for(
                Duration::from_secs(30),
                "an instance reads all input",
                || next_offset(&i.status()) == Some(hw),
            );
        }
    }

    fn check_exactly_once(&self, count: usize) {
        let input = read_topic(&self.s.brokers, &self.input);
        assert_eq!(input.len(), count, "input records");
        let expected = expected_output(&self.xml, &input);
        wait_for(Duration::from_secs(30), "all output on the topic", || {
            high_watermark(&self.s.brokers, &self.output) as usize >= expected.len()
        });
        let actual = read_topic(&self.s.brokers, &self.output);
        compare(&actual, &expected).unwrap_or_else(|e| panic!("not exactly once: {e}"));
        println!("output exactly once: {} record(s)", actual.len());
    }
}

fn events(i: &Instance) -> String {
    let (s, b) = i.call("GET", "events/fo/cq/out", None);
    assert_eq!(s, 200, "{b}");
    b
}

fn count_lines(i: &Instance, text: &str) -> usize {
    i.log_text().lines().filter(|l| l.contains(text)).count()
}

/// The seed's runbook verbatim through `sluice client`, 3 instances: a standby persists to a
/// shared directory while the active keeps running; the active is killed; a standby takes over;
/// the failed instance comes back with no project: load (start=false), restored, running,
/// connectorsStarted; it replays Kafka, reports in sync, holds the same window as the active,
/// and after a further failover onto it the output topic continues exactly once.
#[test]
fn runbook_through_sluice_client() {
    let Some(t) = setup("runbook") else { return };
    let t0 = Instant::now();
    let mut insts: Vec<Instance> = (0..3).map(|i| t.start(&format!("s{i}"), &[])).collect();
    insts[0].load(&t.xml);
    wait_for(Duration::from_secs(15), "s0 active", || insts[0].primary());
    for i in &insts[1..] {
        i.load(&t.xml);
        wait_for(Duration::from_secs(15), "a standby", || {
            i.status().contains("role=\"standby\"")
        });
    }
    let prod = InputProducer::start(&t.s.brokers, &t.input, 1500, 600);
    wait_for(Duration::from_secs(20), "some input", || {
        prod.written.load(std::sync::atomic::Ordering::Relaxed) > 300
    });
    // 1. A standby persists to the shared directory while running (the active never pauses).
    let shared = t.dir.join("shared").join("fo");
    let sh = shared.display().to_string();
    client_put(
        &format!(
            "{}/projects/fo/state?value=persisted&path={sh}",
            insts[1].url
        ),
        None,
        &format!("project fo successfully saved to {sh}"),
    );
    // 2. The active dies; a standby takes over.
    insts[0].kill();
    let a = wait_primary(&insts, Duration::from_secs(15));
    assert_ne!(a, 0);
    // 3. The failed instance is restarted with no project, and the runbook is run on it.
    insts[0] = t.start("s0r", &[]);
    let url = insts[0].url.clone();
    client_put(
        &format!("{url}/projects/fo?start=false&connectors=false"),
        Some(&t.model),
        "load project fo succeeded",
    );
    client_put(
        &format!("{url}/projects/fo/state?value=restored&path={sh}"),
        None,
        &format!("project 'fo' successfully restored from '{sh}'"),
    );
    client_put(
        &format!("{url}/projects/fo/state?value=running"),
        None,
        "project fo successfully started",
    );
    client_put(
        &format!("{url}/projects/fo/state?value=connectorsStarted"),
        None,
        "connectors started for project 'fo'",
    );
    assert!(
        insts[0].log_has("resuming topic"),
        "{}",
        insts[0].log_text()
    );
    // 4. Catch-up is visible: wait for in-sync with the client (not a terminal here: lines).
    let (code, out, err) = client(&[
        "--wait-in-sync",
        "--url",
        &format!("{url}/projectStatus/fo"),
        "--timeout",
        "60",
    ]);
    assert_eq!(code, 0, "wait-in-sync: {out} {err}");
    assert!(out.contains("project(s) fo in sync"), "{out}");
    assert!(insts[0].log_has("in sync with topic"));
    wait_for(Duration::from_secs(5), "the project's in-sync line", || {
        insts[0].log_has("project fo: in sync: every Kafka input (1)")
    });
    wait_for(Duration::from_secs(60), "input written", || prod.finished());
    prod.join();
    // 5. Same window contents as the active once both read everything.
    t.all_read(&insts.iter().collect::<Vec<_>>());
    assert_eq!(events(&insts[0]), events(&insts[a]), "restored vs active");
    assert!(insts[0].status().contains("in-sync=\"true\""));
    // 6. Further failover onto the restored instance; then more input, written by it.
    while !insts[0].primary() {
        let a = wait_primary(&insts, Duration::from_secs(15));
        if a == 0 {
            break;
        }
        insts[a].kill();
        wait_for(Duration::from_secs(15), "a new active", || {
            insts.iter().any(|i| i.primary())
        });
    }
    let prod = InputProducer::start_range(&t.s.brokers, &t.input, 1500, 500, 1000);
    wait_for(Duration::from_secs(30), "more input written", || {
        prod.finished()
    });
    prod.join();
    t.check_exactly_once(2000);
    assert!(insts[0].primary());
    let st = insts[0].status();
    assert!(st.contains("gaps=\"0\""), "{st}");
    println!("runbook in {:?}", t0.elapsed());
}

/// `--persist-dir`: only a standby persists, only one standby (the ZooKeeper lock), the N
/// newest are kept; when the persisting standby dies, the other standby takes the lock.
#[test]
fn scheduled_persist_on_one_standby_only() {
    let Some(t) = setup("sched") else { return };
    let snaps = t.dir.join("snaps");
    let sd = snaps.display().to_string();
    let opts = [
        "--persist-dir",
        &sd,
        "--persist-interval",
        "200ms",
        "--persist-keep",
        "2",
    ];
    let mut insts: Vec<Instance> = (0..3).map(|i| t.start(&format!("s{i}"), &opts)).collect();
    insts[0].load(&t.xml);
    wait_for(Duration::from_secs(15), "s0 active", || insts[0].primary());
    for i in &insts[1..] {
        i.load(&t.xml);
        wait_for(Duration::from_secs(15), "a standby", || {
            i.status().contains("role=\"standby\"")
        });
    }
    let prod = InputProducer::start(&t.s.brokers, &t.input, 600, 600);
    const DONE: &str = "scheduled persist of project fo to";
    wait_for(Duration::from_secs(20), "4 scheduled persists", || {
        insts.iter().map(|i| count_lines(i, DONE)).sum::<usize>() >= 4
    });
    assert_eq!(count_lines(&insts[0], DONE), 0, "the active persisted");
    let (w, other) = if count_lines(&insts[1], DONE) > 0 {
        (1, 2)
    } else {
        (2, 1)
    };
    assert_eq!(
        count_lines(&insts[other], DONE),
        0,
        "two standbys persisted"
    );
    assert!(insts[w].log_has("took the persist lock"));
    wait_for(Duration::from_secs(5), "the other standby skips", || {
        insts[other].log_has("scheduled persist skipped: the persist lock")
    });
    let fo = snaps.join("fo");
    let n = std::fs::read_dir(&fo).expect("snapshots").count();
    assert!(
        (1..=2).contains(&n),
        "{n} snapshot(s) kept, 2 expected at most"
    );
    // The persisting standby dies: the other one takes the lock (its node expires first).
    insts[w].kill();
    wait_for(
        Duration::from_secs(15),
        "the other standby persists",
        || count_lines(&insts[other], DONE) >= 2,
    );
    assert_eq!(count_lines(&insts[0], DONE), 0, "the active persisted");
    let dirs: Vec<_> = std::fs::read_dir(&fo)
        .expect("snapshots")
        .filter_map(Result::ok)
        .collect();
    assert!(dirs.len() <= 2, "{} snapshot(s) kept", dirs.len());
    for d in &dirs {
        assert!(d.path().join("MANIFEST").exists(), "{:?}", d.path());
    }
    wait_for(Duration::from_secs(60), "input written", || prod.finished());
    prod.join();
}

/// Runs `sluice server ARGS` expecting it to fail at start: its stderr.
fn server_fails(dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .arg("server")
        .args(["-http", "0"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice server runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            assert!(!st.success(), "the server started");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server neither started nor failed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .expect("stderr");
    err
}

/// `--restore-from` restores the newest usable snapshot (taken on another instance), falling
/// back past a corrupted newest one with a warning; a snapshot older than the topic's retention
/// is refused over REST with the missing range named and the newest usable one suggested,
/// nothing applied; with no usable snapshot the server does not start and lists every reason.
#[test]
fn restore_from_falls_back_and_retention_is_checked() {
    let Some(t) = setup("restorefrom") else {
        return;
    };
    let s0 = t.start("s0", &[]);
    s0.load(&t.xml);
    let snaps = t.dir.join("snaps");
    let fo = snaps.join("fo");
    let names = [
        "20200101T000000.000Z-000001",
        "20200101T000001.000Z-000002",
        "20200101T000002.000Z-000003",
    ];
    // Three snapshots on s0, at input offsets 400, 800 and 1000.
    for (k, (from, to)) in [(0u64, 400u64), (400, 800), (800, 1000)].iter().enumerate() {
        InputProducer::start_range(&t.s.brokers, &t.input, *from, to - from, 1_000_000).join();
        t.all_read(&[&s0]);
        s0.put_ok(
            &format!(
                "projects/fo/state?value=persisted&path={}",
                fo.join(names[k]).display()
            ),
            "",
        );
    }
    // Corrupt the newest.
    let bad = fo.join(names[2]).join("queries/cq/bySym.state");
    let mut bytes = std::fs::read(&bad).expect("window file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&bad, bytes).expect("corrupted");
    let sd = snaps.display().to_string();
    let md = t.model.display().to_string();
    let s1 = t.start("s1", &["--model", &md, "--restore-from", &sd]);
    assert!(
        s1.log_has(&format!(
            "--restore-from skips snapshot {}",
            fo.join(names[2]).display()
        )),
        "{}",
        s1.log_text()
    );
    assert!(s1.log_has(&format!("restored from {}", fo.join(names[1]).display())));
    let (code, out, err) = client(&[
        "--wait-in-sync",
        "--url",
        &format!("{}/projectStatus/fo", s1.url),
        "--timeout",
        "30",
    ]);
    assert_eq!(code, 0, "{out} {err}");
    t.all_read(&[&s0, &s1]);
    assert_eq!(events(&s1), events(&s0));
    // Retention removes offsets 0..600: the first snapshot (offset 400) is refused.
    let low = sluice_kafka::admin::delete_records(&config(&t.s.brokers), &t.input, 0, 600, T)
        .expect("delete records");
    assert_eq!(low, 600);
    let s2 = t.start("s2", &[]);
    s2.put_ok("projects/fo?start=false&connectors=false", &t.xml);
    let (st, body) = s2.call(
        "PUT",
        &format!(
            "projects/fo/state?value=restored&path={}",
            fo.join(names[0]).display()
        ),
        Some(""),
    );
    assert_eq!(st, 422, "{body}");
    assert!(
        body.contains("offsets 400 to 599 are no longer on the broker"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "the newest usable snapshot in {} is {}",
            fo.display(),
            fo.join(names[1]).display()
        )),
        "{body}"
    );
    let e = events(&s2);
    assert!(!e.contains("<event "), "something was applied: {e}");
    // Nothing usable: 0..900 gone, the newest corrupted.
    sluice_kafka::admin::delete_records(&config(&t.s.brokers), &t.input, 0, 900, T)
        .expect("delete records");
    let err = server_fails(&t.dir, &["--model", &md, "--restore-from", &sd]);
    assert!(err.contains("no usable snapshot under"), "{err}");
    assert!(err.contains("(3 tried)"), "{err}");
    for n in names {
        assert!(err.contains(n), "{n} not named: {err}");
    }
    assert!(err.contains("offsets 800 to 899"), "{err}");
}

/// kill -9 of an instance while it replays Kafka after `--restore-from`; restarted the same
/// way, it converges to the active's window contents.
#[test]
fn kill_during_catch_up_then_restore_converges() {
    let Some(t) = setup("catchup") else { return };
    let s0 = t.start("s0", &[]);
    s0.load(&t.xml);
    let snaps = t.dir.join("snaps");
    InputProducer::start_range(&t.s.brokers, &t.input, 0, 200, 1_000_000).join();
    t.all_read(&[&s0]);
    s0.put_ok(
        &format!(
            "projects/fo/state?value=persisted&path={}",
            snaps.join("fo/20200101T000000.000Z-000001").display()
        ),
        "",
    );
    // A long backlog behind the snapshot.
    InputProducer::start_range(&t.s.brokers, &t.input, 200, 60_000, 1_000_000).join();
    let sd = snaps.display().to_string();
    let md = t.model.display().to_string();
    let mut s1 = t.start("s1", &["--model", &md, "--restore-from", &sd]);
    assert!(s1.log_has("resuming topic"), "{}", s1.log_text());
    // Kill once some of the backlog is replayed (the status is refreshed every 250 ms).
    let mut at = 0;
    wait_for(Duration::from_secs(20), "replay under way", || {
        at = next_offset(&s1.status()).unwrap_or(0);
        at > 200
    });
    s1.kill();
    println!("killed during catch-up at offset {at} of {}", t.hw());
    assert!(at < t.hw(), "not killed during catch-up");
    let s1 = t.start("s1r", &["--model", &md, "--restore-from", &sd]);
    let (code, out, err) = client(&[
        "--wait-in-sync",
        "--url",
        &format!("{}/projectStatus/fo", s1.url),
        "--timeout",
        "60",
    ]);
    assert_eq!(code, 0, "{out} {err}");
    t.all_read(&[&s0, &s1]);
    assert_eq!(events(&s1), events(&s0));
}

/// `--wait-in-sync` gives up at `--timeout` with a one-line reason and exit 1.
#[test]
fn wait_in_sync_times_out_with_reason() {
    let Some(t) = setup("waitto") else { return };
    let s0 = t.start("s0", &[]);
    s0.put_ok("projects/fo?start=false&connectors=false", &t.xml);
    let (code, out, err) = client(&[
        "--wait-in-sync",
        "--url",
        &format!("{}/projectStatus/fo", s0.url),
        "--timeout",
        "1",
    ]);
    assert_eq!(code, 1, "{out} {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with(
            "sluice client: timed out after 1 s waiting for in-sync: project(s) fo not in sync"
        ),
        "{err}"
    );
}
