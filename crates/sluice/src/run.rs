//! `sluice run`: a project's file publishers to the end, then the final rows.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use sluice_runtime::{BadEvents, Runner};

/// Runs a project's file publishers to the end and prints each window's final rows
/// (`# project/cq/window`, then `I,N,fields...` sorted by key).
#[derive(Parser, Debug)]
#[command(name = "sluice run")]
struct RunArgs {
    /// The project XML (an `<engine>` model or a bare `<project>`).
    project: PathBuf,
    /// Substitutes `@NAME@` in the model (repeatable); the environment is used otherwise.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Windows to print, as cq/window or project/cq/window (repeatable; default all).
    #[arg(long = "window", value_name = "CQ/WINDOW")]
    windows: Vec<String>,
    /// Appends refused events and unreadable lines, with the reason, to this file.
    #[arg(long)]
    badevents: Option<PathBuf>,
}

pub fn main(args: &[String]) -> ExitCode {
    let parsed = match RunArgs::try_parse_from(
        std::iter::once("sluice run".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice run: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut vars = std::collections::BTreeMap::new();
    for v in &args.vars {
        let Some((k, val)) = v.split_once('=') else {
            bail!("--var '{v}' is not NAME=VALUE");
        };
        vars.insert(k.to_string(), val.to_string());
    }
    let text = std::fs::read_to_string(&args.project)
        .with_context(|| format!("cannot read {}", args.project.display()))?;
    let lookup = |name: &str| vars.get(name).cloned().or_else(|| std::env::var(name).ok());
    let projects = sluice_model::parse_models(&text, &lookup).map_err(|diags| {
        let lines: Vec<String> = diags
            .iter()
            .map(|d| format!("  {}: {d}", args.project.display()))
            .collect();
        anyhow::anyhow!(
            "the model has {} problem(s):\n{}",
            diags.len(),
            lines.join("\n")
        )
    })?;
    let base = std::env::current_dir().context("cannot read the working directory")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut total_bad = 0;
    let mut printed = 0usize;
    for spec in &projects {
        let bad = BadEvents::open(args.badevents.as_deref())
            .with_context(|| format!("cannot open the bad-events file {:?}", args.badevents))?;
        let mut runner = Runner::new(spec, &base, bad)?;
        let mut clock = sluice_runtime::now_micros;
        let stats = runner.run_to_end(&mut clock)?;
        total_bad += stats.bad;
        let engine = &runner.engine;
        for node in engine.nodes() {
            let full = format!("{}/{}", spec.name, node.path);
            if !args.windows.is_empty()
                && !args.windows.iter().any(|w| *w == node.path || *w == full)
            {
                continue;
            }
            printed += 1;
            writeln!(out, "# {full}")?;
            let id = engine.window(&node.cq, &node.name).expect("listed");
            let mut line = String::new();
            for row in engine.rows_sorted(id) {
                line.clear();
                line.push_str("I,N,");
                sluice_event::csv::write_row(&row, None, &mut line);
                writeln!(out, "{line}")?;
            }
        }
    }
    out.flush()?;
    if !args.windows.is_empty() && printed == 0 {
        bail!("no window matches {:?}", args.windows);
    }
    if total_bad > 0 {
        eprintln!(
            "{total_bad} bad event(s){}",
            args.badevents
                .as_ref()
                .map(|p| format!(", written to {}", p.display()))
                .unwrap_or_else(|| " (use --badevents FILE to keep them)".to_string())
        );
    }
    Ok(())
}
