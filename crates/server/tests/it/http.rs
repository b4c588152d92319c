//! Every REST endpoint with its good and bad inputs: status and message.

use super::*;

fn msg(text: &str) -> String {
    format!("<message>{text}</message>\n")
}

/// The `<message>` of an error body.
fn err_msg(body: &str) -> &str {
    let s = body.find("<message>").expect("an error message") + 9;
    let e = body[s..].find("</message>").unwrap();
    &body[s..s + e]
}

#[test]
fn server_reports_version_ports_and_primary() {
    let t = TestServer::start();
    let (s, b) = t.get("server");
    assert_eq!(s, 200);
    assert!(b.starts_with("<esp-server version=\"6.2\""), "{b}");
    assert!(b.contains("primary-server=\"true\""), "{b}");
    let port = t.server.pubsub_addr().unwrap().port();
    assert!(b.contains(&format!("pubsub=\"{port}\"")), "{b}");
    let (_, b) = t.get("server?config=true");
    assert!(
        b.contains("<property name=\"bind\">127.0.0.1</property>"),
        "{b}"
    );
    let (s, b) = t.get("server?format=json");
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["esp-server"]["primary-server"], "true");
    let (s, b) = t.get("server?config=maybe");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("not a boolean"), "{b}");
    // The second root answers the same.
    let (s, b) = call(
        "GET",
        &format!(
            "http://{}/eventStreamProcessing/v1/server",
            t.server.http_addr()
        ),
        None,
        &[],
    );
    assert_eq!(s, 200);
    assert!(b.contains("esp-server"));
    let (s, b) = call(
        "GET",
        &format!("http://{}/other", t.server.http_addr()),
        None,
        &[],
    );
    assert_eq!(s, 404);
    assert!(err_msg(&b).contains("/SASESP/"), "{b}");
    let (s, b) = t.get("nosuch");
    assert_eq!(s, 404);
    assert!(err_msg(&b).contains("api-docs"), "{b}");
}

