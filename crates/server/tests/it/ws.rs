//! WebSocket publishers and subscribers, and the load test: one client publishes while others
//! poll `events` and load and delete other projects; nothing is lost and no request fails.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tungstenite::{Message, WebSocket};

use super::*;

fn connect(t: &TestServer, path: &str) -> WebSocket<TcpStream> {
    let addr = t.server.http_addr();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let url = format!("ws://{addr}/SASESP/{path}");
    let (ws, _) = tungstenite::client(url.as_str(), stream).expect("WebSocket handshake");
    ws
}

fn text(ws: &mut WebSocket<TcpStream>) -> String {
    loop {
        match ws.read().expect("a message within the timeout") {
            Message::Text(t) => return t.to_string(),
            Message::Close(_) => panic!("closed"),
            _ => continue,
        }
    }
}

#[test]
fn subscriber_gets_status_schema_snapshot_and_updates() {
    let t = TestServer::start();
    t.load_started("s");
    t.put("windows/s/cq/trades/state?value=injected", "i,n,1,A,10,1\n");
    let mut sub = connect(&t, "subscribers/s/cq/bySymbol?format=xml&snapshot=true");
    assert_eq!(text(&mut sub), "status: 200");
    let schema = text(&mut sub);
    assert!(
        schema.contains("<field name=\"symbol\" type=\"string\" key=\"true\"/>"),
        "{schema}"
    );
    let snap = text(&mut sub);
    assert!(
        snap.contains("snapshot=\"true\"") && snap.contains("<total>10</total>"),
        "{snap}"
    );
    t.put("windows/s/cq/trades/state?value=injected", "i,n,2,A,5,1\n");
    let upd = text(&mut sub);
    assert!(
        upd.contains("opcode=\"update\"") && upd.contains("<total>15</total>"),
        "{upd}"
    );
    let mut js = connect(&t, "subscribers/s/cq/trades?format=json&schema=false");
    assert_eq!(text(&mut js), "status: 200");
    t.put("windows/s/cq/trades/state?value=injected", "i,n,3,B,7,1\n");
    let v: serde_json::Value = serde_json::from_str(&text(&mut js)).unwrap();
    assert_eq!(v["events"][0]["values"]["symbol"], "B");
    assert_eq!(v["events"][0]["opcode"], "insert");
}

#[test]
fn publisher_reports_bad_messages_and_syncs() {
    let t = TestServer::start();
    t.load_started("p");
    let mut p = connect(&t, "publishers/p/cq/trades?format=csv");
    p.send(Message::Text("i,n,1,A,10,1\ni,n,2,B,20,2\n".into()))
        .unwrap();
    p.send(Message::Text("i,n,3,A,x,1\n".into())).unwrap();
    let e = text(&mut p);
    assert!(
        e.starts_with("error: message 2: line 1: field 'quantity' (int32): cannot read 'x'"),
        "{e}"
    );
    p.send(Message::Text("sync".into())).unwrap();
    assert_eq!(text(&mut p), "synced 2");
    assert_eq!(t.count("p", "trades"), 2);
    let mut j = connect(&t, "publishers/p/cq/trades?format=json");
    j.send(Message::Text(
        r#"[{"id":9,"symbol":"C","quantity":1,"price":1}]"#.into(),
    ))
    .unwrap();
    j.send(Message::Text("sync".into())).unwrap();
    assert_eq!(text(&mut j), "synced 1");
    assert_eq!(t.count("p", "trades"), 3);
    // Refused before the upgrade: unknown window, non-source window, bad format.
    for (path, status) in [
        ("publishers/p/cq/nosuch", 404),
        ("publishers/p/cq/bySymbol", 400),
        ("publishers/p/cq/trades?format=yaml", 400),
        ("subscribers/p/cq", 400),
    ] {
        let addr = t.server.http_addr();
        let stream = TcpStream::connect(addr).unwrap();
        let url = format!("ws://{addr}/SASESP/{path}");
        match tungstenite::client(url.as_str(), stream) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                assert_eq!(r.status().as_u16(), status, "{path}")
            }
            other => panic!(
                "{path}: expected an HTTP refusal, got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[test]
fn load_test_nothing_lost_no_request_fails() {
    const N: usize = 4000;
    const PER_MSG: usize = 40;
    let t = Arc::new(TestServer::start());
    t.load_started("load");
    let done = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));

    // A subscriber counting inserts on the source window.
    let mut sub = connect(&t, "subscribers/load/cq/trades?format=csv&schema=false");
    assert_eq!(text(&mut sub), "status: 200");
    let subscriber = std::thread::spawn(move || {
        let mut seen = 0usize;
        while seen < N {
            let m = text(&mut sub);
            seen += m.lines().filter(|l| l.starts_with("I,")).count();
        }
        seen
    });

    // Pollers of events and windows.
    let mut others = Vec::new();
    for _ in 0..2 {
        let (t, done, requests) = (t.clone(), done.clone(), requests.clone());
        others.push(std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let (s, b) = t.get("events/load/cq/bySymbol?sortBy=total:descending&limit=3");
                assert_eq!(s, 200, "{b}");
                let (s, b) = t.get("windows?count=true");
                assert_eq!(s, 200, "{b}");
                requests.fetch_add(2, Ordering::SeqCst);
            }
        }));
    }
    // A client loading and deleting other projects.
    {
        let (t, done, requests) = (t.clone(), done.clone(), requests.clone());
        others.push(std::thread::spawn(move || {
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                let name = format!("other{i}");
                let (s, b) = t.put(&format!("projects/{name}"), &trades(&name));
                assert_eq!(s, 200, "{b}");
                let (s, b) = t.put(
                    &format!("windows/{name}/cq/trades/state?value=injected"),
                    "i,n,1,A,1,1\n",
                );
                assert_eq!(s, 200, "{b}");
                let (s, b) = t.delete(&format!("projects/{name}"));
                assert_eq!(s, 200, "{b}");
                requests.fetch_add(3, Ordering::SeqCst);
                i += 1;
            }
        }));
    }

    // The publisher.
    let mut p = connect(&t, "publishers/load/cq/trades?format=csv&blocksize=4");
    let mut expected_total = 0u64;
    let mut id = 0usize;
    for _ in 0..N / PER_MSG {
        let mut msg = String::new();
        for _ in 0..PER_MSG {
            id += 1;
            let q = (id % 97) as u64 + 1;
            expected_total += q;
            msg.push_str(&format!("i,n,{id},S{},{q},1.5\n", id % 13));
        }
        p.send(Message::Text(msg.into())).unwrap();
    }
    p.send(Message::Text("sync".into())).unwrap();
    assert_eq!(text(&mut p), format!("synced {N}"));
    let seen = subscriber.join().expect("subscriber");
    done.store(true, Ordering::SeqCst);
    for o in others {
        o.join().expect("no request failed");
    }
    assert_eq!(seen, N, "every published event reached the subscriber");
    assert_eq!(
        t.count("load", "trades"),
        N,
        "every published event is in the window"
    );
    let (_, b) = t.get("events/load/cq/bySymbol?format=json");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let total: u64 = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["values"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(total, expected_total);
    assert!(requests.load(Ordering::SeqCst) > 0);
}
