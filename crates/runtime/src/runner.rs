//! [`Runner`]: one project with its fs connectors.
//!
//! Publishers run one after another, each to the end of its file: in the order of the
//! project's connector groups when it has `project-connectors` orchestration, else in
//! document order. Running them one at a time keeps the input order, and so the output,
//! deterministic (the commercial tool starts them all at once and interleaves them).

use std::collections::BTreeMap;
use std::path::Path;

use sluice_connector::{ConnectorError, FsPublisher, FsSubscriber};
use sluice_engine::{Diagnostic, Engine, Sink, WindowId};
use sluice_event::{Event, MsgId};
use sluice_model::{ConnectorDirection, ConnectorSpec, ProjectSpec};

use crate::bad::BadEvents;

/// Why a project cannot run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("project '{project}' cannot start:\n{}", .diags.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        project: String,
        diags: Vec<Diagnostic>,
    },
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("connector '{connector}': unsupported connector class '{class}' for `sluice run` (supported: fs)")]
    UnsupportedClass { connector: String, class: String },
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Snapshot(#[from] sluice_persist::PersistError),
    #[error("snapshot {dir}: {error}")]
    Restore {
        dir: String,
        #[source]
        error: sluice_engine::RestoreError,
    },
    #[error("snapshot {dir}: {why}")]
    Position { dir: String, why: String },
}

/// Counts from a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub blocks: u64,
    pub events: u64,
    pub bad: u64,
}

struct Subs {
    by_window: BTreeMap<WindowId, Vec<FsSubscriber>>,
    paths: Vec<String>,
    bad: BadEvents,
    error: Option<std::io::Error>,
    /// Every observed window's output as text, when capturing (tests).
    capture: Option<Vec<String>>,
}

impl Sink for Subs {
    fn output(&mut self, window: WindowId, id: MsgId, events: &[Event]) {
        if let Some(c) = &mut self.capture {
            for e in events {
                let mut line = format!("{} {} ", self.paths[window.0 as usize], id);
                sluice_event::csv::write_event(e, None, &mut line);
                if let Some(old) = &e.old {
                    line.push_str(" old=");
                    sluice_event::csv::write_row(old, None, &mut line);
                }
                c.push(line);
            }
        }
        if let Some(subs) = self.by_window.get_mut(&window) {
            for s in subs {
                if let Err(e) = s.write(events) {
                    self.error.get_or_insert(e);
                }
            }
        }
    }

    fn bad_event(&mut self, window: WindowId, event: &Event, reason: &str) {
        let path = &self.paths[window.0 as usize];
        self.bad.event(path, event, reason);
    }
}

/// One project with its file connectors.
pub struct Runner {
    pub engine: Engine,
    project: String,
    publishers: Vec<(WindowId, String, FsPublisher)>,
    subs: Subs,
}

/// Publish connectors in run order: orchestration groups first (topologically), the rest in
/// document order.
pub fn publisher_order(spec: &ProjectSpec) -> Vec<(String, String, ConnectorSpec)> {
    let mut all: Vec<(String, String, ConnectorSpec)> = Vec::new();
    for cq in &spec.contqueries {
        for w in &cq.windows {
            for c in &w.connectors {
                if c.direction == ConnectorDirection::Publish && c.active {
                    all.push((cq.name.clone(), w.name.clone(), c.clone()));
                }
            }
        }
    }
    order_connectors(spec, all)
}

