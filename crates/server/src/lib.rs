//! The Sluice server (work in progress).

use std::process::ExitCode;

/// `sluice server ARGS...`.
pub fn main(_args: &[String]) -> ExitCode {
    eprintln!("sluice server: not built yet");
    ExitCode::FAILURE
}
