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

/// A raw HTTP/1.1 request (clients would normalise a `..` segment away); status and body.
fn raw(t: &TestServer, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(t.server.http_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

#[test]
fn replies_never_quote_a_file_named_by_the_request() {
    let bad = tempdir().join("bad.log");
    let b2 = bad.clone();
    let t = TestServer::with(move |c| c.badevents = Some(b2));
    t.load_started("q");
    let secret = t.dir.join("shadow");
    std::fs::write(
        &secret,
        "root:$6$SECRET1:19000:0:99999:7:::\ni,n,1,SECRET2,x,1\n",
    )
    .unwrap();
    let inject = |f: &std::path::Path, extra: &str| {
        t.put(
            &format!(
                "windows/q/cq/trades/state?value=injected&eventUrl=file://{}{extra}",
                f.display()
            ),
            "",
        )
    };
    let (s, b) = inject(&secret, "");
    assert_eq!(s, 400, "{b}");
    assert!(!b.contains("SECRET"), "{b}");
    assert!(b.contains("line 1: unknown opcode"), "{b}");
    assert!(
        b.contains("line 2: field 'quantity' (int32): cannot read the value"),
        "{b}"
    );
    for (name, text, fmt) in [
        (
            "x.xml",
            "<events><event><SECRET3>1</SECRET3></event></events>",
            "xml",
        ),
        (
            "y.xml",
            "<events><event><id>SECRET4</id></event></events>",
            "xml",
        ),
        ("z.json", r#"[{"SECRET5":1},{"id":"SECRET6"}]"#, "json"),
    ] {
        let f = t.dir.join(name);
        std::fs::write(&f, text).unwrap();
        let (s, b) = inject(&f, &format!("&eventFormat={fmt}"));
        assert_eq!(s, 400, "{b}");
        assert!(!b.contains("SECRET"), "{b}");
        assert!(b.contains("event 1"), "{b}");
    }
    // Events the window refuses: the reply and the bad-events record give reasons only.
    let f = t.dir.join("refused.csv");
    std::fs::write(&f, "d,n,77,SECRET7,1,1\n").unwrap();
    let (s, b) = inject(&f, "");
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("<refused>"), "{b}");
    assert!(!b.contains("SECRET"), "{b}");
    let (s, b) = t.put(
        "windows/q/cq/trades/state?value=injected",
        "d,n,78,BODY8,1,1\n",
    );
    assert_eq!(s, 200, "{b}");
    assert!(
        b.contains("BODY8"),
        "input sent in the body may be quoted: {b}"
    );
    let log = eventually(5, "the bad-events records", || {
        let l = std::fs::read_to_string(&bad).unwrap_or_default();
        l.contains("BODY8").then_some(l)
    });
    assert!(!log.contains("SECRET"), "{log}");
    assert!(log.contains("values not recorded"), "{log}");
    // A project file that is not a model: problems with line numbers, no content.
    let (s, b) = t.put(
        &format!("projects/r?projectUrl=file://{}", secret.display()),
        "",
    );
    assert_eq!(s, 400, "{b}");
    assert!(!b.contains("SECRET"), "{b}");
    assert!(b.contains("line "), "{b}");
    let model = t.dir.join("m.xml");
    std::fs::write(
        &model,
        trades("m").replace("window-aggregate", "window-SECRET9"),
    )
    .unwrap();
    let (s, b) = t.put(
        &format!("projects/m?projectUrl=file://{}", model.display()),
        "",
    );
    assert_eq!(s, 400, "{b}");
    assert!(!b.contains("SECRET"), "{b}");
}

#[test]
fn allow_path_confines_every_path_named_over_the_api() {
    let root = tempdir();
    let outside = tempdir();
    let r2 = root.clone();
    let t = TestServer::with(move |c| c.file_roots = vec![r2]);
    t.load_started("a");
    let events_in = root.join("in.csv");
    std::fs::write(&events_in, "i,n,1,IBM,10,1\n").unwrap();
    let events_out = outside.join("out.csv");
    std::fs::write(&events_out, "i,n,2,IBM,10,1\n").unwrap();
    std::os::unix::fs::symlink(&events_out, root.join("link.csv")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("linkdir")).unwrap();
    let inject = |p: &std::path::Path| {
        t.put(
            &format!(
                "windows/a/cq/trades/state?value=injected&eventUrl=file://{}",
                p.display()
            ),
            "",
        )
    };
    let (s, b) = inject(&events_in);
    assert_eq!(s, 200, "{b}");
    for p in [
        events_out.clone(),
        root.join("link.csv"),
        root.join("linkdir/out.csv"),
        root.join("../")
            .join(outside.file_name().unwrap())
            .join("out.csv"),
    ] {
        let (s, b) = inject(&p);
        assert_eq!(s, 403, "{}: {b}", p.display());
        assert!(err_msg(&b).contains("(server option --allow-path)"), "{b}");
    }
    assert_eq!(t.count("a", "trades"), 1);
    // projectUrl, and the fs connectors of a model loaded over REST.
    let m = outside.join("m.xml");
    std::fs::write(&m, trades("m")).unwrap();
    let (s, b) = t.put(&format!("projects/m?projectUrl=file://{}", m.display()), "");
    assert_eq!(s, 403, "{b}");
    let with_fs = |fsname: &str| {
        trades("c").replace(
            "</window-source>",
            &format!(
                r#"<connectors><connector class="fs" name="pub"><properties>
                <property name="type">pub</property><property name="fstype">csv</property>
                <property name="fsname">{fsname}</property></properties></connector></connectors>
                </window-source>"#
            ),
        )
    };
    let (s, b) = t.put(
        "projects/c?connectors=false",
        &with_fs(&events_out.display().to_string()),
    );
    assert_eq!(s, 403, "{b}");
    assert!(
        err_msg(&b).contains("connector cq/trades/pub fsname"),
        "{b}"
    );
    let (s, b) = t.post(
        "projectResults",
        &with_fs(&events_out.display().to_string()),
    );
    assert_eq!(s, 403, "{b}");
    let (s, b) = t.put(
        "projects/c?connectors=false",
        &with_fs(&events_in.display().to_string()),
    );
    assert_eq!(s, 200, "{b}");
    // Persist and restore paths (no --persist-root): inside the roots only.
    let (s, b) = t.put(
        &format!(
            "projects/a/state?value=persisted&path={}",
            outside.join("s").display()
        ),
        "",
    );
    assert_eq!(s, 403, "{b}");
    let (s, b) = t.put(
        &format!(
            "projects/a/state?value=persisted&path={}",
            root.join("linkdir/s").display()
        ),
        "",
    );
    assert_eq!(s, 403, "{b}");
    assert!(!outside.join("s").exists());
    let (s, b) = t.put(
        &format!(
            "projects/a/state?value=persisted&path={}",
            root.join("s").display()
        ),
        "",
    );
    assert_eq!(s, 200, "{b}");
    let (_, b) = t.get("server?config=true");
    assert!(b.contains("<property name=\"allow-path\">"), "{b}");
}

#[test]
fn symlinks_in_the_persist_root_do_not_lead_out_and_names_are_checked() {
    let root = tempdir();
    let outside = tempdir();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    let r2 = root.clone();
    let t = TestServer::with(move |c| c.persist_root = Some(r2));
    t.load_started("p");
    // A snapshot outside the root, which a restore through the link would read.
    let (s, b) = t.put("projects/p/state?value=persisted&path=inside", "");
    assert_eq!(s, 200, "{b}");
    for path in ["out/snap", "out"] {
        let (s, b) = t.put(&format!("projects/p/state?value=persisted&path={path}"), "");
        assert_eq!(s, 403, "{path}: {b}");
        assert!(
            err_msg(&b).contains("(server option --persist-root)"),
            "{b}"
        );
    }
    let (s, b) = t.put("server/state?value=persisted&path=out", "");
    assert_eq!(s, 403, "{b}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    std::fs::rename(root.join("inside"), outside.join("snap")).unwrap();
    t.put("projects/p/state?value=stopped", "");
    let (s, b) = t.put("projects/p/state?value=restored&path=out/snap", "");
    assert_eq!(s, 403, "{b}");
    // The restore attribute of a model loaded over REST too.
    let xml = trades("r").replace(
        "<project name=\"r\"",
        &format!(
            "<project restore=\"{}\" name=\"r\"",
            root.join("out/snap").display()
        ),
    );
    let (s, b) = t.put("projects/r", &xml);
    assert_eq!(s, 403, "{b}");
    // Project names given in the URL follow the rule.
    for name in ["..", ".", ".hidden", "a%2Fb", "a%20b", "-x"] {
        let (s, b) = raw(&t, "PUT", &format!("/SASESP/projects/{name}"), &trades("x"));
        assert_eq!(s, 400, "{name}: {b}");
        assert!(
            err_msg(&b).contains("is not allowed: a project name is 1 to 128"),
            "{b}"
        );
    }
    let (s, b) = raw(&t, "PUT", "/SASESP/projects/ok_1-2.v", &trades("x"));
    assert_eq!(s, 200, "{b}");
    let (s, b) = t.put("server/state?value=persisted&path=all", "");
    assert_eq!(s, 200, "{b}");
    assert!(root.join("all/ok_1-2.v/MANIFEST").is_file());
}

#[test]
fn xml_events_cut_inside_the_first_event_are_refused_with_the_position() {
    let t = TestServer::start();
    t.load_started("x");
    let (s, b) = t.put(
        "windows/x/cq/trades/state?value=injected",
        "<events><event><opcode>i</opcode><id>1</id><symbol>IBM</symbol>",
    );
    assert_eq!(s, 400, "{b}");
    assert!(
        b.contains("cut short: it ends inside event 1, opened at byte 8 (line 1)"),
        "{b}"
    );
    let (s, b) = t.put(
        "windows/x/cq/trades/state?value=injected",
        "<events><event><opcode>i</opcode><id>1</id><symbol>IBM</sym",
    );
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("malformed XML at byte 54 (line 1)"), "{b}");
    assert_eq!(t.count("x", "trades"), 0);
    let (s, b) = t.put(
        "windows/x/cq/trades/state?value=injected",
        "<events><event><opcode>i</opcode><id>1</id><symbol>IBM</symbol><quantity>1</quantity><price>1</price></event></events>",
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(t.count("x", "trades"), 1);
}

#[test]
fn a_reply_lists_at_most_20_problems() {
    let t = TestServer::with(|c| c.max_body = 64 << 20);
    t.load_started("many");
    let body = "i,n,1,IBM,notanumber,1.5\n".repeat(100_000);
    let (s, b) = t.put("windows/many/cq/trades/state?value=injected", &body);
    assert_eq!(s, 400);
    assert!(b.len() < 8 * 1024, "{} bytes", b.len());
    assert!(
        err_msg(&b).starts_with("100000 event(s) cannot be read"),
        "{b}"
    );
    assert_eq!(b.matches("<detail>").count(), 21, "{b}");
    assert!(
        b.contains("<detail>and 99980 more not listed</detail>"),
        "{b}"
    );
    let (s, b) = call(
        "PUT",
        &t.url("windows/many/cq/trades/state?value=injected&format=json"),
        Some(&body),
        &[],
    );
    assert_eq!(s, 400);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["details"].as_array().unwrap().len(), 21);
}

/// The trades project with an inactive connector whose file name comes from `@PATH@`.
fn with_placeholder(name: &str) -> String {
    trades(name).replace(
        "</window-source>",
        r#"<connectors><connector class="fs" name="sub" active="false"><properties>
        <property name="type">sub</property><property name="fstype">csv</property>
        <property name="fsname">@PATH@/out.csv</property></properties></connector></connectors>
        </window-source>"#,
    )
}

#[test]
fn project_xml_shows_the_model_as_written_not_the_environment() {
    let path = std::env::var("PATH").expect("PATH is set");
    let dir = tempdir();
    let model = dir.join("m.xml");
    std::fs::write(&model, with_placeholder("startup")).unwrap();
    let m2 = model.clone();
    let t = TestServer::with(move |c| c.models = vec![m2]);
    let (s, b) = t.put("projects/rest", &with_placeholder("rest"));
    assert_eq!(s, 200, "{b}");
    for name in ["startup", "rest"] {
        let (s, b) = t.get(&format!("projectXml?name={name}"));
        assert_eq!(s, 200, "{b}");
        assert!(b.contains("@PATH@/out.csv"), "{b}");
        assert!(!b.contains(&path), "{b}");
        assert!(b.contains(&format!("<project name=\"{name}\"")), "{b}");
        let (s, b) = t.get(&format!(
            "windowXml?project={name}&contquery=cq&window=trades"
        ));
        assert_eq!(s, 200, "{b}");
        assert!(!b.contains(&path), "{b}");
    }
}
