//! The REST endpoints (reference 4.2) under `/SASESP/` and `/eventStreamProcessing/v1/`.
//! Every reply is XML unless the client sends `Accept: application/json` or `format=json`.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use sluice_engine::WindowId;
use sluice_event::{Row, Schema};

use crate::events::{self, EventFormat, ParseOptions};
use crate::filter::Filter;
use crate::logging;
use crate::project::{Cmd, ProjectInfo};
use crate::registry::{self, LoadOptions, ProjectView};
use crate::reply::{cut, ApiError, Elem, Format, Reply};
use crate::AppState;

/// The two roots the API answers under.
pub const ROOTS: [&str; 2] = ["/SASESP", "/eventStreamProcessing/v1"];

/// The router of the HTTP port.
pub fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new();
    for root in ROOTS {
        r = r
            .route(
                &format!("{root}/subscribers/{{*path}}"),
                get(crate::ws::subscriber),
            )
            .route(
                &format!("{root}/publishers/{{*path}}"),
                get(crate::ws::publisher),
            )
            .route(root, any(dispatch))
            .route(&format!("{root}/"), any(dispatch))
            .route(&format!("{root}/{{*rest}}"), any(dispatch));
    }
    r.fallback(unknown_root)
        .layer(DefaultBodyLimit::max(state.cfg.max_body))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

async fn unknown_root(uri: Uri, headers: HeaderMap) -> Response {
    let fmt = format_of(&headers, &parse_query(uri.query().unwrap_or("")));
    ApiError::not_found(format!(
        "no such path '{}': the REST API is under /SASESP/ (or /eventStreamProcessing/v1/)",
        uri.path()
    ))
    .render(fmt)
}

/// `--auth-token`: every request needs the token, as `Authorization: Bearer TOKEN`, HTTP Basic
/// with the token as password, or `?access_token=TOKEN` (crate::auth).
async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.cfg.auth_token {
        let q = parse_query(req.uri().query().unwrap_or(""));
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if let Err(why) = crate::auth::check_http(token, header, param(&q, "access_token")) {
            let fmt = format_of(req.headers(), &q);
            let why = why.http_message();
            tracing::warn!(target: "esp.http", "{} {}: 401 {why}", req.method(), req.uri().path());
            let mut r = ApiError::new(401, why).render(fmt);
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(req).await
}

/// Query parameters in order, percent-decoded.
pub type Query = Vec<(String, String)>;

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Splits and decodes a query string.
pub fn parse_query(q: &str) -> Query {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The value of a query parameter.
pub fn param<'a>(q: &'a Query, name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A boolean query parameter.
pub fn flag(q: &Query, name: &str, default: bool) -> Result<bool, ApiError> {
    match param(q, name) {
        None => Ok(default),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ApiError::bad(format!(
                "parameter {name}='{v}' is not a boolean (use true or false)"
            ))),
        },
    }
}

/// XML or JSON, from `format=` or the Accept header.
pub fn format_of(headers: &HeaderMap, q: &Query) -> Format {
    if let Some(f) = param(q, "format") {
        return if f.eq_ignore_ascii_case("json") {
            Format::Json
        } else {
            Format::Xml
        };
    }
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/json") && !accept.contains("xml") {
        Format::Json
    } else {
        Format::Xml
    }
}

struct Req<'a> {
    method: &'a Method,
    fmt: Format,
    segs: Vec<&'a str>,
    q: Query,
    body: Bytes,
}

async fn dispatch(
    State(st): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let q = parse_query(uri.query().unwrap_or(""));
    let fmt = format_of(&headers, &q);
    let path = uri.path();
    let rest = ROOTS
        .iter()
        .find_map(|r| path.strip_prefix(r))
        .unwrap_or(path);
    let result = match body {
        Err(rej) => Err(if rej.status().as_u16() == 413 {
            ApiError::new(
                413,
                format!(
                    "the request body is larger than the limit of {} bytes (server option --max-body)",
                    st.cfg.max_body
                ),
            )
        } else {
            ApiError::new(rej.status().as_u16(), rej.body_text())
        }),
        Ok(body) => {
            let req = Req {
                method: &method,
                fmt,
                segs: rest.split('/').filter(|s| !s.is_empty()).collect(),
                q,
                body,
            };
            route(&st, req).await
        }
    };
    match result {
        Ok(reply) => {
            tracing::debug!(target: "esp.http", "{method} {path}: 200");
            if method == Method::HEAD {
                return axum::http::StatusCode::OK.into_response();
            }
            reply.render(fmt)
        }
        Err(e) => {
            tracing::info!(target: "esp.http", "{method} {path}: {} {}", e.status, e.message);
            e.render(fmt)
        }
    }
}

fn method_not_allowed(m: &Method, what: &str, allowed: &str) -> ApiError {
    ApiError::new(
        405,
        format!("{m} is not allowed on '{what}' (use {allowed})"),
    )
}

fn body_text(b: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(b).map_err(|_| ApiError::bad("the request body is not UTF-8 text"))
}

