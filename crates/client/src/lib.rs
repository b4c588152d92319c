//! The Sluice client (work in progress).

use std::process::ExitCode;

/// `sluice client ARGS...`.
pub fn main(_args: &[String]) -> ExitCode {
    eprintln!("sluice client: not built yet");
    ExitCode::FAILURE
}
