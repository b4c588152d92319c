//! Throughput benchmarks of Sluice against hand-written baselines (the `sluice-bench` binary;
//! docs/benchmarks.md has the command and today's figures).
//!
//! Layout:
//! - [`data`]: deterministic trades and the symbol dimension table, in memory and as CSV.
//! - [`models`]: the workloads' project XML.
//! - [`baseline`]: the single-purpose loops each workload is compared with.
//! - [`measure`]: one measurement (workload, mode, size), as the binary's child processes run it.

pub mod baseline;
pub mod data;
pub mod measure;
pub mod models;

pub use measure::{run_one, Inputs, Measurement, Mode};
pub use models::Workload;
