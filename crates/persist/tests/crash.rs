//! kill -9 during persist: the test binary re-runs itself as a child that persists snapshot
//! generations in a loop; the parent kills it at random moments, then checks that the
//! snapshot directory still holds a whole, verifiable snapshot at least as new as the last
//! one the child reported committed, and that the next persist cleans up the leftovers (inside
//! the directory and beside it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_persist::{read_snapshot, write_snapshot, ProjectState, Snapshot};

const CHILD_ENV: &str = "SLUICE_PERSIST_CRASH_CHILD";

fn generation(n: u64) -> Snapshot {
    let mut windows = BTreeMap::new();
    // Large enough that a kill often lands in the middle of a write.
    for w in 0..8u64 {
        let mut bytes = vec![(n % 251) as u8; 256 * 1024];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        windows.insert(format!("cq/w{w}"), bytes);
    }
    Snapshot {
        project: "p".into(),
        fingerprint: 42,
        state: ProjectState {
            project: "p".into(),
            publishers: vec![sluice_persist::Position::Fs {
                connector: "cq/w0/pub".into(),
                line: n,
            }],
            subscribers: vec![],
        },
        windows,
    }
}

fn generation_of(s: &Snapshot) -> u64 {
    match &s.state.publishers[0] {
        sluice_persist::Position::Fs { line, .. } => *line,
        other => panic!("unexpected position {other:?}"),
    }
}

/// The child: persist generation after generation until killed.
#[test]
fn child_persist_loop() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only does something when started by the parent test.
    };
    let dir = Path::new(&dir);
    let start: u64 = std::env::var("SLUICE_PERSIST_CRASH_START")
        .unwrap()
        .parse()
        .unwrap();
    for n in start.. {
        write_snapshot(dir, &generation(n), n).unwrap();
        println!("committed {n}");
    }
}

#[test]
fn kill_during_persist_leaves_a_whole_snapshot() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("snap");
    let exe = std::env::current_exe().unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut last_committed = 0u64;
    for round in 0..12u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_persist_loop",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .env(
                "SLUICE_PERSIST_CRASH_START",
                (last_committed + 1).to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        // Wait (bounded) for a first commit, then let it run a random while and kill it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        let mut seen = None;
        while seen.is_none() {
            assert!(
                Instant::now() < deadline,
                "round {round}: the child committed nothing in 60 s"
            );
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("round {round}: the child exited early");
            }
            if let Some(n) = line.trim().strip_prefix("committed ") {
                seen = Some(n.parse::<u64>().unwrap());
            }
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // A random point: between 0 and 40 ms into further persists.
        let spin = Duration::from_micros(seed % 40_000);
        let t0 = Instant::now();
        while t0.elapsed() < spin {
            std::hint::spin_loop();
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Everything the child reported before dying.
        let mut committed = seen.unwrap();
        let mut rest = String::new();
        while out.read_line(&mut rest).unwrap_or(0) > 0 {
            if let Some(n) = rest.trim().strip_prefix("committed ") {
                committed = n.parse().unwrap();
            }
            rest.clear();
        }
        let snap = read_snapshot(&dir, "p", 42)
            .unwrap_or_else(|e| panic!("round {round}: snapshot unreadable after kill: {e}"));
        let g = generation_of(&snap);
        assert!(
            g >= committed,
            "round {round}: snapshot generation {g} is older than the last committed {committed}"
        );
        assert!(
            g <= committed + 1,
            "round {round}: generation {g} was never started"
        );
        assert_eq!(
            snap,
            generation(g),
            "round {round}: snapshot content is not generation {g}"
        );
        last_committed = g;
    }
    // The next persist removes what interrupted ones left behind.
    write_snapshot(&dir, &generation(last_committed + 1), 0).unwrap();
    let names: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, vec!["snap".to_string()], "leftovers after a persist");
    // Inside it, only the snapshot: the leftovers of killed persists are gone.
    let mut inside: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with(".sluice-snap-"))
        .collect();
    inside.sort();
    assert_eq!(
        inside,
        [".sluice-lock", "MANIFEST", "project.state", "queries"],
        "leftovers inside the snapshot directory"
    );
    let gens = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".sluice-snap-")
        })
        .count();
    assert_eq!(gens, 1, "generations left inside the snapshot directory");
}
