//! The window graph of one project, run incrementally and deterministically.
//!
//! [`Engine::new`] compiles a [`ProjectSpec`] (schemas resolved, expressions parsed and
//! type-checked once, every problem reported with its line); [`Engine::inject`] runs one event
//! block from a source window through the graph in topological order and hands each observed
//! window's output, and every refused event, to a [`Sink`]; [`Engine::advance_time`] applies
//! wall-clock retention with a time the runtime supplies.
//!
//! Layout:
//! - `compile`: spec to windows, schemas, edges; diagnostics.
//! - `state`: keyed state with retention, shared by source, copy, union, filter and compute.
//! - `window/`: one module per window kind (`aggregate`, `join`; the small ones in `mod.rs`).
//!
//! Architecture invariant: no I/O, no clock reads, no iteration over hash order that can
//! reach output. Same input blocks and times, same output, byte for byte.

mod compile;
pub mod cow;
pub mod snapshot;
pub mod state;
pub mod window;

use sluice_event::{Event, EventBlock, MsgId, Row, Schema};
pub use sluice_model::Diagnostic;
use sluice_model::ProjectSpec;

use crate::window::{Splitter, WindowImpl};

/// A window of the engine: its index in topological order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowId(pub u32);

/// Where window output and refused events go.
pub trait Sink {
    /// The events a window emitted for one input block (called only for observed windows,
    /// only when non-empty). `id` is the message ID of the input block.
    fn output(&mut self, window: WindowId, id: MsgId, events: &[Event]);
    /// An event a window refused, with the reason. Processing goes on.
    fn bad_event(&mut self, window: WindowId, event: &Event, reason: &str);
}

/// A sink that keeps nothing.
pub struct NullSink;

impl Sink for NullSink {
    fn output(&mut self, _: WindowId, _: MsgId, _: &[Event]) {}
    fn bad_event(&mut self, _: WindowId, _: &Event, _: &str) {}
}

/// A sink that collects everything (tests, `projectResults`).
#[derive(Default, Debug)]
pub struct CollectSink {
    pub outputs: Vec<(WindowId, MsgId, Vec<Event>)>,
    pub bad: Vec<(WindowId, Event, String)>,
}

impl Sink for CollectSink {
    fn output(&mut self, window: WindowId, id: MsgId, events: &[Event]) {
        self.outputs.push((window, id, events.to_vec()));
    }
    fn bad_event(&mut self, window: WindowId, event: &Event, reason: &str) {
        self.bad.push((window, event.clone(), reason.to_string()));
    }
}

/// Errors of [`Engine::inject`] that concern the call, not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error(
        "window '{0}' is not a source window: events can only be published into source windows"
    )]
    NotSource(String),
}

/// Why a set of window files cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("window '{window}': {error}")]
    Decode {
        window: String,
        #[source]
        error: snapshot::DecodeError,
    },
    #[error("the snapshot has no state for window '{0}'")]
    Missing(String),
    #[error("the snapshot has state for window '{0}', which the project does not have")]
    Unknown(String),
}

/// A restore in progress: a copy of the engine's windows that window files are decoded into
/// (see [`Engine::restoring`]).
pub struct Restoring {
    fingerprint: u64,
    nodes: Vec<Node>,
    decoded: Vec<bool>,
}

