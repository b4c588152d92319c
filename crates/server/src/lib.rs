//! The Sluice server: the ESP-compatible REST admin API (under `/SASESP/` and
//! `/eventStreamProcessing/v1/`), the project life cycle, WebSocket publishers and
//! subscribers on the HTTP port, and a line-oriented publish/subscribe protocol on the
//! `--pubsub` port (docs/rest-api.md, docs/formats/pubsub-protocol.md).
//!
//! Layout:
//! - [`cli`]: `sluice server` options.
//! - [`registry`]: the projects and their life cycle (load, start, connectorsStarted, stop, delete).
//! - [`project`]: one thread per loaded project that owns its engine (the single writer).
//! - [`api`]: the REST endpoints; [`reply`]: XML/JSON replies and errors.
//! - [`events`]: event text in (CSV, XML, JSON) and out; [`filter`]: functional filters.
//! - [`ws`]: WebSocket publishers and subscribers; [`pubsub`]: the `--pubsub` port protocol;
//!   [`subqueue`]: the bounded queue of each client subscriber (a slow one is dropped).
//! - [`http`]: the HTTP accept loop (header read timeout) and error bodies made below handlers;
//!   [`auth`]: `--auth-token` on every listener.
//! - [`kafka`]: Kafka publishers and subscribers in a project thread, and hot failover.
//! - [`logging`]: log lines and run-time logger levels.
//!
//! Start with [`Server::start`]: it binds the ports, loads the `--model` projects and serves
//! until [`Server::shutdown`] or `PUT server/state?value=stopped`.

pub mod api;
pub mod apidocs;
pub mod auth;
pub mod cli;
pub mod events;
pub mod filter;
pub mod http;
pub mod kafka;
pub mod logging;
pub mod project;
pub mod pubsub;
pub mod recovery;
pub mod registry;
pub mod reply;
pub mod subqueue;
pub mod ws;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use sluice_model::ProjectSpec;
use tokio::sync::watch;

use crate::project::ThreadConfig;
use crate::registry::{LoadOptions, Registry};

/// Server settings (from `sluice server` options, or built by tests).
#[derive(Clone, Debug)]
pub struct Config {
    /// Address the HTTP and pubsub ports bind to (default 127.0.0.1).
    pub bind: IpAddr,
    /// HTTP port (0: any free port).
    pub http_port: u16,
    /// Pubsub port (0: any free port; None: no pubsub listener).
    pub pubsub_port: Option<u16>,
    /// The bad-events file.
    pub badevents: Option<PathBuf>,
    /// Model files loaded and started at startup (and by `server/state?value=reloaded`).
    pub models: Vec<PathBuf>,
    /// When set, every request on every listener needs the token (crate::auth).
    pub auth_token: Option<String>,
    /// `--insecure-no-token`: allows binding a non-loopback address without `auth_token`
    /// (a trusted network). Without it such a bind refuses to start.
    pub insecure_no_token: bool,
    /// Largest accepted request body, in bytes.
    pub max_body: usize,
    /// Time a client has to send a request's headers; then the connection is closed (30 s).
    pub header_read_timeout: Duration,
    /// `--subscriber-queue`: events a client subscriber (WebSocket or pubsub port) may have
    /// waiting to be sent before it is dropped as too slow (crate::subqueue).
    pub subscriber_queue: usize,
    /// When set, persist/restore paths must lie inside this directory.
    pub persist_root: Option<PathBuf>,
    /// `--allow-path`: when not empty, every file or directory named over the API (eventUrl,
    /// projectUrl, fs connectors of models loaded over REST, persist and restore paths when
    /// no persist root is set) must lie inside one of these, symbolic links resolved.
    pub file_roots: Vec<PathBuf>,
    /// Where relative connector file names resolve (the working directory).
    pub base: PathBuf,
    /// Time between "current publish rate" log lines.
    pub rate_interval: Duration,
    /// `--persist-dir`: scheduled snapshots go to `DIR/<project>/<UTC timestamp>-<seq>`
    /// (docs/operations.md; only on a standby, one standby at a time).
    pub persist_dir: Option<PathBuf>,
    /// `--persist-interval`: time between scheduled snapshots.
    pub persist_interval: Duration,
    /// `--persist-keep`: scheduled snapshots kept per project (the newest).
    pub persist_keep: usize,
    /// `--restore-from`: at start, restore each `--model` project from the newest usable
    /// snapshot under `DIR/<project>` before starting it and its connectors.
    pub restore_from: Option<PathBuf>,
    /// Stop gracefully on SIGTERM and SIGINT (the `sluice server` command sets it; tests that
    /// run servers in-process do not). The handlers are installed before the ports are bound,
    /// so a signal can never find the server without them.
    pub handle_signals: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_port: 0,
            pubsub_port: Some(0),
            badevents: None,
            models: Vec::new(),
            auth_token: None,
            insecure_no_token: false,
            max_body: 16 << 20,
            header_read_timeout: http::HEADER_READ_TIMEOUT,
            subscriber_queue: subqueue::DEFAULT_BOUND,
            persist_root: None,
            file_roots: Vec::new(),
            base: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            rate_interval: Duration::from_secs(10),
            persist_dir: None,
            persist_interval: Duration::from_secs(300),
            persist_keep: 3,
            restore_from: None,
            handle_signals: false,
        }
    }
}

