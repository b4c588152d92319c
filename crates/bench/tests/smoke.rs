//! The benchmark on tiny inputs: every workload in every mode gives the outputs the window
//! semantics require, the aggregate agrees with its baseline, and the binary's parent/child
//! protocol works. Timing is not checked here (see docs/benchmarks.md).

use std::path::PathBuf;

use sluice_bench::baseline::{self, Kernel};
use sluice_bench::measure::{engine_for, load_project};
use sluice_bench::{data, run_one, Inputs, Mode, Workload};
use sluice_event::{EventBlock, MsgId, Value};

fn inputs(name: &str, n: u64) -> (PathBuf, Inputs) {
    let dir = std::env::temp_dir().join(format!("sluice-bench-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trades = dir.join("trades.csv");
    let symbols = dir.join("symbols.csv");
    data::write_trades_csv(&trades, n).unwrap();
    data::write_symbols_csv(&symbols).unwrap();
    (dir, Inputs { trades, symbols })
}

#[test]
fn every_workload_and_mode_gives_the_required_outputs() {
    let n = 1_000;
    let (dir, inputs) = inputs("modes", n);
    for w in Workload::ALL {
        for mode in Mode::ALL {
            let m = run_one(w, mode, n, &inputs).unwrap_or_else(|e| panic!("{w} {mode}: {e:#}"));
            assert_eq!(m.events, n, "{w} {mode}");
            assert_eq!(m.outputs, m.expected, "{w} {mode}");
            match w {
                // One update (or the group's first insert) per trade.
                Workload::Aggregate | Workload::Compute | Workload::Join => {
                    assert_eq!(m.outputs, n, "{w} {mode}")
                }
                Workload::Filter => assert!(m.outputs > n / 3 && m.outputs < 2 * n / 3),
            }
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn aggregate_rows_equal_the_hand_written_baseline() {
    let n = 5_000u64;
    let (dir, inputs) = inputs("agg", 1);
    let spec = load_project(Workload::Aggregate, &inputs, 64).unwrap();
    let (mut engine, mut sink) = engine_for(Workload::Aggregate, &spec).unwrap();
    let src = engine.window("cq", "trades").unwrap();
    let syms = data::symbol_values();
    let trades: Vec<data::Trade> = data::Trades::new(n).collect();
    for (i, chunk) in trades.chunks(64).enumerate() {
        let events = chunk.iter().map(|t| data::trade_event(t, &syms)).collect();
        engine
            .inject(src, EventBlock::new(MsgId(i as u64), events), 0, &mut sink)
            .unwrap();
    }
    assert_eq!(sink.outputs, n);
    let mut base = baseline::Aggregate::default();
    for t in &trades {
        base.trade(
            t.id,
            &data::symbol_name(t.sym as usize),
            t.price(),
            t.quantity,
        );
    }
    let out = engine.window("cq", "bySymbol").unwrap();
    let rows = engine.rows_sorted(out);
    assert_eq!(rows.len(), base.groups.len());
    for row in rows {
        let sym = row[0].as_str().unwrap();
        let g = base.groups[sym];
        assert_eq!(
            row[1..],
            [
                Value::Int64(g.sum_quantity),
                Value::Int64(g.count),
                Value::Double(g.sum_price / g.count as f64),
                Value::Double(g.max_price),
            ],
            "{sym}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_binary_runs_each_measurement_in_a_child() {
    let dir = std::env::temp_dir().join(format!("sluice-bench-test-{}-bin", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(["--events", "500", "--workloads", "aggregate,join", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A header, a separator, 2 workloads x 5 modes, 3 target lines.
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 1 + 2 * 5, "{stdout}");
    assert!(rows[1..].iter().all(|r| r.contains("500 ok")), "{stdout}");
    assert!(stdout.contains("target: aggregate 500 engine"), "{stdout}");
    assert!(!dir.exists(), "the generated files are removed");
}

#[test]
fn models_print() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(["--print-model", "aggregate"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ESP_aMax(price)"), "{text}");
    assert!(
        text.contains("insert-only='true' index='pi_EMPTY'"),
        "{text}"
    );
}