#[test]
fn life_cycle_replies_and_illegal_transitions() {
    let t = TestServer::start();
    let p = "dstatkafka";
    // Starting a project that does not exist.
    let (s, b) = t.put(&format!("projects/{p}/state?value=running"), "");
    assert_eq!(s, 404);
    assert!(err_msg(&b).contains("does not exist: load it first"), "{b}");
    // Load without starting.
    let (s, b) = t.put(&format!("projects/{p}?start=false"), &trades(p));
    assert_eq!((s, b), (200, msg("load project dstatkafka succeeded")));
    let (_, b) = t.get("projects");
    assert!(
        b.contains("<project name=\"dstatkafka\" state=\"stopped\" connectors=\"stopped\"/>"),
        "{b}"
    );
    let (_, b) = t.get("stoppedProjects");
    assert!(b.contains("dstatkafka"));
    let (_, b) = t.get("runningProjects");
    assert!(!b.contains("dstatkafka"));
    // Loading over an existing name.
    let (s, b) = t.put(&format!("projects/{p}?start=false"), &trades(p));
    assert_eq!(s, 409);
    assert!(
        err_msg(&b).contains("already exists: delete it first"),
        "{b}"
    );
    // Connectors of a stopped project.
    let (s, b) = t.put(&format!("projects/{p}/state?value=connectorsStarted"), "");
    assert_eq!(s, 409);
    assert!(err_msg(&b).contains("is stopped: start it first"), "{b}");
    // Stop a stopped project.
    let (s, b) = t.put(&format!("projects/{p}/state?value=stopped"), "");
    assert_eq!(s, 409);
    assert!(err_msg(&b).contains("already stopped"), "{b}");
    // Restore: paths checked; a directory that is not a snapshot is refused.
    let (s, b) = t.put(
        &format!("projects/{p}/state?value=restored&path=a/../../etc"),
        "",
    );
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("'..'"), "{b}");
    let snap = t.dir.join("snap");
    let (s, b) = t.put(
        &format!("projects/{p}/state?value=restored&path={}", snap.display()),
        "",
    );
    assert_eq!(s, 422);
    assert!(err_msg(&b).contains("has no MANIFEST"), "{b}");
    // Start, then the connectors.
    let (s, b) = t.put(&format!("projects/{p}/state?value=running"), "");
    assert_eq!(
        (s, b),
        (200, msg("project dstatkafka successfully started"))
    );
    let (s, b) = t.put(&format!("projects/{p}/state?value=running"), "");
    assert_eq!(s, 409);
    assert!(err_msg(&b).contains("already running"), "{b}");
    let (s, b) = t.put(
        &format!("projects/{p}/state?value=restored&path={}", snap.display()),
        "",
    );
    assert_eq!(s, 409);
    assert!(err_msg(&b).contains("is running: stop it first"), "{b}");
    // Persisting a running project is allowed: a consistent cut between blocks.
    let (s, b) = t.put(
        &format!("projects/{p}/state?value=persisted&path={}", snap.display()),
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
    let (s, b) = t.put(&format!("projects/{p}/state?value=connectorsStarted"), "");
    assert_eq!(
        (s, b),
        (200, msg("connectors started for project 'dstatkafka'"))
    );
    let (s, b) = t.put(&format!("projects/{p}/state?value=connectorsStarted"), "");
    assert_eq!(s, 409);
    assert!(err_msg(&b).contains("already started"), "{b}");
    let (_, b) = t.get(&format!("projects/{p}"));
    assert!(
        b.contains("state=\"running\" connectors=\"started\""),
        "{b}"
    );
    // Bad state values.
    let (s, b) = t.put(&format!("projects/{p}/state?value=flying"), "");
    assert_eq!(s, 400);
    assert!(
        err_msg(&b).contains("unknown project state 'flying'"),
        "{b}"
    );
    let (s, b) = t.put(&format!("projects/{p}/state"), "");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("'value' is required"), "{b}");
    // Stop keeps window state.
    let (s, _) = t.put(
        &format!("windows/{p}/cq/trades/state?value=injected"),
        "i,n,1,A,5,1.0\n",
    );
    assert_eq!(s, 200);
    let (s, b) = t.put(&format!("projects/{p}/state?value=stopped"), "");
    assert_eq!(
        (s, b),
        (200, msg("project dstatkafka successfully stopped"))
    );
    let (s, b) = t.put(
        &format!("windows/{p}/cq/trades/state?value=injected"),
        "i,n,2,A,5,1.0\n",
    );
    assert_eq!(s, 409);
    assert!(err_msg(&b).contains("is stopped: start it"), "{b}");
    let (s, _) = t.put(&format!("projects/{p}/state?value=running"), "");
    assert_eq!(s, 200);
    assert_eq!(t.count(p, "trades"), 1);
    // Delete.
    let (s, b) = t.delete(&format!("projects/{p}"));
    assert_eq!(
        (s, b),
        (200, msg("project dstatkafka successfully deleted"))
    );
    let (s, _) = t.delete(&format!("projects/{p}"));
    assert_eq!(s, 404);
    let (s, _) = t.get(&format!("projects/{p}"));
    assert_eq!(s, 404);
}

#[test]
fn bad_loads_are_refused_with_the_reason() {
    let t = TestServer::with(|c| c.max_body = 4096);
    let (s, b) = t.put("projects/p", "<project name=\"p\"><contqueries>");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("problem(s)"), "{b}");
    assert!(b.contains("<detail>line"), "{b}");
    let (s, b) = t.put("projects/p", "");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("body is empty"), "{b}");
    let big = format!("{}<!-- {} -->", trades("p"), "x".repeat(5000));
    let (s, b) = t.put("projects/p", &big);
    assert_eq!(s, 413);
    assert!(
        err_msg(&b).contains("larger than the limit of 4096 bytes"),
        "{b}"
    );
    // An edge to a window that does not exist.
    let broken = trades("p").replace("target=\"large\"", "target=\"nosuch\"");
    let (s, b) = t.put("projects/p", &broken);
    assert_eq!(s, 400);
    assert!(b.contains("nosuch"), "{b}");
    let (_, b) = t.get("projects");
    assert_eq!(b, "<projects/>\n");
    // Load under another URL name: the URL wins.
    let (s, _) = t.put("projects/renamed?start=false", &trades("p"));
    assert_eq!(s, 200);
    let (_, b) = t.get("projectXml?name=renamed");
    assert!(b.contains("<project name=\"renamed\""), "{b}");
    // Overwrite replaces.
    let (s, b) = t.put("projects/renamed?overwrite=true", &trades("p"));
    assert_eq!(s, 200, "{b}");
    let (_, b) = t.get("projects/renamed");
    assert!(b.contains("state=\"running\""), "{b}");
    let (s, b) = t.put("projects/renamed?overwrite=perhaps", &trades("p"));
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("not a boolean"), "{b}");
}

