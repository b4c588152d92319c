//! Running a project around the engine: file publishers and subscribers, the bad-events
//! file, connector orchestration, and the clock. `sluice run` and the server share it.
//!
//! Layout:
//! - [`bad`]: the bad-events file.
//! - [`restore`]: snapshots of an engine: written straight from a frozen cut, decoded while
//!   read.
//! - [`runner`]: [`Runner`], one project with its fs connectors, run block by block.

pub mod bad;
pub mod restore;
pub mod runner;

pub use bad::BadEvents;
pub use restore::{read_snapshot_into, write_frozen};
pub use runner::{RunError, RunStats, Runner};

/// Microseconds since the epoch from the system clock: the runtime's time, handed to the
/// engine (which never reads a clock itself).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
