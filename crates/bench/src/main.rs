//! `sluice-bench`: events/s of the engine alone, end to end from CSV, and the hand-written
//! baseline, for each workload and size, with the peak memory of each run.
//!
//! Each measurement runs in a child process of this binary (`--one WORKLOAD MODE N`) so that
//! its peak RSS (`VmHWM`) is its own. See docs/benchmarks.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use sluice_bench::measure::peak_rss_kib;
use sluice_bench::{data, run_one, Inputs, Measurement, Mode, Workload};

/// Throughput of Sluice workloads against hand-written baselines.
#[derive(Parser, Debug)]
#[command(name = "sluice-bench")]
struct Args {
    /// Numbers of trades, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    events: Vec<u64>,
    /// Workloads: aggregate, filter, compute, join.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "aggregate,filter,compute,join"
    )]
    workloads: Vec<String>,
    /// Modes: base-mem, engine, base-csv, e2e-bs1, e2e-bs64.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "base-mem,engine,base-csv,e2e-bs1,e2e-bs64"
    )]
    modes: Vec<String>,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Directory for the generated CSV files (default: a new directory under the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the generated CSV files.
    #[arg(long)]
    keep: bool,
    /// Print a workload's project XML and exit.
    #[arg(long, value_name = "WORKLOAD")]
    print_model: Option<String>,
    /// Child mode: run one measurement and print its RESULT line.
    #[arg(long, num_args = 3, value_names = ["WORKLOAD", "MODE", "N"])]
    one: Option<Vec<String>>,
    /// Child mode: the trades CSV.
    #[arg(long)]
    trades: Option<PathBuf>,
    /// Child mode: the symbols CSV.
    #[arg(long)]
    symbols: Option<PathBuf>,
}

/// The same allocator as the `sluice` binary, so the figures are the server's.
#[global_allocator]
static GLOBAL: sluice_alloc::MiMalloc = sluice_alloc::MiMalloc;

