//! Persist and restore through the REST API (issue 4): the runbook replies, a running
//! project persisted without stopping, restore into a freshly loaded project, corrupted and
//! foreign snapshots refused whole, `restore="DIR"` at load, and publishers resuming from the
//! snapshot's input positions.

use crate::{call, trades, TestServer};

fn msg(text: &str) -> String {
    format!("<message>{text}</message>\n")
}

fn err_msg(body: &str) -> String {
    let s = body.find("<message>").expect("an error message") + 9;
    let e = body[s..].find("</message>").unwrap();
    body[s..s + e].to_string()
}

fn events(t: &TestServer, p: &str, w: &str) -> String {
    let (s, b) = t.get(&format!("events/{p}/cq/{w}?sortBy=symbol:ascending"));
    assert_eq!(s, 200, "{b}");
    b
}

fn inject(t: &TestServer, p: &str, csv: &str) {
    let (s, b) = t.put(&format!("windows/{p}/cq/trades/state?value=injected"), csv);
    assert_eq!(s, 200, "{b}");
}

#[test]
fn a_running_project_persists_and_a_fresh_one_restores_the_same_contents() {
    let a = TestServer::start();
    a.load_started("dstatkafka");
    inject(
        &a,
        "dstatkafka",
        "i,n,1,IBM,1500,10.5\ni,n,2,SAP,200,20\ni,n,3,IBM,100,11\nu,n,2,SAP,250,21\n",
    );
    let snap = a.dir.join("shared").join("snap");
    let (s, b) = a.put(
        &format!(
            "projects/dstatkafka/state?value=persisted&path={}",
            snap.display()
        ),
        "",
    );
    assert_eq!(
        (s, b),
        (
            200,
            msg(&format!(
                "project dstatkafka successfully saved to {}",
                snap.display()
            ))
        )
    );
    assert!(
        snap.join("project.state").is_file()
            && snap.join("queries").is_dir()
            && snap.join("MANIFEST").is_file()
    );
    // The project kept running.
    inject(&a, "dstatkafka", "i,n,4,ACME,5,1\n");
    assert_eq!(a.count("dstatkafka", "trades"), 4);

    // The seed's runbook on another server: load stopped, restore, start, connectors.
    let b = TestServer::start();
    let (s, body) = b.put("projects/dstatkafka?start=false", &trades("dstatkafka"));
    assert_eq!((s, body), (200, msg("load project dstatkafka succeeded")));
    let (s, body) = b.put(
        &format!(
            "projects/dstatkafka/state?value=restored&path={}",
            snap.display()
        ),
        "",
    );
    assert_eq!(
        (s, body),
        (
            200,
            msg(&format!(
                "project 'dstatkafka' successfully restored from '{}'",
                snap.display()
            ))
        )
    );
    let (s, body) = b.put("projects/dstatkafka/state?value=running", "");
    assert_eq!(
        (s, body),
        (200, msg("project dstatkafka successfully started"))
    );
    let (s, body) = b.put("projects/dstatkafka/state?value=connectorsStarted", "");
    assert_eq!(
        (s, body),
        (200, msg("connectors started for project 'dstatkafka'"))
    );
    assert_eq!(b.count("dstatkafka", "trades"), 3);
    // Same contents as the original had at the cut; then the same event gives the same result.
    inject(&b, "dstatkafka", "i,n,4,ACME,5,1\n");
    for w in ["trades", "bySymbol", "large"] {
        assert_eq!(
            events(&a, "dstatkafka", w),
            events(&b, "dstatkafka", w),
            "window {w}"
        );
    }
}

#[test]
fn corrupted_or_foreign_snapshots_are_refused_and_change_nothing() {
    let t = TestServer::start();
    t.load_started("p");
    inject(&t, "p", "i,n,1,IBM,1500,10.5\ni,n,2,SAP,200,20\n");
    let snap = t.dir.join("snap");
    let (s, b) = t.put(
        &format!("projects/p/state?value=persisted&path={}", snap.display()),
        "",
    );
    assert_eq!(s, 200, "{b}");
    // A second project with the same name elsewhere to restore into.
    let u = TestServer::start();
    let (s, _) = u.put("projects/p?start=false", &trades("p"));
    assert_eq!(s, 200);
    let restore = |u: &TestServer| {
        u.put(
            &format!("projects/p/state?value=restored&path={}", snap.display()),
            "",
        )
    };

    // Flip one byte of a window file.
    let f = snap.join("queries/cq/bySymbol.state");
    let good = std::fs::read(&f).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&f, &bad).unwrap();
    let (s, b) = restore(&u);
    assert_eq!(s, 422, "{b}");
    let m = err_msg(&b);
    assert!(
        m.contains("bySymbol.state") && m.contains("checksum mismatch"),
        "{m}"
    );
    // Truncate it.
    std::fs::write(&f, &good[..good.len() - 3]).unwrap();
    let (s, b) = restore(&u);
    assert_eq!(s, 422);
    assert!(err_msg(&b).contains("truncated"), "{b}");
    // Delete it.
    std::fs::remove_file(&f).unwrap();
    let (s, b) = restore(&u);
    assert_eq!(s, 422);
    assert!(err_msg(&b).contains("missing file"), "{b}");
    std::fs::write(&f, &good).unwrap();
    // A newer format version.
    let m = std::fs::read_to_string(snap.join("MANIFEST")).unwrap();
    std::fs::write(
        snap.join("MANIFEST"),
        m.replace("\"version\": 1", "\"version\": 99"),
    )
    .unwrap();
    let (s, b) = restore(&u);
    assert_eq!(s, 422);
    assert!(err_msg(&b).contains("version 99 is newer"), "{b}");
    std::fs::write(snap.join("MANIFEST"), &m).unwrap();
    // Nothing was applied by any of those.
    let (s, _) = u.put("projects/p/state?value=running", "");
    assert_eq!(s, 200);
    assert_eq!(u.count("p", "trades"), 0);
    // A snapshot of another model (different windows) under the same name.
    let other = t.dir.join("other");
    let v = TestServer::start();
    let model = trades("p").replace("quantity &gt;= 1000", "quantity &gt;= 5");
    let model = model.replace(
        r#"<window-filter name="large">"#,
        r#"<window-copy name="large2"/><window-filter name="large">"#,
    );
    let model = model.replace(
        r#"<edge source="trades" target="large"/>"#,
        r#"<edge source="trades" target="large"/><edge source="trades" target="large2"/>"#,
    );
    let (s, b) = v.put("projects/p", &model);
    assert_eq!(s, 200, "{b}");
    let (s, b) = v.put(
        &format!("projects/p/state?value=persisted&path={}", other.display()),
        "",
    );
    assert_eq!(s, 200, "{b}");
    u.put("projects/p/state?value=stopped", "");
    let (s, b) = u.put(
        &format!("projects/p/state?value=restored&path={}", other.display()),
        "",
    );
    assert_eq!(s, 422);
    assert!(err_msg(&b).contains("different project model"), "{b}");
    // The good one still restores.
    let (s, b) = restore(&u);
    assert_eq!(s, 200, "{b}");
    u.put("projects/p/state?value=running", "");
    assert_eq!(u.count("p", "trades"), 2);
}