/// Orders connectors `(cq, window, connector)`: those named in the project's connector
/// groups first, group by group in the groups' topological order (ties by document order),
/// then the rest in the order given.
pub fn order_connectors(
    spec: &ProjectSpec,
    mut all: Vec<(String, String, ConnectorSpec)>,
) -> Vec<(String, String, ConnectorSpec)> {
    if spec.connector_groups.is_empty() {
        return all;
    }
    // Kahn over groups, ties by document order.
    let names: Vec<&str> = spec
        .connector_groups
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    let mut indeg = vec![0usize; names.len()];
    for (_, t) in &spec.connector_group_edges {
        if let Some(i) = names.iter().position(|n| n == t) {
            indeg[i] += 1;
        }
    }
    let mut done = vec![false; names.len()];
    let mut order = Vec::new();
    while order.len() < names.len() {
        let Some(i) = (0..names.len()).find(|&i| !done[i] && indeg[i] == 0) else {
            // A cycle: the rest in document order.
            order.extend((0..names.len()).filter(|&i| !done[i]));
            break;
        };
        done[i] = true;
        order.push(i);
        for (s, t) in &spec.connector_group_edges {
            if s == names[i] {
                if let Some(j) = names.iter().position(|n| n == t) {
                    indeg[j] = indeg[j].saturating_sub(1);
                }
            }
        }
    }
    let mut out = Vec::new();
    for gi in order {
        for (entry, _state) in &spec.connector_groups[gi].entries {
            // entry: cq/window/connector
            let parts: Vec<&str> = entry.split('/').collect();
            if let [cq, w, c] = parts[..] {
                if let Some(pos) = all
                    .iter()
                    .position(|(a, b, s)| a == cq && b == w && s.name == c)
                {
                    out.push(all.remove(pos));
                }
            }
        }
    }
    out.extend(all);
    out
}

impl Runner {
    /// Compiles the project and opens its fs connectors; file names resolve against `base`.
    pub fn new(spec: &ProjectSpec, base: &Path, bad: BadEvents) -> Result<Runner, RunError> {
        Runner::with_dirs(spec, base, base, bad)
    }

    /// Like [`Runner::new`], with relative input files resolved against `input_base` and
    /// relative output files against `output_base`.
    pub fn with_dirs(
        spec: &ProjectSpec,
        input_base: &Path,
        output_base: &Path,
        bad: BadEvents,
    ) -> Result<Runner, RunError> {
        let mut engine = Engine::new(spec).map_err(|diags| RunError::Invalid {
            project: spec.name.clone(),
            diags,
        })?;
        let mut publishers = Vec::new();
        for (cq, w, c) in publisher_order(spec) {
            if c.class != "fs" {
                return Err(RunError::UnsupportedClass {
                    connector: format!("{cq}/{w}/{}", c.name),
                    class: c.class.clone(),
                });
            }
            let id = engine.window(&cq, &w).expect("compiled window");
            let node = engine.node(id);
            let autogen = match &node.imp {
                sluice_engine::window::WindowImpl::Source(s) => s.autogen.as_ref().map(|a| a.field),
                _ => None,
            };
            let p = FsPublisher::open(&c, &node.schema, autogen, input_base)?;
            publishers.push((id, format!("{}/{cq}/{w}/{}", spec.name, c.name), p));
        }
        let mut by_window: BTreeMap<WindowId, Vec<FsSubscriber>> = BTreeMap::new();
        for cq in &spec.contqueries {
            for w in &cq.windows {
                for c in &w.connectors {
                    if c.direction != ConnectorDirection::Subscribe || !c.active {
                        continue;
                    }
                    if c.class != "fs" {
                        return Err(RunError::UnsupportedClass {
                            connector: format!("{}/{}/{}", cq.name, w.name, c.name),
                            class: c.class.clone(),
                        });
                    }
                    let id = engine.window(&cq.name, &w.name).expect("compiled window");
                    let s = FsSubscriber::open(c, &engine.node(id).schema, output_base)?;
                    engine.observe(id, true);
                    by_window.entry(id).or_default().push(s);
                }
            }
        }
        let paths = engine
            .nodes()
            .iter()
            .map(|n| format!("{}/{}", spec.name, n.path))
            .collect();
        Ok(Runner {
            engine,
            project: spec.name.clone(),
            publishers,
            subs: Subs {
                by_window,
                paths,
                bad,
                error: None,
                capture: None,
            },
        })
    }

    /// Records every window's output as text (`p/cq/w ID OPCODE,FLAGS,fields[ old=...]`).
    pub fn capture_all(&mut self) {
        for i in 0..self.engine.nodes().len() {
            self.engine.observe(WindowId(i as u32), true);
        }
        self.subs.capture = Some(Vec::new());
    }

