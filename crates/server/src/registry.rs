//! The projects of a server and their life cycle:
//!
//! ```text
//!   PUT projects/p (start=false)        value=running            value=connectorsStarted
//!  ─────────────────────────────▶ stopped ───────────▶ running ───────────────────────▶ running
//!                                    ▲                  │                              + connectors
//!                                    └── value=stopped ─┴──────────────────────────────────┘
//! ```
//!
//! A project is compiled when it is loaded; one whose windows the engine cannot run (or whose
//! expressions do not compile) still loads, and fails at start with the engine's diagnostics.
//! Every compiled project has a thread ([`crate::project`]) from load to delete, so its window
//! state survives a stop and a start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sluice_engine::Engine;
use sluice_model::{Diagnostic, ProjectSpec};

use crate::project::{self, Cmd, ProjectHandle, ProjectInfo, ThreadConfig};
use crate::reply::ApiError;

/// One loaded project.
pub struct Project {
    pub spec: Arc<ProjectSpec>,
    /// The windows when the project compiled, else why not.
    pub compiled: Result<Arc<ProjectInfo>, Arc<Vec<Diagnostic>>>,
    pub handle: Option<ProjectHandle>,
    pub running: bool,
    pub connectors_started: bool,
}

impl Project {
    /// `running` or `stopped`.
    pub fn state(&self) -> &'static str {
        if self.running {
            "running"
        } else {
            "stopped"
        }
    }
}

/// A read-only view of a project for one request.
#[derive(Clone)]
pub struct ProjectView {
    pub spec: Arc<ProjectSpec>,
    pub compiled: Result<Arc<ProjectInfo>, Arc<Vec<Diagnostic>>>,
    pub handle: Option<ProjectHandle>,
    pub running: bool,
    pub connectors_started: bool,
}

/// Options of a load (`PUT projects/{name}`).
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    pub overwrite: bool,
    pub start: bool,
    pub connectors: bool,
}

/// All projects of the server.
pub struct Registry {
    projects: Mutex<BTreeMap<String, Project>>,
    /// Serialises life-cycle changes (loads, starts, stops, deletes); queries do not take it.
    admin: tokio::sync::Mutex<()>,
    /// One lock per snapshot directory in use: persists and restores of one path take turns
    /// (whichever project, whichever request), so a commit never meets another write or a
    /// read half-way. An entry lives while some request holds or waits for it.
    paths: PathLocks,
    cfg: ThreadConfig,
}

/// Locks by snapshot directory.
#[derive(Default)]
struct PathLocks(Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>);

/// Holds the lock of one snapshot directory; forgets the entry when no one else wants it.
struct PathGuard<'a> {
    locks: &'a PathLocks,
    key: PathBuf,
    lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl PathLocks {
    async fn lock(&self, dir: &Path) -> PathGuard<'_> {
        let key = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let m = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let lock = Some(m.lock_owned().await);
        PathGuard {
            locks: self,
            key,
            lock,
        }
    }
}

impl Drop for PathGuard<'_> {
    fn drop(&mut self) {
        drop(self.lock.take());
        let mut map = self.locks.0.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "project '{name}' does not exist: load it first with PUT projects/{name} and the project XML as the body"
    ))
}

/// Longest project name, in bytes.
pub const MAX_NAME: usize = 128;

/// The rule for a project name given in a URL (it names the project's snapshot directory in
/// a server-wide persist): 1 to 128 ASCII letters, digits, `_`, `-` and `.`, starting with a
/// letter, a digit or `_`. So `.`, `..` and names with `/` are refused.
pub fn check_project_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "project name '{}' is not allowed: a project name is 1 to {MAX_NAME} ASCII letters, digits, '_', '-' and '.', starting with a letter, a digit or '_'",
            crate::reply::cut(name, 200)
        )))
    }
}

