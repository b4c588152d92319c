//! Requests that name files, and replies that must not expose what they read
//! (issue 20 items 2 and 7, issue 13 item 6).

use std::time::{Duration, Instant};

use super::*;

/// The `<message>` of an error body.
fn err_msg(body: &str) -> &str {
    let s = body.find("<message>").expect("an error message") + 9;
    let e = body[s..].find("</message>").unwrap();
    &body[s..s + e]
}

/// One request with a short timeout: Err when it does not answer in time.
fn call_within(secs: u64, method: &str, url: &str, body: &str) -> Result<(u16, String), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(secs))
        .build();
    match agent.request(method, url).send_string(body) {
        Ok(r) => Ok((r.status(), r.into_string().unwrap())),
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        Err(e) => Err(format!("{method} {url}: {e}")),
    }
}

fn mkfifo(path: &std::path::Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(st.success(), "mkfifo {}", path.display());
}

#[test]
fn a_fifo_named_by_a_request_is_refused_at_once_and_others_are_served() {
    let t = TestServer::start();
    t.load_started("f");
    let fifo = t.dir.join("events.fifo");
    mkfifo(&fifo);
    let urls = [
        (
            "PUT",
            t.url(&format!(
                "windows/f/cq/trades/state?value=injected&eventUrl=file://{}",
                fifo.display()
            )),
        ),
        (
            "PUT",
            t.url(&format!("projects/g?projectUrl=file://{}", fifo.display())),
        ),
    ];
    let t0 = Instant::now();
    // Two such requests at once (as many as the HTTP runtime has workers), twice over.
    let handles: Vec<_> = urls
        .iter()
        .chain(urls.iter())
        .cloned()
        .map(|(m, u)| std::thread::spawn(move || call_within(5, m, &u, "")))
        .collect();
    let (s, _) = call_within(5, "GET", &t.url("server"), "").expect("served meanwhile");
    assert_eq!(s, 200);
    for h in handles {
        let (s, b) = h.join().unwrap().expect("a FIFO is refused, not waited on");
        assert_eq!(s, 400, "{b}");
        assert!(err_msg(&b).contains("is a FIFO, not a regular file"), "{b}");
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A directory and a device are refused the same way.
    let (s, b) = t.put(
        &format!(
            "windows/f/cq/trades/state?value=injected&eventUrl=file://{}",
            t.dir.display()
        ),
        "",
    );
    assert_eq!(s, 400, "{b}");
    assert!(
        err_msg(&b).contains("is a directory, not a regular file"),
        "{b}"
    );
    let (s, b) = t.put("projects/g?projectUrl=file:///dev/zero", "");
    assert_eq!(s, 400, "{b}");
    assert!(err_msg(&b).contains("is a device"), "{b}");
    assert_eq!(t.count("f", "trades"), 0);
}

#[test]
fn a_project_url_over_max_body_gets_413_naming_the_flag() {
    let t = TestServer::with(|c| c.max_body = 4096);
    let big = t.dir.join("big.xml");
    let mut xml = trades("big");
    xml.push_str(&format!("<!-- {} -->", "x".repeat(8192)));
    std::fs::write(&big, &xml).unwrap();
    let (s, b) = t.put(
        &format!("projects/big?projectUrl=file://{}", big.display()),
        "",
    );
    assert_eq!(s, 413, "{b}");
    assert!(
        err_msg(&b).contains("over the limit of 4096 bytes (server option --max-body)"),
        "{b}"
    );
    let (s, _) = t.get("projects/big");
    assert_eq!(s, 404);
    // Under the limit it loads.
    let small = t.dir.join("small.xml");
    std::fs::write(&small, trades("small")).unwrap();
    let (s, b) = t.put(
        &format!("projects/small?projectUrl=file://{}", small.display()),
        "",
    );
    assert_eq!(s, 200, "{b}");
}