async fn route(st: &Arc<AppState>, r: Req<'_>) -> Result<Reply, ApiError> {
    let m = r.method;
    let is = |x: &Method| m == x || (x == Method::GET && m == Method::HEAD);
    match r.segs.as_slice() {
        [] => Ok(Reply::Message(format!(
            "Sluice {} event stream processing server: see {}api-docs",
            env!("CARGO_PKG_VERSION"),
            "/SASESP/"
        ))),
        ["server"] if is(&Method::GET) => server_info(st, &r.q),
        ["server"] => Err(method_not_allowed(m, "server", "GET")),
        ["server", "state"] if is(&Method::PUT) => server_state(st, &r.q).await,
        ["server", "state"] => Err(method_not_allowed(m, "server/state", "PUT")),
        ["projects"] if is(&Method::GET) => list_projects(st, &r.q, None),
        ["projects"] if is(&Method::DELETE) => delete_many(st, &r.q).await,
        ["projects"] => Err(method_not_allowed(m, "projects", "GET or DELETE")),
        ["projects", name] if is(&Method::GET) => {
            let v = st.registry.get(name)?;
            Ok(Reply::Tree(
                Elem::new("projects").child(project_elem(name, &v)),
            ))
        }
        ["projects", name] if is(&Method::PUT) || is(&Method::POST) => {
            load(st, name, &r.q, &r.body).await
        }
        ["projects", name] if is(&Method::DELETE) => {
            Ok(Reply::Message(st.registry.delete(name).await?))
        }
        ["projects", _] => Err(method_not_allowed(
            m,
            "projects/{name}",
            "GET, PUT or DELETE",
        )),
        ["projects", name, "state"] if is(&Method::PUT) || is(&Method::POST) => {
            project_state(st, name, &r.q).await
        }
        ["projects", name, "state"] if is(&Method::GET) => {
            let v = st.registry.get(name)?;
            Ok(Reply::Tree(project_elem(name, &v)))
        }
        ["projects", _, "state"] => Err(method_not_allowed(m, "projects/{name}/state", "PUT")),
        ["projectXml"] if is(&Method::GET) => project_xml(st, &r.q),
        ["projectStatus"] if is(&Method::GET) => {
            let mut e = Elem::new("project-statuses");
            for (n, v) in st.registry.all() {
                e = e.child(project_status(&n, &v));
            }
            Ok(Reply::Tree(e))
        }
        ["projectStatus", name] if is(&Method::GET) => {
            let v = st.registry.get(name)?;
            Ok(Reply::Tree(project_status(name, &v)))
        }
        ["runningProjects"] | ["stoppedProjects"] if is(&Method::GET) => {
            list_projects(st, &r.q, Some(r.segs[0] == "runningProjects"))
        }
        [which @ ("runningProjects" | "stoppedProjects"), rest @ ..]
            if is(&Method::POST) || is(&Method::PUT) =>
        {
            start_stop_many(st, *which == "runningProjects", rest.first().copied(), &r.q).await
        }
        ["windowXml"] if is(&Method::GET) => window_xml(st, &r.q),
        ["windows", path @ ..] if path.len() <= 3 && is(&Method::GET) => {
            windows(st, path, &r.q).await
        }
        ["windows", p, cq, w, "state"] if is(&Method::PUT) || is(&Method::POST) => {
            window_state(st, p, cq, w, &r.q, &r.body).await
        }
        ["events"] if is(&Method::GET) => all_events(st, &r.q, r.fmt == Format::Json).await,
        ["events", p, cq, w] if is(&Method::GET) => {
            window_events(st, p, cq, w, &r.q, r.fmt == Format::Json).await
        }
        ["projectResults"] if is(&Method::POST) || is(&Method::PUT) => {
            project_results(st, &r.q, &r.body, r.fmt == Format::Json).await
        }
        ["projectValidationResults"] if is(&Method::POST) || is(&Method::PUT) => {
            validate(body_text(&r.body)?)
        }
        ["loggers"] if is(&Method::GET) => Ok(Reply::Tree(loggers(None)?)),
        ["loggers", name] if is(&Method::GET) => Ok(Reply::Tree(loggers(Some(name))?)),
        ["loggers", name, "level"] if is(&Method::PUT) || is(&Method::POST) => {
            set_logger(name, &r.q)
        }
        ["connectorInfo"] if is(&Method::GET) => Ok(Reply::Tree(connector_info())),
        ["api-docs"] if is(&Method::GET) => Ok(Reply::Raw(
            "application/json",
            crate::apidocs::api_docs(st).to_string(),
        )),
        _ => Err(ApiError::not_found(format!(
            "no endpoint {m} /SASESP/{}: see /SASESP/api-docs for the endpoints",
            r.segs.join("/")
        ))),
    }
}

fn server_info(st: &AppState, q: &Query) -> Result<Reply, ApiError> {
    let mut e = Elem::new("esp-server")
        .attr("version", "6.2")
        .attr("sluice-version", env!("CARGO_PKG_VERSION"))
        .attr("engine", "sluice")
        .attr("analytics-license", "true")
        .attr("primary-server", primary_server(st))
        .attr("http", st.http_addr.port())
        .attr(
            "slow-subscribers-dropped",
            st.slow_subscribers_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    if let Some(p) = st.pubsub_addr {
        e = e.attr("pubsub", p.port());
    }
    if flag(q, "config", false)? {
        let mut props: Vec<(&str, String)> = vec![
            ("bind", st.cfg.bind.to_string()),
            ("http", st.http_addr.port().to_string()),
            ("max-body", st.cfg.max_body.to_string()),
            (
                "auth",
                if st.cfg.auth_token.is_some() {
                    "bearer"
                } else {
                    "none"
                }
                .to_string(),
            ),
        ];
        if let Some(p) = st.pubsub_addr {
            props.push(("pubsub", p.port().to_string()));
        }
        if let Some(b) = &st.cfg.badevents {
            props.push(("badevents", b.display().to_string()));
        }
        if let Some(r) = &st.cfg.persist_root {
            props.push(("persist-root", r.display().to_string()));
        }
        for r in &st.cfg.file_roots {
            props.push(("allow-path", r.display().to_string()));
        }
        for m in &st.cfg.models {
            props.push(("model", m.display().to_string()));
        }
        for (k, v) in props {
            e = e.child(Elem::new("property").attr("name", k).text(v));
        }
    }
    Ok(Reply::Tree(e))
}

fn value_param<'a>(q: &'a Query, allowed: &str) -> Result<&'a str, ApiError> {
    param(q, "value")
        .ok_or_else(|| ApiError::bad(format!("parameter 'value' is required (one of: {allowed})")))
}

/// Checks a persist/restore directory: no `..`, and inside `--persist-root` when set
/// (relative paths resolve against it), also once symbolic links are resolved.
pub fn confine(root: Option<&Path>, path: Option<&str>) -> Result<PathBuf, ApiError> {
    let path = path
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| ApiError::bad("parameter 'path' is required: the snapshot directory"))?;
    let p = Path::new(path.strip_prefix("file://").unwrap_or(path));
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(ApiError::bad(format!(
            "path '{path}' contains '..': give a path without parent-directory steps"
        )));
    }
    match root {
        None => Ok(p.to_path_buf()),
        Some(root) => {
            let full = if p.is_absolute() {
                p.to_path_buf()
            } else {
                root.join(p)
            };
            if full.starts_with(root) {
                inside_roots(&full, &[root.to_path_buf()], "path", "--persist-root")?;
                Ok(full)
            } else {
                Err(ApiError::new(
                    403,
                    format!(
                        "path '{path}' is outside the persist root '{}' (server option --persist-root)",
                        root.display()
                    ),
                ))
            }
        }
    }
}

/// A snapshot directory named over the API: [`confine`]d to `--persist-root` when it is set,
/// else inside an `--allow-path` root when any is given.
fn snapshot_dir(st: &AppState, path: Option<&str>) -> Result<PathBuf, ApiError> {
    let dir = confine(st.cfg.persist_root.as_deref(), path)?;
    if st.cfg.persist_root.is_none() {
        inside_roots(&dir, &st.cfg.file_roots, "path", "--allow-path")?;
    }
    Ok(dir)
}

