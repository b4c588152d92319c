//! `sluice-persist-bench`: persist and restore of aggregate state, against the disk.
//!
//! ```text
//! cargo run --release -p sluice-bench --bin sluice-persist-bench -- --keys 1000000,10000000
//! ```
//!
//! For each key count: an aggregate window with that many groups is built; then it measures
//! the processing pause of a persist (`Engine::freeze`), the encode and write time and MB/s
//! (`sluice_persist::write_snapshot`, fsync included), the restore time and MB/s (each
//! window file decoded into a fresh engine while it is read, checksums verified), and the longest time a block of events waited while a
//! persist ran beside it, next to the longest without a persist. The disk's sequential write
//! and read bandwidth are measured in the same run with `dd` and direct I/O, so the ratio is
//! what to read; so is the rate at which the machine hands a new process fresh memory (a
//! restore's first use of memory costs that much on top of the disk).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use sluice_engine::{Engine, NullSink};
use sluice_event::{Event, EventBlock, MsgId, Value};

#[global_allocator]
static GLOBAL: sluice_alloc::MiMalloc = sluice_alloc::MiMalloc;

const MODEL: &str = r#"<project name="persist_bench"><contqueries><contquery name="cq">
<windows>
  <window-source name="trades" insert-only="true" index="pi_EMPTY">
    <schema-string>id*:int64,account:int64,quantity:int32,price:double</schema-string>
  </window-source>
  <window-aggregate name="byAccount">
    <schema-string>account*:int64,n:int64,total:int64,hi:double</schema-string>
    <output><field-expr>ESP_aCount()</field-expr><field-expr>ESP_aSum(quantity)</field-expr><field-expr>ESP_aMax(price)</field-expr></output>
  </window-aggregate>
</windows>
<edges><edge source="trades" target="byAccount"/></edges>
</contquery></contqueries></project>"#;

fn block(from: u64, n: u64, keys: u64) -> EventBlock {
    let events = (from..from + n)
        .map(|i| {
            Event::insert(vec![
                Value::Int64(i as i64),
                Value::Int64((i % keys) as i64),
                Value::Int32((i % 1000) as i32),
                Value::Double((i % 10_000) as f64 / 100.0),
            ])
        })
        .collect();
    EventBlock::new(MsgId(from), events)
}

fn engine() -> Engine {
    let spec = sluice_model::parse_project(MODEL, &|_: &str| None).expect("model");
    Engine::new(&spec).expect("compiles")
}

/// Restores the snapshot in `dir` into a fresh engine the way the server does (each window file
/// decoded while it is read, checksums verified, then swapped in); returns it and the time, or
/// why the snapshot was refused.
fn try_restore(dir: &Path) -> Result<(Engine, Duration), String> {
    let mut r = engine();
    let t = Instant::now();
    let (_, windows) =
        sluice_runtime::read_snapshot_into(&r, dir, "persist_bench").map_err(|e| e.to_string())?;
    r.finish_restore(windows).map_err(|e| e.to_string())?;
    Ok((r, t.elapsed()))
}

/// [`try_restore`] of a snapshot this run wrote (of the fingerprint given).
fn restore(dir: &Path, fingerprint: u64) -> (Engine, Duration) {
    assert_eq!(engine().fingerprint(), fingerprint);
    try_restore(dir).expect("the snapshot just written restores")
}

fn mb(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// `dd` with direct I/O: (write MB/s, read MB/s).
fn disk_bandwidth(dir: &Path) -> Option<(f64, f64)> {
    let f = dir.join("dd.bin");
    let rate = |out: &std::process::Output| -> Option<f64> {
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text.lines().last()?;
        // "... bytes (... GB, ... GiB) copied, 0.7 s, 1.5 GB/s"
        let tail = line.rsplit(", ").next()?;
        let mut it = tail.split_whitespace();
        let v: f64 = it.next()?.replace(',', ".").parse().ok()?;
        Some(match it.next()? {
            "GB/s" => v * 1000.0,
            "MB/s" => v,
            "kB/s" => v / 1000.0,
            _ => return None,
        })
    };
    let w = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", f.display()),
            "bs=4M",
            "count=256",
            "oflag=direct",
        ])
        .output()
        .ok()?;
    let r = Command::new("dd")
        .args([
            &format!("if={}", f.display()),
            "of=/dev/null",
            "bs=4M",
            "iflag=direct",
        ])
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&f);
    Some((rate(&w)?, rate(&r)?))
}

