//! `sluice client`: a blocking HTTP client of the REST admin API, in the manner of
//! `dfesp_xml_client`.
//!
//! ```text
//! sluice client --url URL [--put [file://PATH]] [--post [file://PATH]] [--delete]
//!               [--auth-token TOKEN] [--accept json] [--timeout SECS]
//! sluice client --wait-in-sync --url http://HOST:PORT/SASESP/projectStatus/P [--timeout SECS]
//! ```
//!
//! The single-dash spellings of existing scripts (`-url`, `-put`, `-post`, `-delete`) work too.
//! The reply body goes to standard output. On an HTTP status ≥ 400, or when the server cannot
//! be reached, a one-line reason goes to standard error and the exit code is 1 (2 for bad
//! options).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Parsed options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub url: String,
    pub method: &'static str,
    /// `file://PATH` or PATH of the body.
    pub body_file: Option<String>,
    pub token: Option<String>,
    pub json: bool,
    pub timeout_secs: u64,
    pub show_headers: bool,
    /// `--wait-in-sync`: poll `GET projectStatus/{p}` until the project is in sync.
    pub wait_in_sync: bool,
}

const USAGE: &str = "usage: sluice client --url URL [--put [file://PATH]] [--post [file://PATH]] [--delete] [--auth-token TOKEN] [--accept json] [--timeout SECS] [--showheaders]\n       sluice client --wait-in-sync --url http://HOST:PORT/SASESP/projectStatus/PROJECT [--timeout SECS]";

/// Parses the options (single or double dash).
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        method: "GET",
        timeout_secs: 300,
        ..Options::default()
    };
    let mut i = 0;
    let takes_file = |next: Option<&String>| -> bool { next.is_some_and(|n| !n.starts_with('-')) };
    while i < args.len() {
        let a = args[i].as_str();
        let name = a.trim_start_matches('-');
        if !a.starts_with('-') {
            return Err(format!("unexpected argument '{a}'"));
        }
        match name {
            "url" => {
                i += 1;
                o.url = args.get(i).ok_or("--url needs a value")?.clone();
            }
            "put" | "post" => {
                if o.method != "GET" {
                    return Err("give only one of --put, --post, --delete".into());
                }
                o.method = if name == "put" { "PUT" } else { "POST" };
                if takes_file(args.get(i + 1)) {
                    i += 1;
                    o.body_file = Some(args[i].clone());
                }
            }
            "delete" => {
                if o.method != "GET" {
                    return Err("give only one of --put, --post, --delete".into());
                }
                o.method = "DELETE";
            }
            "auth-token" | "auth_token" => {
                i += 1;
                o.token = Some(args.get(i).ok_or("--auth-token needs a value")?.clone());
            }
            "accept" => {
                i += 1;
                o.json = args.get(i).is_some_and(|v| v.contains("json"));
            }
            "timeout" => {
                i += 1;
                o.timeout_secs = args
                    .get(i)
                    .and_then(|v| v.parse().ok())
                    .ok_or("--timeout needs a number of seconds")?;
            }
            "showheaders" => o.show_headers = true,
            "wait-in-sync" | "wait_in_sync" => o.wait_in_sync = true,
            "h" | "help" => return Err(String::new()),
            other => return Err(format!("unknown option '-{other}'")),
        }
        i += 1;
    }
    if o.url.is_empty() {
        return Err("--url is required".into());
    }
    if o.wait_in_sync && o.method != "GET" {
        return Err("--wait-in-sync polls with GET: give no --put, --post or --delete".into());
    }
    if o.token.is_none() {
        o.token = std::env::var("SLUICE_AUTH_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
    }
    Ok(o)
}

