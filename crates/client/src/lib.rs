//! `sluice client`: a blocking HTTP client of the REST admin API, in the manner of
//! `dfesp_xml_client`.
//!
//! ```text
//! sluice client --url URL [--put [file://PATH]] [--post [file://PATH]] [--delete]
//!               [--auth-token TOKEN] [--accept json] [--timeout SECS]
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
}

const USAGE: &str = "usage: sluice client --url URL [--put [file://PATH]] [--post [file://PATH]] [--delete] [--auth-token TOKEN] [--accept json] [--timeout SECS] [--showheaders]";

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
            "h" | "help" => return Err(String::new()),
            other => return Err(format!("unknown option '-{other}'")),
        }
        i += 1;
    }
    if o.url.is_empty() {
        return Err("--url is required".into());
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