#[test]
fn unsupported_windows_load_but_do_not_start() {
    let t = TestServer::start();
    let xml = trades("u").replace(
        "<window-filter name=\"large\">\n          <expression>quantity &gt;= 1000</expression>\n        </window-filter>",
        "<window-pattern name=\"large\"/>",
    );
    assert!(xml.contains("window-pattern"));
    let (s, b) = t.put("projects/u", &xml);
    assert_eq!(s, 400, "{b}");
    assert!(err_msg(&b).contains("cannot start"), "{b}");
    let (s, b) = t.put("projects/u?start=false", &xml);
    assert_eq!((s, b), (200, msg("load project u succeeded")));
    let (s, b) = t.put("projects/u/state?value=running", "");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("project 'u' cannot start"), "{b}");
    assert!(b.contains("<detail>line"), "{b}");
    let (_, b) = t.get("projectXml?name=u");
    assert!(b.contains("<window-pattern name=\"large\"/>"), "{b}");
    let (_, b) = t.get("projects");
    assert!(b.contains("startable=\"false\""), "{b}");
}

#[test]
fn windows_and_xml_endpoints() {
    let t = TestServer::start();
    t.load_started("w1");
    let (_, b) = t.get("windows");
    assert!(b.contains("<window name=\"bySymbol\" contquery=\"cq\" project=\"w1\" type=\"window-aggregate\" count=\"0\"/>"), "{b}");
    let (s, b) = t.get("windows/w1/cq/trades");
    assert_eq!(s, 200);
    assert!(
        b.contains("<field name=\"id\" type=\"int64\" key=\"true\"/>"),
        "{b}"
    );
    let (_, b) = t.get("windows/w1/cq/bySymbol?schema=true");
    assert!(b.contains("<field name=\"total\" type=\"int64\"/>"), "{b}");
    let (s, b) = t.get("windows/w1/cq/nosuch");
    assert_eq!(s, 404);
    assert!(
        err_msg(&b).contains("window 'w1/cq/nosuch' does not exist"),
        "{b}"
    );
    let (s, _) = t.get("windows/nosuch");
    assert_eq!(s, 404);
    let (_, b) = t.get("windowXml?project=w1&name=large");
    assert!(
        b.contains("<window-filter name=\"large\" contquery=\"cq\" project=\"w1\">"),
        "{b}"
    );
    assert!(!b.contains("window-source"), "{b}");
    let (_, b) = t.get("windowXml?filter=eq(type,'window-aggregate')");
    assert!(
        b.contains("window-aggregate") && !b.contains("window-filter"),
        "{b}"
    );
    let (s, b) = t.get("windowXml?filter=eq(type");
    assert_eq!(s, 400);
    assert!(err_msg(&b).starts_with("filter 'eq(type':"), "{b}");
    let (s, _) = t.get("windowXml?project=nosuch");
    assert_eq!(s, 404);
    // projectXml gives back what was loaded.
    let (_, b) = t.get("projectXml");
    let inner = b
        .trim()
        .strip_prefix("<projects>")
        .unwrap()
        .strip_suffix("</projects>")
        .unwrap();
    let reparsed = sluice_model::parse_project(inner, &|_| None).unwrap();
    let original = sluice_model::parse_project(&trades("w1"), &|_| None).unwrap();
    assert_eq!(reparsed.contqueries, original.contqueries);
    let (s, _) = t.get("projectXml?name=nosuch");
    assert_eq!(s, 404);
    let (s, b) = t.get("projects?filter=eq(state,'running')&format=json");
    assert_eq!(s, 200);
    assert!(b.contains("\"name\":\"w1\""), "{b}");
}

