//! Restore equivalence (issue 4): for every golden model, snapshot after k blocks (every k
//! from 0 to the end), restore into a fresh runner, finish: the output after k and the final
//! window contents equal those of the uninterrupted run.

use std::path::{Path, PathBuf};

use sluice_runtime::{BadEvents, Runner};

const MODELS: &[&str] = &[
    "aggregate_exp_model",
    "compute_exp_model",
    "compute_exp_udf_model",
    "compute_udf_model",
    "compute_field_expression",
    "copy_with_slots_model",
    "filter_exp_model",
    "filter_on_flag_model",
    "filter_on_opcode_model",
    "filter_with_udf",
    "join_exp_model",
    "retention_model",
    "copy_window",
    "slot_exp_model",
    "splitter_model",
    "splitter_udf_model",
    "union_model",
    "xml_connector_publisher_model",
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus/esppy")
}

fn runner(model: &str, base: &Path) -> Runner {
    let dir = corpus();
    let text = std::fs::read_to_string(dir.join(format!("{model}.xml"))).expect("corpus model");
    let d = dir.display().to_string();
    let spec =
        sluice_model::parse_project(&text, &|n: &str| (n == "ESPTESTDATA").then(|| d.clone()))
            .expect("model parses");
    let mut r = Runner::with_dirs(&spec, &dir, base, BadEvents::default()).expect("runner");
    r.capture_all();
    r
}

fn contents(r: &Runner) -> Vec<String> {
    let e = &r.engine;
    let mut out = Vec::new();
    for n in e.nodes() {
        let id = e.window(&n.cq, &n.name).unwrap();
        for row in e.rows_sorted(id) {
            let mut l = format!("{} ", n.path);
            sluice_event::csv::write_row(&row, None, &mut l);
            out.push(l);
        }
    }
    out
}

/// A fixed time, so wall-clock dependent behaviour cannot differ between runs.
const NOW: i64 = 1_700_000_000_000_000;

#[test]
fn every_cut_of_every_golden_model_restores_to_the_same_output() {
    assert!(
        corpus().is_dir(),
        "the corpus is expected at {} (corpus/ in the repository)",
        corpus().display()
    );
    let tmp = tempfile::tempdir().unwrap();
    for model in MODELS {
        let base = tmp.path().join(model);
        std::fs::create_dir_all(&base).unwrap();
        // Uninterrupted run, remembering how much output each block produced.
        let mut full = runner(model, &base);
        let mut cuts = vec![0usize];
        let mut lines: Vec<String> = Vec::new();
        while full.step(NOW).unwrap() {
            lines.extend(full.take_captured());
            cuts.push(lines.len());
        }
        let final_contents = contents(&full);
        assert!(cuts.len() > 1, "{model}: no input was read");
        for (k, &at) in cuts.iter().enumerate() {
            let mut first = runner(model, &base);
            for _ in 0..k {
                assert!(first.step(NOW).unwrap());
            }
            let snap = base.join(format!("snap-{k}"));
            first.persist(&snap).unwrap();
            let mut second = runner(model, &base);
            second
                .restore(&snap)
                .unwrap_or_else(|e| panic!("{model} k={k}: restore failed: {e}"));
            let mut after = Vec::new();
            while second.step(NOW).unwrap() {
                after.extend(second.take_captured());
            }
            assert_eq!(
                after,
                lines[at..].to_vec(),
                "{model}: output after a restore at block {k} differs"
            );
            assert_eq!(
                contents(&second),
                final_contents,
                "{model}: final contents after a restore at block {k} differ"
            );
        }
    }
}

#[test]
fn a_snapshot_of_another_model_is_refused_and_nothing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let mut a = runner("aggregate_exp_model", base);
    while a.step(NOW).unwrap() {}
    a.persist(&base.join("agg")).unwrap();
    let mut b = runner("filter_exp_model", base);
    b.step(NOW).unwrap();
    let before = contents(&b);
    let e = b.restore(&base.join("agg")).unwrap_err().to_string();
    assert!(e.contains("different project model"), "{e}");
    assert_eq!(contents(&b), before);
}
