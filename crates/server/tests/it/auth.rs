//! `--auth-token` on every listener (HTTP, WebSocket, pubsub port), its accepted forms, and the
//! refusal to bind a non-loopback address without it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream};

use base64::Engine as _;

use super::*;

const TOKEN: &str = "s3cret";

fn secured() -> TestServer {
    TestServer::with(|c| c.auth_token = Some(TOKEN.into()))
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The HTTP status of a WebSocket upgrade (101 when it succeeds).
fn ws_status(t: &TestServer, path_query: &str, auth: Option<&str>) -> u16 {
    let addr = t.server.http_addr();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let url = format!("ws://{addr}/SASESP/{path_query}");
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    if let Some(a) = auth {
        req.headers_mut()
            .insert("Authorization", a.parse().unwrap());
    }
    match tungstenite::client(req, stream) {
        Ok((mut ws, resp)) => {
            let first = ws.read().expect("the status message");
            assert_eq!(first.to_text().unwrap(), "status: 200");
            resp.status().as_u16()
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            r.status().as_u16()
        }
        Err(e) => panic!("{path_query}: {e}"),
    }
}

#[test]
fn http_accepts_the_token_as_access_token_and_as_basic_password() {
    let t = secured();
    let url = t.url("server");
    // Without and with wrong credentials: 401 naming every accepted form.
    let (s, b) = call("GET", &url, None, &[]);
    assert_eq!(s, 401, "{b}");
    assert!(
        b.contains("needs a token") && b.contains("access_token=TOKEN") && b.contains("Basic"),
        "{b}"
    );
    for (u, h) in [
        (format!("{url}?access_token=wrong"), None),
        (format!("{url}?access_token="), None),
        (url.clone(), Some(basic("admin", "wrong"))),
        (url.clone(), Some(basic(TOKEN, ""))),
    ] {
        let hs: Vec<(&str, &str)> = h.iter().map(|h| ("Authorization", h.as_str())).collect();
        let (s, b) = call("GET", &u, None, &hs);
        assert_eq!(s, 401, "{u} {h:?}: {b}");
        assert!(b.contains("wrong"), "{b}");
    }
    let (s, b) = call("GET", &url, None, &[("Authorization", "Token x")]);
    assert_eq!(s, 401);
    assert!(b.contains("cannot be read"), "{b}");
    // The query parameter, with other parameters around it, and percent-encoded.
    let (s, b) = call("GET", &format!("{url}?access_token={TOKEN}"), None, &[]);
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        "GET",
        &format!("{url}?config=true&access_token=s3%63ret"),
        None,
        &[],
    );
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("<property name=\"bind\">"), "{b}");
    // Basic with any user name.
    for user in ["admin", "", "sas"] {
        let (s, b) = call("GET", &url, None, &[("Authorization", &basic(user, TOKEN))]);
        assert_eq!(s, 200, "user '{user}': {b}");
    }
    // A state-changing request through access_token.
    let (s, b) = call(
        "PUT",
        &t.url(&format!("projects/a?access_token={TOKEN}")),
        Some(&trades("a")),
        &[],
    );
    assert_eq!(s, 200, "{b}");
}

#[test]
fn websocket_upgrades_need_the_token() {
    let t = secured();
    let (s, b) = call(
        "PUT",
        &t.url("projects/w"),
        Some(&trades("w")),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(s, 200, "{b}");
    for path in [
        "subscribers/w/cq/trades?schema=false",
        "publishers/w/cq/trades?format=csv",
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        assert_eq!(ws_status(&t, path, None), 401, "{path}");
        assert_eq!(
            ws_status(&t, &format!("{path}{sep}access_token=wrong"), None),
            401
        );
        assert_eq!(ws_status(&t, path, Some("Bearer wrong")), 401);
        if path.starts_with("subscribers") {
            assert_eq!(
                ws_status(&t, &format!("{path}{sep}access_token={TOKEN}"), None),
                101
            );
            assert_eq!(ws_status(&t, path, Some(&format!("Bearer {TOKEN}"))), 101);
            assert_eq!(ws_status(&t, path, Some(&basic("u", TOKEN))), 101);
        }
    }
    // A publisher with the token publishes.
    let addr = t.server.http_addr();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let url = format!("ws://{addr}/SASESP/publishers/w/cq/trades?format=csv&access_token={TOKEN}");
    let (mut p, _) = tungstenite::client(url.as_str(), stream).expect("handshake");
    p.send(tungstenite::Message::Text("i,n,1,A,10,1\n".into()))
        .unwrap();
    p.send(tungstenite::Message::Text("sync".into())).unwrap();
    assert_eq!(p.read().unwrap().to_text().unwrap(), "synced 1");
}

#[test]
fn a_non_loopback_bind_without_a_token_refuses_to_start() {
    for bind in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        "192.0.2.1".parse().unwrap(),
    ] {
        let cfg = Config {
            bind,
            ..Config::default()
        };
        let e = cfg.check().expect_err("refused");
        let m = e.to_string();
        for want in [
            "--bind",
            "--auth-token",
            "--insecure-no-token",
            &bind.to_string(),
        ] {
            assert!(m.contains(want), "{m}");
        }
        // Server::start refuses before binding anything.
        let e = Server::start(cfg).err().expect("refused");
        assert!(e.to_string().contains("--insecure-no-token"));
    }
    // Loopback addresses need no token.
    for bind in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
        let cfg = Config {
            bind: bind.parse().unwrap(),
            ..Config::default()
        };
        assert!(cfg.check().is_ok(), "{bind}");
    }
    // A token, or the explicit opt-out, lets it start on every interface.
    let with_token = Config {
        bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        auth_token: Some(TOKEN.into()),
        ..Config::default()
    };
    let s = Server::start(with_token).expect("starts with a token");
    assert!(s.http_addr().ip().is_unspecified());
    drop(s);
    let opt_out = Config {
        bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        insecure_no_token: true,
        ..Config::default()
    };
    let s = Server::start(opt_out).expect("starts with --insecure-no-token");
    let port = s.http_addr().port();
    let (st, _) = call(
        "GET",
        &format!("http://127.0.0.1:{port}/SASESP/server"),
        None,
        &[],
    );
    assert_eq!(st, 200);
}

