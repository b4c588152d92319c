//! Serving the HTTP port: the accept loop (hyper HTTP/1.1 with upgrades for WebSockets, a
//! header read timeout, graceful shutdown), and error replies that always carry the usual
//! error element (crate::reply), whoever produced them:
//!
//! - statuses made below the handlers by axum (extractor rejections such as a WebSocket request
//!   without `Connection: upgrade`, 405 of a route) come with a text or empty body:
//!   [`fill_error_body`] puts it into the error element;
//! - statuses hyper writes itself for a request it cannot parse (400 bad request line or
//!   header, 414 URI over 65 534 bytes, 431 more than 100 headers or a head over about 400 KiB)
//!   never reach a handler: [`ErrorBodies`] rewrites their empty reply on the way out.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api;
use crate::reply::ApiError;

/// Default time a client has to send a request's headers (`Config::header_read_timeout`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `stop` turns true, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection task holds a receiver; the loop waits for all of them at the end.
    let (open_tx, open_rx) = watch::channel(());
    let open_tx = Arc::new(open_tx);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|v| *v) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, do not spin.
                tracing::warn!(target: "esp.http", "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let io = TokioIo::new(ErrorBodies::new(stream));
        let mut stop = stop.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = b.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|v| *v).await;
            };
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(target: "esp.http", "connection from {peer}: {e}");
            }
            drop(open);
        });
    }
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
}

/// Gives error replies made below the handlers (axum's rejections: a text or empty body) the
/// error element, in the representation the request asked for. Other headers are kept.
pub async fn fill_error_body(req: Request, next: Next) -> Response {
    let fmt = api::format_of(
        req.headers(),
        &api::parse_query(req.uri().query().unwrap_or("")),
    );
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/xml") || ct.starts_with("application/json") {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if !text.is_empty() {
        text
    } else if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        format!("{method} is not allowed on {path}: use {allow}")
    } else {
        format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error")
        )
    };
    tracing::info!(target: "esp.http", "{method} {path}: {} {message}", status.as_u16());
    let mut r = ApiError::new(status.as_u16(), message).render(fmt);
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut last = None;
    for (k, v) in parts.headers {
        if let Some(k) = k {
            last = Some(k);
        }
        if let Some(k) = &last {
            r.headers_mut().append(k.clone(), v);
        }
    }
    r
}

/// How much of a request's start is kept to tell whether it asked for JSON.
const SNIFF: usize = 8 << 10;

/// The connection as hyper sees it: passes everything through, except the empty reply hyper
/// writes itself for a request it cannot parse (400, 414, 431 with `content-length: 0`),
/// which is replaced by the same reply with the error element (JSON when the request's start
/// mentions `application/json` or `format=json`). After a `101 Switching Protocols` (a
/// WebSocket) everything passes through untouched.
pub struct ErrorBodies<T> {
    inner: T,
    /// The start of the request being read.
    sniff: Vec<u8>,
    /// Something was written since the last read: the next read starts a new request.
    wrote: bool,
    /// The connection was upgraded: pass everything through.
    upgraded: bool,
    /// A replacement reply being written, and how much of it is.
    pending: Vec<u8>,
    pos: usize,
}

impl<T> ErrorBodies<T> {
    pub fn new(inner: T) -> ErrorBodies<T> {
        ErrorBodies {
            inner,
            sniff: Vec::new(),
            wrote: false,
            upgraded: false,
            pending: Vec::new(),
            pos: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> ErrorBodies<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        self.pending.clear();
        self.pos = 0;
        Poll::Ready(Ok(()))
    }
}

/// The status and message of an empty reply hyper writes for an unparsable request, when
/// `head` is one.
fn parse_error_reply(head: &[u8]) -> Option<(u16, &'static str)> {
    let (status, message) = match head.get(..13)? {
        b"HTTP/1.1 400 " => (
            400,
            "the request cannot be read as HTTP/1.1: check the request line (METHOD /path HTTP/1.1) and the header lines (Name: value)",
        ),
        b"HTTP/1.1 414 " => (
            414,
            "the request URI is too long (more than 65534 bytes): shorten the query, e.g. the filter",
        ),
        b"HTTP/1.1 431 " => (
            431,
            "the request headers are too large (more than 100 headers, or about 400 KiB in all): send fewer or shorter headers",
        ),
        _ => return None,
    };
    // Only a head alone with an empty body, as hyper writes it: never a reply with a body.
    if !head.ends_with(b"\r\n\r\n") || head.windows(4).filter(|w| w == b"\r\n\r\n").count() != 1 {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    if !lower.windows(19).any(|w| w == b"\r\ncontent-length: 0") {
        return None;
    }
    Some((status, message))
}

fn replacement(head: &[u8], sniff: &[u8]) -> Option<Vec<u8>> {
    let (status, message) = parse_error_reply(head)?;
    let lower = sniff.to_ascii_lowercase();
    let json = [&b"application/json"[..], b"format=json"]
        .iter()
        .any(|p| lower.windows(p.len()).any(|w| w == *p));
    let (ct, body) = match json {
        true => (
            "application/json",
            serde_json::json!({"message": message, "details": []}).to_string(),
        ),
        false => {
            let mut s = String::from("<response><message>");
            crate::reply::escape(message, &mut s);
            s.push_str("</message></response>\n");
            ("application/xml", s)
        }
    };
    tracing::info!(target: "esp.http", "unreadable request: {status} {message}");
    let head = std::str::from_utf8(head).ok()?;
    let mut out = String::with_capacity(head.len() + body.len() + 100);
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        if line.to_ascii_lowercase().starts_with("content-length:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-type: {ct}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    Some(out.into_bytes())
}

impl<T: AsyncRead + Unpin> AsyncRead for ErrorBodies<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if !this.upgraded {
            if this.wrote {
                this.wrote = false;
                this.sniff.clear();
            }
            let new = &buf.filled()[before..];
            let room = SNIFF.saturating_sub(this.sniff.len());
            this.sniff.extend_from_slice(&new[..new.len().min(room)]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.upgraded {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.wrote = true;
        if buf.starts_with(b"HTTP/1.1 101 ") {
            this.upgraded = true;
            this.sniff = Vec::new();
        } else if let Some(r) = replacement(buf, &this.sniff) {
            // Taken whole now; written by this and the following calls.
            this.pending = r;
            this.pos = 0;
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_empty_parse_error_replies_are_replaced() {
        let head =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let r = String::from_utf8(replacement(head, b"GET / HTTP/1.1\r\n").unwrap()).unwrap();
        assert!(
            r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{r}"
        );
        assert!(r.contains("content-type: application/xml\r\n"), "{r}");
        assert!(r.contains("date: x\r\n"), "{r}");
        assert!(!r.contains("content-length: 0"), "{r}");
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        assert!(r.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(body.starts_with("<response><message>the request headers are too large"));
        let j = String::from_utf8(
            replacement(head, b"GET /?x HTTP/1.1\r\nAccept: application/JSON\r\n").unwrap(),
        )
        .unwrap();
        assert!(j.contains("content-type: application/json"), "{j}");
        // A reply with a body, or another status, passes.
        assert!(replacement(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n",
            b""
        )
        .is_none());
        assert!(replacement(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            b""
        )
        .is_none());
        assert!(replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", b"").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", b"").is_none());
    }
}