    /// The captured output lines so far (drained).
    pub fn take_captured(&mut self) -> Vec<String> {
        self.subs
            .capture
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Runs one block of the first publisher that still has input. Returns false when every
    /// publisher is at its end.
    pub fn step(&mut self, now: i64) -> Result<bool, RunError> {
        for (id, name, p) in &mut self.publishers {
            if let Some(batch) = p.next_batch()? {
                for b in &batch.bad {
                    self.subs.bad.line(name, b.line, &b.text, &b.reason);
                }
                if !batch.block.events.is_empty() {
                    self.engine
                        .inject(*id, batch.block, now, &mut self.subs)
                        .expect("publishers feed source windows");
                }
                return Ok(true);
            }
        }
        for subs in self.subs.by_window.values_mut() {
            for s in subs {
                s.flush()?;
            }
        }
        Ok(false)
    }

    /// A consistent snapshot (between blocks) of the engine and the publishers' positions.
    pub fn snapshot(&self) -> sluice_persist::Snapshot {
        let publishers = self
            .publishers
            .iter()
            .map(|(_, name, p)| sluice_persist::Position::Fs {
                connector: name.clone(),
                line: p.position(),
            })
            .collect();
        sluice_persist::Snapshot {
            project: self.project.clone(),
            fingerprint: self.engine.fingerprint(),
            state: sluice_persist::ProjectState {
                project: self.project.clone(),
                publishers,
                subscribers: Vec::new(),
            },
            windows: self.engine.snapshot_windows(),
        }
    }

    /// Writes a snapshot to `dir` (atomically); returns the bytes written.
    pub fn persist(&self, dir: &Path) -> Result<u64, RunError> {
        let snap = self.snapshot();
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(sluice_persist::write_snapshot(dir, &snap, ms)?)
    }

    /// Restores the snapshot in `dir`: verifies it whole, replaces every window's state, and
    /// moves each publisher to its recorded position. Nothing changes when it fails.
    pub fn restore(&mut self, dir: &Path) -> Result<(), RunError> {
        let (state, restoring) = crate::read_snapshot_into(&self.engine, dir, &self.project)?;
        let d = dir.display().to_string();
        // Check the positions before touching anything.
        let mut targets = Vec::new();
        for (i, (_, name, _)) in self.publishers.iter().enumerate() {
            let pos = state.publishers.iter().find_map(|p| match p {
                sluice_persist::Position::Fs { connector, line } if connector == name => {
                    Some(*line)
                }
                _ => None,
            });
            match pos {
                Some(l) => targets.push((i, l)),
                None => {
                    return Err(RunError::Position {
                        dir: d,
                        why: format!("no input position for publisher '{name}'"),
                    })
                }
            }
        }
        self.engine
            .finish_restore(restoring)
            .map_err(|error| RunError::Restore {
                dir: d.clone(),
                error,
            })?;
        for (i, line) in targets {
            self.publishers[i].2.skip_to(line)?;
        }
        Ok(())
    }

    /// The project name.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// Runs every publisher to the end of its input. `clock` gives the time for each block.
    /// The clock is read only when the project can use the time (`Engine::reads_clock`).
    pub fn run_to_end(&mut self, clock: &mut dyn FnMut() -> i64) -> Result<RunStats, RunError> {
        let timed = self.engine.reads_clock();
        let mut stats = RunStats::default();
        let before = self.subs.bad.count();
        for (id, name, p) in &mut self.publishers {
            while let Some(batch) = p.next_batch()? {
                for b in &batch.bad {
                    self.subs.bad.line(name, b.line, &b.text, &b.reason);
                }
                if batch.block.events.is_empty() {
                    continue;
                }
                stats.blocks += 1;
                stats.events += batch.block.events.len() as u64;
                self.engine
                    .inject(
                        *id,
                        batch.block,
                        if timed { clock() } else { 0 },
                        &mut self.subs,
                    )
                    .expect("publishers feed source windows");
            }
        }
        for subs in self.subs.by_window.values_mut() {
            for s in subs {
                s.flush()?;
            }
        }
        if let Some(e) = self.subs.error.take() {
            return Err(RunError::Io(e));
        }
        self.subs.bad.flush();
        stats.bad = self.subs.bad.count() - before;
        Ok(stats)
    }

    /// Bad events recorded so far.
    pub fn bad_count(&self) -> u64 {
        self.subs.bad.count()
    }
}