/// Where `path` leads: symbolic links resolved through every part of it that exists, the
/// parts that do not exist (yet) appended as written. A part that is a dangling link, or a
/// `..` under a part that does not exist, cannot be resolved.
pub fn resolve(path: &Path) -> Result<PathBuf, String> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("no working directory: {e}"))?
            .join(path)
    };
    let mut missing = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if cur.symlink_metadata().is_ok() {
            let mut out = cur
                .canonicalize()
                .map_err(|e| format!("'{}' cannot be resolved: {e}", cur.display()))?;
            out.extend(missing.iter().rev());
            return Ok(out);
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                cur = parent;
            }
            _ => {
                return Err(format!(
                    "'{}' cannot be resolved: it has '..' under a directory that does not exist",
                    abs.display()
                ))
            }
        }
    }
}

/// Refuses (403) `path`, named by request parameter `what`, unless it resolves inside one of
/// `roots` (server option `option`). Any path passes when `roots` is empty.
fn inside_roots(path: &Path, roots: &[PathBuf], what: &str, option: &str) -> Result<(), ApiError> {
    if roots.is_empty() {
        return Ok(());
    }
    let shown = path.display();
    let at = resolve(path).map_err(|e| ApiError::new(403, format!("{what} '{shown}': {e}")))?;
    let ok = roots.iter().any(|r| {
        let r = resolve(r).unwrap_or_else(|_| r.clone());
        at.starts_with(&r)
    });
    if ok {
        return Ok(());
    }
    let names: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(ApiError::new(
        403,
        format!(
            "{what} '{shown}' leads to '{}', outside {} (server option {option}); symbolic links are followed before the check",
            at.display(),
            names.join(", ")
        ),
    ))
}

/// The files a model loaded over REST names (fs connectors' `fsname`, the `restore`
/// directory) must lie where the server options allow.
fn check_model_paths(st: &AppState, spec: &sluice_model::ProjectSpec) -> Result<(), ApiError> {
    let roots = &st.cfg.file_roots;
    if !roots.is_empty() {
        for cq in &spec.contqueries {
            for w in &cq.windows {
                for c in w.connectors.iter().filter(|c| c.class == "fs") {
                    if let Ok(p) = sluice_connector::fs::resolve_path(c, &st.cfg.base) {
                        let what = format!("connector {}/{}/{} fsname", cq.name, w.name, c.name);
                        inside_roots(&p, roots, &what, "--allow-path")?;
                    }
                }
            }
        }
    }
    if let Some(dir) = &spec.restore {
        let dir = PathBuf::from(dir);
        match &st.cfg.persist_root {
            Some(root) => inside_roots(
                &dir,
                std::slice::from_ref(root),
                "restore",
                "--persist-root",
            )?,
            None => inside_roots(&dir, roots, "restore", "--allow-path")?,
        }
    }
    Ok(())
}