/// The text of the first `<message>` element of an XML error body, or a JSON `message`,
/// else the body's first line.
pub fn error_message(body: &str) -> String {
    if let Some(start) = body.find("<message>") {
        let rest = &body[start + 9..];
        if let Some(end) = rest.find("</message>") {
            return unescape(&rest[..end]);
        }
    }
    if let Some(p) = body.find("\"message\":\"") {
        let rest = &body[p + 11..];
        if let Some(end) = rest.find('"') {
            return rest[..end].to_string();
        }
    }
    body.lines().next().unwrap_or("").trim().to_string()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Runs one request; the body on success, else the one-line reason.
pub fn run(o: &Options) -> Result<(u16, String), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(Duration::from_secs(o.timeout_secs))
        .build();
    let mut req = agent.request(o.method, &o.url);
    if let Some(t) = &o.token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    if o.json {
        req = req.set("Accept", "application/json");
    }
    let result = if o.method == "PUT" || o.method == "POST" {
        let body = match &o.body_file {
            Some(f) => {
                let path = f.strip_prefix("file://").unwrap_or(f);
                std::fs::read(path).map_err(|e| format!("cannot read '{path}': {e}"))?
            }
            None => Vec::new(),
        };
        req.send_bytes(&body)
    } else {
        req.call()
    };
    match result {
        Ok(resp) => {
            let status = resp.status();
            let headers = header_text(&resp);
            let body = resp
                .into_string()
                .map_err(|e| format!("cannot read the reply: {e}"))?;
            Ok((
                status,
                if o.show_headers {
                    headers + &body
                } else {
                    body
                },
            ))
        }
        Err(ureq::Error::Status(code, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            Err(format!("HTTP {code}: {}\n{body}", error_message(&body)))
        }
        Err(ureq::Error::Transport(t)) => Err(format!(
            "cannot reach {}: {}",
            o.url,
            t.to_string().lines().next().unwrap_or("")
        )),
    }
}

fn header_text(resp: &ureq::Response) -> String {
    let mut s = format!("HTTP {} {}\n", resp.status(), resp.status_text());
    for h in resp.headers_names() {
        if let Some(v) = resp.header(&h) {
            s.push_str(&format!("{h}: {v}\n"));
        }
    }
    s.push('\n');
    s
}

/// What one `GET projectStatus[/{p}]` reply says about catching up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Project names in the reply.
    pub projects: Vec<String>,
    /// Every project has `in-sync="true"` (and there is at least one).
    pub in_sync: bool,
    /// Sum of the projects' `lag` (offsets behind the end of their Kafka inputs), when measured.
    pub lag: Option<i64>,
}

/// The value of attribute `name` in the start tag `tag` (text from `<` to `>`).
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + end]))
}

/// Reads the `<project-status …>` start tags of a projectStatus reply (XML).
pub fn sync_state(body: &str) -> SyncState {
    let mut st = SyncState {
        in_sync: true,
        ..SyncState::default()
    };
    let mut rest = body;
    while let Some(p) = rest.find("<project-status ") {
        let tail = &rest[p..];
        let end = tail.find('>').unwrap_or(tail.len());
        let tag = &tail[..end];
        st.projects.push(attr(tag, "name").unwrap_or_default());
        st.in_sync &= attr(tag, "in-sync").as_deref() == Some("true");
        if let Some(l) = attr(tag, "lag").and_then(|l| l.parse::<i64>().ok()) {
            st.lag = Some(st.lag.unwrap_or(0) + l);
        }
        rest = &tail[end..];
    }
    st.in_sync &= !st.projects.is_empty();
    st
}

/// A one-line progress bar: how much of the largest lag seen has been replayed.
pub fn progress_bar(lag: Option<i64>, max_lag: i64, width: usize) -> String {
    let Some(lag) = lag else {
        return format!("[{}] lag not measured yet", " ".repeat(width));
    };
    let done = if max_lag <= 0 {
        width
    } else {
        (((max_lag - lag.min(max_lag)) as f64 / max_lag as f64) * width as f64) as usize
    };
    format!(
        "[{}{}] lag {lag} offset(s)",
        "#".repeat(done),
        "-".repeat(width - done.min(width))
    )
}

/// `--wait-in-sync`: polls the status URL until every project in it is in sync, at most
/// `--timeout` seconds. Progress goes to standard error: a redrawn bar on a terminal, else a
/// line every few seconds. Ok(final line) or Err(one-line reason).
pub fn wait_in_sync(o: &Options) -> Result<String, String> {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let start = std::time::Instant::now();
    let limit = Duration::from_secs(o.timeout_secs);
    let req = Options {
        url: o.url.clone(),
        method: "GET",
        token: o.token.clone(),
        timeout_secs: o.timeout_secs.clamp(1, 10),
        ..Options::default()
    };
    let mut interval = Duration::from_millis(100);
    let mut max_lag = 0i64;
    let mut last_line = std::time::Instant::now() - Duration::from_secs(60);
    let mut last: Result<SyncState, String>;
    loop {
        last = run(&req).map(|(_, body)| sync_state(&body));
        let waited = start.elapsed();
        match &last {
            Ok(st) if st.in_sync => {
                if tty {
                    eprintln!("\r{}", progress_bar(st.lag, max_lag, 30));
                }
                return Ok(format!(
                    "project(s) {} in sync (lag {}) after {:.1} s",
                    st.projects.join(", "),
                    st.lag.unwrap_or(0),
                    waited.as_secs_f64()
                ));
            }
            Ok(st) => {
                max_lag = max_lag.max(st.lag.unwrap_or(0));
                if tty {
                    eprint!(
                        "\r{} {:.0} s   ",
                        progress_bar(st.lag, max_lag, 30),
                        waited.as_secs_f64()
                    );
                } else if last_line.elapsed() >= Duration::from_secs(2) {
                    last_line = std::time::Instant::now();
                    let lag = st
                        .lag
                        .map_or("not measured yet".to_string(), |l| l.to_string());
                    eprintln!(
                        "sluice client: waiting for in-sync: project(s) {} lag {lag} after {:.1} s",
                        if st.projects.is_empty() {
                            "?".to_string()
                        } else {
                            st.projects.join(", ")
                        },
                        waited.as_secs_f64()
                    );
                }
            }
            Err(e) => {
                if !tty && last_line.elapsed() >= Duration::from_secs(2) {
                    last_line = std::time::Instant::now();
                    eprintln!(
                        "sluice client: waiting for in-sync: {}",
                        e.lines().next().unwrap_or("")
                    );
                }
            }
        }
        if waited >= limit {
            if tty {
                eprintln!();
            }
            let why = match &last {
                Ok(st) if st.projects.is_empty() => {
                    "the reply holds no <project-status> (is the URL .../projectStatus/PROJECT?)"
                        .to_string()
                }
                Ok(st) => format!(
                    "project(s) {} not in sync, lag {}",
                    st.projects.join(", "),
                    st.lag.map_or("not measured".to_string(), |l| l.to_string())
                ),
                Err(e) => e.lines().next().unwrap_or("").to_string(),
            };
            return Err(format!(
                "timed out after {} s waiting for in-sync: {why}",
                o.timeout_secs
            ));
        }
        std::thread::sleep(interval.min(limit.saturating_sub(waited)));
        interval = (interval * 2).min(Duration::from_secs(1));
    }
}

