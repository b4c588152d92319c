//! The `--pubsub` port: a line-oriented text protocol over TCP (docs/formats/pubsub-protocol.md).
//!
//! ```text
//! client: publish p/cq/w [blocksize=N] [dateformat=ENC]      client: subscribe p/cq/w [snapshot] [dateformat=ENC]
//! server: ok ID*:int64,symbol:string,...                     server: ok ID*:int64,symbol:string,...
//! client: i,n,1,IBM,...            (CSV event lines)         server: snapshot 2 / I,N,... lines
//! client: sync                                               server: block 7 1 / U,N,... lines
//! server: synced 1
//! server: bad 3 field 'price' (double): cannot read 'x'
//! ```
//!
//! `ENC` is percent-encoded (`%25Y-%25m-%25d%20%25H:%25M:%25S`). A first line the server cannot
//! use is answered with `error <reason>` and the connection closes. With `--auth-token`, the
//! first line must carry `access_token=TOKEN` (percent-encoded).

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::api::{self, Query};
use crate::events::{self, EventFormat};
use crate::project::Cmd;
use crate::subqueue::{self, Next};
use crate::AppState;

/// Accepts connections until the server stops.
pub async fn serve(listener: TcpListener, st: Arc<AppState>) {
    let mut stop = st.shutdown.subscribe();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    let st = st.clone();
                    tokio::spawn(async move {
                        tracing::debug!(target: "esp.pubsub", "pubsub connection from {peer}");
                        if let Err(e) = handle(s, st).await {
                            tracing::debug!(target: "esp.pubsub", "pubsub connection from {peer}: {e}");
                        }
                    });
                }
                Err(e) => tracing::warn!(target: "esp.pubsub", "accept failed: {e}"),
            },
            _ = stop.wait_for(|v| *v) => break,
        }
    }
}

/// The longest line accepted, in bytes (without its `\n`).
pub const MAX_LINE: usize = 1 << 20;

/// How much of a refused line is kept for the bad-events file.
const BAD_TEXT: usize = 200;

/// One line from the client.
enum Line {
    /// A line of UTF-8 text, without its end (`\n`, `\r\n`).
    Text(String),
    /// A line longer than [`MAX_LINE`], read to its end and dropped; its first bytes.
    TooLong(String),
    /// A line that is not UTF-8: the offset of the first byte that is not, and the line with
    /// such bytes replaced.
    NotUtf8(usize, String),
}

impl Line {
    /// The text, or what to record and answer for a refused line: its text and the reason.
    fn into_text(self) -> Result<String, (String, String)> {
        match self {
            Line::Text(l) => Ok(l),
            Line::TooLong(head) => Err((
                head,
                format!("line longer than {MAX_LINE} bytes (1 MiB): refused whole"),
            )),
            Line::NotUtf8(at, text) => Err((
                text,
                format!("not UTF-8 text: byte {at} of the line is not valid UTF-8"),
            )),
        }
    }
}

/// Splits the client's bytes into lines of at most [`MAX_LINE`] bytes. A longer line is read
/// to its newline without being kept, and reported whole as [`Line::TooLong`]. Cancel-safe:
/// a partial line stays here until the next call.
struct Lines<R> {
    r: R,
    raw: Vec<u8>,
    /// The current line went over the limit (`raw` keeps only its first bytes).
    over: bool,
}

impl<R: tokio::io::AsyncBufRead + Unpin> Lines<R> {
    fn new(r: R) -> Lines<R> {
        Lines {
            r,
            raw: Vec::new(),
            over: false,
        }
    }

    /// The next line; None at the end of the stream (a last line without `\n` counts).
    async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let buf = self.r.fill_buf().await?;
            if buf.is_empty() {
                if self.raw.is_empty() && !self.over {
                    return Ok(None);
                }
                return Ok(Some(self.finish()));
            }
            let (part, used, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            if !self.over {
                if self.raw.len() + part.len() > MAX_LINE {
                    self.over = true;
                    let keep = BAD_TEXT.saturating_sub(self.raw.len()).min(part.len());
                    self.raw.extend_from_slice(&part[..keep]);
                    self.raw.truncate(BAD_TEXT);
                    self.raw.shrink_to(BAD_TEXT);
                } else {
                    self.raw.extend_from_slice(part);
                }
            }
            self.r.consume(used);
            if end {
                return Ok(Some(self.finish()));
            }
        }
    }

    fn finish(&mut self) -> Line {
        let mut raw = std::mem::take(&mut self.raw);
        if std::mem::take(&mut self.over) {
            return Line::TooLong(String::from_utf8_lossy(&raw).into_owned());
        }
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
        match String::from_utf8(raw) {
            Ok(s) => Line::Text(s),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                Line::NotUtf8(at, String::from_utf8_lossy(e.as_bytes()).into_owned())
            }
        }
    }
}