async fn server_state(st: &Arc<AppState>, q: &Query) -> Result<Reply, ApiError> {
    match value_param(q, "stopped, reloaded, persisted")? {
        "stopped" => {
            tracing::info!(target: "esp.server", "server stop requested over HTTP");
            let _ = st.shutdown.send(true);
            Ok(Reply::Message("server stopping".into()))
        }
        "reloaded" => {
            st.registry.clear().await;
            let n = st
                .load_startup_models()
                .await
                .map_err(|e| ApiError::bad(format!("reload failed: {e}")))?;
            tracing::info!(target: "esp.server", "server reloaded: {n} project(s) from the startup model");
            Ok(Reply::Message(format!(
                "server reloaded: {n} project(s) loaded from the startup model"
            )))
        }
        "persisted" => {
            let dir = snapshot_dir(st, param(q, "path"))?;
            let names = st.registry.names();
            // Each project's snapshot goes to DIR/<name>: only names that cannot step out.
            for n in &names {
                registry::check_project_name(n)?;
            }
            let mut saved = 0;
            for n in &names {
                match st.registry.persist(n, dir.join(n)).await {
                    Ok(_) => saved += 1,
                    // Deleted since the list was taken: there is nothing of it to save.
                    Err(e) if e.status == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Reply::Message(format!(
                "server successfully saved to {} ({saved} project(s), one snapshot directory each)",
                dir.display(),
            )))
        }
        other => Err(ApiError::bad(format!(
            "unknown server state '{other}' (use stopped, reloaded or persisted)"
        ))),
    }
}

/// True unless some hot failover subscriber of this server is not the active writer now.
fn primary_server(st: &AppState) -> bool {
    st.registry
        .all()
        .iter()
        .filter_map(|(_, v)| v.handle.as_ref())
        .all(|h| h.kafka_status().primary())
}

/// `GET projectStatus/{p}`: the project's Kafka inputs (position, lag) and Kafka outputs
/// (hot failover role, buffer, gaps).
fn project_status(name: &str, v: &ProjectView) -> Elem {
    let mut e = Elem::new("project-status")
        .attr("name", name)
        .attr("state", if v.running { "running" } else { "stopped" })
        .attr(
            "connectors",
            if v.connectors_started {
                "started"
            } else {
                "stopped"
            },
        );
    let Some(h) = &v.handle else {
        return e.attr("in-sync", false);
    };
    let k = h.kafka_status();
    e = e.attr("primary", k.primary());
    // The project is in sync when it runs with its connectors and every Kafka input is within
    // the lag threshold (`kafka::IN_SYNC_LAG`); `lag` is the sum of the inputs' measured lags.
    let in_sync = v.running && v.connectors_started && k.inputs.iter().all(|i| i.in_sync);
    let lag: i64 = k.inputs.iter().filter_map(|i| i.lag).sum();
    e = e.attr("in-sync", in_sync);
    if k.inputs.iter().any(|i| i.lag.is_some()) {
        e = e.attr("lag", lag);
    }
    for i in &k.inputs {
        let mut c = Elem::new("kafka-input")
            .attr("connector", &i.connector)
            .attr("topic", &i.topic)
            .attr("partition", i.partition)
            .attr("next-offset", i.position)
            .attr("events", i.events)
            .attr("bad-records", i.bad_records);
        if let Some(l) = i.lag {
            c = c.attr("lag", l).attr("in-sync", i.in_sync);
        }
        e = e.child(c);
    }
    for o in &k.outputs {
        let mut c = Elem::new("kafka-output")
            .attr("connector", &o.connector)
            .attr("topic", &o.topic)
            .attr("partition", o.partition)
            .attr("hotfailover", o.hotfailover)
            .attr("role", &o.role)
            .attr("publishing", o.publishing)
            .attr("sent", o.sent)
            .attr("delivery-failures", o.delivery_failures);
        if let Some(l) = &o.last_output_id {
            c = c.attr("last-output-id", l);
        }
        if o.hotfailover {
            c = c
                .attr("buffered", o.buffered)
                .attr("takeovers", o.takeovers)
                .attr("purges", o.purges)
                .attr("gaps", o.gaps);
            if let Some(g) = &o.last_gap {
                c = c.attr("last-gap", g);
            }
            if let Some(n) = &o.node {
                c = c.attr("node", n);
            }
            if let Some(n) = &o.watching {
                c = c.attr("watching", n);
            }
        }
        e = e.child(c);
    }
    e
}

fn project_elem(name: &str, v: &ProjectView) -> Elem {
    let mut e = Elem::new("project")
        .attr("name", name)
        .attr("state", if v.running { "running" } else { "stopped" })
        .attr(
            "connectors",
            if v.connectors_started {
                "started"
            } else {
                "stopped"
            },
        );
    if let Err(d) = &v.compiled {
        e = e.attr("startable", "false").attr("problems", d.len());
    }
    e
}

fn name_filter(q: &Query) -> Result<(Option<Vec<String>>, Option<Filter>), ApiError> {
    let names = param(q, "name").map(|n| n.split('|').map(str::to_string).collect());
    let filter = match param(q, "filter") {
        Some(f) if !f.trim().is_empty() => Some(
            Filter::parse(f)
                .map_err(|e| ApiError::bad(format!("filter '{}': {e}", cut(f, 200))))?,
        ),
        _ => None,
    };
    Ok((names, filter))
}

fn matching_projects(
    st: &AppState,
    q: &Query,
    running: Option<bool>,
) -> Result<Vec<(String, ProjectView)>, ApiError> {
    let (names, filter) = name_filter(q)?;
    Ok(st
        .registry
        .all()
        .into_iter()
        .filter(|(n, v)| {
            running.is_none_or(|r| v.running == r)
                && names.as_ref().is_none_or(|ns| ns.contains(n))
                && filter.as_ref().is_none_or(|f| {
                    f.eval(&|k| match k {
                        "name" => Some(sluice_event::Value::str(n)),
                        "state" => Some(sluice_event::Value::str(if v.running {
                            "running"
                        } else {
                            "stopped"
                        })),
                        _ => None,
                    })
                })
        })
        .collect())
}

fn list_projects(st: &AppState, q: &Query, running: Option<bool>) -> Result<Reply, ApiError> {
    let mut e = Elem::new("projects");
    for (n, v) in matching_projects(st, q, running)? {
        e = e.child(project_elem(&n, &v));
    }
    Ok(Reply::Tree(e))
}

async fn delete_many(st: &AppState, q: &Query) -> Result<Reply, ApiError> {
    if param(q, "name").is_none() && param(q, "filter").is_none() {
        return Err(ApiError::bad(
            "DELETE projects needs name=a|b or filter=…, to avoid deleting every project by mistake",
        ));
    }
    let ps = matching_projects(st, q, None)?;
    let mut names = Vec::new();
    for (n, _) in ps {
        st.registry.delete(&n).await?;
        names.push(n);
    }
    Ok(Reply::Message(format!(
        "{} project(s) deleted: {}",
        names.len(),
        names.join(", ")
    )))
}

async fn start_stop_many(
    st: &AppState,
    start: bool,
    one: Option<&str>,
    q: &Query,
) -> Result<Reply, ApiError> {
    let targets: Vec<String> = match one {
        Some(n) => {
            let v = st.registry.get(n)?;
            if v.running == start {
                vec![]
            } else {
                vec![n.to_string()]
            }
        }
        None => matching_projects(st, q, Some(!start))?
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
    };
    for n in &targets {
        if start {
            st.registry.start(n).await?;
        } else {
            st.registry.stop(n).await?;
        }
    }
    Ok(Reply::Message(format!(
        "{} project(s) {}: {}",
        targets.len(),
        if start { "started" } else { "stopped" },
        targets.join(", ")
    )))
}

async fn load(st: &AppState, name: &str, q: &Query, body: &Bytes) -> Result<Reply, ApiError> {
    let opts = LoadOptions {
        overwrite: flag(q, "overwrite", false)?,
        start: flag(q, "start", true)?,
        connectors: flag(q, "connectors", true)?,
    };
    registry::check_project_name(name)?;
    let (text, from_file) = match param(q, "projectUrl") {
        Some(url) if body.is_empty() => (read_named_file(st, "projectUrl", url).await?, true),
        _ => (body_text(body)?.to_string(), false),
    };
    // What a file named by the request holds is never quoted back: a model's problems name
    // its elements, so only their lines are given.
    let unquote = |mut e: ApiError| {
        if from_file {
            e.details = e.details.iter().map(|d| line_only(d)).collect();
        }
        e
    };
    let spec = registry::parse_for_load(name, &text).map_err(unquote)?;
    check_model_paths(st, &spec)?;
    Ok(Reply::Message(
        st.registry.load(spec, opts).await.map_err(unquote)?,
    ))
}

/// A model problem read from a file named by the request: its line, not its reason (which
/// names what the file holds).
fn line_only(problem: &str) -> String {
    let line = problem
        .strip_prefix("line ")
        .and_then(|r| r.split(':').next())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()));
    match line {
        Some(n) => format!(
            "line {n}: a problem (reasons are not shown for a file named by projectUrl: send the model as the body to see them)"
        ),
        None => "a problem (reasons are not shown for a file named by projectUrl: send the model as the body to see them)".into(),
    }
}

