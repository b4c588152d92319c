//! The target directory of a persist: a mount point works (the commit happens inside it), and
//! concurrent persists to one directory never leave it without a whole snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use sluice_persist::{
    read_snapshot, write_snapshot, PersistError, Position, ProjectState, Snapshot,
};

fn generation(n: u64) -> Snapshot {
    let mut windows = BTreeMap::new();
    for w in 0..3u64 {
        let mut bytes = vec![(n % 251) as u8; 64 * 1024];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        windows.insert(format!("cq/w{w}"), bytes);
    }
    Snapshot {
        project: "p".into(),
        fingerprint: 7,
        state: ProjectState {
            project: "p".into(),
            publishers: vec![Position::Fs {
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
        Position::Fs { line, .. } => *line,
        other => panic!("unexpected position {other:?}"),
    }
}

/// A tmpfs mounted on a directory, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_mount_point_is_persisted_into_and_restored_twice() {
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("failover");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "skipped: cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("skipped: cannot run mount: {e}");
            return;
        }
    }
    let _guard = Mount(mnt.clone());
    // The directory cannot be renamed: it is a mount point.
    let moved = t.path().join("moved");
    assert!(
        std::fs::rename(&mnt, &moved).is_err(),
        "{} is not a mount point",
        mnt.display()
    );
    for g in 1..=2 {
        write_snapshot(&mnt, &generation(g), g).unwrap_or_else(|e| panic!("persist {g}: {e}"));
        assert_eq!(read_snapshot(&mnt, "p", 7).unwrap(), generation(g));
    }
    // Nothing was written beside the mount point.
    let beside: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(beside, ["failover"]);
}

/// Threads persist to one directory at the same moment, round after round: each persist
/// either commits or is refused as busy, at least one commits, and after every round the
/// directory holds a whole snapshot of a generation that committed in it.
#[test]
fn concurrent_persists_to_one_directory_never_leave_it_without_a_whole_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let dir: Arc<Path> = t.path().join("snap").into();
    write_snapshot(&dir, &generation(0), 0).unwrap();
    let threads = 4u64;
    let deadline = Instant::now() + Duration::from_secs(4);
    let (mut rounds, mut busy) = (0u64, 0u64);
    while Instant::now() < deadline || rounds < 10 {
        rounds += 1;
        let barrier = Arc::new(Barrier::new(threads as usize));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                let g = rounds * threads + i;
                std::thread::spawn(move || {
                    barrier.wait();
                    (g, write_snapshot(&dir, &generation(g), g))
                })
            })
            .collect();
        let mut committed = Vec::new();
        for h in handles {
            match h.join().unwrap() {
                (g, Ok(_)) => committed.push(g),
                (_, Err(PersistError::Busy { .. })) => busy += 1,

                (g, Err(e)) => panic!("round {rounds}: persist of {g} failed: {e}"),
            }
        }
        assert!(
            !committed.is_empty(),
            "round {rounds}: no persist committed"
        );
        let snap = read_snapshot(&dir, "p", 7)
            .unwrap_or_else(|e| panic!("round {rounds}: no whole snapshot: {e}"));
        let g = generation_of(&snap);
        assert!(
            committed.contains(&g),
            "round {rounds}: generation {g} not committed now"
        );
        assert_eq!(snap, generation(g));
        // Nothing beside the directory, and one generation inside it.
        let beside = std::fs::read_dir(t.path()).unwrap().count();
        assert_eq!(beside, 1, "round {rounds}");
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
        assert_eq!(gens, 1, "round {rounds}");
    }
    println!("{rounds} rounds, {busy} persists refused as busy");
    let e = PersistError::Busy {
        dir: dir.to_path_buf(),
    };
    assert!(e.to_string().starts_with("another persist to"), "{e}");
}