/// Opens a pubsub connection, sends `first` and returns the reader and writer.
fn pubsub(t: &TestServer, first: &str) -> (std::io::BufReader<TcpStream>, TcpStream) {
    use std::io::Write;
    let s = TcpStream::connect(t.server.pubsub_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    writeln!(w, "{first}").unwrap();
    (std::io::BufReader::new(s), w)
}

fn line(r: &mut std::io::BufReader<TcpStream>) -> Option<String> {
    use std::io::BufRead;
    let mut l = String::new();
    match r
        .read_line(&mut l)
        .expect("a line or the end within the timeout")
    {
        0 => None,
        _ => Some(l.trim_end().to_string()),
    }
}

/// True when the server closed the connection (end of stream, or a reset because the client
/// wrote after the close); false when it sent anything more.
fn closed(r: &mut std::io::BufReader<TcpStream>) -> bool {
    use std::io::BufRead;
    let mut l = String::new();
    match r.read_line(&mut l) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn the_pubsub_port_needs_the_token() {
    use std::io::Write;
    let t = secured();
    let auth = [("Authorization", format!("Bearer {TOKEN}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, b) = call("PUT", &t.url("projects/ps"), Some(&trades("ps")), &auth);
    assert_eq!(s, 200, "{b}");
    // Without the token, or with a wrong one: one error line, then the connection closes; the
    // reply does not tell whether the window exists.
    for (first, want) in [
        (
            "publish ps/cq/trades",
            "error this server needs a token: add access_token=TOKEN",
        ),
        (
            "subscribe ps/cq/trades snapshot",
            "error this server needs a token",
        ),
        (
            "subscribe no/such/window",
            "error this server needs a token",
        ),
        (
            "publish ps/cq/trades access_token=wrong",
            "error the token is wrong",
        ),
        (
            "subscribe ps/cq/trades access_token=",
            "error the token is wrong",
        ),
    ] {
        let (mut r, mut w) = pubsub(&t, first);
        let got = line(&mut r).expect("an error line");
        assert!(got.starts_with(want), "{first}: {got}");
        // Nothing published after a refusal reaches the project.
        let _ = writeln!(w, "i,n,99,X,1,1\nsync");
        assert!(closed(&mut r), "{first}: the connection closes");
    }
    let (_, b) = call(
        "GET",
        &t.url("windows/ps/cq/trades?count=true"),
        None,
        &auth,
    );
    assert!(b.contains("count=\"0\""), "{b}");
    // With the token (percent-encoded here), publishing and subscribing work.
    let (mut sr, _sw) = pubsub(&t, "subscribe ps/cq/trades access_token=s3%63ret");
    assert_eq!(
        line(&mut sr).unwrap(),
        "ok id*:int64,symbol:string,quantity:int32,price:double"
    );
    let (mut pr, mut pw) = pubsub(
        &t,
        &format!("publish ps/cq/trades blocksize=1 access_token={TOKEN}"),
    );
    assert_eq!(
        line(&mut pr).unwrap(),
        "ok id*:int64,symbol:string,quantity:int32,price:double"
    );
    writeln!(pw, "i,n,1,A,10,1\nsync").unwrap();
    assert_eq!(line(&mut pr).unwrap(), "synced 1");
    assert!(line(&mut sr).unwrap().starts_with("block "));
    assert_eq!(line(&mut sr).unwrap(), "I,N,1,A,10,1");
}

#[test]
fn without_a_token_configured_the_pubsub_port_ignores_access_token() {
    let t = TestServer::start();
    t.load_started("o");
    let (mut r, _w) = pubsub(&t, "subscribe o/cq/trades access_token=anything");
    assert_eq!(
        line(&mut r).unwrap(),
        "ok id*:int64,symbol:string,quantity:int32,price:double"
    );
}