/// Gives each project parsed from `xml` the `<project>` element as written, `@NAME@`
/// placeholders unresolved: `GET projectXml` and `windowXml` show that one, so the values the
/// server's environment gave them do not reach clients. (The element is only shown: the spec's
/// other fields keep the resolved values.)
pub fn keep_as_written(xml: &str, specs: &mut [ProjectSpec]) {
    let Ok(root) = sluice_model::parse_xml_node(xml, &|_| None) else {
        return;
    };
    let written: Vec<&sluice_model::XmlNode> = match root.name.as_str() {
        "project" => vec![&root],
        _ => root
            .children_named("projects")
            .flat_map(|p| p.children_named("project"))
            .collect(),
    };
    if written.len() == specs.len() {
        for (spec, node) in specs.iter_mut().zip(written) {
            spec.node = node.clone();
        }
    }
}

/// Parses project XML for a load: exactly one project, renamed to `name`.
pub fn parse_for_load(name: &str, xml: &str) -> Result<ProjectSpec, ApiError> {
    if xml.trim().is_empty() {
        return Err(ApiError::bad(format!(
            "the body is empty: send the XML of project '{name}' as the body of PUT projects/{name}"
        )));
    }
    let lookup = |v: &str| std::env::var(v).ok();
    let mut spec = sluice_model::parse_project(xml, &lookup).map_err(|diags| {
        ApiError::bad(format!(
            "the project XML has {} problem(s); fix them and load again",
            diags.len()
        ))
        .with_details(diags.iter().map(|d| d.to_string()).collect())
    })?;
    keep_as_written(xml, std::slice::from_mut(&mut spec));
    if spec.name != name {
        spec.name = name.to_string();
        for (k, v) in &mut spec.node.attrs {
            if k == "name" {
                *v = name.to_string();
            }
        }
    }
    Ok(spec)
}

