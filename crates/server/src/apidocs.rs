//! `GET api-docs`: a Swagger 2.0 description of the endpoints (JSON).

use serde_json::{json, Map, Value};

use crate::AppState;

/// (method, path, summary) of every endpoint.
pub const ENDPOINTS: &[(&str, &str, &str)] = &[
    ("head", "/", "200, or 401 when a token is needed"),
    (
        "get",
        "/server",
        "server version, ports, primary-server (config=true adds properties)",
    ),
    (
        "put",
        "/server/state",
        "value=stopped|reloaded|persisted&path=",
    ),
    ("get", "/projects", "list projects (name=, filter=)"),
    (
        "delete",
        "/projects",
        "delete projects matching name=a|b or filter=",
    ),
    ("get", "/projects/{name}", "one project's state"),
    (
        "put",
        "/projects/{name}",
        "load a project (body: XML; overwrite, start, connectors, projectUrl)",
    ),
    ("delete", "/projects/{name}", "delete a project"),
    (
        "put",
        "/projects/{name}/state",
        "value=running|stopped|connectorsStarted|persisted|restored (path=)",
    ),
    (
        "get",
        "/projectXml",
        "the XML of loaded projects (name=, filter=)",
    ),
    (
        "get",
        "/projectStatus/{name}",
        "Kafka input positions and lag, Kafka output and hot failover state (also /projectStatus)",
    ),
    ("get", "/runningProjects", "running projects"),
    ("get", "/stoppedProjects", "stopped projects"),
    ("post", "/runningProjects", "start matching projects"),
    ("post", "/stoppedProjects", "stop matching projects"),
    (
        "get",
        "/windowXml",
        "window XML (project=, contquery=, name=, type=, filter=)",
    ),
    (
        "get",
        "/windows",
        "windows with counts (count=, schema=, filter=)",
    ),
    (
        "get",
        "/windows/{project}/{contquery}/{window}",
        "one window with its schema",
    ),
    (
        "put",
        "/windows/{project}/{contquery}/{window}/state",
        "value=injected: events in the body (CSV, XML, JSON) or eventUrl=file://",
    ),
    (
        "get",
        "/events",
        "rows of every window (windowFilter=, eventFilter=, sortBy=, limit=)",
    ),
    (
        "get",
        "/events/{project}/{contquery}/{window}",
        "rows of a window (filter=, sortBy=field:ascending|descending, limit=)",
    ),
    (
        "post",
        "/projectResults",
        "run a project XML's file publishers to the end; rows of windows=a|b",
    ),
    (
        "post",
        "/projectValidationResults",
        "validate a project XML",
    ),
    ("get", "/loggers", "loggers and levels"),
    ("get", "/loggers/{name}", "one logger"),
    (
        "put",
        "/loggers/{name}/level",
        "value=trace|debug|info|warn|error|off",
    ),
    ("get", "/connectorInfo", "connector classes"),
    ("get", "/api-docs", "this document"),
    (
        "get",
        "/subscribers/{project}/{contquery}/{window}",
        "WebSocket subscriber",
    ),
    (
        "get",
        "/publishers/{project}/{contquery}/{window}",
        "WebSocket publisher",
    ),
];

/// The Swagger document.
pub fn api_docs(st: &AppState) -> Value {
    let mut paths = Map::new();
    for (m, p, s) in ENDPOINTS {
        let entry = paths
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = entry {
            o.insert(
                m.to_string(),
                json!({"summary": s, "tags": [p.trim_start_matches('/').split('/').next().unwrap_or("")],
                       "responses": {"200": {"description": "success: <message> or the requested document"},
                                     "400": {"description": "bad parameters, XML or events"},
                                     "404": {"description": "unknown project, window or logger"},
                                     "409": {"description": "illegal state transition or existing name"}}}),
            );
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Sluice ESP-compatible REST API", "version": env!("CARGO_PKG_VERSION")},
        "host": st.http_addr.to_string(),
        "basePath": "/SASESP",
        "schemes": ["http"],
        "tags": [{"name": "projects"}, {"name": "windows"}, {"name": "events"}, {"name": "server"}, {"name": "loggers"}],
        "paths": paths,
    })
}
