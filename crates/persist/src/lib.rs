//! Snapshots on disk (docs/formats/snapshot.md): a directory with `project.state`, one file
//! per window under `queries/`, and a `MANIFEST` written last with the format version, the
//! project fingerprint and the CRC-32C of every file.
//!
//! [`write_snapshot`] commits atomically inside the target directory: the files go to a new
//! generation directory `DIR/.sluice-snap-*`, and the rename of a new `DIR/MANIFEST` naming it
//! is the commit (the directory itself is never renamed, so it may be a mount point). It never
//! removes anything that is not part of a Sluice snapshot, and persists to one directory are
//! serialised by a lock file. [`read_snapshot`] checks the version, the fingerprint and every checksum before it
//! returns anything, so a bad snapshot is refused whole. The engine's window bytes are opaque
//! here.
//!
//! Invariant: nothing here knows the engine; the bytes are written and checked as they are.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod stream;

/// The snapshot format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_NAME: &str = "sluice-snapshot";
const MANIFEST: &str = "MANIFEST";
const PROJECT_STATE: &str = "project.state";
const QUERIES: &str = "queries";
/// Every name Sluice gives its own entries in a snapshot directory starts with this.
const OWN_PREFIX: &str = ".sluice-";
/// Generation directories: `DIR/.sluice-snap-<pid>-<n>-<nanos>`.
const GEN_PREFIX: &str = ".sluice-snap-";
/// Files and directories being written or put aside, removed by the next persist.
const TMP_PREFIX: &str = ".sluice-tmp-";
const OLD_PREFIX: &str = ".sluice-old-";
/// The lock file of a snapshot directory (kept: removing a lock file races with its users).
const LOCK: &str = ".sluice-lock";

/// One file in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub crc32c: String,
}

/// The manifest, written last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub project: String,
    pub fingerprint: String,
    pub created_unix_ms: u64,
    /// The generation directory (`.sluice-snap-*`, inside the snapshot directory) that holds
    /// the files; empty for a snapshot written by an older version, whose files sit in the
    /// snapshot directory itself.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dir: String,
    pub files: Vec<FileEntry>,
    /// CRC-32C of this manifest written with an empty `checksum` (so the manifest itself is
    /// checked too).
    #[serde(default)]
    pub checksum: String,
}

impl Manifest {
    fn own_checksum(&self) -> String {
        let mut m = self.clone();
        m.checksum.clear();
        crc_hex(&serde_json::to_vec_pretty(&m).expect("manifest serialises"))
    }
}

/// The input position of one publish connector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Position {
    /// Lines of the file consumed.
    Fs { connector: String, line: u64 },
    /// The next offset to read.
    Kafka {
        connector: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// The last output ID of one subscribe connector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputMark {
    pub connector: String,
    pub last_output_id: String,
}

/// `project.state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProjectState {
    pub project: String,
    pub publishers: Vec<Position>,
    pub subscribers: Vec<OutputMark>,
}

/// A snapshot in memory: what is written and what a verified read gives back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub project: String,
    pub fingerprint: u64,
    pub state: ProjectState,
    /// Window state by `cq/window`.
    pub windows: BTreeMap<String, Vec<u8>>,
}

/// Why a snapshot cannot be written or trusted. Each message names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} is not a snapshot: it has no MANIFEST (an interrupted persist leaves none; use an older snapshot)")]
    NoManifest { dir: PathBuf },
    #[error("{path}: the manifest is not valid: {why}")]
    BadManifest { path: PathBuf, why: String },
    #[error("{path}: snapshot format version {found} is newer than this sluice supports ({FORMAT_VERSION})")]
    NewerVersion { path: PathBuf, found: u32 },
    #[error("{dir}: the snapshot is of project '{found}', not '{expected}'")]
    WrongProject {
        dir: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{dir}: the snapshot was taken from a different project model (fingerprint {found}, this project {expected}): windows, schemas or edges differ")]
    Fingerprint {
        dir: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: missing file listed in the manifest")]
    MissingFile { path: PathBuf },
    #[error("{path}: truncated or extended: {found} bytes, the manifest says {expected}")]
    Size {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path}: checksum mismatch (crc32c {found}, the manifest says {expected}): the file is corrupted")]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: {why}")]
    BadFile { path: PathBuf, why: String },
    /// The target directory holds entries that are not part of a Sluice snapshot: the persist
    /// is refused and nothing changes.
    #[error("{dir} holds {} that {} not part of a Sluice snapshot: {}; a persist never removes them (move them away, or persist to another directory)", plural(.entries.len(), "entry", "entries"), if .entries.len() == 1 { "is" } else { "are" }, name_list(.entries))]
    Foreign { dir: PathBuf, entries: Vec<String> },
    /// Another persist to the same directory (or a restore from it) holds its lock.
    #[error("another persist to {dir} is in progress (or a restore is reading it): try again once it is done")]
    Busy { dir: PathBuf },
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Up to three names, quoted, then how many more.
fn name_list(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(3)
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 3 {
        s.push_str(&format!(" and {} more", names.len() - 3));
    }
    s
}