fn main() -> ExitCode {
    sluice_alloc::keep_freed_memory();
    sluice_alloc::small_pages_only();
    let args = Args::parse();
    let r = if let Some(w) = &args.print_model {
        Workload::parse(w)
            .ok_or_else(|| anyhow!("unknown workload '{w}'"))
            .map(|w| print!("{}", w.model_xml()))
    } else if let Some(one) = &args.one {
        child(&args, one)
    } else {
        parent(&args)
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_workload(s: &str) -> anyhow::Result<Workload> {
    Workload::parse(s)
        .ok_or_else(|| anyhow!("unknown workload '{s}' (aggregate, filter, compute, join)"))
}

fn parse_mode(s: &str) -> anyhow::Result<Mode> {
    Mode::parse(s).ok_or_else(|| {
        anyhow!("unknown mode '{s}' (base-mem, engine, base-csv, e2e-bs1, e2e-bs64)")
    })
}

fn child(args: &Args, one: &[String]) -> anyhow::Result<()> {
    let [w, mode, n] = one else {
        bail!("--one takes WORKLOAD MODE N");
    };
    let w = parse_workload(w)?;
    let mode = parse_mode(mode)?;
    let n: u64 = n.parse().context("N")?;
    let inputs = Inputs {
        trades: args.trades.clone().context("--trades")?,
        symbols: args.symbols.clone().context("--symbols")?,
    };
    let m = run_one(w, mode, n, &inputs)?;
    println!(
        "RESULT events={} outputs={} expected={} secs={:.6} peak_kib={}",
        m.events,
        m.outputs,
        m.expected,
        m.secs,
        peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}

struct Row {
    m: Measurement,
    peak_kib: u64,
}

fn spawn(w: Workload, mode: Mode, n: u64, inputs: &Inputs) -> anyhow::Result<Row> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg("--one")
        .args([w.name(), mode.name(), &n.to_string()])
        .arg("--trades")
        .arg(&inputs.trades)
        .arg("--symbols")
        .arg(&inputs.symbols)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{w} {mode} {n}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            stdout
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .ok_or_else(|| anyhow!("{w} {mode} {n}: no RESULT line in {stdout}"))?;
    let kv: BTreeMap<&str, &str> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .collect();
    let get = |k: &str| -> anyhow::Result<&str> {
        kv.get(k)
            .copied()
            .ok_or_else(|| anyhow!("RESULT lacks {k}"))
    };
    Ok(Row {
        m: Measurement {
            events: get("events")?.parse()?,
            outputs: get("outputs")?.parse()?,
            expected: get("expected")?.parse()?,
            secs: get("secs")?.parse()?,
        },
        peak_kib: get("peak_kib")?.parse()?,
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn human(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn parent(args: &Args) -> anyhow::Result<()> {
    let workloads = args
        .workloads
        .iter()
        .map(|w| parse_workload(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let modes = args
        .modes
        .iter()
        .map(|m| parse_mode(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let repeat = args.repeat.max(1);
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "sluice-bench: {}, {} logical CPUs; every measurement in its own process, one thread",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let symbols = dir.join("symbols.csv");
    data::write_symbols_csv(&symbols)?;
    // (workload, n, mode) -> row
    let mut rows: BTreeMap<(Workload, u64, Mode), Row> = BTreeMap::new();
    let mut files = vec![symbols.clone()];
    for &n in &args.events {
        let trades = dir.join(format!("trades-{n}.csv"));
        let t0 = Instant::now();
        let bytes = data::write_trades_csv(&trades, n)?;
        eprintln!(
            "generated {} trades, {:.1} MiB, in {:.1}s: {}",
            human(n),
            bytes as f64 / (1 << 20) as f64,
            t0.elapsed().as_secs_f64(),
            trades.display()
        );
        files.push(trades.clone());
        let inputs = Inputs {
            trades: trades.clone(),
            symbols: symbols.clone(),
        };
        for &w in &workloads {
            // Repeats go round the modes, so a burst of load elsewhere hits them alike.
            let mut runs: BTreeMap<Mode, Vec<Row>> = BTreeMap::new();
            for _ in 0..repeat {
                for &mode in &modes {
                    runs.entry(mode)
                        .or_default()
                        .push(spawn(w, mode, n, &inputs)?);
                }
            }
            for (mode, mut rs) in runs {
                rs.sort_by(|a, b| a.m.secs.total_cmp(&b.m.secs));
                let row = rs.swap_remove(rs.len() / 2);
                eprintln!(
                    "  {w:<9} {:>4} {mode:<8} {:>7.3} M ev/s  outputs {} (required {})  peak {:.0} MiB",
                    human(n),
                    row.m.rate() / 1e6,
                    row.m.outputs,
                    row.m.expected,
                    row.peak_kib as f64 / 1024.0
                );
                rows.insert((w, n, mode), row);
            }
        }
        if !args.keep {
            let _ = std::fs::remove_file(&trades);
        }
    }
    if !args.keep {
        let _ = std::fs::remove_file(&symbols);
        let _ = std::fs::remove_dir(&dir);
    } else {
        eprintln!("kept: {files:?}");
    }
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &BTreeMap<(Workload, u64, Mode), Row>) {
    println!("| workload | N | mode | events/s | vs baseline | outputs | peak RSS |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for (&(w, n, mode), row) in rows {
        let ratio = if mode.baseline() == mode {
            "baseline".to_string()
        } else {
            rows.get(&(w, n, mode.baseline()))
                .map(|b| format!("{:.3}x {}", row.m.rate() / b.m.rate(), mode.baseline()))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "| {w} | {} | {mode} | {:.2}M | {ratio} | {}{} | {:.0} MiB |",
            human(n),
            row.m.rate() / 1e6,
            row.m.outputs,
            if row.m.outputs == row.m.expected {
                " ok"
            } else {
                " WRONG"
            },
            row.peak_kib as f64 / 1024.0
        );
    }
    // The targets for the aggregate workload.
    for (&(w, n, mode), row) in rows {
        let target = match (w, mode) {
            (Workload::Aggregate, Mode::Engine) => 5e6,
            (Workload::Aggregate, Mode::EndToEnd1 | Mode::EndToEnd64) => 3e6,
            _ => continue,
        };
        println!(
            "target: aggregate {} {mode}: {:.2}M events/s, target {:.0}M: {}",
            human(n),
            row.m.rate() / 1e6,
            target / 1e6,
            if row.m.rate() >= target {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}