#[test]
fn inject_in_every_format_and_read_events() {
    let t = TestServer::start();
    t.load_started("e");
    let (s, b) = t.put(
        "windows/e/cq/trades/state?value=injected",
        "i,n,1,IBM,1500,10.5\ni,n,2,SAP,200,20\ni,n,3,IBM,100,11\n",
    );
    assert_eq!(
        (s, b),
        (200, msg("3 event(s) injected into window e/cq/trades"))
    );
    let (s, b) = t.put(
        "windows/e/cq/trades/state?value=injected",
        "<events><event><opcode>i</opcode><id>4</id><symbol>ACME</symbol><quantity>3000</quantity><price>1</price></event></events>",
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = t.put(
        "windows/e/cq/trades/state?value=injected",
        r#"[{"opcode":"i","id":5,"symbol":"SAP","quantity":50,"price":2.5}]"#,
    );
    assert_eq!(s, 200, "{b}");
    let file = t.dir.join("more.csv");
    std::fs::write(&file, "i,n,6,IBM,1,1\n").unwrap();
    let (s, b) = t.put(
        &format!(
            "windows/e/cq/trades/state?value=injected&eventUrl=file://{}",
            file.display()
        ),
        "",
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(t.count("e", "trades"), 6);
    // Bad event text: nothing is injected, each problem named.
    let (s, b) = t.put(
        "windows/e/cq/trades/state?value=injected",
        "i,n,7,X,1,1\ni,n,8,X,lots,1\n",
    );
    assert_eq!(s, 400);
    assert!(
        err_msg(&b).contains("1 event(s) cannot be read; nothing was injected"),
        "{b}"
    );
    assert!(
        b.contains("<detail>line 2: field 'quantity' (int32): cannot read 'lots'"),
        "{b}"
    );
    assert_eq!(t.count("e", "trades"), 6);
    let (s, b) = t.put(
        "windows/e/cq/trades/state?value=injected",
        "<events><event><bogus>1</bogus></event></events>",
    );
    assert_eq!(s, 400);
    assert!(b.contains("'bogus' is not a field"), "{b}");
    let (s, b) = t.put("windows/e/cq/trades/state?value=injected", "");
    assert_eq!(s, 400);
    assert!(err_msg(&b).starts_with("no events"), "{b}");
    let (s, b) = t.put("windows/e/cq/bySymbol/state?value=injected", "i,n,X,1");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("not a source window"), "{b}");
    let (s, _) = t.put("windows/e/cq/nosuch/state?value=injected", "i,n,1");
    assert_eq!(s, 404);
    // A duplicate key is refused by the window and reported.
    let (s, b) = t.put(
        "windows/e/cq/trades/state?value=injected",
        "i,n,1,IBM,1,1\n",
    );
    assert_eq!(s, 200);
    assert!(b.contains("1 refused"), "{b}");
    // Events with sortBy, limit and filter.
    let (s, b) = t.get("events/e/cq/bySymbol?sortBy=total:descending");
    assert_eq!(s, 200);
    let acme = b.find("ACME").unwrap();
    let ibm = b.find("IBM").unwrap();
    let sap = b.find("SAP").unwrap();
    assert!(acme < ibm && ibm < sap, "{b}");
    assert!(b.contains("<event window=\"e/cq/bySymbol\"><symbol key=\"true\">ACME</symbol><total>3000</total></event>"), "{b}");
    let (_, b) = t.get("events/e/cq/trades?filter=and(eq(symbol,'IBM'),gt(quantity,10))");
    assert_eq!(b.matches("<event ").count(), 2, "{b}");
    let (_, b) = t.get("events/e/cq/trades?limit=2");
    assert_eq!(b.matches("<event ").count(), 2, "{b}");
    let (_, b) = t.get("events/e/cq/large?format=json");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 2, "{b}");
    let (s, b) = t.get("events/e/cq/trades?sortBy=nosuch:ascending");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("'nosuch' is not a field"), "{b}");
    let (s, b) = t.get("events/e/cq/trades?sortBy=id:sideways");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("direction"), "{b}");
    let (s, _) = t.get("events/e/cq/trades?limit=many");
    assert_eq!(s, 400);
    let (s, _) = t.get("events/e/cq/trades?filter=eq(nosuch,1)");
    assert_eq!(s, 400);
    let (s, _) = t.get("events/e/cq/nosuch");
    assert_eq!(s, 404);
    let (s, _) = t.get("events/nosuch/cq/trades");
    assert_eq!(s, 404);
    // All windows, filtered.
    let (_, b) = t.get("events?windowFilter=eq(name,'bySymbol')&eventFilter=eq(symbol,'SAP')");
    assert_eq!(b.matches("<event ").count(), 1, "{b}");
}