/// `sluice client ARGS...`.
pub fn main(args: &[String]) -> ExitCode {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sluice client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if o.wait_in_sync {
        return match wait_in_sync(&o) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sluice client: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&o) {
        Ok((_, body)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(body.as_bytes());
            if !body.ends_with('\n') && !body.is_empty() {
                let _ = out.write_all(b"\n");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let (line, body) = e.split_once('\n').unwrap_or((&e, ""));
            if !body.trim().is_empty() {
                println!("{}", body.trim_end());
            }
            eprintln!("sluice client: {line}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn both_dash_styles_parse() {
        let o = parse(&s(&[
            "-url",
            "http://h/SASESP/projects/p",
            "-put",
            "file://p.xml",
        ]))
        .unwrap();
        assert_eq!(o.method, "PUT");
        assert_eq!(o.body_file.as_deref(), Some("file://p.xml"));
        let o = parse(&s(&["--url", "http://h/x?value=running", "--put"])).unwrap();
        assert_eq!(o.method, "PUT");
        assert_eq!(o.body_file, None);
        let o = parse(&s(&["-url", "http://h/x", "-delete"])).unwrap();
        assert_eq!(o.method, "DELETE");
        assert!(parse(&s(&["-put"])).unwrap_err().contains("--url"));
        assert!(parse(&s(&["-url", "u", "-bogus"]))
            .unwrap_err()
            .contains("bogus"));
    }

    #[test]
    fn sync_state_reads_project_attributes() {
        let one = r#"<project-status name="p" state="running" connectors="started" primary="false" in-sync="false" lag="1200"><kafka-input connector="p/cq/w/in" in-sync="true" lag="5"/></project-status>"#;
        let st = sync_state(one);
        assert_eq!(st.projects, vec!["p".to_string()]);
        assert!(!st.in_sync);
        assert_eq!(st.lag, Some(1200));
        let all = r#"<project-statuses><project-status name="a" in-sync="true" lag="3"/><project-status name="b" in-sync="true"/></project-statuses>"#;
        let st = sync_state(all);
        assert!(st.in_sync);
        assert_eq!(st.lag, Some(3));
        assert!(!sync_state("<message>x</message>").in_sync);
        assert_eq!(
            progress_bar(Some(25), 100, 4),
            "[###-] lag 25 offset(s)".to_string()
        );
        let o = parse(&s(&["--wait-in-sync", "--url", "u", "--timeout", "5"])).unwrap();
        assert!(o.wait_in_sync);
        assert!(parse(&s(&["--wait-in-sync", "--url", "u", "--put"])).is_err());
    }

    #[test]
    fn error_messages_are_extracted() {
        assert_eq!(
            error_message("<response><message>project 'x' &amp; y</message></response>"),
            "project 'x' & y"
        );
        assert_eq!(error_message(r#"{"message":"nope","details":[]}"#), "nope");
    }

    #[test]
    fn unreachable_server_is_reported() {
        let o = parse(&s(&["-url", "http://127.0.0.1:1/SASESP/server"])).unwrap();
        let e = run(&o).unwrap_err();
        assert!(e.starts_with("cannot reach http://127.0.0.1:1/"), "{e}");
    }
}