/// What request handlers share.
pub struct AppState {
    pub cfg: Config,
    pub registry: Registry,
    pub http_addr: SocketAddr,
    pub pubsub_addr: Option<SocketAddr>,
    /// Set to true to stop the server.
    pub shutdown: watch::Sender<bool>,
    /// Client subscribers dropped for falling behind, since the server started.
    pub slow_subscribers_dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} port {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("model {path}: {message}")]
    Model { path: String, message: String },
    #[error("--bind {0} is reachable from other machines and no --auth-token is set: anyone who can reach the port could load, delete and read projects. Set --auth-token TOKEN (or SLUICE_AUTH_TOKEN), bind 127.0.0.1, or pass --insecure-no-token on a trusted network")]
    NoToken(IpAddr),
}

impl Config {
    /// Refuses settings that would expose the server: a non-loopback bind without a token
    /// (unless `insecure_no_token`).
    pub fn check(&self) -> Result<(), StartError> {
        let loopback = self.bind.to_canonical().is_loopback();
        if !loopback && self.auth_token.is_none() && !self.insecure_no_token {
            return Err(StartError::NoToken(self.bind));
        }
        Ok(())
    }
}

/// A running server.
pub struct Server {
    rt: Option<tokio::runtime::Runtime>,
    state: Arc<AppState>,
    done: watch::Receiver<bool>,
}

