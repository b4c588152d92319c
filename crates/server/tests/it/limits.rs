//! Input the server cannot use is refused with a reason and nothing else is lost: over-long
//! and non-UTF-8 lines on the pubsub port, HTTP requests that never finish their headers, and
//! requests hyper or axum refuse before any handler (their replies carry the error element).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use super::*;

fn pubsub(t: &TestServer, first: &[u8]) -> (BufReader<TcpStream>, TcpStream) {
    let s = TcpStream::connect(t.server.pubsub_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(first).unwrap();
    (BufReader::new(s), w)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("a line within the timeout");
    l.trim_end().to_string()
}

#[test]
fn an_over_long_pubsub_line_is_refused_whole_and_the_next_lines_go_on() {
    let t = TestServer::start();
    t.load_started("ll");
    let (mut r, mut w) = pubsub(&t, b"publish ll/cq/trades\n");
    assert!(line(&mut r).starts_with("ok "));
    // A line of 1 MiB of filler then a valid event: before, its tail was published as event 77.
    let mut long = vec![b'#'; 1 << 20];
    long.extend_from_slice(b"i,n,77,TAIL,1,1\n");
    w.write_all(b"i,n,1,A,10,1\n").unwrap();
    w.write_all(&long).unwrap();
    // Far longer (5 MiB) and split over many writes: still one refused line.
    for _ in 0..5 {
        w.write_all(&vec![b'x'; 1 << 20]).unwrap();
    }
    w.write_all(b"\ni,n,3,B,20,1\nsync\n").unwrap();
    assert_eq!(
        line(&mut r),
        "bad 2 line longer than 1048576 bytes (1 MiB): refused whole"
    );
    assert_eq!(
        line(&mut r),
        "bad 3 line longer than 1048576 bytes (1 MiB): refused whole"
    );
    assert_eq!(line(&mut r), "synced 2");
    assert_eq!(t.count("ll", "trades"), 2);
    let (s, b) = t.get("events/ll/cq/trades");
    assert_eq!(s, 200);
    assert!(!b.contains("TAIL"), "{b}");
    // A line of exactly 1 MiB is still read (and here refused for its content, not its size).
    let mut max = vec![b'i'; 1 << 20];
    max.push(b'\n');
    w.write_all(&max).unwrap();
    w.write_all(b"sync\n").unwrap();
    let bad = line(&mut r);
    assert!(
        bad.starts_with("bad 6 ") && !bad.contains("longer"),
        "{bad}"
    );
    assert_eq!(line(&mut r), "synced 2");
    // An over-long first line: an error and the connection closes.
    let mut first = vec![b'p'; (1 << 20) + 10];
    first.push(b'\n');
    let (mut r2, _w2) = pubsub(&t, &first);
    assert_eq!(
        line(&mut r2),
        "error the first line is longer than 1048576 bytes"
    );
}

#[test]
fn non_utf8_pubsub_lines_are_answered_bad_and_the_next_lines_go_on() {
    let t = TestServer::start();
    t.load_started("u8");
    let (mut r, mut w) = pubsub(&t, b"publish u8/cq/trades\n");
    assert!(line(&mut r).starts_with("ok "));
    w.write_all(b"i,n,1,A,10,1\ni,n,2,\xff\xfeB,10,1\r\ni,n,3,C,10,1\nsync\n")
        .unwrap();
    assert_eq!(
        line(&mut r),
        "bad 2 not UTF-8 text: byte 6 of the line is not valid UTF-8"
    );
    assert_eq!(line(&mut r), "synced 2");
    assert_eq!(t.count("u8", "trades"), 2);
    // The subscriber side ignores such lines and still obeys `quit`.
    let (mut s, mut sw) = pubsub(&t, b"subscribe u8/cq/trades\n");
    assert!(line(&mut s).starts_with("ok "));
    sw.write_all(b"\xc3\x28\nquit\n").unwrap();
    let mut rest = String::new();
    assert_eq!(s.read_to_string(&mut rest).unwrap(), 0, "{rest}");
    // A first line that is not UTF-8.
    let (mut r2, _w2) = pubsub(&t, b"publish u8/cq/\xe9\n");
    assert_eq!(
        line(&mut r2),
        "error the first line is not UTF-8 text (byte 14)"
    );
}

/// Reads until the server closes; the elapsed time.
fn time_to_close(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

#[test]
fn a_request_that_never_finishes_its_headers_is_closed() {
    let t = TestServer::with(|c| c.header_read_timeout = Duration::from_secs(1));
    let addr = t.server.http_addr();
    // Headers started, never finished.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /SASESP/server HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let took = time_to_close(&mut s);
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Nothing sent at all.
    let mut s = TcpStream::connect(addr).unwrap();
    let took = time_to_close(&mut s);
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A request sent in pieces within the time is served.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /SASESP/server HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"Host: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    // The default is 30 s.
    assert_eq!(
        Config::default().header_read_timeout,
        Duration::from_secs(30)
    );
}

/// Sends raw bytes and returns the reply's status, headers (lower case) and body.
fn raw(t: &TestServer, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(t.server.http_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before reading everything: ignore write errors.
    let _ = s.write_all(request);
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the reply: {e}"),
        }
        // A reply with a content-length is whole once its body is there.
        let r = String::from_utf8_lossy(&reply);
        if let Some((head, body)) = r.split_once("\r\n\r\n") {
            let len = head.to_ascii_lowercase().lines().find_map(|l| {
                l.strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if len.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let r = String::from_utf8(reply).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").expect("a whole reply head");
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn assert_error_element(what: &str, head: &str, body: &str, message: &str) {
    assert!(
        head.contains("content-type: application/xml"),
        "{what}: {head}"
    );
    assert!(
        head.contains(&format!("content-length: {}\r\n", body.len()))
            || head.ends_with(&format!("content-length: {}", body.len())),
        "{what}: {head}"
    );
    assert!(
        body.starts_with("<response><message>") && body.contains(message),
        "{what}: {body}"
    );
}

#[test]
fn hyper_s_own_refusals_carry_the_error_element() {
    let t = TestServer::start();
    // 400: a request line that is not HTTP.
    let (s, h, b) = raw(&t, b"this is not http\r\n\r\n");
    assert_eq!(s, 400);
    assert_error_element("400", &h, &b, "cannot be read as HTTP/1.1");
    // 414: a URI over 65 534 bytes.
    let uri = format!("/SASESP/server?x={}", "a".repeat(70_000));
    let (s, h, b) = raw(
        &t,
        format!("GET {uri} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    assert_eq!(s, 414);
    assert_error_element("414", &h, &b, "URI is too long");
    // 431: more than 100 headers, and one header of 500 KiB.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (s, h, b) = raw(
        &t,
        format!("GET /SASESP/server HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(s, 431);
    assert_error_element("431 many", &h, &b, "headers are too large");
    let big = "v".repeat(500 << 10);
    let (s, h, b) = raw(
        &t,
        format!("GET /SASESP/server HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(s, 431);
    assert_error_element("431 big", &h, &b, "headers are too large");
    // JSON when the request asks for it.
    let (s, h, b) = raw(
        &t,
        format!("GET /SASESP/server HTTP/1.1\r\nAccept: application/json\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(s, 431);
    assert!(h.contains("content-type: application/json"), "{h}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("headers are too large"),
        "{b}"
    );
    // The server still serves, and a normal reply is untouched.
    let (s, h, b) = raw(
        &t,
        b"GET /SASESP/server HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 200, "{h}{b}");
    assert!(b.contains("<esp-server"), "{b}");
}

#[test]
fn axum_s_refusals_carry_the_error_element() {
    let t = TestServer::start();
    t.load_started("r");
    // A WebSocket endpoint asked without an upgrade: 400 from the extractor.
    let (s, b) = t.get("subscribers/r/cq/trades");
    assert_eq!(s, 400);
    assert!(
        b.starts_with("<response><message>") && b.contains("upgrade"),
        "{b}"
    );
    let (s, b) = t.get("subscribers/r/cq/trades?format=json");
    assert_eq!(s, 400);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert!(v["message"].as_str().unwrap().contains("upgrade"), "{b}");
    // A method the route does not take: 405 with the methods it does.
    let (s, b) = t.put("subscribers/r/cq/trades", "");
    assert_eq!(s, 405);
    assert!(b.contains("PUT is not allowed") && b.contains("GET"), "{b}");
    // Replies that already carry the element are untouched.
    let (s, b) = t.get("windows/r/cq/nosuch");
    assert_eq!(s, 404);
    assert_eq!(b.matches("<response>").count(), 1, "{b}");
}