fn crc_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32c::crc32c(bytes))
}

fn window_file(path: &str) -> String {
    format!("queries/{path}.state")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let err = |source| PersistError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    let mut f = File::create(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}

fn sync_dir(path: &Path) -> Result<(), PersistError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| PersistError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// A name unique to this process and call, for generation and temporary entries.
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The lock of a snapshot directory, held while it lives.
struct DirLock {
    _file: File,
}

/// Takes the lock of `dir`: exclusive to write (the lock file is created), shared to read (only
/// when a lock file exists: a directory written by an older version, or on a read-only mount,
/// has none). Never waits: a lock held elsewhere is [`PersistError::Busy`].
fn lock_dir(dir: &Path, exclusive: bool) -> Result<Option<DirLock>, PersistError> {
    use rustix::fs::{flock, FlockOperation};
    let path = dir.join(LOCK);
    let file = if exclusive {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| PersistError::Write {
                path: path.clone(),
                source,
            })?
    } else {
        match File::open(&path) {
            Ok(f) => f,
            Err(_) => return Ok(None),
        }
    };
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match flock(&file, op) {
        Ok(()) => Ok(Some(DirLock { _file: file })),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(PersistError::Busy {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(PersistError::Write {
            path,
            source: e.into(),
        }),
    }
}

/// The entries of `dir` that are not part of a Sluice snapshot: anything but `MANIFEST`,
/// `project.state`, `queries` (a link, or a directory holding only window files
/// `<cq>/<window>.state`) and Sluice's own `.sluice-*` entries. Sorted.
fn foreign_entries(dir: &Path) -> Result<Vec<String>, PersistError> {
    let read = |path: &Path| {
        fs::read_dir(path).map_err(|source| PersistError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let only_window_files = |q: &Path| -> Result<bool, PersistError> {
        for cq in read(q)? {
            let cq = cq.map_err(|source| PersistError::Read {
                path: q.to_path_buf(),
                source,
            })?;
            if !cq.file_type().is_ok_and(|t| t.is_dir()) {
                return Ok(false);
            }
            for w in read(&cq.path())? {
                let w = w.map_err(|source| PersistError::Read {
                    path: cq.path(),
                    source,
                })?;
                let is_file = w.file_type().is_ok_and(|t| t.is_file());
                if !is_file || !w.file_name().to_string_lossy().ends_with(".state") {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    };
    let mut out = Vec::new();
    for e in read(dir)? {
        let e = e.map_err(|source| PersistError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = e.file_name().to_string_lossy().to_string();
        let t = e.file_type().map_err(|source| PersistError::Read {
            path: e.path(),
            source,
        })?;
        let ours = name.starts_with(OWN_PREFIX)
            || (name == MANIFEST && (t.is_file() || t.is_symlink()))
            || (name == PROJECT_STATE && (t.is_file() || t.is_symlink()))
            || (name == QUERIES
                && (t.is_symlink() || (t.is_dir() && only_window_files(&e.path())?)));
        if !ours {
            out.push(name);
        }
    }
    // Files put into the current generation (through the `queries` link, say) that its
    // manifest does not list: removing the generation later would remove them.
    if let Ok(m) = read_manifest(dir) {
        if let Ok(gen) = generation_dir(dir, &m) {
            if !m.dir.is_empty() {
                let listed: std::collections::HashSet<&str> =
                    m.files.iter().map(|f| f.path.as_str()).collect();
                let mut todo = vec![gen.clone()];
                while let Some(d) = todo.pop() {
                    for e in read(&d)?.flatten() {
                        let rel = e.path();
                        let rel = rel
                            .strip_prefix(&gen)
                            .unwrap_or(&rel)
                            .to_string_lossy()
                            .to_string();
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            todo.push(e.path());
                        } else if !listed.contains(rel.as_str()) {
                            out.push(rel);
                        }
                    }
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The generation directory the current `DIR/MANIFEST` names: `Ok(Some(""))` for an older
/// version's snapshot (files in `DIR`), `Ok(None)` when there is no manifest, `Err` when it
/// cannot be read (then no generation may be assumed dead).
fn live_generation(dir: &Path) -> Result<Option<String>, PersistError> {
    match read_manifest(dir) {
        Ok(m) => Ok(Some(m.dir)),
        Err(PersistError::NoManifest { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes Sluice's own leftovers inside `dir`: temporary and put-aside entries, and every
/// generation but `keep` (all of them only when `keep` is `Some("")`/`Some(name)`: with
/// `None`, generations are left alone).
fn remove_leftovers(dir: &Path, keep: Option<&str>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let gone = name.starts_with(TMP_PREFIX)
            || name.starts_with(OLD_PREFIX)
            || (name.starts_with(GEN_PREFIX) && keep.is_some_and(|k| k != name));
        if gone {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            let _ = if is_dir {
                fs::remove_dir_all(e.path())
            } else {
                fs::remove_file(e.path())
            };
        }
    }
}

/// Removes what an older version's interrupted persists left beside `dir`: `DIR.tmp-<pid>-<n>`
/// always, and `DIR.old-<pid>` once `DIR` holds a snapshot again. Other names are left alone.
pub fn clean_leftovers(dir: &Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let name = name.to_string_lossy();
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let numbers = |s: &str, parts: usize| {
        let p: Vec<&str> = s.split('-').collect();
        p.len() == parts
            && p.iter()
                .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Ok(entries) = fs::read_dir(parent) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            let Some(rest) = n.strip_prefix(name.as_ref()) else {
                continue;
            };
            let old = rest
                .strip_prefix(".old-")
                .is_some_and(|r| numbers(r, 1) && dir.join(MANIFEST).exists());
            let tmp = rest.strip_prefix(".tmp-").is_some_and(|r| numbers(r, 2));
            if (old || tmp) && e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Writes `snap` to `dir` atomically; returns the number of bytes written.
pub fn write_snapshot(
    dir: &Path,
    snap: &Snapshot,
    created_unix_ms: u64,
) -> Result<u64, PersistError> {
    let windows: Vec<(&str, WindowBody)> = snap
        .windows
        .iter()
        .map(|(p, bytes)| {
            let body: WindowBody = Box::new(move |out: &mut dyn Write| out.write_all(bytes));
            (p.as_str(), body)
        })
        .collect();
    write_snapshot_streamed(
        dir,
        &snap.project,
        snap.fingerprint,
        &snap.state,
        windows,
        created_unix_ms,
    )
}

/// Writes one window file's bytes into the sink it is given, in as many pieces as it likes.
pub type WindowBody<'a> = Box<dyn Fn(&mut dyn Write) -> std::io::Result<()> + Send + Sync + 'a>;

/// Like [`write_snapshot`], with each window file produced by a function that streams it
/// (the engine encodes a frozen window straight into the file, never holding it whole):
/// files are written with direct I/O where the file system allows it, checksummed as they
/// are written, on a writer thread beside the encoding.
///
/// `dir` is created when missing. A `dir` holding anything but a Sluice snapshot is refused
/// ([`PersistError::Foreign`]) and left as it was; a persist to a `dir` another one is writing
/// is refused ([`PersistError::Busy`]).
pub fn write_snapshot_streamed(
    dir: &Path,
    project: &str,
    fingerprint: u64,
    state: &ProjectState,
    windows: Vec<(&str, WindowBody)>,
    created_unix_ms: u64,
) -> Result<u64, PersistError> {
    let foreign = |dir: &Path| -> Result<(), PersistError> {
        let entries = foreign_entries(dir)?;
        if entries.is_empty() {
            Ok(())
        } else {
            Err(PersistError::Foreign {
                dir: dir.to_path_buf(),
                entries,
            })
        }
    };
    // Refuse before creating anything (the lock file included) in a directory of others.
    if dir.is_dir() {
        foreign(dir)?;
    }
    fs::create_dir_all(dir).map_err(|source| PersistError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let _lock = lock_dir(dir, true)?;
    // Again under the lock: what another process may have put there meanwhile.
    foreign(dir)?;
    clean_leftovers(dir);
    let live = live_generation(dir);
    match &live {
        Ok(Some(g)) => remove_leftovers(dir, Some(g)),
        Ok(None) => remove_leftovers(dir, Some("")),
        Err(_) => remove_leftovers(dir, None),
    }
    let gen = unique(GEN_PREFIX);
    let manifest_tmp = dir.join(unique(TMP_PREFIX));
    let result = write_into(
        &dir.join(&gen),
        &gen,
        project,
        fingerprint,
        state,
        windows,
        created_unix_ms,
    )
    .and_then(|(n, manifest)| commit(dir, &gen, &manifest_tmp, &manifest).map(|()| n));
    if result.is_err() {
        let _ = fs::remove_dir_all(dir.join(&gen));
        let _ = fs::remove_file(&manifest_tmp);
    }
    result
}

/// Writes the files of generation `gen` into `gen_dir`; returns the bytes written (the
/// manifest's included) and the manifest's bytes, not yet written anywhere.
fn write_into(
    gen_dir: &Path,
    gen: &str,
    project: &str,
    fingerprint: u64,
    state: &ProjectState,
    windows: Vec<(&str, WindowBody)>,
    created_unix_ms: u64,
) -> Result<(u64, Vec<u8>), PersistError> {
    let tmp = gen_dir;
    fs::create_dir_all(tmp.join(QUERIES)).map_err(|source| PersistError::Write {
        path: tmp.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    let mut total = 0u64;
    let state = serde_json::to_vec_pretty(state).expect("project state serialises");
    let mut put = |rel: String, body: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| {
        let path = tmp.join(&rel);
        let (bytes, crc) = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| stream::write_file(&path, body))
            .map_err(|source| PersistError::Write { path, source })?;
        total += bytes;
        files.push(FileEntry {
            path: rel,
            bytes,
            crc32c: format!("{crc:08x}"),
        });
        Ok::<(), PersistError>(())
    };
    put(PROJECT_STATE.to_string(), &|out: &mut dyn Write| {
        out.write_all(&state)
    })?;
    for (path, body) in &windows {
        put(window_file(path), body)?;
    }
    // Directories of window files.
    for (path, _) in &windows {
        if let Some(parent) = tmp.join(window_file(path)).parent() {
            sync_dir(parent)?;
        }
    }
    sync_dir(&tmp.join(QUERIES))?;
    sync_dir(tmp)?;
    let mut manifest = Manifest {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        project: project.to_string(),
        fingerprint: format!("{fingerprint:016x}"),
        created_unix_ms,
        dir: gen.to_string(),
        files,
        checksum: String::new(),
    };
    manifest.checksum = manifest.own_checksum();
    let m = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    Ok((total + m.len() as u64, m))
}

/// The commit, all inside `dir`: the new manifest is written under a temporary name and renamed
/// over `DIR/MANIFEST` (the one atomic step: before it `DIR/MANIFEST` names the previous
/// generation, whole; after it the new one, whole). Then `DIR/project.state` and `DIR/queries`
/// become links into the new generation (for tools that look for them), and older generations
/// are removed.
fn commit(dir: &Path, gen: &str, manifest_tmp: &Path, manifest: &[u8]) -> Result<(), PersistError> {
    write_file(manifest_tmp, manifest)?;
    // The generation's entry in `dir` is durable before the manifest that names it.
    sync_dir(dir)?;
    fs::rename(manifest_tmp, dir.join(MANIFEST)).map_err(|source| PersistError::Write {
        path: dir.join(MANIFEST),
        source,
    })?;
    sync_dir(dir)?;
    for name in [PROJECT_STATE, QUERIES] {
        link_into(dir, gen, name);
    }
    remove_leftovers(dir, Some(gen));
    Ok(())
}

/// Points `DIR/name` at `gen/name` (best effort: the reader does not use these links; a file
/// system without symbolic links does without them). An older version's real `queries`
/// directory is put aside first and removed with the leftovers.
fn link_into(dir: &Path, gen: &str, name: &str) {
    let link = dir.join(unique(TMP_PREFIX));
    if std::os::unix::fs::symlink(format!("{gen}/{name}"), &link).is_err() {
        return;
    }
    let path = dir.join(name);
    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
        let _ = fs::rename(&path, dir.join(unique(OLD_PREFIX)));
    }
    if fs::rename(&link, &path).is_err() {
        let _ = fs::remove_file(&link);
    }
}

/// Reads the manifest of `dir` (no file checks).
pub fn read_manifest(dir: &Path) -> Result<Manifest, PersistError> {
    let path = dir.join(MANIFEST);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PersistError::NoManifest {
                dir: dir.to_path_buf(),
            })
        }
        Err(source) => return Err(PersistError::Read { path, source }),
    };
    // Check the version before the full shape, so a newer format says so.
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| PersistError::BadManifest {
            path: path.clone(),
            why: e.to_string(),
        })?;
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(PersistError::BadManifest {
            path,
            why: format!("\"format\" is not \"{FORMAT_NAME}\""),
        });
    }
    if let Some(found) = v.get("version").and_then(|x| x.as_u64()) {
        if found > FORMAT_VERSION as u64 {
            return Err(PersistError::NewerVersion {
                path,
                found: found as u32,
            });
        }
    }
    let m: Manifest = serde_json::from_value(v).map_err(|e| PersistError::BadManifest {
        path: path.clone(),
        why: e.to_string(),
    })?;
    let own = m.own_checksum();
    if m.checksum != own {
        return Err(PersistError::BadManifest {
            path,
            why: format!(
                "checksum mismatch (crc32c {own}, the manifest says '{}'): the manifest is corrupted",
                m.checksum
            ),
        });
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(f) = m.files.iter().find(|f| !seen.insert(f.path.as_str())) {
        return Err(PersistError::BadManifest {
            path,
            why: format!(
                "file '{}' is listed twice: the snapshot is refused whole",
                f.path
            ),
        });
    }
    Ok(m)
}

/// Reads and verifies a snapshot of `project` with `fingerprint`: version, project,
/// fingerprint, then every file's presence, size and checksum. Nothing is returned unless all hold.
pub fn read_snapshot(
    dir: &Path,
    project: &str,
    fingerprint: u64,
) -> Result<Snapshot, PersistError> {
    let mut windows = BTreeMap::new();
    let state = read_snapshot_streamed(dir, project, fingerprint, |w, file| {
        let mut bytes = Vec::with_capacity(file.len() as usize);
        let mut spent = Vec::new();
        while let Some((buf, range)) = file.next_piece(spent)? {
            bytes.extend_from_slice(&buf[range]);
            spent = buf;
        }
        windows.insert(w.to_string(), bytes);
        Ok::<(), std::io::Error>(())
    })?;
    Ok(Snapshot {
        project: project.to_string(),
        fingerprint,
        state,
        windows,
    })
}

/// A window file of a snapshot being read, for a decoder that takes it piece by piece while
/// the rest is still being read (see [`read_snapshot_streamed`]).
pub struct WindowFile {
    reader: stream::PieceReader,
    len: u64,
}

impl WindowFile {
    /// The file's length as the manifest gives it.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the manifest gives the file no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's next piece (`buffer`, `range`): the bytes are `buffer[range]`; `None` at the
    /// end of the file. `spent` hands back the buffer of the piece before, for reuse (an empty
    /// `Vec` the first time). The pieces are not yet verified: the file's size and checksum
    /// are checked once the decoder is done, and its result is thrown away if they do not hold.
    pub fn next_piece(&mut self, spent: Vec<u8>) -> std::io::Result<Option<stream::Piece>> {
        self.reader.next_piece(spent)
    }
}

pub use stream::Piece;

/// Reads and verifies a snapshot of `project` with `fingerprint`, handing each window file to
/// `window` (with its `cq/window` name) while it is being read, so decoding and reading
/// overlap. The checks are those of [`read_snapshot`]: the manifest, the project and the
/// fingerprint first; then every file's presence and size before any window is read; then
/// every file's checksum, each as soon as the file is read to its end. A file whose size or
/// checksum does not match is refused as such even when `window` failed on it first (a
/// corrupted file is reported as corrupted); otherwise an error of `window` is the file's
/// error. The caller must throw away what `window` built unless this returns `Ok`.
pub fn read_snapshot_streamed<E: std::fmt::Display>(
    dir: &Path,
    project: &str,
    fingerprint: u64,
    mut window: impl FnMut(&str, &mut WindowFile) -> Result<(), E>,
) -> Result<ProjectState, PersistError> {
    // A persist to `dir` cannot remove the generation being read.
    let _lock = lock_dir(dir, false)?;
    let manifest = read_manifest(dir)?;
    if manifest.project != project {
        return Err(PersistError::WrongProject {
            dir: dir.to_path_buf(),
            expected: project.to_string(),
            found: manifest.project,
        });
    }
    let expected = format!("{fingerprint:016x}");
    if manifest.fingerprint != expected {
        return Err(PersistError::Fingerprint {
            dir: dir.to_path_buf(),
            expected,
            found: manifest.fingerprint,
        });
    }
    let base = generation_dir(dir, &manifest)?;
    let manifest_path = dir.join(MANIFEST);
    let dir = base.as_path();
    // Every file's name, presence and size before any is read.
    let mut windows = Vec::new();
    let mut state_file = None;
    for f in &manifest.files {
        if f.path.contains("..") || f.path.starts_with('/') {
            return Err(PersistError::BadManifest {
                path: manifest_path.clone(),
                why: format!("file path '{}' leaves the snapshot directory", f.path),
            });
        }
        let path = dir.join(&f.path);
        let found = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PersistError::MissingFile { path })
            }
            Err(source) => return Err(PersistError::Read { path, source }),
        };
        if found != f.bytes {
            return Err(PersistError::Size {
                path,
                expected: f.bytes,
                found,
            });
        }
        if f.path == PROJECT_STATE {
            state_file = Some(f);
        } else if let Some(w) = f
            .path
            .strip_prefix("queries/")
            .and_then(|p| p.strip_suffix(".state"))
        {
            windows.push((w, f));
        } else {
            return Err(PersistError::BadManifest {
                path: manifest_path.clone(),
                why: format!("unexpected file '{}'", f.path),
            });
        }
    }
    let state_file = state_file.ok_or_else(|| PersistError::MissingFile {
        path: dir.join(PROJECT_STATE),
    })?;
    let path = dir.join(PROJECT_STATE);
    let (bytes, crc) = stream::read_file(&path).map_err(|e| read_error(&path, e))?;
    check_file(&path, state_file, bytes.len() as u64, crc)?;
    let state: ProjectState =
        serde_json::from_slice(&bytes).map_err(|e| PersistError::BadFile {
            path: path.clone(),
            why: e.to_string(),
        })?;
    for (w, f) in windows {
        let path = dir.join(&f.path);
        let reader = stream::PieceReader::open(&path).map_err(|e| read_error(&path, e))?;
        let mut file = WindowFile {
            reader,
            len: f.bytes,
        };
        let decoded = window(w, &mut file);
        let (bytes, crc) = file.reader.finish().map_err(|e| read_error(&path, e))?;
        check_file(&path, f, bytes, crc)?;
        decoded.map_err(|e| PersistError::BadFile {
            path,
            why: e.to_string(),
        })?;
    }
    Ok(state)
}

/// Where the files of a snapshot are: the generation directory its manifest names (a single
/// `.sluice-snap-*` entry of `dir`), or `dir` itself for an older version's snapshot.
fn generation_dir(dir: &Path, manifest: &Manifest) -> Result<PathBuf, PersistError> {
    let g = manifest.dir.as_str();
    if g.is_empty() {
        return Ok(dir.to_path_buf());
    }
    let plain = g.starts_with(GEN_PREFIX) && !g.contains(['/', '\\', '\0']) && !g.contains("..");
    if !plain {
        return Err(PersistError::BadManifest {
            path: dir.join(MANIFEST),
            why: format!(
                "\"dir\": '{g}' is not a generation directory of the snapshot ({GEN_PREFIX}*)"
            ),
        });
    }
    Ok(dir.join(g))
}

fn read_error(path: &Path, e: std::io::Error) -> PersistError {
    if e.kind() == std::io::ErrorKind::NotFound {
        PersistError::MissingFile {
            path: path.to_path_buf(),
        }
    } else {
        PersistError::Read {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// A file read whole: its size and checksum against the manifest.
fn check_file(path: &Path, f: &FileEntry, bytes: u64, crc: u32) -> Result<(), PersistError> {
    if bytes != f.bytes {
        return Err(PersistError::Size {
            path: path.to_path_buf(),
            expected: f.bytes,
            found: bytes,
        });
    }
    let crc = format!("{crc:08x}");
    if crc != f.crc32c {
        return Err(PersistError::Checksum {
            path: path.to_path_buf(),
            expected: f.crc32c.clone(),
            found: crc,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut windows = BTreeMap::new();
        windows.insert("cq/src".to_string(), vec![1, 2, 3, 4]);
        windows.insert("cq/agg".to_string(), vec![9; 1000]);
        Snapshot {
            project: "p".into(),
            fingerprint: 0xabc,
            state: ProjectState {
                project: "p".into(),
                publishers: vec![Position::Fs {
                    connector: "cq/src/pub".into(),
                    line: 12,
                }],
                subscribers: vec![],
            },
            windows,
        }
    }

    #[test]
    fn round_trip_and_overwrite() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snap");
        write_snapshot(&dir, &sample(), 1).unwrap();
        assert!(dir.join("project.state").exists());
        assert!(dir.join("queries").is_dir());
        assert_eq!(read_snapshot(&dir, "p", 0xabc).unwrap(), sample());
        let mut s2 = sample();
        s2.windows.insert("cq/src".into(), vec![7; 10]);
        write_snapshot(&dir, &s2, 2).unwrap();
        assert_eq!(read_snapshot(&dir, "p", 0xabc).unwrap(), s2);
        // No leftovers next to it.
        let names: Vec<String> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec!["snap".to_string()]);
    }

    #[test]
    fn corruption_is_refused_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snap");
        write_snapshot(&dir, &sample(), 1).unwrap();
        let f = dir.join("queries/cq/agg.state");
        let mut b = fs::read(&f).unwrap();
        b[10] ^= 0x40;
        fs::write(&f, &b).unwrap();
        let e = read_snapshot(&dir, "p", 0xabc).unwrap_err();
        assert!(matches!(e, PersistError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("agg.state"), "{e}");
        b.truncate(5);
        fs::write(&f, &b).unwrap();
        assert!(matches!(
            read_snapshot(&dir, "p", 0xabc).unwrap_err(),
            PersistError::Size { .. }
        ));
        fs::remove_file(&f).unwrap();
        assert!(matches!(
            read_snapshot(&dir, "p", 0xabc).unwrap_err(),
            PersistError::MissingFile { .. }
        ));
    }

    #[test]
    fn a_streamed_decoder_that_fails_on_a_corrupted_file_is_told_the_file_is_corrupted() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snap");
        write_snapshot(&dir, &sample(), 1).unwrap();
        // A decoder that gives up at the first byte it dislikes, before the end of the file.
        let picky = |w: &str, f: &mut WindowFile| -> Result<(), String> {
            let (buf, range) = f
                .next_piece(Vec::new())
                .map_err(|e| e.to_string())?
                .unwrap();
            if buf[range.start] == 0xee {
                return Err(format!("{w}: first byte 0xee"));
            }
            Ok(())
        };
        let f = dir.join("queries/cq/agg.state");
        let good = fs::read(&f).unwrap();
        // The checksum fails: that is the error, whatever the decoder said.
        let mut bad = good.clone();
        bad[0] = 0xee;
        fs::write(&f, &bad).unwrap();
        let e = read_snapshot_streamed(&dir, "p", 0xabc, picky).unwrap_err();
        assert!(matches!(e, PersistError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("agg.state"), "{e}");
        // The file is whole but the decoder refuses it: its reason, with the file's name.
        fs::write(&f, &good).unwrap();
        let e = read_snapshot_streamed(&dir, "p", 0xabc, |w, f| -> Result<(), String> {
            picky(w, f)?;
            match w {
                "cq/agg" => Err(format!("{w} does not fit")),
                _ => Ok(()),
            }
        })
        .unwrap_err();
        assert!(matches!(e, PersistError::BadFile { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("agg.state"), "{msg}");
        assert!(msg.contains("does not fit"), "{msg}");
        // A missing file is refused before any window is handed to the decoder.
        fs::remove_file(dir.join("queries/cq/src.state")).unwrap();
        let mut called = 0;
        let e = read_snapshot_streamed(&dir, "p", 0xabc, |_, _| -> Result<(), String> {
            called += 1;
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(e, PersistError::MissingFile { .. }), "{e}");
        assert_eq!(called, 0);
    }

    #[test]
    fn a_flipped_byte_anywhere_in_any_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snap");
        write_snapshot(&dir, &sample(), 1).unwrap();
        let mut files = vec![dir.join("MANIFEST"), dir.join("project.state")];
        files.push(dir.join("queries/cq/src.state"));
        files.push(dir.join("queries/cq/agg.state"));
        for f in files {
            let good = fs::read(&f).unwrap();
            // Every byte of small files, a spread of positions in large ones.
            let step = (good.len() / 64).max(1);
            for pos in (0..good.len()).step_by(step) {
                let mut bad = good.clone();
                bad[pos] ^= 0x01;
                fs::write(&f, &bad).unwrap();
                assert!(
                    read_snapshot(&dir, "p", 0xabc).is_err(),
                    "{}: a flipped bit at byte {pos} was not noticed",
                    f.display()
                );
            }
            fs::write(&f, &good).unwrap();
        }
        assert_eq!(read_snapshot(&dir, "p", 0xabc).unwrap(), sample());
    }

    #[test]
    fn wrong_project_fingerprint_and_newer_version_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snap");
        write_snapshot(&dir, &sample(), 1).unwrap();
        assert!(matches!(
            read_snapshot(&dir, "q", 0xabc).unwrap_err(),
            PersistError::WrongProject { .. }
        ));
        assert!(matches!(
            read_snapshot(&dir, "p", 0xdef).unwrap_err(),
            PersistError::Fingerprint { .. }
        ));
        let m = fs::read_to_string(dir.join("MANIFEST"))
            .unwrap()
            .replace("\"version\": 1", "\"version\": 7");
        fs::write(dir.join("MANIFEST"), m).unwrap();
        let e = read_snapshot(&dir, "p", 0xabc).unwrap_err();
        assert!(e.to_string().contains("version 7 is newer"), "{e}");
        fs::remove_file(dir.join("MANIFEST")).unwrap();
        assert!(matches!(
            read_snapshot(&dir, "p", 0xabc).unwrap_err(),
            PersistError::NoManifest { .. }
        ));
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_target_holding_other_files_is_refused_and_left_as_it_was() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snap");
        write_snapshot(&dir, &sample(), 1).unwrap();
        fs::write(dir.join("operator.log"), b"keep me").unwrap();
        let before = entries(&dir);
        let mut s2 = sample();
        s2.windows.insert("cq/src".into(), vec![7; 10]);
        let e = write_snapshot(&dir, &s2, 2).unwrap_err();
        assert!(matches!(e, PersistError::Foreign { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("holds 1 entry that is not part of a Sluice snapshot: 'operator.log'"),
            "{msg}"
        );
        assert_eq!(fs::read(dir.join("operator.log")).unwrap(), b"keep me");
        assert_eq!(entries(&dir), before);
        assert_eq!(read_snapshot(&dir, "p", 0xabc).unwrap(), sample());

        // A file among the window files is someone else's too.
        fs::remove_file(dir.join("operator.log")).unwrap();
        fs::write(dir.join("queries/cq/notes.txt"), b"mine").unwrap();
        let e = write_snapshot(&dir, &s2, 2).unwrap_err();
        assert!(e.to_string().contains("'queries/cq/notes.txt'"), "{e}");
        assert_eq!(fs::read(dir.join("queries/cq/notes.txt")).unwrap(), b"mine");
        fs::remove_file(dir.join("queries/cq/notes.txt")).unwrap();
        write_snapshot(&dir, &s2, 2).unwrap();
        assert_eq!(read_snapshot(&dir, "p", 0xabc).unwrap(), s2);

        // A directory of other files: up to three named, nothing created in it.
        let other = t.path().join("other");
        fs::create_dir(&other).unwrap();
        for n in ["a", "b", "c", "d", "e"] {
            fs::write(other.join(n), n).unwrap();
        }
        let e = write_snapshot(&other, &sample(), 1).unwrap_err();
        assert!(
            e.to_string().contains(
                "holds 5 entries that are not part of a Sluice snapshot: 'a', 'b', 'c' and 2 more"
            ),
            "{e}"
        );
        assert_eq!(entries(&other), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn layout_inside_the_directory_and_no_leftovers() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snap");
        for g in 1..=3u64 {
            let mut s = sample();
            s.state.publishers = vec![Position::Fs {
                connector: "cq/src/pub".into(),
                line: g,
            }];
            write_snapshot(&dir, &s, g).unwrap();
            assert_eq!(read_snapshot(&dir, "p", 0xabc).unwrap(), s);
            let names = entries(&dir);
            let gens: Vec<&String> = names.iter().filter(|n| n.starts_with(GEN_PREFIX)).collect();
            assert_eq!(gens.len(), 1, "{names:?}");
            let m = read_manifest(&dir).unwrap();
            assert_eq!(&m.dir, gens[0]);
            assert_eq!(
                names,
                [
                    ".sluice-lock",
                    gens[0],
                    "MANIFEST",
                    "project.state",
                    "queries"
                ]
            );
            // The links tools look for lead into the generation.
            assert_eq!(
                fs::read_link(dir.join("queries")).unwrap(),
                Path::new(&m.dir).join("queries")
            );
            assert!(dir.join("queries/cq/agg.state").is_file());
        }
        assert_eq!(entries(t.path()), ["snap"]);
    }

    /// A snapshot as the previous version wrote it: the files in DIR itself, no "dir".
    fn write_legacy(dir: &Path, snap: &Snapshot) {
        let t = tempfile::tempdir().unwrap();
        let new = t.path().join("new");
        write_snapshot(&new, snap, 1).unwrap();
        let mut m = read_manifest(&new).unwrap();
        let gen = new.join(&m.dir);
        for f in &m.files {
            let to = dir.join(&f.path);
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(gen.join(&f.path), to).unwrap();
        }
        m.dir.clear();
        m.checksum = m.own_checksum();
        fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    }

    #[test]
    fn a_snapshot_of_the_previous_layout_restores_and_is_replaced() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snap");
        fs::create_dir(&dir).unwrap();
        write_legacy(&dir, &sample());
        assert!(!fs::read_to_string(dir.join(MANIFEST))
            .unwrap()
            .contains("\"dir\""));
        assert_eq!(read_snapshot(&dir, "p", 0xabc).unwrap(), sample());
        let mut s2 = sample();
        s2.windows.insert("cq/other".into(), vec![5; 3]);
        write_snapshot(&dir, &s2, 2).unwrap();
        assert_eq!(read_snapshot(&dir, "p", 0xabc).unwrap(), s2);
        // The old files are gone; the names are links into the generation.
        assert!(fs::symlink_metadata(dir.join("queries"))
            .unwrap()
            .is_symlink());
        assert!(fs::symlink_metadata(dir.join("project.state"))
            .unwrap()
            .is_symlink());
        assert_eq!(entries(&dir).len(), 5, "{:?}", entries(&dir));
    }

    #[test]
    fn a_manifest_naming_a_directory_outside_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snap");
        write_snapshot(&dir, &sample(), 1).unwrap();
        for bad in ["../x", ".sluice-snap-1/../../x", "queries", "/etc"] {
            let mut m = read_manifest(&dir).unwrap();
            m.dir = bad.to_string();
            m.checksum = m.own_checksum();
            fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
            let e = read_snapshot(&dir, "p", 0xabc).unwrap_err();
            assert!(
                e.to_string().contains("is not a generation directory"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_manifest_listing_a_file_twice_is_refused_whole() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snap");
        write_snapshot(&dir, &sample(), 1).unwrap();
        let mut m = read_manifest(&dir).unwrap();
        let again = m
            .files
            .iter()
            .find(|f| f.path.ends_with("agg.state"))
            .unwrap()
            .clone();
        m.files.push(again);
        m.checksum = m.own_checksum();
        fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        let e = read_snapshot(&dir, "p", 0xabc).unwrap_err();
        assert!(matches!(e, PersistError::BadManifest { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("file 'queries/cq/agg.state' is listed twice"),
            "{e}"
        );
        let mut called = 0;
        let e = read_snapshot_streamed(&dir, "p", 0xabc, |_, _| -> Result<(), String> {
            called += 1;
            Ok(())
        })
        .unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        assert_eq!(called, 0, "a window was handed over before the refusal");
    }
}
