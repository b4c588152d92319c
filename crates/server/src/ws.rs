//! WebSocket publishers and subscribers on the HTTP port (reference 4.4):
//!
//! - `ws://host:port/SASESP/subscribers/{p}/{cq}/{w}?format=xml|json|csv&snapshot=true&schema=true&mode=streaming|updating`:
//!   the server sends `status: 200`, then the window's schema (unless `schema=false`), then
//!   one message per output block (with `snapshot=true` or `mode=updating`, the current rows
//!   first, as inserts). A subscriber that falls more than `--subscriber-queue` events behind
//!   is closed with code 1008 and the reason (crate::subqueue).
//! - `ws://host:port/SASESP/publishers/{p}/{cq}/{w}?format=csv|xml|json&blocksize=&dateformat=&opcode=`:
//!   each text message holds events; a message `sync` is answered with `synced N` once every
//!   event sent before it has been processed (N = events published on the connection). A
//!   message that cannot be read is answered with `error: …` and nothing of it is published.

use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;

use crate::api::{self, param, parse_query, Target};
use crate::events::{self, EventFormat};
use crate::project::Cmd;
use crate::reply::ApiError;
use crate::subqueue::{self, Next};
use crate::AppState;

fn resolve(st: &AppState, path: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let [p, cq, w] = segs[..] else {
        return Err(ApiError::bad(format!(
            "'{path}' is not a window path: use PROJECT/CONTQUERY/WINDOW"
        )));
    };
    let t = api::target(st, p, cq, w)?;
    if t.view.handle.is_none() {
        return Err(ApiError::conflict(format!("project '{p}' cannot run")));
    }
    Ok(t)
}

fn event_format(q: &api::Query, default: EventFormat) -> Result<EventFormat, ApiError> {
    match param(q, "format") {
        None => Ok(default),
        Some(f) => EventFormat::parse(f).ok_or_else(|| {
            ApiError::bad(format!(
                "format '{f}' is not supported (use csv, xml or json)"
            ))
        }),
    }
}

/// `GET …/subscribers/{p}/{cq}/{w}` (WebSocket).
pub async fn subscriber(
    State(st): State<Arc<AppState>>,
    Path(path): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let q = parse_query(uri.query().unwrap_or(""));
    let fmt = api::format_of(&headers, &q);
    let setup = (|| {
        let t = resolve(&st, &path)?;
        let efmt = event_format(&q, EventFormat::Xml)?;
        let updating = param(&q, "mode").is_some_and(|m| m == "updating");
        let snapshot = api::flag(&q, "snapshot", updating)?;
        let schema = api::flag(&q, "schema", true)?;
        let opts = api::parse_options(&q)?;
        Ok::<_, ApiError>((t, efmt, snapshot, schema, opts.dateformat))
    })();
    let (t, efmt, snapshot, want_schema, dateformat) = match setup {
        Ok(s) => s,
        Err(e) => return e.render(fmt),
    };
    let bound = st.cfg.subscriber_queue;
    let dropped = st.slow_subscribers_dropped.clone();
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        let handle = t.view.handle.clone().expect("checked");
        tracing::info!(target: "esp.pubsub", "WebSocket subscriber connected to {}", t.path);
        let (tx, mut rx) =
            subqueue::channel(bound, format!("WebSocket subscriber of {}", t.path), dropped);
        let window = t.info.id;
        if handle
            .ask(|r| Cmd::Subscribe {
                window,
                snapshot,
                tx,
                reply: r,
            })
            .await
            .is_none()
        {
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        // Registered before the status line: every block after `status: 200` reaches the
        // client (they wait in the queue meanwhile).
        if socket.send(Message::Text("status: 200".into())).await.is_err() {
            return;
        }
        if want_schema {
            let s = events::format_schema(efmt, &t.path, &t.info.schema);
            if socket.send(Message::Text(s.into())).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                m = rx.next() => match m {
                    Next::Block(m) => {
                        let text = events::format_block(efmt, &t.path, m.id, m.snapshot, &t.info.schema, &m.events, dateformat.as_ref());
                        // A client that stops reading blocks this write: the project drops it
                        // once its queue is over the bound, which ends the write.
                        tokio::select! {
                            biased;
                            reason = rx.dropped() => {
                                close_too_slow(&mut socket, reason).await;
                                break;
                            }
                            r = socket.send(Message::Text(text.into())) => if r.is_err() {
                                break;
                            },
                        }
                    }
                    Next::Dropped(reason) => {
                        close_too_slow(&mut socket, reason).await;
                        break;
                    }
                    Next::Closed => {
                        let _ = socket.send(Message::Close(None)).await;
                        break;
                    }
                },
                msg = socket.recv() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    _ => {}
                },
            }
        }
        tracing::info!(target: "esp.pubsub", "WebSocket subscriber of {} disconnected", t.path);
    })
}