impl Registry {
    /// An empty registry.
    pub fn new(cfg: ThreadConfig) -> Registry {
        Registry {
            projects: Mutex::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            paths: PathLocks::default(),
            cfg,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Project>> {
        self.projects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names of all projects, sorted.
    pub fn names(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    /// A view of one project.
    pub fn get(&self, name: &str) -> Result<ProjectView, ApiError> {
        let map = self.map();
        let p = map.get(name).ok_or_else(|| missing(name))?;
        Ok(ProjectView {
            spec: p.spec.clone(),
            compiled: p.compiled.clone(),
            handle: p.handle.clone(),
            running: p.running,
            connectors_started: p.connectors_started,
        })
    }

    /// Views of all projects, sorted by name.
    pub fn all(&self) -> Vec<(String, ProjectView)> {
        self.map()
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    ProjectView {
                        spec: p.spec.clone(),
                        compiled: p.compiled.clone(),
                        handle: p.handle.clone(),
                        running: p.running,
                        connectors_started: p.connectors_started,
                    },
                )
            })
            .collect()
    }

    /// Loads a project (and starts it and its connectors when asked).
    pub async fn load(&self, spec: ProjectSpec, opts: LoadOptions) -> Result<String, ApiError> {
        let _admin = self.admin.lock().await;
        let name = spec.name.clone();
        if !opts.overwrite && self.map().contains_key(&name) {
            return Err(ApiError::conflict(format!(
                "project '{name}' already exists: delete it first (DELETE projects/{name}) or load with overwrite=true"
            )));
        }
        let (compiled, engine) = match Engine::new(&spec) {
            Ok(e) => (Ok(Arc::new(ProjectInfo::new(&e, &spec))), Some(e)),
            Err(d) => (Err(Arc::new(d)), None),
        };
        if opts.start {
            if let Err(d) = &compiled {
                return Err(cannot_start(&name, d));
            }
        }
        let spec = Arc::new(spec);
        let handle = match engine {
            Some(e) => Some(
                project::spawn(spec.clone(), e, self.cfg.clone()).map_err(|e| {
                    ApiError::new(
                        500,
                        format!("cannot start the thread of project '{name}': {e}"),
                    )
                })?,
            ),
            None => None,
        };
        let old = self.map().insert(
            name.clone(),
            Project {
                spec,
                compiled,
                handle,
                running: false,
                connectors_started: false,
            },
        );
        if let Some(old) = old {
            if let Some(h) = old.handle {
                h.send(Cmd::Shutdown);
            }
            tracing::info!(target: "esp.server", "project {name}: previous version deleted (overwrite=true)");
        }
        tracing::info!(target: "esp.server", "project {name} loaded");
        let restore_dir = self.map().get(&name).and_then(|p| p.spec.restore.clone());
        if let Some(dir) = restore_dir {
            if let Err(e) = self
                .restore_locked(&name, std::path::PathBuf::from(&dir), true)
                .await
            {
                // A project whose restore="DIR" cannot be honoured is not kept half-loaded.
                if let Some(p) = self.map().remove(&name) {
                    if let Some(h) = p.handle {
                        h.send(Cmd::Shutdown);
                    }
                }
                return Err(e);
            }
        }
        if opts.start {
            self.start_locked(&name).await?;
            if opts.connectors {
                self.start_connectors_locked(&name).await?;
            }
        }
        Ok(format!("load project {name} succeeded"))
    }

    /// Deletes a project (stopping it first).
    pub async fn delete(&self, name: &str) -> Result<String, ApiError> {
        let _admin = self.admin.lock().await;
        let p = self.map().remove(name).ok_or_else(|| missing(name))?;
        if let Some(h) = p.handle {
            h.send(Cmd::Shutdown);
        }
        tracing::info!(target: "esp.server", "project {name} deleted");
        Ok(format!("project {name} successfully deleted"))
    }

    /// `value=running`.
    pub async fn start(&self, name: &str) -> Result<String, ApiError> {
        let _admin = self.admin.lock().await;
        self.start_locked(name).await
    }

    async fn start_locked(&self, name: &str) -> Result<String, ApiError> {
        let v = self.get(name)?;
        if v.running {
            return Err(ApiError::conflict(format!(
                "project '{name}' is already running (stop it with value=stopped first to restart it)"
            )));
        }
        let handle = match (&v.compiled, &v.handle) {
            (Ok(_), Some(h)) => h.clone(),
            (Err(d), _) => return Err(cannot_start(name, d)),
            _ => {
                return Err(ApiError::new(
                    500,
                    format!("project '{name}' has no engine"),
                ))
            }
        };
        handle
            .ask(|r| Cmd::SetRunning(true, r))
            .await
            .ok_or_else(|| gone(name))?;
        if let Some(p) = self.map().get_mut(name) {
            p.running = true;
        }
        tracing::info!(target: "esp.server", "project {name} started");
        Ok(format!("project {name} successfully started"))
    }

    /// `value=stopped`: stops the project and its connectors; window state is kept.
    pub async fn stop(&self, name: &str) -> Result<String, ApiError> {
        let _admin = self.admin.lock().await;
        let v = self.get(name)?;
        if !v.running {
            return Err(ApiError::conflict(format!(
                "project '{name}' is already stopped (start it with value=running)"
            )));
        }
        if let Some(h) = &v.handle {
            h.ask(|r| Cmd::SetRunning(false, r))
                .await
                .ok_or_else(|| gone(name))?;
        }
        if let Some(p) = self.map().get_mut(name) {
            p.running = false;
            p.connectors_started = false;
        }
        tracing::info!(target: "esp.server", "project {name} stopped");
        Ok(format!("project {name} successfully stopped"))
    }

    /// `value=connectorsStarted`.
    pub async fn start_connectors(&self, name: &str) -> Result<String, ApiError> {
        let _admin = self.admin.lock().await;
        self.start_connectors_locked(name).await
    }

    async fn start_connectors_locked(&self, name: &str) -> Result<String, ApiError> {
        let v = self.get(name)?;
        if !v.running {
            return Err(ApiError::conflict(format!(
                "project '{name}' is stopped: start it first with PUT projects/{name}/state?value=running, then start its connectors"
            )));
        }
        if v.connectors_started {
            return Err(ApiError::conflict(format!(
                "the connectors of project '{name}' are already started (stop the project to stop them)"
            )));
        }
        let h = v.handle.ok_or_else(|| gone(name))?;
        h.ask(Cmd::StartConnectors)
            .await
            .ok_or_else(|| gone(name))??;
        if let Some(p) = self.map().get_mut(name) {
            p.connectors_started = true;
        }
        tracing::info!(target: "esp.server", "project {name}: connectors started");
        Ok(format!("connectors started for project '{name}'"))
    }

    /// `value=persisted`: a consistent snapshot, running or not.
    pub async fn persist(&self, name: &str, dir: std::path::PathBuf) -> Result<String, ApiError> {
        let _turn = self.paths.lock(&dir).await;
        let v = self.get(name)?;
        let h = v.handle.ok_or_else(|| {
            ApiError::conflict(format!(
                "project '{name}' did not compile, so it has no state to persist: fix the model and load it again"
            ))
        })?;
        h.ask(|reply| Cmd::Persist { dir, reply })
            .await
            .ok_or_else(|| gone(name))?
    }

    /// `value=restored`: into a loaded project that is not running. A refusal because Kafka
    /// retention removed the snapshot's offsets names the newest usable snapshot beside it.
    pub async fn restore(&self, name: &str, dir: std::path::PathBuf) -> Result<String, ApiError> {
        let _admin = self.admin.lock().await;
        self.restore_locked(name, dir, true).await
    }

    /// As [`Registry::restore`], without looking for a usable snapshot beside a refused one
    /// (`--restore-from` tries them all in turn).
    pub async fn restore_only(
        &self,
        name: &str,
        dir: std::path::PathBuf,
    ) -> Result<String, ApiError> {
        let _admin = self.admin.lock().await;
        self.restore_locked(name, dir, false).await
    }

    async fn restore_locked(
        &self,
        name: &str,
        dir: std::path::PathBuf,
        suggest: bool,
    ) -> Result<String, ApiError> {
        let v = self.get(name)?;
        if v.running {
            return Err(ApiError::conflict(format!(
                "project '{name}' is running: stop it first (value=stopped), then restore it"
            )));
        }
        let h = v.handle.ok_or_else(|| {
            ApiError::conflict(format!(
                "project '{name}' did not compile: fix the model and load it again before restoring"
            ))
        })?;
        let _turn = self.paths.lock(&dir).await;
        h.ask(|reply| Cmd::Restore {
            dir,
            suggest,
            reply,
        })
        .await
        .ok_or_else(|| gone(name))?
    }

    /// Stops and deletes every project (server shutdown, `reloaded`).
    pub async fn clear(&self) {
        let _admin = self.admin.lock().await;
        let all = std::mem::take(&mut *self.map());
        for (name, p) in all {
            if let Some(h) = p.handle {
                h.send(Cmd::Shutdown);
                // A command queued after Shutdown is dropped when the thread ends: waiting
                // for its reply waits (bounded) for the connectors to stop, so a hot failover
                // connector leaves its election before the process exits.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), h.ask(Cmd::Sync))
                    .await;
            }
            tracing::info!(target: "esp.server", "project {name} deleted");
        }
    }
}

/// The project's thread ended while a request was on its way: the project was deleted or
/// replaced meanwhile (a conflict with that request, not a server fault).
pub fn gone(name: &str) -> ApiError {
    ApiError::conflict(format!(
        "project '{name}' was deleted or replaced while this request was on its way: nothing was done; look at GET projects/{name} and try again"
    ))
}

fn cannot_start(name: &str, diags: &[Diagnostic]) -> ApiError {
    ApiError::bad(format!(
        "project '{name}' cannot start: the engine cannot run it ({} problem(s)); fix the model and load it again",
        diags.len()
    ))
    .with_details(diags.iter().map(|d| d.to_string()).collect())
}