/// The percent-decoded value of a first-line option.
fn decode_option(v: &str) -> String {
    api::parse_query(&format!("x={v}"))[0].1.clone()
}

/// The last line to a subscriber dropped for falling behind (`error REASON`, on a line of its
/// own), tried for at most `subqueue::CLOSE_GRACE`; then the connection closes.
async fn close_too_slow<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    reason: String,
    mid_line: bool,
) {
    let line = format!("{}error {reason}\n", if mid_line { "\n" } else { "" });
    let _ = tokio::time::timeout(subqueue::CLOSE_GRACE, w.write_all(line.as_bytes())).await;
}

async fn handle(stream: TcpStream, st: Arc<AppState>) -> std::io::Result<()> {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let (r, mut w) = stream.into_split();
    let mut lines = Lines::new(BufReader::new(r));
    let line = match lines.next().await? {
        None => return Ok(()),
        Some(Line::Text(l)) => l,
        Some(Line::TooLong(_)) => {
            w.write_all(
                format!("error the first line is longer than {MAX_LINE} bytes\n").as_bytes(),
            )
            .await?;
            return Ok(());
        }
        Some(Line::NotUtf8(at, _)) => {
            w.write_all(format!("error the first line is not UTF-8 text (byte {at})\n").as_bytes())
                .await?;
            return Ok(());
        }
    };
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("").to_string();
    let options: Vec<&str> = words.collect();
    if let Some(token) = &st.cfg.auth_token {
        // Checked before anything else is told about the server (even whether the window exists).
        let given = options
            .iter()
            .find_map(|wd| wd.strip_prefix("access_token="))
            .map(decode_option);
        let why = match given {
            None => Some("this server needs a token: add access_token=TOKEN (percent-encoded) to the first line"),
            Some(g) if !crate::auth::token_matches(g.as_bytes(), token) => Some("the token is wrong"),
            Some(_) => None,
        };
        if let Some(why) = why {
            tracing::warn!(target: "esp.pubsub", "pubsub connection from {peer}: refused: {why}");
            w.write_all(format!("error {why}\n").as_bytes()).await?;
            return Ok(());
        }
    }
    let mut q: Query = Vec::new();
    let mut snapshot = false;
    for wd in options {
        match wd.split_once('=') {
            Some(("access_token", _)) => {}
            Some((k, v)) => q.push((k.to_string(), decode_option(v))),
            None if wd == "snapshot" => snapshot = true,
            None if wd == "csv" => {}
            None => {
                w.write_all(format!("error unknown option '{wd}'\n").as_bytes())
                    .await?;
                return Ok(());
            }
        }
    }
    if verb != "publish" && verb != "subscribe" {
        w.write_all(b"error the first line must be 'publish PROJECT/CQ/WINDOW' or 'subscribe PROJECT/CQ/WINDOW'\n")
            .await?;
        return Ok(());
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let setup = (|| {
        let [p, cq, win] = segs[..] else {
            return Err(crate::reply::ApiError::bad(format!(
                "'{path}' is not a window path: use PROJECT/CONTQUERY/WINDOW"
            )));
        };
        let t = api::target(&st, p, cq, win)?;
        if t.view.handle.is_none() {
            return Err(crate::reply::ApiError::conflict(format!(
                "project '{p}' cannot run"
            )));
        }
        if verb == "publish" && !t.info.source {
            return Err(crate::reply::ApiError::bad(format!(
                "window '{}' is a {}, not a source window: publish into a source window",
                t.path, t.info.element
            )));
        }
        if verb == "publish" && !t.view.running {
            return Err(crate::reply::ApiError::conflict(format!(
                "project '{p}' is stopped: start it before publishing"
            )));
        }
        let opts = api::parse_options(&q)?;
        Ok((t, opts))
    })();
    let (t, opts) = match setup {
        Ok(x) => x,
        Err(e) => {
            w.write_all(format!("error {}\n", e.message).as_bytes())
                .await?;
            return Ok(());
        }
    };
    let handle = t.view.handle.clone().expect("checked");
    if verb == "publish" {
        w.write_all(format!("ok {}\n", t.info.schema).as_bytes())
            .await?;
        tracing::info!(target: "esp.pubsub", "pubsub publisher connected to {}", t.path);
        let name = format!("{}/pubsub-publisher", t.path);
        let mut n = 0u64;
        let mut published = 0u64;
        let mut pending: Vec<sluice_event::Event> = Vec::new();
        let bs = opts.blocksize.max(1);
        let window = t.info.id;
        let flush = |pending: &mut Vec<sluice_event::Event>| -> u64 {
            if pending.is_empty() {
                return 0;
            }
            let events = std::mem::take(pending);
            let k = events.len() as u64;
            let block = sluice_event::EventBlock::new(sluice_event::MsgId(0), events);
            handle.send(Cmd::Inject {
                window,
                blocks: vec![block],
                reply: None,
            });
            k
        };
        while let Some(got) = lines.next().await? {
            n += 1;
            let line = match got.into_text() {
                Ok(l) => l,
                Err((text, reason)) => {
                    // Refused whole: nothing of the line is published; the next line goes on.
                    handle.send(Cmd::BadLine {
                        connector: name.clone(),
                        line: n,
                        text,
                        reason: reason.clone(),
                    });
                    w.write_all(format!("bad {n} {reason}\n").as_bytes())
                        .await?;
                    continue;
                }
            };
            let l = line.trim();
            if l.is_empty() {
                continue;
            }
            if l == "sync" || l == "quit" {
                published += flush(&mut pending);
                if l == "quit" {
                    break;
                }
                if handle.ask(Cmd::Sync).await.is_none() {
                    break;
                }
                w.write_all(format!("synced {published}\n").as_bytes())
                    .await?;
                continue;
            }
            match events::parse_body(&line, EventFormat::Csv, &t.info.schema, &opts) {
                Ok(blocks) => {
                    pending.extend(blocks.into_iter().flat_map(|b| b.events));
                    if pending.len() >= bs {
                        published += flush(&mut pending);
                    }
                }
                Err(errs) => {
                    let reason = errs.join("; ");
                    let reason = reason.strip_prefix("line 1: ").unwrap_or(&reason);
                    let reason = reason
                        .strip_suffix(line.as_str())
                        .and_then(|r| r.strip_suffix(": "))
                        .unwrap_or(reason)
                        .to_string();
                    handle.send(Cmd::BadLine {
                        connector: name.clone(),
                        line: n,
                        text: line.clone(),
                        reason: reason.clone(),
                    });
                    w.write_all(format!("bad {n} {reason}\n").as_bytes())
                        .await?;
                }
            }
        }
        published += flush(&mut pending);
        tracing::info!(target: "esp.pubsub", "pubsub publisher of {} disconnected after {published} event(s)", t.path);
        return Ok(());
    }
    // subscribe
    tracing::info!(target: "esp.pubsub", "pubsub subscriber connected to {}", t.path);
    let (tx, mut rx) = subqueue::channel(
        st.cfg.subscriber_queue,
        format!("pubsub subscriber {peer} of {}", t.path),
        st.slow_subscribers_dropped.clone(),
    );
    let window = t.info.id;
    if handle
        .ask(|reply| Cmd::Subscribe {
            window,
            snapshot,
            tx,
            reply,
        })
        .await
        .is_none()
    {
        return Ok(());
    }
    // Registered before `ok`: every block after it reaches the client.
    w.write_all(format!("ok {}\n", t.info.schema).as_bytes())
        .await?;
    loop {
        tokio::select! {
            m = rx.next() => match m {
                Next::Block(m) => {
                    let mut out = if m.snapshot {
                        format!("snapshot {}\n", m.events.len())
                    } else {
                        format!("block {} {}\n", m.id, m.events.len())
                    };
                    out.push_str(&events::format_block(EventFormat::Csv, &t.path, m.id, m.snapshot, &t.info.schema, &m.events, opts.dateformat.as_ref()));
                    // Written piece by piece, so that a client that stops reading can be told
                    // why it is dropped on a line of its own.
                    let out = out.as_bytes();
                    let mut pos = 0;
                    while pos < out.len() {
                        tokio::select! {
                            biased;
                            reason = rx.dropped() => {
                                let mid_line = pos > 0 && out[pos - 1] != b'\n';
                                close_too_slow(&mut w, reason, mid_line).await;
                                return Ok(());
                            }
                            n = w.write(&out[pos..]) => match n? {
                                0 => return Ok(()),
                                n => pos += n,
                            },
                        }
                    }
                }
                Next::Dropped(reason) => {
                    close_too_slow(&mut w, reason, false).await;
                    return Ok(());
                }
                Next::Closed => break,
            },
            r = lines.next() => match r {
                Ok(Some(Line::Text(l))) if l.trim() == "quit" => break,
                Ok(Some(_)) => {}
                _ => break,
            },
        }
    }
    tracing::info!(target: "esp.pubsub", "pubsub subscriber of {} disconnected", t.path);
    Ok(())
}
