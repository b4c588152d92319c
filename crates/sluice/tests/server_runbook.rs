//! End to end: the operator's command sequences run through `sluice client` against a real
//! `sluice server` process, checking each reply word for word; and the README's first command.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

struct ServerProc {
    child: Child,
    url: String,
    log: mpsc::Receiver<String>,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path, extra: &[&str]) -> ServerProc {
    let mut child = Command::new(BIN)
        .args(["server", "-http", "0", "-pubsub", "0"])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice server starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the server logs its HTTP address");
        if let Some(a) = line.split("HTTP server listening on ").nth(1) {
            break a.trim().to_string();
        }
    };
    ServerProc {
        child,
        url: format!("http://{addr}/SASESP"),
        log: rx,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn client(args: &[&str]) -> Out {
    let o = Command::new(BIN)
        .arg("client")
        .args(args)
        .output()
        .expect("sluice client runs");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(args: &[&str]) -> String {
    let o = client(args);
    assert_eq!(o.code, 0, "{args:?}: {}{}", o.stdout, o.stderr);
    o.stdout
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const MODEL: &str = r#"<project name="dstatkafka" pubsub="auto" threads="1">
  <contqueries>
    <contquery name="cq1">
      <windows>
        <window-source name="readings" index="pi_HASH">
          <schema-string>id*:int64,host:string,used:double</schema-string>
          <connectors>
            <connector class="fs" name="in">
              <properties>
                <property name="type">pub</property>
                <property name="fsname">readings.csv</property>
              </properties>
            </connector>
          </connectors>
        </window-source>
        <window-aggregate name="byHost">
          <schema-string>host*:string,n:int64,total:double</schema-string>
          <output>
            <field-expr>ESP_aCount()</field-expr>
            <field-expr>ESP_aSum(used)</field-expr>
          </output>
        </window-aggregate>
      </windows>
      <edges><edge source="readings" target="byHost"/></edges>
    </contquery>
  </contqueries>
</project>
"#;

#[test]
fn runbook_through_the_client() {
    let dir = tempdir("runbook");
    std::fs::write(dir.join("model.xml"), MODEL).unwrap();
    std::fs::write(
        dir.join("readings.csv"),
        "i,n,1,alpha,1.5\ni,n,2,beta,2\ni,n,3,alpha,3\n",
    )
    .unwrap();
    let mut srv = start_server(&dir, &[]);
    let u = srv.url.clone();
    let model = format!("file://{}", dir.join("model.xml").display());

    let s = ok(&["-url", &format!("{u}/server")]);
    assert!(s.contains("primary-server=\"true\""), "{s}");
    assert_eq!(
        ok(&[
            "-url",
            &format!("{u}/projects/dstatkafka?overwrite=true&start=false"),
            "-put",
            &model
        ]),
        "<message>load project dstatkafka succeeded</message>\n"
    );
    let o = client(&[
        "-url",
        &format!("{u}/projects/dstatkafka/state?value=connectorsStarted"),
        "-put",
    ]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(
        o.stderr.starts_with(
            "sluice client: HTTP 409: project 'dstatkafka' is stopped: start it first"
        ),
        "{}",
        o.stderr
    );
    let o = client(&[
        "-url",
        &format!("{u}/projects/dstatkafka/state?value=restored&path=/tmp/snap"),
        "-put",
    ]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .starts_with("sluice client: HTTP 422: snapshot '/tmp/snap' cannot be restored")
            && o.stderr.contains("has no MANIFEST"),
        "{}",
        o.stderr
    );
    assert_eq!(
        ok(&[
            "-url",
            &format!("{u}/projects/dstatkafka/state?value=running"),
            "-put"
        ]),
        "<message>project dstatkafka successfully started</message>\n"
    );
    assert_eq!(
        ok(&[
            "--url",
            &format!("{u}/projects/dstatkafka/state?value=connectorsStarted"),
            "--put"
        ]),
        "<message>connectors started for project 'dstatkafka'</message>\n"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let e = ok(&["-url", &format!("{u}/events/dstatkafka/cq1/byHost")]);
        if e.contains("<n>2</n>") || Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        events.trim(),
        "<events><event window=\"dstatkafka/cq1/byHost\"><host key=\"true\">alpha</host><n>2</n><total>4.5</total></event>\
         <event window=\"dstatkafka/cq1/byHost\"><host key=\"true\">beta</host><n>1</n><total>2</total></event></events>"
    );
    let inject = dir.join("more.csv");
    std::fs::write(&inject, "i,n,4,gamma,1\n").unwrap();
    assert_eq!(
        ok(&[
            "-url",
            &format!(
                "{u}/windows/dstatkafka/cq1/readings/state?value=injected&eventUrl=file://{}",
                inject.display()
            ),
            "-put"
        ]),
        "<message>1 event(s) injected into window dstatkafka/cq1/readings</message>\n"
    );
    assert_eq!(
        ok(&[
            "-url",
            &format!("{u}/projects/dstatkafka/state?value=stopped"),
            "-put"
        ]),
        "<message>project dstatkafka successfully stopped</message>\n"
    );
    let listing = ok(&["-url", &format!("{u}/projects")]);
    assert!(
        listing.contains("project name=\"dstatkafka\" state=\"stopped\""),
        "{listing}"
    );
    assert_eq!(
        ok(&["-url", &format!("{u}/projects/dstatkafka"), "-delete"]),
        "<message>project dstatkafka successfully deleted</message>\n"
    );
    let o = client(&[
        "-url",
        &format!("{u}/projects/dstatkafka/state?value=running"),
        "-put",
    ]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr.trim(),
        "sluice client: HTTP 404: project 'dstatkafka' does not exist: load it first with PUT projects/dstatkafka and the project XML as the body"
    );
    let o = client(&[
        "-url",
        &format!("{u}/projects/x"),
        "-put",
        "file:///nonexistent/model.xml",
    ]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .starts_with("sluice client: cannot read '/nonexistent/model.xml'"),
        "{}",
        o.stderr
    );

    // Stopping the server over HTTP ends the process.
    assert_eq!(
        ok(&["-url", &format!("{u}/server/state?value=stopped"), "-put"]),
        "<message>server stopping</message>\n"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let log: Vec<String> = srv.log.try_iter().collect();
    let all = log.join("\n");
    for want in [
        "esp.server: project dstatkafka loaded",
        "esp.server: project dstatkafka started",
        "esp.connectors: connector dstatkafka/cq1/readings/in",
        "esp.server: project dstatkafka stopped",
        "esp.server: server stopped",
    ] {
        assert!(all.contains(want), "log lacks '{want}':\n{all}");
    }
    assert!(log.iter().any(|l| l.contains(" INFO ")), "{all}");

    // The server is gone: the client says so.
    let o = client(&["-url", &format!("{u}/server")]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.starts_with("sluice client: cannot reach"),
        "{}",
        o.stderr
    );
}

#[test]
fn readme_example_shows_results_at_once() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let srv = start_server(&root, &["--model", "examples/server/trades.xml"]);
    let u = srv.url.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let w = ok(&["-url", &format!("{u}/windows/trades/cq/trades")]);
        if w.contains("count=\"199\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the example's file was not read: {w}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = ok(&["-url", &format!("{u}/events/trades/cq/bySymbol")]);
    assert_eq!(e.matches("<event ").count(), 5, "{e}");
    assert!(e.contains("<symbol key=\"true\">ACME</symbol><trades>35</trades><totalQuantity>28050</totalQuantity>"), "{e}");
    let j = ok(&[
        "-url",
        &format!("{u}/events/trades/cq/largeTrades?limit=3&sortBy=quantity:descending"),
        "--accept",
        "json",
    ]);
    assert!(j.starts_with("{\"events\":["), "{j}");
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let dir = tempdir("sigterm");
    let mut s = start_server(&dir, &[]);
    let pid = s.child.id().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(st.success());
    // Bounded wait for the exit, reading the log meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    let status = loop {
        while let Ok(l) = s.log.try_recv() {
            lines.push(l);
        }
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop within 20 s of SIGTERM"
        );
        let _ = s
            .log
            .recv_timeout(Duration::from_millis(50))
            .map(|l| lines.push(l));
    };
    while let Ok(l) = s.log.recv_timeout(Duration::from_millis(200)) {
        lines.push(l);
    }
    assert!(status.success(), "exit status {status:?}");
    let log = lines.join("\n");
    assert!(log.contains("terminated (SIGTERM): stopping"), "{log}");
    assert!(log.contains("server stopped"), "{log}");
}

/// `--restore-from DIR` where DIR is one snapshot (the seed's layout, `DIR/MANIFEST`, as a
/// REST persist writes it), not the scheduled layout `DIR/<project>/<time>-<seq>`.
#[test]
fn restore_from_accepts_one_snapshot_directory() {
    let dir = tempdir("restore-one");
    std::fs::write(dir.join("model.xml"), MODEL).unwrap();
    std::fs::write(
        dir.join("readings.csv"),
        "i,n,1,alpha,1.5\ni,n,2,beta,2\ni,n,3,alpha,3\n",
    )
    .unwrap();
    let snap = dir.join("snap");
    let before = {
        let srv = start_server(&dir, &["--model", "model.xml"]);
        let u = srv.url.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let w = ok(&["-url", &format!("{u}/windows/dstatkafka/cq1/readings")]);
            if w.contains("count=\"3\"") {
                break;
            }
            assert!(Instant::now() < deadline, "the file was not read: {w}");
            std::thread::sleep(Duration::from_millis(50));
        }
        ok(&[
            "-url",
            &format!(
                "{u}/projects/dstatkafka/state?value=persisted&path={}",
                snap.display()
            ),
            "-put",
        ]);
        ok(&["-url", &format!("{u}/events/dstatkafka/cq1/byHost")])
    };
    assert!(snap.join("MANIFEST").is_file());
    assert!(before.contains("alpha"), "{before}");
    // The file grows while the server is down; the restored publisher resumes after line 3.
    std::fs::write(
        dir.join("readings.csv"),
        "i,n,1,alpha,1.5\ni,n,2,beta,2\ni,n,3,alpha,3\ni,n,4,beta,10\n",
    )
    .unwrap();
    let srv = start_server(
        &dir,
        &[
            "--model",
            "model.xml",
            "--restore-from",
            &snap.display().to_string(),
        ],
    );
    let u = srv.url.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let w = ok(&["-url", &format!("{u}/windows/dstatkafka/cq1/readings")]);
        if w.contains("count=\"4\"") {
            break;
        }
        assert!(Instant::now() < deadline, "not restored and resumed: {w}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = ok(&["-url", &format!("{u}/events/dstatkafka/cq1/byHost")]);
    assert!(
        after.contains("<host key=\"true\">beta</host><n>2</n><total>12</total>"),
        "{after}"
    );
    assert!(
        after.contains("<host key=\"true\">alpha</host><n>2</n><total>4.5</total>"),
        "{after}"
    );
}
