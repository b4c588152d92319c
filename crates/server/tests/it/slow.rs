//! A client subscriber that stops reading never stalls its project: it is dropped once it falls
//! more than `subscriber_queue` events behind (crate::subqueue), with the reason.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::time::Instant;

use tungstenite::Message;

use super::*;

const EVENTS: usize = 100_000;

#[test]
fn subscribers_that_never_read_are_dropped_and_the_project_goes_on() {
    let t = TestServer::with(|c| c.subscriber_queue = 1000);
    t.load_started("slow");
    let http = t.server.http_addr();
    let pubsub = t.server.pubsub_addr().unwrap();

    // A WebSocket subscriber and a pubsub-port subscriber of the source window that read their
    // first message and then nothing.
    let stream = TcpStream::connect(http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let url = format!("ws://{http}/SASESP/subscribers/slow/cq/trades?format=csv&schema=false");
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("handshake");
    assert_eq!(ws.read().unwrap().to_text().unwrap(), "status: 200");
    let s = TcpStream::connect(pubsub).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    writeln!(&s, "subscribe slow/cq/trades").unwrap();
    let mut sub = BufReader::new(s);
    let mut l = String::new();
    sub.read_line(&mut l).unwrap();
    assert!(l.starts_with("ok "), "{l}");

    // 100 000 events of about 520 bytes (50 MB of output per subscriber, far more than socket
    // buffers hold), one block each, from a pubsub publisher.
    let p = TcpStream::connect(pubsub).unwrap();
    p.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    writeln!(&p, "publish slow/cq/trades blocksize=1").unwrap();
    let mut pr = BufReader::new(p.try_clone().unwrap());
    l.clear();
    pr.read_line(&mut l).unwrap();
    assert!(l.starts_with("ok "), "{l}");
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let pad = "x".repeat(500);
        let mut w = BufWriter::new(p);
        for i in 0..EVENTS {
            writeln!(w, "i,n,{i},S{}{pad},1,1", i % 10).unwrap();
        }
        writeln!(w, "sync").unwrap();
        w.flush().unwrap();
    });
    // The project processes everything: the publisher's sync is answered.
    l.clear();
    pr.read_line(&mut l)
        .expect("'synced' within 120 s: the project must not wait for its subscribers");
    assert_eq!(l.trim_end(), format!("synced {EVENTS}"));
    writer.join().unwrap();
    eprintln!("{EVENTS} events processed in {:?}", started.elapsed());
    assert_eq!(t.count("slow", "trades"), EVENTS);
    let (s, b) = t.get("events/slow/cq/bySymbol");
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b.matches("<event ").count(),
        10,
        "{}",
        &b[..200.min(b.len())]
    );
    let (s, b) = t.put("projects/slow/state?value=stopped", "");
    assert_eq!(s, 200, "{b}");

    // Both subscribers were dropped: their streams end well before all events, with the reason
    // last (a close frame; an `error` line on a line of its own).
    let mut lines = 0usize;
    let reason = loop {
        match ws.read() {
            Ok(Message::Text(t)) => lines += t.lines().count(),
            Ok(Message::Close(f)) => break f.map(|f| f.reason.to_string()),
            Ok(_) => {}
            Err(e) => panic!("the WebSocket ended without a close frame: {e} ({lines} events)"),
        }
    };
    eprintln!("the WebSocket subscriber got {lines} events before it was dropped");
    assert!(
        lines < EVENTS,
        "{lines} events: the subscriber was not dropped"
    );
    let reason = reason.expect("a close reason");
    assert!(
        reason.contains("too slow: more than 1000 events waiting"),
        "{reason}"
    );
    let mut events = 0usize;
    let mut last = String::new();
    loop {
        l.clear();
        match sub.read_line(&mut l).expect("the subscriber's stream ends") {
            0 => break,
            _ => {
                if !l.starts_with("block ") {
                    events += 1;
                }
                last = l.clone();
            }
        }
    }
    eprintln!("the pubsub subscriber got {events} events before it was dropped");
    assert!(
        events < EVENTS,
        "{events} events: the subscriber was not dropped"
    );
    assert_eq!(
        last.trim_end(),
        "error too slow: more than 1000 events waiting to be sent"
    );
    // Counted where an operator looks.
    let (s, b) = t.get("server");
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("slow-subscribers-dropped=\"2\""), "{b}");
}
