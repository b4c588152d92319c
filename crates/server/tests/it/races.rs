//! Concurrent life-cycle requests on one project (issue 20 item 6): every reply is a 2xx or a
//! 4xx naming the conflict, the final state is coherent, and the persist path always holds a
//! whole snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A small deterministic generator (xorshift64*), one per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

const OPS: [&str; 11] = [
    "load",
    "load-stopped",
    "start",
    "stop",
    "delete",
    "persist",
    "server-persist",
    "restore",
    "inject",
    "get",
    "events",
];

#[test]
fn concurrent_life_cycle_requests_get_no_5xx_and_leave_a_whole_snapshot() {
    let root = tempdir();
    let r2 = root.clone();
    let t = Arc::new(TestServer::with(move |c| c.persist_root = Some(r2)));
    t.load_started("race");
    let (s, b) = t.put("projects/race/state?value=persisted&path=snap", "");
    assert_eq!(s, 200, "{b}");
    let xml = trades("race");
    let stop = Arc::new(AtomicBool::new(false));
    let bad: Arc<Mutex<Vec<String>>> = Arc::default();
    let tally: Arc<Mutex<std::collections::BTreeMap<(String, u16), u32>>> = Arc::default();
    let until = Instant::now() + Duration::from_secs(5);
    let clients: Vec<_> = (0..12u64)
        .map(|i| {
            let (t, xml, stop, bad, tally) = (
                t.clone(),
                xml.clone(),
                stop.clone(),
                bad.clone(),
                tally.clone(),
            );
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((i + 1) * 0x1234_5678_9abc));
                let mut n = 0u64;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let op = OPS[rng.below(OPS.len() as u64) as usize];
                    let id = i * 1_000_000 + n;
                    let (s, b) = match op {
                        "load" => t.put("projects/race?overwrite=true", &xml),
                        "load-stopped" => t.put("projects/race?overwrite=true&start=false", &xml),
                        "start" => t.put("projects/race/state?value=running", ""),
                        "stop" => t.put("projects/race/state?value=stopped", ""),
                        "delete" => t.delete("projects/race"),
                        "persist" => t.put("projects/race/state?value=persisted&path=snap", ""),
                        "server-persist" => t.put("server/state?value=persisted&path=all", ""),
                        "restore" => t.put("projects/race/state?value=restored&path=snap", ""),
                        "inject" => t.put(
                            "windows/race/cq/trades/state?value=injected",
                            &format!("i,n,{id},IBM,{},1.5\n", id % 100),
                        ),
                        "get" => t.get("projects/race"),
                        _ => t.get("events/race/cq/bySymbol"),
                    };
                    *tally
                        .lock()
                        .unwrap()
                        .entry((op.to_string(), s))
                        .or_default() += 1;
                    if !(200..500).contains(&s) {
                        bad.lock().unwrap().push(format!("{op}: {s} {b}"));
                    }
                }
            })
        })
        .collect();
    // Meanwhile the persist path always holds a snapshot with its MANIFEST and state.
    let watch = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut missing = 0u32;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                if !root.join("snap/MANIFEST").is_file()
                    || !root.join("snap/project.state").is_file()
                {
                    missing += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            missing
        })
    };
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        watch.join().unwrap(),
        0,
        "times the persist path held no whole snapshot"
    );
    let tally = tally.lock().unwrap();
    eprintln!("replies by request and status: {tally:?}");
    let bad = bad.lock().unwrap();
    assert!(
        bad.is_empty(),
        "{} 5xx replies, first ones: {:#?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert!(
        tally.keys().any(|(op, s)| op == "persist" && *s == 200),
        "{tally:?}"
    );
    // The final state is coherent: what GET says is what the next transitions find.
    let (s, b) = t.get("projects/race");
    if s == 200 {
        let running = b.contains("state=\"running\"");
        let (s, b) = t.put("projects/race/state?value=running", "");
        assert_eq!(s, if running { 409 } else { 200 }, "{b}");
        let (s, b) = t.put("projects/race/state?value=stopped", "");
        assert_eq!(s, 200, "{b}");
        let (_, b) = t.get("stoppedProjects");
        assert!(b.contains("name=\"race\""), "{b}");
    } else {
        assert_eq!(s, 404, "{b}");
    }
    // The persist path holds a whole snapshot: a fresh project restores from it.
    let (s, b) = t.put("projects/race?overwrite=true&start=false", &xml);
    assert_eq!(s, 200, "{b}");
    let (s, b) = t.put("projects/race/state?value=restored&path=snap", "");
    assert_eq!(s, 200, "{b}");
    let olds: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "snap" && n != "all")
        .collect();
    assert!(olds.is_empty(), "left behind in the persist root: {olds:?}");
    if root.join("all/race").exists() {
        let (s, b) = t.put("projects/race/state?value=restored&path=all/race", "");
        assert_eq!(s, 200, "{b}");
    }
}
