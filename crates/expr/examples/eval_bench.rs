//! A tiny evaluation benchmark (no assertions): `cargo run --release -p sluice-expr --example eval_bench`.

use std::hint::black_box;
use std::time::Instant;

use sluice_expr::{EnvSpec, EventInfo, FieldType, Flags, Opcode, Program, Value};

fn main() {
    let fields: Vec<(String, FieldType)> = [
        ("ID", FieldType::Int64),
        ("symbol", FieldType::String),
        ("quant", FieldType::Int32),
        ("price", FieldType::Double),
        ("quantity", FieldType::Int32),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), *t))
    .collect();
    let udfs = vec![(
        "f".to_string(),
        FieldType::Int32,
        "private integer p p = parameter(1) return p*2".to_string(),
    )];
    let env = EnvSpec {
        initializer: Some("integer counter counter=0"),
        udfs: &udfs,
    };
    let mut p = Program::new(&fields, &env).unwrap();
    let row = vec![
        Value::Int64(1),
        Value::str("IBM"),
        Value::Int32(2000),
        Value::Double(164.1),
        Value::Int32(30),
    ];
    let ev = EventInfo {
        opcode: Opcode::Insert,
        flags: Flags::Normal,
        now_micros: 0,
    };
    let mut g = p.init_globals().unwrap();
    let n: u32 = std::env::var("ITER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    // Baseline: the same test written directly in Rust, for the noise level of this machine.
    let t = Instant::now();
    for _ in 0..n {
        let r = black_box(&row);
        black_box(matches!(r[2], Value::Int32(q) if q > 1000));
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("{:<40} {ns:>7.1} ns/eval", "(direct Rust: quant > 1000)");
    for src in [
        "quant > 1000",
        "price * quantity",
        "ESP_OPCODE==\"I\"",
        "match_string(symbol, \"I*\")",
        "ID%2",
        "counter=counter+1 return counter",
        "f(quant)",
        "upper(symbol)",
    ] {
        // An argument selects one expression (e.g. for `perf stat`).
        if let Some(only) = std::env::args().nth(1) {
            if only != src {
                continue;
            }
        }
        let id = p.compile(src).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            black_box(p.eval(id, black_box(&row), ev, &mut g).unwrap());
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("{src:<40} {ns:>7.1} ns/eval");
    }
}