#[test]
fn fs_connectors_run_when_connectors_start() {
    let t = TestServer::start();
    std::fs::write(
        t.dir.join("in.csv"),
        "i,n,1,A,10,1\ni,n,2,B,20,1\nbad line\ni,n,3,A,5,1\n",
    )
    .unwrap();
    let xml = trades("f")
        .replace(
            "</schema>\n        </window-source>",
            "</schema>\n          <connectors><connector class=\"fs\" name=\"in\"><properties><property name=\"type\">pub</property><property name=\"fsname\">in.csv</property></properties></connector></connectors>\n        </window-source>",
        )
        .replace(
            "<output>",
            "<connectors><connector class=\"fs\" name=\"out\"><properties><property name=\"type\">sub</property><property name=\"fsname\">out.csv</property><property name=\"snapshot\">true</property></properties></connector></connectors>\n          <output>",
        );
    let (s, b) = t.put("projects/f?connectors=false", &xml);
    assert_eq!(s, 200, "{b}");
    assert_eq!(t.count("f", "trades"), 0);
    let (s, b) = t.put("projects/f/state?value=connectorsStarted", "");
    assert_eq!((s, b), (200, msg("connectors started for project 'f'")));
    eventually(10, "the file to be read", || {
        (t.count("f", "trades") == 3).then_some(())
    });
    let out = eventually(10, "the subscriber file", || {
        let s = std::fs::read_to_string(t.dir.join("out.csv")).ok()?;
        s.contains("A,15").then_some(s)
    });
    assert!(out.contains("B,20"), "{out}");
    // A missing input file is a 400 naming the file.
    let xml2 = xml.replace("in.csv", "missing.csv");
    let (s, _) = t.put("projects/g?connectors=false", &xml2);
    assert_eq!(s, 200);
    let (s, b) = t.put("projects/g/state?value=connectorsStarted", "");
    assert_eq!(s, 400);
    assert!(b.contains("missing.csv"), "{b}");
    // A connector class the server cannot run says so.
    let xml3 = xml.replace("class=\"fs\" name=\"in\"", "class=\"mq\" name=\"in\"");
    t.put("projects/k?connectors=false", &xml3);
    let (s, b) = t.put("projects/k/state?value=connectorsStarted", "");
    assert_eq!(s, 400);
    assert!(b.contains("class 'mq'"), "{b}");
    // A kafka connector without its broker names the missing property.
    let xml4 = xml.replace("class=\"fs\" name=\"in\"", "class=\"kafka\" name=\"in\"");
    t.put("projects/k2?connectors=false", &xml4);
    let (s, b) = t.put("projects/k2/state?value=connectorsStarted", "");
    assert_eq!(s, 400);
    assert!(b.contains("kafkahostport"), "{b}");
}

#[test]
fn project_results_and_validation() {
    let t = TestServer::start();
    std::fs::write(t.dir.join("in.csv"), "i,n,1,A,10,1\ni,n,2,A,20,1\n").unwrap();
    let xml = trades("r").replace(
        "</schema>\n        </window-source>",
        "</schema>\n          <connectors><connector class=\"fs\" name=\"in\"><properties><property name=\"type\">pub</property><property name=\"fsname\">in.csv</property></properties></connector></connectors>\n        </window-source>",
    );
    let (s, b) = t.post("projectResults?windows=bySymbol", &xml);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b.trim(), "<events><event window=\"r/cq/bySymbol\"><symbol key=\"true\">A</symbol><total>30</total></event></events>");
    let (s, b) = t.post("projectResults?windows=nosuch", &xml);
    assert_eq!(s, 404);
    assert!(err_msg(&b).contains("'nosuch'"), "{b}");
    let (s, _) = t.post("projectResults", "<project");
    assert_eq!(s, 400);
    let (s, b) = t.post("projectValidationResults", &trades("v"));
    assert_eq!((s, b.trim()), (200, "<project-validation-success/>"));
    let (s, b) = t.post(
        "projectValidationResults",
        &trades("v").replace("ESP_aSum(quantity)", ""),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = t.post("projectValidationResults", "<project name='x'><contqueries><contquery name='c'><windows><window-filter name='f'/></windows><edges><edge source='a' target='f'/></edges></contquery></contqueries></project>");
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("<detail>"), "{b}");
}

#[test]
fn loggers_connector_info_and_api_docs() {
    let t = TestServer::start();
    let (_, b) = t.get("loggers");
    assert!(b.contains("<logger name=\"esp.http\""), "{b}");
    let (s, b) = t.put("loggers/esp.pubsub/level?value=debug", "");
    assert_eq!((s, b), (200, msg("logger esp.pubsub set to level debug")));
    let (_, b) = t.get("loggers/esp.pubsub");
    assert!(b.contains("level=\"debug\""), "{b}");
    let (s, b) = t.put("loggers/esp.pubsub/level?value=loud", "");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("unknown log level 'loud'"), "{b}");
    let (s, b) = t.put("loggers/nosuch/level?value=info", "");
    assert_eq!(s, 404);
    assert!(
        err_msg(&b).contains("logger 'nosuch' does not exist"),
        "{b}"
    );
    let (s, _) = t.get("loggers/nosuch");
    assert_eq!(s, 404);
    t.put("loggers/esp.pubsub/level?value=info", "");
    let (_, b) = t.get("connectorInfo");
    assert!(
        b.contains("<connector label=\"fs\" type=\"publisher\""),
        "{b}"
    );
    let (s, b) = t.get("api-docs?format=json");
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["swagger"], "2.0");
    assert_eq!(v["basePath"], "/SASESP");
    assert!(v["paths"]["/projects/{name}/state"]["put"].is_object());
    let (s, b) = t.delete("server");
    assert_eq!(s, 405);
    assert!(err_msg(&b).contains("use GET"), "{b}");
}