/// Reads the startup model files into projects.
pub(crate) fn read_models(paths: &[PathBuf]) -> Result<Vec<ProjectSpec>, StartError> {
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| StartError::Model {
            path: p.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        let lookup = |v: &str| std::env::var(v).ok();
        let mut specs =
            sluice_model::parse_models(&text, &lookup).map_err(|d| StartError::Model {
                path: p.display().to_string(),
                message: d
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
        registry::keep_as_written(&text, &mut specs);
        out.extend(specs);
    }
    Ok(out)
}

impl AppState {
    /// Loads and starts (with connectors) the startup model projects.
    pub async fn load_startup_models(&self) -> Result<usize, String> {
        let specs = read_models(&self.cfg.models).map_err(|e| e.to_string())?;
        let n = specs.len();
        for spec in specs {
            let name = spec.name.clone();
            self.registry
                .load(
                    spec,
                    LoadOptions {
                        overwrite: true,
                        start: true,
                        connectors: true,
                    },
                )
                .await
                .map_err(|e| format!("project {name}: {e}"))?;
        }
        Ok(n)
    }
}

impl Server {
    /// Binds the ports, loads the startup models and starts serving.
    pub fn start(cfg: Config) -> Result<Server, StartError> {
        cfg.check()?;
        if cfg.auth_token.is_none() && !cfg.bind.to_canonical().is_loopback() {
            tracing::warn!(target: "esp.server", "--insecure-no-token: listening on {} without a token", cfg.bind);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("sluice-io")
            .build()
            .map_err(StartError::Runtime)?;
        // Registered now (synchronously), before anything is bound or announced.
        let signals = if cfg.handle_signals {
            use tokio::signal::unix::{signal, SignalKind};
            let _in_runtime = rt.enter();
            let term = signal(SignalKind::terminate()).map_err(StartError::Runtime)?;
            let int = signal(SignalKind::interrupt()).map_err(StartError::Runtime)?;
            Some((term, int))
        } else {
            None
        };
        let http_addr = SocketAddr::new(cfg.bind, cfg.http_port);
        let http = rt
            .block_on(tokio::net::TcpListener::bind(http_addr))
            .map_err(|source| StartError::Bind {
                what: "HTTP",
                addr: http_addr,
                source,
            })?;
        let pubsub = match cfg.pubsub_port {
            Some(port) => {
                let addr = SocketAddr::new(cfg.bind, port);
                Some(
                    rt.block_on(tokio::net::TcpListener::bind(addr))
                        .map_err(|source| StartError::Bind {
                            what: "pubsub",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let http_addr = http.local_addr().expect("bound");
        let pubsub_addr = pubsub.as_ref().map(|l| l.local_addr().expect("bound"));
        let (shutdown, _) = watch::channel(false);
        let state = Arc::new(AppState {
            registry: Registry::new(ThreadConfig {
                badevents: cfg.badevents.clone(),
                base: cfg.base.clone(),
                rate_interval: cfg.rate_interval,
            }),
            cfg,
            http_addr,
            pubsub_addr,
            shutdown,
            slow_subscribers_dropped: Arc::default(),
        });
        tracing::info!(target: "esp.server", "engine started: sluice {} (ESP 6.2 REST surface)", env!("CARGO_PKG_VERSION"));
        let n = match &state.cfg.restore_from {
            Some(dir) => rt.block_on(recovery::restore_startup_models(&state, dir)),
            None => rt.block_on(state.load_startup_models()),
        };
        match n {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(target: "esp.server", "{n} project(s) loaded and started from the startup model")
            }
            Err(message) => {
                let _ = state.shutdown.send(true);
                return Err(StartError::Model {
                    path: state
                        .cfg
                        .models
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    message,
                });
            }
        }
        if let Some((mut term, mut int)) = signals {
            let st = state.clone();
            rt.spawn(async move {
                // SIGTERM (kill, service managers) or SIGINT (Ctrl-C): the same graceful stop,
                // so failover connectors leave the election at once instead of after a
                // session timeout.
                let why = tokio::select! {
                    _ = term.recv() => "terminated (SIGTERM)",
                    _ = int.recv() => "interrupted (SIGINT)",
                };
                tracing::info!(target: "esp.server", "{why}: stopping");
                let _ = st.shutdown.send(true);
            });
        }
        let (done_tx, done) = watch::channel(false);
        // Around the whole router (not per route), so that it sees replies as they leave it.
        let app = axum::Router::new()
            .fallback_service(api::router(state.clone()))
            .layer(axum::middleware::from_fn(http::fill_error_body));
        let stop = state.shutdown.subscribe();
        let st = state.clone();
        let header_timeout = state.cfg.header_read_timeout;
        rt.spawn(async move {
            tracing::info!(target: "esp.http", "HTTP server listening on {http_addr}");
            http::serve(http, app, header_timeout, stop).await;
            st.registry.clear().await;
            tracing::info!(target: "esp.server", "server stopped");
            let _ = done_tx.send(true);
        });
        if let Some(dir) = state.cfg.persist_dir.clone() {
            rt.spawn(recovery::persist_schedule(state.clone(), dir));
        }
        if let Some(l) = pubsub {
            tracing::info!(target: "esp.pubsub", "pubsub server listening on {}", pubsub_addr.expect("bound"));
            rt.spawn(pubsub::serve(l, state.clone()));
        }
        Ok(Server {
            rt: Some(rt),
            state,
            done,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.state.http_addr
    }

    /// The bound pubsub address.
    pub fn pubsub_addr(&self) -> Option<SocketAddr> {
        self.state.pubsub_addr
    }

    /// Asks the server to stop (as `server/state?value=stopped` does).
    pub fn shutdown(&self) {
        let _ = self.state.shutdown.send(true);
    }

    /// Waits until the server has stopped (at most `timeout`); true when it has.
    pub fn wait(&mut self, timeout: Option<Duration>) -> bool {
        let Some(rt) = &self.rt else { return true };
        let mut done = self.done.clone();
        rt.block_on(async move {
            let w = done.wait_for(|v| *v);
            match timeout {
                Some(t) => matches!(tokio::time::timeout(t, w).await, Ok(Ok(_))),
                None => w.await.is_ok(),
            }
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
        self.wait(Some(Duration::from_secs(5)));
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// `sluice server ARGS...`.
pub fn main(args: &[String]) -> ExitCode {
    let cfg = match cli::parse(args) {
        Ok(Some(c)) => c,
        Ok(None) => return ExitCode::SUCCESS,
        Err(code) => return code,
    };
    let (cfg, loglevel) = cfg;
    if let Err(e) = logging::init(loglevel.as_deref()) {
        eprintln!("sluice server: --loglevel: {e}");
        return ExitCode::from(2);
    }
    let mut server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: "esp.server", "{e}");
            eprintln!("sluice server: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.wait(None);
    ExitCode::SUCCESS
}