/// Ends the connection of a subscriber dropped for falling behind: what was being written, then
/// a close frame with code 1008 (policy) and the reason, for at most `subqueue::CLOSE_GRACE`.
async fn close_too_slow(socket: &mut WebSocket, reason: String) {
    let mut reason = reason;
    // A close frame's reason holds at most 123 bytes.
    while reason.len() > 123 {
        reason.pop();
    }
    let frame = CloseFrame {
        code: close_code::POLICY,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        subqueue::CLOSE_GRACE,
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

/// `GET …/publishers/{p}/{cq}/{w}` (WebSocket).
pub async fn publisher(
    State(st): State<Arc<AppState>>,
    Path(path): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let q = parse_query(uri.query().unwrap_or(""));
    let fmt = api::format_of(&headers, &q);
    let setup = (|| {
        let t = resolve(&st, &path)?;
        if !t.info.source {
            return Err(ApiError::bad(format!(
                "window '{}' is a {}, not a source window: publish into a source window",
                t.path, t.info.element
            )));
        }
        if !t.view.running {
            return Err(ApiError::conflict(format!(
                "project '{}' is stopped: start it before publishing",
                t.view.spec.name
            )));
        }
        let efmt = event_format(&q, EventFormat::Csv)?;
        let opts = api::parse_options(&q)?;
        Ok::<_, ApiError>((t, efmt, opts))
    })();
    let (t, efmt, opts) = match setup {
        Ok(s) => s,
        Err(e) => return e.render(fmt),
    };
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        let handle = t.view.handle.clone().expect("checked");
        let name = format!("{}/websocket-publisher", t.path);
        tracing::info!(target: "esp.pubsub", "WebSocket publisher connected to {}", t.path);
        let mut published = 0u64;
        let mut messages = 0u64;
        while let Some(Ok(msg)) = socket.recv().await {
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => match String::from_utf8(b.to_vec()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = socket.send(Message::Text("error: binary message is not UTF-8 text".into())).await;
                        continue;
                    }
                },
                Message::Close(_) => break,
                _ => continue,
            };
            messages += 1;
            if text.trim() == "sync" {
                if handle.ask(Cmd::Sync).await.is_none() {
                    break;
                }
                let reply = format!("synced {published}");
                if socket.send(Message::Text(reply.into())).await.is_err() {
                    break;
                }
                continue;
            }
            match events::parse_body(&text, efmt, &t.info.schema, &opts) {
                Ok(blocks) => {
                    published += blocks.iter().map(|b| b.events.len() as u64).sum::<u64>();
                    if !handle.send(Cmd::Inject { window: t.info.id, blocks, reply: None }) {
                        break;
                    }
                }
                Err(errs) => {
                    for e in &errs {
                        handle.send(Cmd::BadLine {
                            connector: name.clone(),
                            line: messages,
                            text: text.lines().next().unwrap_or("").to_string(),
                            reason: e.clone(),
                        });
                    }
                    let reply = format!("error: message {messages}: {}", errs.join("; "));
                    if socket.send(Message::Text(reply.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        tracing::info!(target: "esp.pubsub", "WebSocket publisher of {} disconnected after {published} event(s)", t.path);
    })
}