#[test]
fn bearer_token_is_required_when_configured() {
    let t = TestServer::with(|c| c.auth_token = Some("s3cret".into()));
    let (s, b) = t.get("server");
    assert_eq!(s, 401);
    assert!(err_msg(&b).contains("needs a token"), "{b}");
    let (s, _) = call("HEAD", &format!("{}/", t.base), None, &[]);
    assert_eq!(s, 401);
    let (s, b) = call(
        "GET",
        &t.url("server"),
        None,
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(s, 401);
    assert!(err_msg(&b).contains("wrong"), "{b}");
    let (s, _) = call(
        "GET",
        &t.url("server"),
        None,
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(s, 200);
    let (s, _) = call(
        "HEAD",
        &format!("{}/", t.base),
        None,
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(s, 200);
}

#[test]
fn persist_paths_are_confined_to_the_root() {
    let root = tempdir();
    let r2 = root.clone();
    let t = TestServer::with(move |c| c.persist_root = Some(r2));
    t.put("projects/p?start=false", &trades("p"));
    let (s, b) = t.put("projects/p/state?value=persisted&path=/etc/x", "");
    assert_eq!(s, 403);
    assert!(err_msg(&b).contains("outside the persist root"), "{b}");
    let (s, b) = t.put("projects/p/state?value=persisted&path=snap1", "");
    assert_eq!(s, 200, "{b}");
    assert!(root.join("snap1/MANIFEST").is_file());
    let (s, b) = t.put("server/state?value=persisted&path=../x", "");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("'..'"), "{b}");
}

#[test]
fn reload_resets_to_the_startup_model_and_stop_ends_the_server() {
    let dir = tempdir();
    let model = dir.join("m.xml");
    std::fs::write(&model, trades("boot")).unwrap();
    let m2 = model.clone();
    let mut t = TestServer::with(move |c| c.models = vec![m2]);
    let (_, b) = t.get("projects");
    assert!(b.contains("name=\"boot\" state=\"running\""), "{b}");
    t.load_started("extra");
    t.delete("projects/boot");
    let (s, b) = t.put("server/state?value=reloaded", "");
    assert_eq!(
        (s, b),
        (
            200,
            msg("server reloaded: 1 project(s) loaded from the startup model")
        )
    );
    let (_, b) = t.get("projects");
    assert!(b.contains("boot") && !b.contains("extra"), "{b}");
    let (s, b) = t.put("server/state?value=sideways", "");
    assert_eq!(s, 400);
    assert!(err_msg(&b).contains("unknown server state"), "{b}");
    let (s, b) = t.put("server/state?value=stopped", "");
    assert_eq!((s, b), (200, msg("server stopping")));
    assert!(
        t.server.wait(Some(Duration::from_secs(10))),
        "the server stops"
    );
}

#[test]
fn deeply_nested_filters_are_refused_and_the_server_still_serves() {
    let t = TestServer::start();
    t.load_started("deep");
    let nest = |n: usize| format!("{}eq(symbol,'A'){}", "not(".repeat(n), ")".repeat(n));
    let deep = nest(5000);
    for rest in [
        format!("events/deep/cq/trades?filter={deep}"),
        format!("events?eventFilter={deep}"),
        format!("events?windowFilter={deep}"),
        format!("projects?filter={deep}"),
        format!("windows?filter={deep}"),
    ] {
        let (s, b) = t.get(&rest);
        assert_eq!(s, 400, "{b}");
        assert!(
            err_msg(&b).contains("more than 64 levels deep (the limit)"),
            "{b}"
        );
        assert!(b.len() < 2000, "the reply quotes the filter cut short: {b}");
    }
    // A filter within the limit still works, and the server serves on.
    let (s, b) = t.get(&format!("events/deep/cq/trades?filter={}", nest(63)));
    assert_eq!(s, 200, "{b}");
    let (s, _) = t.get("server");
    assert_eq!(s, 200);
}