impl Restoring {
    fn node(&mut self, path: &str) -> Result<&mut Node, RestoreError> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.path == path)
            .ok_or_else(|| RestoreError::Unknown(path.to_string()))?;
        self.decoded[i] = true;
        Ok(&mut self.nodes[i])
    }

    /// Decodes the state of window `path` (`cq/window`) from its whole file.
    pub fn decode(&mut self, path: &str, bytes: &[u8]) -> Result<(), RestoreError> {
        // One piece: the whole file.
        let mut whole = Some(bytes.to_vec());
        self.decode_pieces(path, bytes.len() as u64, &mut |_| {
            Ok(whole.take().map(|b| {
                let n = b.len();
                (b, 0..n)
            }))
        })
    }

    /// Decodes the state of window `path` from a file of `len` bytes that arrives in pieces
    /// from `next`, while it is still being read.
    pub fn decode_pieces(
        &mut self,
        path: &str,
        len: u64,
        next: snapshot::NextPiece<'_>,
    ) -> Result<(), RestoreError> {
        let n = self.node(path)?;
        snapshot::decode_window_pieces(
            len,
            next,
            &mut n.imp,
            n.splitter.as_mut().map(|s| &mut s.globals),
        )
        .map_err(|error| RestoreError::Decode {
            window: path.to_string(),
            error,
        })
    }

    /// How many windows have their state decoded so far.
    pub fn decoded(&self) -> usize {
        self.decoded.iter().filter(|d| **d).count()
    }
}

/// Every window's state frozen at a cut (see [`Engine::freeze`]). `Send`: encode it elsewhere.
#[derive(Clone, Debug)]
pub struct FrozenEngine {
    windows: Vec<(String, snapshot::Frozen)>,
}

impl FrozenEngine {
    /// The window files, keyed by `cq/window`.
    pub fn encode(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        self.windows
            .iter()
            .map(|(p, f)| (p.clone(), f.encode()))
            .collect()
    }

    /// Every window, keyed by `cq/window`, to be written with [`snapshot::Frozen::write_to`].
    pub fn windows(&self) -> impl Iterator<Item = (&str, &snapshot::Frozen)> {
        self.windows.iter().map(|(p, f)| (p.as_str(), f))
    }
}

/// An edge out of a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutEdge {
    pub target: WindowId,
    /// Input port of the target (join: 0 left, 1 right).
    pub port: u8,
    pub slot: Option<i32>,
}

/// One compiled window.
#[derive(Clone, Debug)]
pub struct Node {
    pub cq: String,
    pub name: String,
    /// `cq/window`.
    pub path: String,
    pub schema: Schema,
    pub imp: WindowImpl,
    pub edges: Vec<OutEdge>,
    pub splitter: Option<Splitter>,
    pub output_insert_only: bool,
    /// True when the window only ever emits inserts (known from the graph).
    pub insert_only: bool,
    pub observed: bool,
}

/// A compiled project.
#[derive(Clone, Debug)]
pub struct Engine {
    name: String,
    nodes: Vec<Node>,
    fingerprint: u64,
    inbox: Vec<Vec<(u8, Event)>>,
    /// Reused output buffer (no allocation per block).
    out_buf: Vec<Event>,
}

impl Engine {
    /// Compiles a project. Unsupported window kinds, schema problems and bad expressions are
    /// all reported, each with its line.
    pub fn new(spec: &ProjectSpec) -> Result<Engine, Vec<Diagnostic>> {
        let nodes = compile::compile(spec)?;
        let fingerprint = compile::fingerprint(&nodes);
        let inbox = nodes.iter().map(|_| Vec::new()).collect();
        Ok(Engine {
            name: spec.name.clone(),
            nodes,
            fingerprint,
            inbox,
            out_buf: Vec::new(),
        })
    }

    /// The project name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether processing may read the time handed to [`Engine::inject`]: some window has
    /// wall-clock retention (`bytime_*` without `field=`), or an expression calls `now()` or
    /// `today()`. When false the output does not depend on that time, so a runtime need not
    /// read its clock per block.
    pub fn reads_clock(&self) -> bool {
        self.nodes.iter().any(|n| {
            n.imp.reads_clock() || n.splitter.as_ref().is_some_and(|s| s.program.reads_clock())
        })
    }

    /// A stable hash of the windows, kinds, schemas and edges.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// All windows in processing order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One window.
    pub fn node(&self, w: WindowId) -> &Node {
        &self.nodes[w.0 as usize]
    }