/// Longest time a file named by a request (`eventUrl=`, `projectUrl=`) may take to read.
pub const FILE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the file named by `param=file://PATH` off the async workers, within
/// [`FILE_READ_TIMEOUT`] and `--max-body`, as its request body would be read. Only regular
/// files are read: a FIFO, a device or a directory is refused without waiting on it.
async fn read_named_file(st: &AppState, param: &str, url: &str) -> Result<String, ApiError> {
    let path = url.strip_prefix("file://").ok_or_else(|| {
        ApiError::bad(format!(
            "{param} '{}' is not supported: use file://PATH",
            cut(url, 200)
        ))
    })?;
    let path = PathBuf::from(path);
    inside_roots(&path, &st.cfg.file_roots, param, "--allow-path")?;
    // The checked place is the one read, whatever a link there points to afterwards.
    let path = if st.cfg.file_roots.is_empty() {
        path
    } else {
        resolve(&path).map_err(|e| ApiError::new(403, format!("{param}: {e}")))?
    };
    let max = st.cfg.max_body;
    let shown = path.display().to_string();
    let read = tokio::task::spawn_blocking(move || read_regular_file(&path, max));
    match tokio::time::timeout(FILE_READ_TIMEOUT, read).await {
        Ok(Ok(r)) => r.map_err(|e| e.named(param, &shown, max)),
        Ok(Err(e)) => Err(ApiError::new(500, format!("reading {param} '{shown}' failed: {e}"))),
        Err(_) => Err(ApiError::new(
            408,
            format!(
                "{param} '{shown}' took longer than {} s to read: name a regular local file, or send its content as the body",
                FILE_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Why a file named by a request was not read.
#[derive(Debug)]
enum FileRefusal {
    Io(std::io::Error),
    NotRegular(&'static str),
    TooLarge(u64),
    NotUtf8,
}

impl FileRefusal {
    fn named(self, param: &str, path: &str, max: usize) -> ApiError {
        match self {
            FileRefusal::Io(e) => ApiError::bad(format!("{param}: cannot read '{path}': {e}")),
            FileRefusal::NotRegular(kind) => ApiError::bad(format!(
                "{param}: '{path}' is {kind}, not a regular file: name a regular file"
            )),
            FileRefusal::TooLarge(len) => ApiError::new(
                413,
                format!(
                    "{param}: '{path}' holds {len} bytes or more, over the limit of {max} bytes (server option --max-body)"
                ),
            ),
            FileRefusal::NotUtf8 => {
                ApiError::bad(format!("{param}: '{path}' is not UTF-8 text"))
            }
        }
    }
}

/// Opens without blocking (a FIFO with no writer would block the open itself), then reads
/// only when the opened file is a regular one, at most `max` bytes.
fn read_regular_file(path: &Path, max: usize) -> Result<String, FileRefusal> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(FileRefusal::Io)?;
    let meta = f.metadata().map_err(FileRefusal::Io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(FileRefusal::NotRegular(if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else {
            "a special file"
        }));
    }
    if meta.len() > max as u64 {
        return Err(FileRefusal::TooLarge(meta.len()));
    }
    let mut buf = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(FileRefusal::Io)?;
    if buf.len() > max {
        return Err(FileRefusal::TooLarge(buf.len() as u64));
    }
    String::from_utf8(buf).map_err(|_| FileRefusal::NotUtf8)
}

async fn project_state(st: &AppState, name: &str, q: &Query) -> Result<Reply, ApiError> {
    let allowed = "running, stopped, connectorsStarted, persisted, restored";
    let value = value_param(q, allowed)?;
    let r = &st.registry;
    let msg = match value {
        "running" => r.start(name).await?,
        "stopped" => r.stop(name).await?,
        "connectorsStarted" => r.start_connectors(name).await?,
        "persisted" => {
            r.get(name)?;
            let dir = snapshot_dir(st, param(q, "path"))?;
            r.persist(name, dir).await?
        }
        "restored" => {
            r.get(name)?;
            let dir = snapshot_dir(st, param(q, "path"))?;
            r.restore(name, dir).await?
        }
        "modified" => {
            return Err(ApiError::bad(format!(
                "value=modified is not supported: load the new XML with PUT projects/{name}?overwrite=true"
            )))
        }
        other => {
            return Err(ApiError::bad(format!(
                "unknown project state '{other}' (use one of: {allowed})"
            )))
        }
    };
    Ok(Reply::Message(msg))
}

fn project_xml(st: &AppState, q: &Query) -> Result<Reply, ApiError> {
    let ps = matching_projects(st, q, None)?;
    if let Some(names) = param(q, "name") {
        for n in names.split('|') {
            if !ps.iter().any(|(p, _)| p == n) {
                st.registry.get(n)?;
            }
        }
    }
    let mut raw = String::new();
    for (_, v) in ps {
        raw.push_str(sluice_model::write_xml(&v.spec.node).trim_end());
    }
    let mut e = Elem::new("projects");
    e.raw = Some(raw);
    Ok(Reply::Tree(e))
}

/// A window as the listing endpoints see it.
struct WinRef {
    project: String,
    cq: String,
    name: String,
    element: String,
    schema: Option<Schema>,
    id: Option<WindowId>,
    node: Option<sluice_model::XmlNode>,
}

fn windows_of(name: &str, v: &ProjectView) -> Vec<WinRef> {
    let info: Option<&ProjectInfo> = v.compiled.as_ref().ok().map(|i| i.as_ref());
    let mut out = Vec::new();
    for cq in &v.spec.contqueries {
        for w in &cq.windows {
            let wi = info.and_then(|i| i.window(&cq.name, &w.name));
            out.push(WinRef {
                project: name.to_string(),
                cq: cq.name.clone(),
                name: w.name.clone(),
                element: w.element.clone(),
                schema: wi.map(|i| i.schema.clone()).or_else(|| w.schema.clone()),
                id: wi.map(|i| i.id),
                node: window_node(&v.spec.node, &cq.name, &w.name),
            });
        }
    }
    out
}

fn window_node(
    project: &sluice_model::XmlNode,
    cq: &str,
    w: &str,
) -> Option<sluice_model::XmlNode> {
    project
        .children_named("contqueries")
        .flat_map(|c| c.children_named("contquery"))
        .filter(|c| c.attr("name") == Some(cq))
        .flat_map(|c| c.children_named("windows"))
        .flat_map(|ws| ws.children.iter())
        .find(|n| n.attr("name") == Some(w))
        .cloned()
}

fn window_matches(w: &WinRef, q: &Query, filter: Option<&Filter>) -> bool {
    param(q, "project").is_none_or(|p| p.split('|').any(|x| x == w.project))
        && param(q, "contquery").is_none_or(|p| p.split('|').any(|x| x == w.cq))
        && param(q, "name").is_none_or(|p| p.split('|').any(|x| x == w.name))
        && param(q, "type").is_none_or(|p| p.split('|').any(|x| x == w.element))
        && filter.is_none_or(|f| {
            f.eval(&|k| {
                Some(sluice_event::Value::str(match k {
                    "project" => &w.project,
                    "contquery" => &w.cq,
                    "name" => &w.name,
                    "type" => &w.element,
                    _ => return None,
                }))
            })
        })
}

fn parse_filter(q: &Query, name: &str) -> Result<Option<Filter>, ApiError> {
    match param(q, name) {
        Some(f) if !f.trim().is_empty() => Filter::parse(f)
            .map(Some)
            .map_err(|e| ApiError::bad(format!("{name} '{}': {e}", cut(f, 200)))),
        _ => Ok(None),
    }
}

fn window_xml(st: &AppState, q: &Query) -> Result<Reply, ApiError> {
    if let Some(p) = param(q, "project") {
        if !p.contains('|') {
            st.registry.get(p)?;
        }
    }
    let filter = parse_filter(q, "filter")?;
    let mut raw = String::new();
    for (n, v) in st.registry.all() {
        for w in windows_of(&n, &v) {
            if !window_matches(&w, q, filter.as_ref()) {
                continue;
            }
            if let Some(mut node) = w.node {
                node.attrs
                    .retain(|(k, _)| k != "project" && k != "contquery");
                node.attrs.push(("contquery".into(), w.cq.clone()));
                node.attrs.push(("project".into(), w.project.clone()));
                raw.push_str(sluice_model::write_xml(&node).trim_end());
            }
        }
    }
    let mut e = Elem::new("windows");
    e.raw = Some(raw);
    Ok(Reply::Tree(e))
}

fn schema_elem(s: &Schema) -> Elem {
    let mut fields = Elem::new("fields");
    for f in s.fields() {
        let mut fe = Elem::new("field")
            .attr("name", &f.name)
            .attr("type", f.ty.name());
        if f.key {
            fe = fe.attr("key", "true");
        }
        fields = fields.child(fe);
    }
    Elem::new("schema").child(fields)
}

async fn counts(v: &ProjectView) -> Option<Vec<usize>> {
    let h = v.handle.as_ref()?;
    h.ask(Cmd::Counts).await
}

async fn windows(st: &AppState, path: &[&str], q: &Query) -> Result<Reply, ApiError> {
    let want_count = flag(q, "count", true)?;
    let want_schema = flag(q, "schema", path.len() == 3)?;
    let filter = parse_filter(q, "filter")?;
    let projects = match path.first() {
        Some(p) => vec![(p.to_string(), st.registry.get(p)?)],
        None => st.registry.all(),
    };
    let mut e = Elem::new("windows");
    let mut found = false;
    for (n, v) in projects {
        let cnts = if want_count { counts(&v).await } else { None };
        for w in windows_of(&n, &v) {
            if path.get(1).is_some_and(|c| *c != w.cq)
                || path.get(2).is_some_and(|x| *x != w.name)
                || !window_matches(&w, q, filter.as_ref())
            {
                continue;
            }
            found = true;
            let mut we = Elem::new("window")
                .attr("name", &w.name)
                .attr("contquery", &w.cq)
                .attr("project", &w.project)
                .attr("type", &w.element);
            if want_count {
                let c = match (&cnts, w.id) {
                    (Some(c), Some(id)) => c.get(id.0 as usize).copied().unwrap_or(0),
                    _ => 0,
                };
                we = we.attr("count", c);
            }
            if want_schema {
                if let Some(s) = &w.schema {
                    we = we.child(schema_elem(s));
                }
            }
            e = e.child(we);
        }
    }
    if path.len() >= 2 && !found {
        return Err(ApiError::not_found(format!(
            "window '{}' does not exist (see GET windows/{})",
            path.join("/"),
            path[0]
        )));
    }
    Ok(Reply::Tree(e))
}

/// A window of a started project, for event access.
pub(crate) struct Target {
    pub view: ProjectView,
    pub info: crate::project::WinInfo,
    pub path: String,
}

pub(crate) fn target(st: &AppState, p: &str, cq: &str, w: &str) -> Result<Target, ApiError> {
    let view = st.registry.get(p)?;
    let info = match &view.compiled {
        Ok(i) => i.window(cq, w).cloned(),
        Err(_) => None,
    };
    let Some(info) = info else {
        let exists = view
            .spec
            .contqueries
            .iter()
            .any(|c| c.name == cq && c.windows.iter().any(|x| x.name == w));
        return Err(if exists {
            ApiError::conflict(format!(
                "project '{p}' cannot run (its model has windows the engine cannot execute), so window '{p}/{cq}/{w}' holds no events"
            ))
        } else {
            ApiError::not_found(format!(
                "window '{p}/{cq}/{w}' does not exist (see GET windows/{p})"
            ))
        });
    };
    Ok(Target {
        path: format!("{p}/{cq}/{w}"),
        view,
        info,
    })
}

async fn window_state(
    st: &AppState,
    p: &str,
    cq: &str,
    w: &str,
    q: &Query,
    body: &Bytes,
) -> Result<Reply, ApiError> {
    let t = target(st, p, cq, w)?;
    match value_param(q, "injected, tracingOn, tracingOff")? {
        "injected" => {}
        "tracingOn" | "tracingOff" => {
            return Ok(Reply::Message(format!(
                "window {} tracing is not available; use --loglevel esp.windows=debug",
                t.path
            )))
        }
        other => {
            return Err(ApiError::bad(format!(
                "unknown window state '{other}' (use injected)"
            )))
        }
    }
    if !t.info.source {
        return Err(ApiError::bad(format!(
            "window '{}' is a {}, not a source window: events can only be injected into source windows",
            t.path, t.info.element
        )));
    }
    if !t.view.running {
        return Err(ApiError::conflict(format!(
            "project '{p}' is stopped: start it with PUT projects/{p}/state?value=running before injecting events"
        )));
    }
    let from_file = param(q, "eventUrl");
    let text = match from_file {
        Some(url) => read_named_file(st, "eventUrl", url).await?,
        None => body_text(body)?.to_string(),
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad(
            "no events: send CSV, XML or JSON events as the body, or give eventUrl=file://PATH",
        ));
    }
    let fmt = match param(q, "eventFormat").or(param(q, "type")) {
        Some(f) => EventFormat::parse(f).ok_or_else(|| {
            ApiError::bad(format!("unknown event format '{f}' (use csv, xml or json)"))
        })?,
        None => EventFormat::detect(&text),
    };
    let mut opts = parse_options(q)?;
    // What a file named by the request holds is never quoted back: positions and reasons only.
    opts.quote_input = from_file.is_none();
    let blocks = events::parse_body(&text, fmt, &t.info.schema, &opts).map_err(|errs| {
        ApiError::bad(format!(
            "{} event(s) cannot be read; nothing was injected into {}",
            errs.len(),
            t.path
        ))
        .with_details(errs)
    })?;
    let handle = t.view.handle.clone().ok_or_else(|| {
        ApiError::conflict(format!(
            "project '{p}' did not compile, so it takes no events: fix the model and load it again"
        ))
    })?;
    let window = t.info.id;
    let out = if from_file.is_some() {
        handle
            .ask(|r| Cmd::InjectFile {
                window,
                blocks,
                reply: r,
            })
            .await
    } else {
        handle
            .ask(|r| Cmd::Inject {
                window,
                blocks,
                reply: Some(r),
            })
            .await
    };
    let out = out.ok_or_else(|| registry::gone(p))?;
    if out.stopped {
        return Err(ApiError::conflict(format!(
            "project '{p}' was stopped before the events reached it: nothing was injected; start it with PUT projects/{p}/state?value=running"
        )));
    }
    let mut msg = format!("{} event(s) injected into window {}", out.events, t.path);
    if !out.refused.is_empty() {
        msg.push_str(&format!(
            "; {} refused by the windows (see the bad-events file)",
            out.refused.len()
        ));
        let mut e = Elem::new("message").text(msg);
        for r in out.refused.iter().take(100) {
            e = e.child(Elem::new("refused").text(cut(r, 300)));
        }
        return Ok(Reply::Tree(Elem::new("response").child(e)));
    }
    Ok(Reply::Message(msg))
}

/// `dateformat`, `blocksize`, `opcode` parameters of injections and publishers.
pub fn parse_options(q: &Query) -> Result<ParseOptions, ApiError> {
    let mut o = ParseOptions::default();
    if let Some(d) = param(q, "dateformat") {
        o.dateformat = Some(
            sluice_event::time::DateFormat::new(d)
                .map_err(|e| ApiError::bad(format!("dateformat '{d}': {e}")))?,
        );
    }
    if let Some(b) = param(q, "blocksize") {
        o.blocksize =
            b.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::bad(format!("blocksize '{b}' is not a positive number"))
            })?;
    }
    if let Some(op) = param(q, "opcode") {
        o.opcode = sluice_event::Opcode::parse(op).ok_or_else(|| {
            ApiError::bad(format!(
                "opcode '{op}' is unknown (use insert, update, delete, upsert or safedelete)"
            ))
        })?;
    }
    Ok(o)
}

struct Shaping {
    filter: Option<Filter>,
    sort: Option<(String, bool)>,
    limit: Option<usize>,
}

fn shaping(q: &Query, filter_param: &str) -> Result<Shaping, ApiError> {
    let sort = match param(q, "sortBy") {
        None => None,
        Some(s) => {
            let (f, dir) = s.split_once(':').unwrap_or((s, "ascending"));
            let desc = match dir {
                "ascending" | "asc" => false,
                "descending" | "desc" => true,
                other => {
                    return Err(ApiError::bad(format!(
                        "sortBy direction '{other}' is unknown (use field:ascending or field:descending)"
                    )))
                }
            };
            Some((f.to_string(), desc))
        }
    };
    let limit = match param(q, "limit") {
        None => None,
        Some(l) => Some(
            l.trim()
                .parse()
                .map_err(|_| ApiError::bad(format!("limit '{l}' is not a whole number")))?,
        ),
    };
    Ok(Shaping {
        filter: parse_filter(q, filter_param)?,
        sort,
        limit,
    })
}

fn shape_rows(
    path: &str,
    schema: &Schema,
    mut rows: Vec<Row>,
    s: &Shaping,
    strict: bool,
) -> Result<Vec<Row>, ApiError> {
    if let Some(f) = &s.filter {
        if strict {
            let mut names = Vec::new();
            f.fields(&mut names);
            if let Some(n) = names.iter().find(|n| schema.index_of(n).is_none()) {
                return Err(ApiError::bad(format!(
                    "filter: '{n}' is not a field of window {path} ({schema})"
                )));
            }
        }
        rows.retain(|r| {
            f.eval(&|k| {
                schema
                    .index_of(k)
                    .map(|i| r[i].clone())
                    .filter(|v| !v.is_null())
            })
        });
    }
    if let Some((field, desc)) = &s.sort {
        match schema.index_of(field) {
            Some(i) => {
                rows.sort_by(|a, b| a[i].cmp(&b[i]));
                if *desc {
                    rows.reverse();
                }
            }
            None if strict => {
                return Err(ApiError::bad(format!(
                    "sortBy: '{field}' is not a field of window {path} ({schema})"
                )))
            }
            None => {}
        }
    }
    if let Some(l) = s.limit {
        rows.truncate(l);
    }
    Ok(rows)
}

fn events_raw(path: &str, schema: &Schema, rows: &[Row], out: &mut Elem) {
    let raw = out.raw.get_or_insert_with(String::new);
    for r in rows {
        events::xml_event(Some(path), None, schema, r, raw);
    }
}

fn events_reply(items: Vec<(String, Schema, Vec<Row>)>, fmt_json: bool) -> Reply {
    if fmt_json {
        let evs: Vec<serde_json::Value> = items
            .iter()
            .flat_map(|(p, s, rows)| {
                rows.iter().map(
                    move |r| serde_json::json!({"window": p, "values": events::json_row(s, r)}),
                )
            })
            .collect();
        return Reply::Raw(
            "application/json",
            serde_json::json!({ "events": evs }).to_string(),
        );
    }
    let mut e = Elem::new("events");
    e.raw = Some(String::new());
    for (p, s, rows) in &items {
        events_raw(p, s, rows, &mut e);
    }
    Reply::Tree(e)
}

async fn rows_of(t: &Target) -> Result<Vec<Row>, ApiError> {
    let h = t.view.handle.as_ref().ok_or_else(|| window_gone(t))?;
    let window = t.info.id;
    h.ask(|r| Cmd::Rows { window, reply: r })
        .await
        .ok_or_else(|| window_gone(t))
}

/// The project of a window was deleted or replaced while a request read it.
fn window_gone(t: &Target) -> ApiError {
    registry::gone(t.path.split('/').next().unwrap_or(&t.path))
}

async fn window_events(
    st: &AppState,
    p: &str,
    cq: &str,
    w: &str,
    q: &Query,
    json: bool,
) -> Result<Reply, ApiError> {
    let t = target(st, p, cq, w)?;
    let s = shaping(q, "filter")?;
    let rows = rows_of(&t).await?;
    let rows = shape_rows(&t.path, &t.info.schema, rows, &s, true)?;
    Ok(events_reply(
        vec![(t.path.clone(), t.info.schema.clone(), rows)],
        json,
    ))
}

async fn all_events(st: &AppState, q: &Query, json: bool) -> Result<Reply, ApiError> {
    let wf = parse_filter(q, "windowFilter")?;
    let s = shaping(q, "eventFilter")?;
    let mut items = Vec::new();
    for (n, v) in st.registry.all() {
        for w in windows_of(&n, &v) {
            if !window_matches(&w, q, wf.as_ref()) || w.id.is_none() {
                continue;
            }
            let t = target(st, &n, &w.cq, &w.name)?;
            let rows = rows_of(&t).await?;
            let rows = shape_rows(&t.path, &t.info.schema, rows, &s, false)?;
            items.push((t.path, t.info.schema, rows));
        }
    }
    Ok(events_reply(items, json))
}

async fn project_results(
    st: &AppState,
    q: &Query,
    body: &Bytes,
    json: bool,
) -> Result<Reply, ApiError> {
    let text = body_text(body)?.to_string();
    if text.trim().is_empty() {
        return Err(ApiError::bad(
            "the body is empty: send the project XML to run",
        ));
    }
    let lookup = |v: &str| std::env::var(v).ok();
    let spec = sluice_model::parse_project(&text, &lookup).map_err(|d| {
        ApiError::bad(format!("the project XML has {} problem(s)", d.len()))
            .with_details(d.iter().map(|d| d.to_string()).collect())
    })?;
    check_model_paths(st, &spec)?;
    let wanted: Option<Vec<String>> =
        param(q, "windows").map(|w| w.split('|').map(str::to_string).collect());
    let base = st.cfg.base.clone();
    let badpath = st.cfg.badevents.clone();
    let res = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Schema, Vec<Row>)>, ApiError> {
        let bad = sluice_runtime::BadEvents::open(badpath.as_deref())
            .map_err(|e| ApiError::new(500, format!("cannot open the bad-events file: {e}")))?;
        let mut runner = sluice_runtime::Runner::new(&spec, &base, bad).map_err(|e| {
            ApiError::bad(format!("project '{}' cannot run", spec.name))
                .with_details(e.to_string().lines().map(|l| l.trim().to_string()).collect())
        })?;
        runner
            .run_to_end(&mut sluice_runtime::now_micros)
            .map_err(|e| ApiError::bad(format!("project '{}' failed: {e}", spec.name)))?;
        let engine = &runner.engine;
        let mut out = Vec::new();
        if let Some(ws) = &wanted {
            for w in ws {
                let ok = engine.nodes().iter().any(|n| {
                    *w == n.name || *w == n.path || *w == format!("{}/{}", spec.name, n.path)
                });
                if !ok {
                    return Err(ApiError::not_found(format!(
                        "window '{w}' is not in project '{}' (name it as window, cq/window or project/cq/window)",
                        spec.name
                    )));
                }
            }
        }
        for (i, n) in engine.nodes().iter().enumerate() {
            let full = format!("{}/{}", spec.name, n.path);
            if let Some(ws) = &wanted {
                if !ws.iter().any(|w| *w == n.name || *w == n.path || *w == full) {
                    continue;
                }
            }
            let rows = engine
                .rows_sorted(WindowId(i as u32))
                .into_iter()
                .map(std::borrow::Cow::into_owned)
                .collect();
            out.push((full, n.schema.clone(), rows));
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::new(500, format!("projectResults failed: {e}")))??;
    Ok(events_reply(res, json))
}

fn validate(text: &str) -> Result<Reply, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad(
            "the body is empty: send the project XML to validate",
        ));
    }
    let lookup = |v: &str| std::env::var(v).ok();
    let specs = sluice_model::parse_models(text, &lookup).map_err(|d| {
        ApiError::bad(format!(
            "the project XML is not valid: {} problem(s)",
            d.len()
        ))
        .with_details(d.iter().map(|d| d.to_string()).collect())
    })?;
    let mut e = Elem::new("project-validation-success");
    for spec in &specs {
        if let Err(d) = sluice_engine::Engine::new(spec) {
            for d in d {
                e = e.child(
                    Elem::new("warning")
                        .attr("project", &spec.name)
                        .text(format!("loads but cannot start: {d}")),
                );
            }
        }
    }
    Ok(Reply::Tree(e))
}

