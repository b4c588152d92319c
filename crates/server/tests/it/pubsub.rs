//! The `--pubsub` line protocol.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use super::*;

fn open(t: &TestServer, first: &str) -> (BufReader<TcpStream>, TcpStream) {
    let s = TcpStream::connect(t.server.pubsub_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    writeln!(w, "{first}").unwrap();
    (BufReader::new(s), w)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("a line within the timeout");
    l.trim_end().to_string()
}

#[test]
fn publish_and_subscribe_over_the_pubsub_port() {
    let t = TestServer::start();
    t.load_started("ps");
    t.put(
        "windows/ps/cq/trades/state?value=injected",
        "i,n,1,A,10,1\n",
    );
    let (mut sr, _sw) = open(&t, "subscribe ps/cq/bySymbol snapshot");
    assert_eq!(line(&mut sr), "ok symbol*:string,total:int64");
    assert_eq!(line(&mut sr), "snapshot 1");
    assert_eq!(line(&mut sr), "I,N,A,10");

    let (mut pr, mut pw) = open(&t, "publish ps/cq/trades");
    assert_eq!(
        line(&mut pr),
        "ok id*:int64,symbol:string,quantity:int32,price:double"
    );
    writeln!(pw, "i,n,2,A,5,1\ni,n,3,B,x,1\ni,n,4,B,7,1\nsync").unwrap();
    assert_eq!(
        line(&mut pr),
        "bad 2 field 'quantity' (int32): cannot read 'x'"
    );
    assert_eq!(line(&mut pr), "synced 2");
    assert_eq!(t.count("ps", "trades"), 3);

    let head = line(&mut sr);
    assert!(head.starts_with("block ") && head.ends_with(" 1"), "{head}");
    assert_eq!(line(&mut sr), "U,N,A,15");
    let _ = line(&mut sr);
    assert_eq!(line(&mut sr), "I,N,B,7");

    for (first, want) in [
        ("hello", "error the first line must be"),
        (
            "publish ps/cq/nosuch",
            "error window 'ps/cq/nosuch' does not exist",
        ),
        (
            "publish ps/cq/bySymbol",
            "error window 'ps/cq/bySymbol' is a window-aggregate, not a source window",
        ),
        (
            "subscribe nosuch/cq/w",
            "error project 'nosuch' does not exist",
        ),
        ("publish ps/cq/trades blocksize=0", "error blocksize '0'"),
    ] {
        let (mut r, _w) = open(&t, first);
        let l = line(&mut r);
        assert!(l.starts_with(want), "{first}: {l}");
    }
}