    /// Mutable access to a window (snapshots).
    pub fn node_mut(&mut self, w: WindowId) -> &mut Node {
        &mut self.nodes[w.0 as usize]
    }

    /// Finds a window by continuous query and name.
    pub fn window(&self, cq: &str, name: &str) -> Option<WindowId> {
        self.nodes
            .iter()
            .position(|n| n.cq == cq && n.name == name)
            .map(|i| WindowId(i as u32))
    }

    /// Finds a window by `cq/window` path.
    pub fn window_by_path(&self, path: &str) -> Option<WindowId> {
        let (cq, name) = path.split_once('/')?;
        self.window(cq, name)
    }

    /// Whether `w`'s output goes to the sink.
    pub fn observe(&mut self, w: WindowId, on: bool) {
        self.nodes[w.0 as usize].observed = on;
    }

    /// Runs one block published into source window `w`. Refused events go to the sink's
    /// `bad_event`; a transactional block with a refused event is refused whole.
    pub fn inject(
        &mut self,
        w: WindowId,
        block: EventBlock,
        now: i64,
        sink: &mut dyn Sink,
    ) -> Result<(), InjectError> {
        let i = w.0 as usize;
        let WindowImpl::Source(src) = &self.nodes[i].imp else {
            return Err(InjectError::NotSource(self.nodes[i].path.clone()));
        };
        if block.transactional {
            if let Some((k, reason)) = src.check_block(&block.events) {
                let why = format!(
                    "transactional block refused whole: event {} of the block: {reason}",
                    k + 1
                );
                for ev in &block.events {
                    sink.bad_event(w, ev, &why);
                }
                return Ok(());
            }
        }
        // The inbox is empty between blocks: no clearing call per block.
        let inbox = &mut self.inbox[i];
        if !inbox.is_empty() {
            inbox.clear();
        }
        inbox.extend(block.events.into_iter().map(|e| (0u8, e)));
        self.run_from(i, block.id, now, sink);
        Ok(())
    }

    /// Wall-clock retention: the runtime calls this on each heartbeat with its time (µs).
    pub fn advance_time(&mut self, now: i64, sink: &mut dyn Sink) {
        for i in 0..self.nodes.len() {
            let mut out = Vec::new();
            self.nodes[i].imp.advance_time(now, &mut out);
            if !out.is_empty() {
                route(
                    &mut self.nodes[i],
                    &mut self.inbox,
                    i,
                    MsgId(0),
                    &mut out,
                    now,
                    sink,
                );
                self.run_from(i + 1, MsgId(0), now, sink);
            }
        }
    }

    /// Runs the windows from `start` on over what their inboxes hold. The inboxes and the
    /// output buffer are used in place (nothing taken out and put back, no clearing call on
    /// an empty vector): at blocksize 1 these are costs of every event.
    fn run_from(&mut self, start: usize, id: MsgId, now: i64, sink: &mut dyn Sink) {
        let out = &mut self.out_buf;
        if !out.is_empty() {
            out.clear();
        }
        for i in start..self.nodes.len() {
            let input = &mut self.inbox[i];
            if input.is_empty() {
                continue;
            }
            let node = &mut self.nodes[i];
            for (port, ev) in input.drain(..) {
                if let Err((reason, ev)) = node.imp.process(port, ev, now, out) {
                    sink.bad_event(WindowId(i as u32), &ev, &reason);
                }
            }
            if !out.is_empty() {
                route(node, &mut self.inbox, i, id, out, now, sink);
            }
        }
    }

    /// Every window's state at this cut between blocks, without copying it: maps are shared
    /// copy-on-write (`cow`), so this costs O(groups of shards), not O(state). Encode the result with
    /// [`FrozenEngine::encode`], on any thread, while the engine goes on.
    pub fn freeze(&self) -> FrozenEngine {
        FrozenEngine {
            windows: self
                .nodes
                .iter()
                .map(|n| {
                    let splitter = n.splitter.as_ref().map(|s| &s.globals);
                    (n.path.clone(), snapshot::freeze(&n.imp, splitter))
                })
                .collect(),
        }
    }

