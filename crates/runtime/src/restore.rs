//! Snapshots of an engine, both ways. Persist: a frozen engine's windows are each encoded
//! straight into their files ([`write_frozen`]). Restore: each window file is decoded while it
//! is read (see `sluice_persist::read_snapshot_streamed`), into a copy of the windows that the
//! caller swaps in with [`Engine::finish_restore`] once everything checked out.

use std::path::Path;

use sluice_engine::{Engine, FrozenEngine, Restoring};
use sluice_persist::{PersistError, ProjectState, WindowBody};

/// Writes the cut `frozen` of project `project` as a snapshot in `dir` (atomically), each
/// window encoded straight into its file, never held whole in memory. Returns the bytes
/// written.
pub fn write_frozen(
    dir: &Path,
    project: &str,
    fingerprint: u64,
    state: &ProjectState,
    frozen: &FrozenEngine,
    created_unix_ms: u64,
) -> Result<u64, PersistError> {
    let windows: Vec<(&str, WindowBody)> = frozen
        .windows()
        .map(|(path, w)| {
            let body: WindowBody = Box::new(move |out: &mut dyn std::io::Write| w.write_to(out));
            (path, body)
        })
        .collect();
    sluice_persist::write_snapshot_streamed(
        dir,
        project,
        fingerprint,
        state,
        windows,
        created_unix_ms,
    )
}

/// Reads, verifies and decodes the snapshot in `dir` for `project` into a copy of `engine`'s
/// windows. Returns the project state (input positions, output marks) and the decoded windows,
/// for [`Engine::finish_restore`]; `engine` itself is not touched. A snapshot that is bad in
/// any way (manifest, project, fingerprint, a file's size or checksum, a window file that does
/// not decode) is refused whole with the error naming the file.
pub fn read_snapshot_into(
    engine: &Engine,
    dir: &Path,
    project: &str,
) -> Result<(ProjectState, Restoring), PersistError> {
    let mut r = engine.restoring();
    let state =
        sluice_persist::read_snapshot_streamed(dir, project, engine.fingerprint(), |w, file| {
            let len = file.len();
            r.decode_pieces(w, len, &mut |spent| file.next_piece(spent))
        })?;
    Ok((state, r))
}