/// Reads every file of the snapshot in `dir` with `dd` and direct I/O in 8 MiB requests, as a
/// restore reads them, and nothing else: the floor of a restore of those very files as the
/// disk (and the host's caches) hold them now. Seconds, spawning `dd` included.
fn snapshot_read_alone(dir: &Path) -> Option<f64> {
    fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                files(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut all = Vec::new();
    files(dir, &mut all).ok()?;
    all.sort();
    let t = Instant::now();
    for f in &all {
        let out = Command::new("dd")
            .args([
                &format!("if={}", f.display()),
                "of=/dev/null",
                "bs=8M",
                "iflag=direct",
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
    }
    Some(t.elapsed().as_secs_f64())
}

/// How fast this machine hands a process memory it has not used before: 1 GiB allocated and
/// each 4 KiB page written once, in a child process (so the memory is fresh and the parent's
/// allocator does not keep it). MB/s.
fn fresh_memory_rate() -> Option<f64> {
    let out = Command::new(std::env::current_exe().ok()?)
        .arg("--touch-memory")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Restores the snapshot in `dir` in a child process (`--restore-child DIR`); its seconds.
fn restore_in_child(dir: &Path) -> Option<f64> {
    let out = Command::new(std::env::current_exe().ok()?)
        .arg("--restore-child")
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "restore child failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The child of [`restore_in_child`]: restores, checks the group count is the snapshot's,
/// prints the seconds the restore took.
fn restore_child(dir: &Path) -> ExitCode {
    let (r, took) = match try_restore(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot restore {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let agg = r.window("cq", "byAccount").unwrap();
    if r.row_count(agg) == 0 {
        eprintln!("restored no groups from {}", dir.display());
        return ExitCode::FAILURE;
    }
    println!("{:.3}", took.as_secs_f64());
    ExitCode::SUCCESS
}

/// The child of [`fresh_memory_rate`].
fn touch_memory() {
    const GIB: usize = 1 << 30;
    let t = Instant::now();
    let mut v = vec![0u8; GIB];
    v.iter_mut().step_by(4096).for_each(|b| *b = 1);
    std::hint::black_box(&v);
    println!("{:.0}", mb(GIB as u64, t.elapsed()));
}

fn snapshot(
    fingerprint: u64,
    windows: std::collections::BTreeMap<String, Vec<u8>>,
) -> sluice_persist::Snapshot {
    sluice_persist::Snapshot {
        project: "persist_bench".into(),
        fingerprint,
        state: sluice_persist::ProjectState {
            project: "persist_bench".into(),
            publishers: vec![],
            subscribers: vec![],
        },
        windows,
    }
}

/// Writes the frozen engine as the server does: each window encoded straight into its file.
fn persist_streamed(frozen: &sluice_engine::FrozenEngine, fingerprint: u64, dir: &Path) -> u64 {
    let snap = snapshot(fingerprint, Default::default());
    sluice_runtime::write_frozen(dir, &snap.project, fingerprint, &snap.state, frozen, 0)
        .expect("persist")
}

const BLOCK: u64 = 1024;

/// An engine whose aggregate has `keys` groups, from `keys` events, and the longest time one
/// of those blocks took.
fn built(keys: u64) -> (Engine, Duration) {
    let mut e = engine();
    let src = e.window("cq", "trades").unwrap();
    let mut at = 0;
    let mut longest = Duration::ZERO;
    while at < keys {
        let n = BLOCK.min(keys - at);
        let t = Instant::now();
        e.inject(src, block(at, n, keys), 0, &mut NullSink).unwrap();
        longest = longest.max(t.elapsed());
        at += n;
    }
    (e, longest)
}

fn run(keys: u64, dir: &Path) {
    let t = Instant::now();
    let (mut e, longest) = built(keys);
    let src = e.window("cq", "trades").unwrap();
    println!(
        "  {keys} keys built in {:.2} s (longest block {:.1} ms: the key index grows by rehashing)",
        t.elapsed().as_secs_f64(),
        longest.as_secs_f64() * 1e3
    );

    // Longest block wait with no persist going on, and the rate of those updates (each event
    // updates a group of this state: the key index is looked up at random).
    let mut quiet = Duration::ZERO;
    let t_quiet = Instant::now();
    for i in 0..200 {
        let t = Instant::now();
        e.inject(src, block(keys + i * BLOCK, BLOCK, keys), 0, &mut NullSink)
            .unwrap();
        quiet = quiet.max(t.elapsed());
    }
    let update_rate = (200 * BLOCK) as f64 / t_quiet.elapsed().as_secs_f64();
    println!(
        "  updates of this state: {:.2}M events/s (200 blocks of {BLOCK})",
        update_rate / 1e6
    );
    let next = keys + 200 * BLOCK;

    // A persist of the project at rest (as of a stopped project): nothing runs beside it.
    let idle_dir = dir.join(format!("idle-{keys}"));
    let t = Instant::now();
    let idle_bytes = persist_streamed(&e.freeze(), e.fingerprint(), &idle_dir);
    let idle_total = t.elapsed();
    let (r, idle_restore) = restore(&idle_dir, e.fingerprint());
    drop(r);
    let _ = std::fs::remove_dir_all(&idle_dir);
    println!(
        "  at rest: persist {:.3} s (encoded straight into the files) for {:.1} MB ({:.0} MB/s); restore {:.3} s ({:.0} MB/s, decoded while read)",
        idle_total.as_secs_f64(),
        idle_bytes as f64 / 1e6,
        mb(idle_bytes, idle_total),
        idle_restore.as_secs_f64(),
        mb(idle_bytes, idle_restore)
    );

    // The pause alone, nine times (each cut dropped at once): one sample is at the mercy of
    // the scheduler and of what the caches hold.
    let mut pauses: Vec<Duration> = (0..9)
        .map(|_| {
            let t = Instant::now();
            let cut = e.freeze();
            let d = t.elapsed();
            drop(cut);
            d
        })
        .collect();
    pauses.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  pause of a freeze, nine times: min {:.3} ms, median {:.3} ms, max {:.3} ms",
        ms(pauses[0]),
        ms(pauses[4]),
        ms(pauses[8])
    );

    // The persist: freeze on this thread, encode + write on another while blocks go on.
    let snap_dir = dir.join(format!("snap-{keys}"));
    let t0 = Instant::now();
    let frozen = e.freeze();
    let pause = t0.elapsed();
    let fingerprint = e.fingerprint();
    let sd = snap_dir.clone();
    let writer = std::thread::spawn(move || {
        let t = Instant::now();
        let bytes = persist_streamed(&frozen, fingerprint, &sd);
        (bytes, t.elapsed())
    });
    let mut busy = Duration::ZERO;
    let mut blocks = 0u64;
    while !writer.is_finished() {
        let t = Instant::now();
        e.inject(
            src,
            block(next + blocks * BLOCK, BLOCK, keys),
            0,
            &mut NullSink,
        )
        .unwrap();
        busy = busy.max(t.elapsed());
        blocks += 1;
    }
    let (bytes, total) = writer.join().unwrap();

    // The snapshot's files read alone, then restored in a new process, as a server restarted
    // after a failure does: all its memory is fresh.
    let read_alone = snapshot_read_alone(&snap_dir);
    let child = restore_in_child(&snap_dir);

    // Restore into a fresh engine.
    let (r, restored) = restore(&snap_dir, fingerprint);
    let agg = r.window("cq", "byAccount").unwrap();
    assert_eq!(r.row_count(agg), keys as usize, "restored group count");
    drop(r);
    println!(
        "  running: pause {:.3} ms; persist {:.3} s (encoded straight into the files, beside the processing) for {:.1} MB ({:.0} MB/s)",
        pause.as_secs_f64() * 1e3,
        total.as_secs_f64(),
        bytes as f64 / 1e6,
        mb(bytes, total)
    );
    println!(
        "  restore: {:.3} s ({:.0} MB/s): read, verified and decoded in one pass",
        restored.as_secs_f64(),
        mb(bytes, restored),
    );
    match read_alone {
        Some(s) => println!(
            "  the snapshot's files read alone (dd, direct I/O, 8 MiB): {s:.3} s ({:.0} MB/s)",
            bytes as f64 / 1e6 / s.max(1e-9)
        ),
        None => println!("  the snapshot's files read alone: dd did not run here (no figure)"),
    }
    match child {
        Some(s) => println!(
            "  restore in a new process: {s:.3} s ({:.0} MB/s{})",
            bytes as f64 / 1e6 / s.max(1e-9),
            match read_alone {
                Some(r) => format!(", {:.0}% of the read alone", r / s.max(1e-9) * 100.0),
                None => String::new(),
            }
        ),
        None => println!("  restore in a new process: did not run here (no figure)"),
    }
    println!(
        "  longest wait of a {BLOCK}-event block: {:.3} ms while persisting ({blocks} blocks ran meanwhile), {:.3} ms without",
        busy.as_secs_f64() * 1e3,
        quiet.as_secs_f64() * 1e3
    );
    println!(
        "RESULT keys={keys} bytes={bytes} idle_persist_s={:.3} idle_restore_s={:.3} pause_ms={:.3} pause_median_ms={:.3} pause_max_ms={:.3} persist_s={:.3} restore_s={:.3} child_restore_s={:.3} read_alone_s={:.3} busy_block_ms={:.3} quiet_block_ms={:.3} updates_per_s={:.0}",
        idle_total.as_secs_f64(),
        idle_restore.as_secs_f64(),
        pause.as_secs_f64() * 1e3,
        ms(pauses[4]),
        ms(pauses[8]),
        total.as_secs_f64(),
        restored.as_secs_f64(),
        child.unwrap_or(f64::NAN),
        read_alone.unwrap_or(f64::NAN),
        busy.as_secs_f64() * 1e3,
        quiet.as_secs_f64() * 1e3,
        update_rate,
    );
    let _ = std::fs::remove_dir_all(&snap_dir);
}

fn main() -> ExitCode {
    // As the server does (crates/alloc): the allocator keeps freed memory and 4 KiB pages.
    sluice_alloc::keep_freed_memory();
    sluice_alloc::small_pages_only();
    let mut keys: Vec<u64> = vec![1_000_000];
    let mut dir: Option<PathBuf> = None;
    let mut write_to: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--keys" => {
                let Some(v) = args.next() else {
                    eprintln!("--keys needs a comma-separated list");
                    return ExitCode::from(2);
                };
                match v.split(',').map(|k| k.trim().parse()).collect() {
                    Ok(k) => keys = k,
                    Err(_) => {
                        eprintln!("--keys '{v}' is not a list of whole numbers");
                        return ExitCode::from(2);
                    }
                }
            }
            "--dir" => dir = args.next().map(PathBuf::from),
            "--write-snapshot" => {
                // For profiling a restore on its own: `--keys N --write-snapshot DIR`, then
                // `--restore-child DIR` (prints the seconds it took) as often as wanted.
                let Some(d) = args.next() else {
                    eprintln!("--write-snapshot needs a directory");
                    return ExitCode::from(2);
                };
                write_to = Some(PathBuf::from(d));
            }
            "--restore-child" => {
                let Some(d) = args.next() else {
                    eprintln!("--restore-child needs a snapshot directory");
                    return ExitCode::from(2);
                };
                return restore_child(Path::new(&d));
            }
            "--touch-memory" => {
                touch_memory();
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("sluice-persist-bench [--keys 1000000,10000000] [--dir DIR (default: a new directory under the temp dir)]\n\
                          sluice-persist-bench --keys N --write-snapshot DIR   (then)   sluice-persist-bench --restore-child DIR");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument '{other}' (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(d) = write_to {
        let [k] = keys[..] else {
            eprintln!("--write-snapshot takes one key count (--keys N)");
            return ExitCode::from(2);
        };
        let (e, _) = built(k);
        let state = snapshot(e.fingerprint(), Default::default()).state;
        return match sluice_runtime::write_frozen(
            &d,
            "persist_bench",
            e.fingerprint(),
            &state,
            &e.freeze(),
            0,
        ) {
            Ok(bytes) => {
                println!("{k} keys, {bytes} bytes written to {}", d.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("cannot write a snapshot to {}: {err}", d.display());
                ExitCode::FAILURE
            }
        };
    }
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sluice-persist-bench-{}", std::process::id()))
    });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    match disk_bandwidth(&dir) {
        Some((w, r)) => {
            println!("disk (dd, direct I/O, 1 GiB): write {w:.0} MB/s, read {r:.0} MB/s")
        }
        None => println!("disk: dd with direct I/O did not run here (no figure)"),
    }
    for k in keys {
        println!("aggregate state of {k} keys:");
        run(k, &dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Last, so the memory it frees cannot warm a restore above.
    match fresh_memory_rate() {
        Some(r) => {
            println!("fresh memory (1 GiB, each page written once, in a new process): {r:.0} MB/s")
        }
        None => println!("fresh memory: the measurement did not run here (no figure)"),
    }
    ExitCode::SUCCESS
}