fn loggers(one: Option<&str>) -> Result<Elem, ApiError> {
    let levels = logging::control().levels();
    if let Some(n) = one {
        let l = levels.get(n).ok_or_else(|| unknown_logger(n, &levels))?;
        return Ok(Elem::new("loggers").child(Elem::new("logger").attr("name", n).attr("level", l)));
    }
    let mut e = Elem::new("loggers");
    for (k, v) in levels {
        e = e.child(Elem::new("logger").attr("name", k).attr("level", v));
    }
    Ok(e)
}

fn unknown_logger(n: &str, levels: &std::collections::BTreeMap<String, String>) -> ApiError {
    ApiError::not_found(format!(
        "logger '{n}' does not exist (loggers: {})",
        levels.keys().cloned().collect::<Vec<_>>().join(", ")
    ))
}

fn set_logger(name: &str, q: &Query) -> Result<Reply, ApiError> {
    let v = value_param(q, "trace, debug, info, warn, error, off")?;
    match logging::control().set(name, v) {
        Ok(l) => {
            tracing::info!(target: "esp.server", "logger {name} set to {l}");
            Ok(Reply::Message(format!("logger {name} set to level {l}")))
        }
        Err(Some(e)) => Err(ApiError::bad(e)),
        Err(None) => Err(unknown_logger(name, &logging::control().levels())),
    }
}