    /// The state of every window, encoded (docs/formats/snapshot.md), keyed by `cq/window`.
    /// Taken between blocks, so it is a consistent cut.
    pub fn snapshot_windows(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        self.freeze().encode()
    }

    /// Replaces every window's state with the decoded `files` (keyed by `cq/window`). All or
    /// nothing: on any error the engine is unchanged.
    pub fn restore_windows(
        &mut self,
        files: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Result<(), RestoreError> {
        let mut r = self.restoring();
        for (path, bytes) in files {
            r.decode(path, bytes)?;
        }
        self.finish_restore(r)
    }

    /// Starts a restore: window files are decoded into the returned copy of the windows, one
    /// by one as they are read ([`Restoring::decode_pieces`]); [`Engine::finish_restore`] then
    /// swaps it in. The engine is unchanged until then, so a restore that fails half way (a
    /// bad file, a checksum that does not match) leaves it as it was.
    pub fn restoring(&self) -> Restoring {
        Restoring {
            fingerprint: self.fingerprint(),
            nodes: self.nodes.clone(),
            decoded: vec![false; self.nodes.len()],
        }
    }

    /// Swaps in the state decoded by `r` once every window has its file.
    pub fn finish_restore(&mut self, r: Restoring) -> Result<(), RestoreError> {
        assert_eq!(
            r.fingerprint,
            self.fingerprint(),
            "a restore finishes in the engine it started from"
        );
        if let Some(i) = r.decoded.iter().position(|d| !d) {
            return Err(RestoreError::Missing(r.nodes[i].path.clone()));
        }
        self.nodes = r.nodes;
        Ok(())
    }

    /// The rows of a window sorted by key (empty for stateless windows).
    pub fn rows_sorted(&self, w: WindowId) -> Vec<std::borrow::Cow<'_, Row>> {
        let node = &self.nodes[w.0 as usize];
        let keys = node.schema.key_indices();
        let mut rows = node.imp.rows();
        rows.sort_by(|a, b| {
            keys.iter()
                .map(|&k| a[k].cmp(&b[k]))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        rows
    }

    /// Number of rows a window holds.
    pub fn row_count(&self, w: WindowId) -> usize {
        self.nodes[w.0 as usize].imp.row_count()
    }
}

/// Delivers window `i`'s output `events` to the sink (when observed) and to the inboxes of
/// its targets, leaving `events` empty.
fn route(
    node: &mut Node,
    inbox: &mut [Vec<(u8, Event)>],
    i: usize,
    id: MsgId,
    events: &mut Vec<Event>,
    now: i64,
    sink: &mut dyn Sink,
) {
    if node.observed {
        sink.output(WindowId(i as u32), id, events);
    }
    if node.output_insert_only {
        events.retain(|e| e.opcode == sluice_event::Opcode::Insert);
    }
    let edges = &node.edges;
    if edges.is_empty() {
        events.clear();
        return;
    }
    match &mut node.splitter {
        None => {
            let (last, rest) = edges.split_last().expect("non-empty");
            for e in rest {
                let t = e.target.0 as usize;
                inbox[t].extend(events.iter().map(|ev| (e.port, ev.clone())));
            }
            let t = last.target.0 as usize;
            let port = last.port;
            inbox[t].extend(events.drain(..).map(|ev| (port, ev)));
        }
        Some(sp) => {
            for ev in events.drain(..) {
                let slot = match sp.slot(&ev, now) {
                    Ok(s) => s,
                    Err(reason) => {
                        sink.bad_event(WindowId(i as u32), &ev, &format!("splitter: {reason}"));
                        continue;
                    }
                };
                for e in edges {
                    if e.slot.is_none_or(|s| s as i64 == slot) {
                        inbox[e.target.0 as usize].push((e.port, ev.clone()));
                    }
                }
            }
        }
    }
}
