//! One measurement: a workload, a mode and a number of events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use sluice_connector::FsPublisher;
use sluice_engine::{Engine, Sink, WindowId};
use sluice_event::{Event, EventBlock, MsgId};
use sluice_model::{ConnectorDirection, ProjectSpec};

use crate::baseline::{self, Kernel};
use crate::data::{self, Trades, FILTER_QUANTITY};
use crate::models::Workload;

/// Events per block in the engine-alone mode.
pub const ENGINE_BLOCK: usize = 64;
/// Events built per untimed chunk in the in-memory modes (keeps the input's memory small).
pub const CHUNK_EVENTS: usize = 64 * 1024;

/// How a workload is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// The hand-written loop over trades built in memory (compare with `Engine`).
    BaselineMem,
    /// Events built in memory as blocks of 64; only `Engine::inject` is timed.
    Engine,
    /// The hand-written loop parsing the CSV file (compare with `EndToEnd*`).
    BaselineCsv,
    /// The trades CSV through `FsPublisher` (blocksize 1, the connector default) and inject,
    /// as `sluice run` does.
    EndToEnd1,
    /// As `EndToEnd1` with `blocksize=64`.
    EndToEnd64,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::BaselineMem,
        Mode::Engine,
        Mode::BaselineCsv,
        Mode::EndToEnd1,
        Mode::EndToEnd64,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Engine => "engine",
            Mode::EndToEnd1 => "e2e-bs1",
            Mode::EndToEnd64 => "e2e-bs64",
            Mode::BaselineMem => "base-mem",
            Mode::BaselineCsv => "base-csv",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s.trim())
    }

    /// The baseline a mode's figure is divided by (itself for baselines).
    pub fn baseline(self) -> Mode {
        match self {
            Mode::Engine | Mode::BaselineMem => Mode::BaselineMem,
            _ => Mode::BaselineCsv,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The input files of one size.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub trades: PathBuf,
    pub symbols: PathBuf,
}

/// What one measurement gives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Trades processed.
    pub events: u64,
    /// Events the workload's final window emitted (baselines: rows produced).
    pub outputs: u64,
    /// Outputs the window semantics require for these trades.
    pub expected: u64,
    /// Timed seconds.
    pub secs: f64,
}

impl Measurement {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }
}

/// Outputs `w` must emit for the first `n` trades: one per trade, except the filter.
pub fn expected_outputs(w: Workload, n: u64) -> u64 {
    match w {
        Workload::Filter => Trades::new(n)
            .filter(|t| t.quantity > FILTER_QUANTITY)
            .count() as u64,
        _ => n,
    }
}

/// Counts the output events of one window; refused events are an error of the benchmark.
pub struct CountSink {
    pub window: WindowId,
    pub outputs: u64,
    pub bad: u64,
    pub first_bad: Option<String>,
}

impl Sink for CountSink {
    fn output(&mut self, window: WindowId, _id: MsgId, events: &[Event]) {
        if window == self.window {
            self.outputs += events.len() as u64;
        }
    }

    fn bad_event(&mut self, window: WindowId, event: &Event, reason: &str) {
        self.bad += 1;
        self.first_bad
            .get_or_insert_with(|| format!("window {}: {reason}: {event:?}", window.0));
    }
}

/// The workload's project with files and block size substituted.
pub fn load_project(w: Workload, inputs: &Inputs, blocksize: usize) -> anyhow::Result<ProjectSpec> {
    let trades = inputs.trades.display().to_string();
    let symbols = inputs.symbols.display().to_string();
    let vars = |name: &str| match name {
        "TRADES" => Some(trades.clone()),
        "SYMBOLS" => Some(symbols.clone()),
        "BLOCKSIZE" => Some(blocksize.to_string()),
        _ => None,
    };
    sluice_model::parse_project(&w.model_xml(), &vars).map_err(|d| anyhow!("{w} model: {d:?}"))
}

/// Compiles the project and observes the workload's output window.
pub fn engine_for(w: Workload, spec: &ProjectSpec) -> anyhow::Result<(Engine, CountSink)> {
    let mut engine = Engine::new(spec).map_err(|d| anyhow!("{w} model does not compile: {d:?}"))?;
    let out = engine
        .window("cq", w.output_window())
        .context("output window")?;
    engine.observe(out, true);
    Ok((
        engine,
        CountSink {
            window: out,
            outputs: 0,
            bad: 0,
            first_bad: None,
        },
    ))
}

fn engine_alone(w: Workload, n: u64, inputs: &Inputs) -> anyhow::Result<Measurement> {
    let spec = load_project(w, inputs, ENGINE_BLOCK)?;
    let (mut engine, mut sink) = engine_for(w, &spec)?;
    if w == Workload::Join {
        let sym = engine.window("cq", "symbols").context("symbols window")?;
        engine.inject(sym, data::symbol_block(), 0, &mut sink)?;
        sink.outputs = 0;
    }
    let src = engine.window("cq", "trades").context("trades window")?;
    let symbols: Vec<Arc<str>> = data::symbol_values();
    let mut gen = Trades::new(n);
    let mut total = Duration::ZERO;
    let mut next_id = 0u64;
    let mut blocks: Vec<EventBlock> = Vec::new();
    loop {
        // Build a chunk of blocks untimed, then time their injection.
        for _ in 0..CHUNK_EVENTS / ENGINE_BLOCK {
            let events: Vec<Event> = gen
                .by_ref()
                .take(ENGINE_BLOCK)
                .map(|t| data::trade_event(&t, &symbols))
                .collect();
            if events.is_empty() {
                break;
            }
            next_id += 1;
            blocks.push(EventBlock::new(MsgId(next_id), events));
        }
        if blocks.is_empty() {
            break;
        }
        let t0 = Instant::now();
        for b in blocks.drain(..) {
            engine.inject(src, b, 0, &mut sink)?;
        }
        total += t0.elapsed();
    }
    finish(w, n, n, sink, total)
}