fn connector_info() -> Elem {
    Elem::new("connectors")
        .child(
            Elem::new("connector")
                .attr("label", "fs")
                .attr("type", "publisher")
                .attr(
                    "description",
                    "reads CSV or XML event files (fstype=csv|xml)",
                ),
        )
        .child(
            Elem::new("connector")
                .attr("label", "fs")
                .attr("type", "subscriber")
                .attr("description", "writes window output as CSV lines"),
        )
        .child(
            Elem::new("connector")
                .attr("label", "kafka")
                .attr("type", "publisher")
                .attr(
                    "description",
                    "reads one topic partition (kafkatype=csv|json|binary; useoffsetmsgid)",
                ),
        )
        .child(
            Elem::new("connector")
                .attr("label", "kafka")
                .attr("type", "subscriber")
                .attr(
                    "description",
                    "writes window output to a topic partition, one record per output block; hotfailover=true for 1+N failover",
                ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let q = parse_query("name=a%7Cb&filter=eq(name,'x y')&flag&sp=a+b");
        assert_eq!(param(&q, "name"), Some("a|b"));
        assert_eq!(param(&q, "filter"), Some("eq(name,'x y')"));
        assert_eq!(param(&q, "flag"), Some(""));
        assert_eq!(param(&q, "sp"), Some("a b"));
        assert_eq!(decode("100%"), "100%");
    }

    #[test]
    fn persist_paths_are_confined() {
        let root = Path::new("/data/snaps");
        assert_eq!(
            confine(Some(root), Some("p1")).unwrap(),
            PathBuf::from("/data/snaps/p1")
        );
        assert!(confine(Some(root), Some("/data/snaps/p1")).is_ok());
        assert_eq!(confine(Some(root), Some("/etc")).unwrap_err().status, 403);
        assert!(confine(Some(root), Some("a/../../x"))
            .unwrap_err()
            .message
            .contains(".."));
        assert!(confine(None, Some("/tmp/../etc")).is_err());
        assert_eq!(confine(None, None).unwrap_err().status, 400);
    }
}