#[test]
fn restore_attribute_at_load_and_server_wide_persist() {
    let t = TestServer::start();
    t.load_started("a");
    t.load_started("b");
    inject(&t, "a", "i,n,1,IBM,1500,10.5\n");
    inject(&t, "b", "i,n,1,IBM,1,1\ni,n,2,SAP,1,1\n");
    let dir = t.dir.join("all");
    let (s, b) = t.put(
        &format!("server/state?value=persisted&path={}", dir.display()),
        "",
    );
    assert_eq!(s, 200, "{b}");
    assert!(dir.join("a/MANIFEST").is_file() && dir.join("b/MANIFEST").is_file());
    let u = TestServer::start();
    let model = trades("b").replacen(
        "<project name=\"b\"",
        &format!(
            "<project name=\"b\" restore=\"{}\"",
            dir.join("b").display()
        ),
        1,
    );
    let (s, body) = u.put("projects/b", &model);
    assert_eq!(s, 200, "{body}");
    assert_eq!(u.count("b", "trades"), 2);
    // A restore attribute naming a bad snapshot: the load is refused and nothing stays loaded.
    let bad = trades("c").replacen(
        "<project name=\"c\"",
        &format!(
            "<project name=\"c\" restore=\"{}\"",
            dir.join("a").display()
        ),
        1,
    );
    let (s, body) = u.put("projects/c", &bad);
    assert_eq!(s, 422, "{body}");
    assert!(err_msg(&body).contains("not 'c'"), "{body}");
    let (_, list) = u.get("projects");
    assert!(!list.contains("name=\"c\""), "{list}");
}

#[test]
fn file_publishers_resume_from_the_snapshot_position() {
    let t = TestServer::start();
    let data = t.dir.join("in.csv");
    let lines: String = (1..=50)
        .map(|i| format!("i,n,{i},S{},{},1.5\n", i % 7, i * 10))
        .collect();
    std::fs::write(&data, &lines).unwrap();
    let model = trades("f").replace(
        r#"<window-source name="trades" index="pi_HASH">"#,
        &format!(
            r#"<window-source name="trades" index="pi_HASH"><connectors><connector class="fs" name="pub"><properties><property name="type">pub</property><property name="fsname">{}</property></properties></connector></connectors>"#,
            data.display()
        ),
    );
    // Read the whole file, stop (connectors stop), persist, and restore elsewhere.
    let (s, b) = t.put("projects/f", &model);
    assert_eq!(s, 200, "{b}");
    wait_for(|| t.count("f", "trades") == 50);
    let snap = t.dir.join("fsnap");
    let (s, b) = t.put(
        &format!("projects/f/state?value=persisted&path={}", snap.display()),
        "",
    );
    assert_eq!(s, 200, "{b}");
    // The file changes: its first 50 lines now upsert other values (re-reading them would
    // show), and 10 new lines follow.
    let changed: String = (1..=50)
        .map(|i| format!("p,n,{i},S{},999999,1.5\n", i % 7))
        .collect();
    let more: String = (51..=60)
        .map(|i| format!("i,n,{i},S{},{},1.5\n", i % 7, i * 10))
        .collect();
    std::fs::write(&data, format!("{changed}{more}")).unwrap();
    let u = TestServer::start();
    let (s, _) = u.put("projects/f?start=false", &model);
    assert_eq!(s, 200);
    let (s, b) = u.put(
        &format!("projects/f/state?value=restored&path={}", snap.display()),
        "",
    );
    assert_eq!(s, 200, "{b}");
    u.put("projects/f/state?value=running", "");
    let (s, b) = u.put("projects/f/state?value=connectorsStarted", "");
    assert_eq!(s, 200, "{b}");
    // Only the 10 new lines are read.
    wait_for(|| u.count("f", "trades") == 60);
    let (s, rows) = call("GET", &u.url("events/f/cq/trades"), None, &[]);
    assert_eq!(s, 200);
    assert!(
        !rows.contains("999999"),
        "lines before the snapshot position were read again: {rows}"
    );
    assert_eq!(events(&u, "f", "bySymbol").matches("<event ").count(), 7);
}

fn wait_for(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within 20 s"
        );
        std::thread::yield_now();
    }
}