fn finish(
    w: Workload,
    n: u64,
    events: u64,
    sink: CountSink,
    total: Duration,
) -> anyhow::Result<Measurement> {
    if let Some(b) = sink.first_bad {
        bail!("{} event(s) refused, first: {b}", sink.bad);
    }
    Ok(Measurement {
        events,
        outputs: sink.outputs,
        expected: expected_outputs(w, n),
        secs: total.as_secs_f64(),
    })
}

/// What `sluice run` does: each publish connector of the model (document order, so the
/// symbol table first) read to its end by `FsPublisher`, each block injected with the clock's
/// time when the project can use it (`Engine::reads_clock`; none of the workloads does, so the
/// clock is not read, as in `Runner`). Everything from opening the files on is timed.
fn end_to_end(
    w: Workload,
    n: u64,
    inputs: &Inputs,
    blocksize: usize,
) -> anyhow::Result<Measurement> {
    let spec = load_project(w, inputs, blocksize)?;
    let (mut engine, mut sink) = engine_for(w, &spec)?;
    let mut pubs = Vec::new();
    for cq in &spec.contqueries {
        for win in &cq.windows {
            for c in &win.connectors {
                if c.direction == ConnectorDirection::Publish && c.active {
                    pubs.push((cq.name.clone(), win.name.clone(), c.clone()));
                }
            }
        }
    }
    let base = Path::new("/");
    let t0 = Instant::now();
    let timed = engine.reads_clock();
    let mut trades = 0u64;
    for (cq, win, c) in &pubs {
        let id = engine.window(cq, win).context("publisher window")?;
        let mut p = FsPublisher::open(c, &engine.node(id).schema, None, base)?;
        while let Some(batch) = p.next_batch()? {
            if let Some(b) = batch.bad.first() {
                bail!("{}: line {}: {}", c.name, b.line, b.reason);
            }
            if win == "trades" {
                trades += batch.block.events.len() as u64;
            }
            let now = if timed { now_micros() } else { 0 };
            engine.inject(id, batch.block, now, &mut sink)?;
        }
        if w == Workload::Join && win == "symbols" {
            // The dimension load's own output is not the trades' output.
            sink.outputs = 0;
        }
    }
    let total = t0.elapsed();
    finish(w, n, trades, sink, total)
}

fn run_kernel<K: Kernel>(k: &mut K, n: u64) -> (u64, Duration) {
    let names: Vec<String> = (0..data::SYMBOLS).map(data::symbol_name).collect();
    let mut gen = Trades::new(n);
    let mut total = Duration::ZERO;
    let mut outputs = 0;
    loop {
        let chunk: Vec<(i64, u16, f64, i32)> = gen
            .by_ref()
            .take(CHUNK_EVENTS)
            .map(|t| (t.id, t.sym, t.price(), t.quantity))
            .collect();
        if chunk.is_empty() {
            return (outputs, total);
        }
        let t0 = Instant::now();
        for &(id, sym, price, quantity) in &chunk {
            outputs += k.trade(id, &names[sym as usize], price, quantity);
        }
        total += t0.elapsed();
    }
}

fn baseline_mem(w: Workload, n: u64) -> Measurement {
    let (outputs, total) = match w {
        Workload::Aggregate => run_kernel(&mut baseline::Aggregate::default(), n),
        Workload::Filter => run_kernel(&mut baseline::Filter, n),
        Workload::Compute => run_kernel(&mut baseline::Compute::default(), n),
        Workload::Join => run_kernel(&mut baseline::join_with_symbols(), n),
    };
    Measurement {
        events: n,
        outputs,
        expected: expected_outputs(w, n),
        secs: total.as_secs_f64(),
    }
}

fn baseline_csv(w: Workload, n: u64, inputs: &Inputs) -> anyhow::Result<Measurement> {
    let t0 = Instant::now();
    let c = baseline::run_csv(w, &inputs.trades, &inputs.symbols)?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(Measurement {
        events: c.events,
        outputs: c.outputs,
        expected: expected_outputs(w, n),
        secs,
    })
}

/// Runs one measurement over the first `n` trades (`inputs` must hold exactly those).
pub fn run_one(w: Workload, mode: Mode, n: u64, inputs: &Inputs) -> anyhow::Result<Measurement> {
    let m = match mode {
        Mode::Engine => engine_alone(w, n, inputs)?,
        Mode::EndToEnd1 => end_to_end(w, n, inputs, 1)?,
        Mode::EndToEnd64 => end_to_end(w, n, inputs, 64)?,
        Mode::BaselineMem => baseline_mem(w, n),
        Mode::BaselineCsv => baseline_csv(w, n, inputs)?,
    };
    if m.events != n {
        bail!("{w} {mode}: {} trades processed, expected {n}", m.events);
    }
    if m.outputs != m.expected {
        bail!(
            "{w} {mode}: {} output events, the window semantics require {}",
            m.outputs,
            m.expected
        );
    }
    Ok(m)
}

/// The runtime's clock (`sluice_runtime::now_micros`): read once per block when the project
/// can use the time, as `Runner` does.
fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Peak resident memory of this process (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
