//! HTTP, WebSocket and pubsub tests against an in-process server on loopback port 0.

mod auth;
mod http;
mod limits;
mod persist;
mod pubsub;
mod races;
mod safety;
mod slow;
mod ws;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_server::{Config, Server};

/// A project with a source window (`cq/trades`), an aggregate by symbol and a filter.
pub const TRADES: &str = r#"<project name="NAME" pubsub="auto" threads="1">
  <contqueries>
    <contquery name="cq">
      <windows>
        <window-source name="trades" index="pi_HASH">
          <schema>
            <fields>
              <field name="id" type="int64" key="true"/>
              <field name="symbol" type="string"/>
              <field name="quantity" type="int32"/>
              <field name="price" type="double"/>
            </fields>
          </schema>
        </window-source>
        <window-aggregate name="bySymbol">
          <schema>
            <fields>
              <field name="symbol" type="string" key="true"/>
              <field name="total" type="int64"/>
            </fields>
          </schema>
          <output>
            <field-expr>ESP_aSum(quantity)</field-expr>
          </output>
        </window-aggregate>
        <window-filter name="large">
          <expression>quantity &gt;= 1000</expression>
        </window-filter>
      </windows>
      <edges>
        <edge source="trades" target="bySymbol"/>
        <edge source="trades" target="large"/>
      </edges>
    </contquery>
  </contqueries>
</project>"#;

/// The trades project XML under another name.
pub fn trades(name: &str) -> String {
    TRADES.replace("NAME", name)
}

/// A server for one test, with its own working directory.
pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub dir: PathBuf,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    pub fn with(f: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempdir();
        let mut cfg = Config {
            base: dir.clone(),
            ..Config::default()
        };
        f(&mut cfg);
        let server = Server::start(cfg).expect("server starts");
        let base = format!("http://{}/SASESP", server.http_addr());
        TestServer { server, base, dir }
    }

    pub fn url(&self, rest: &str) -> String {
        format!("{}/{rest}", self.base)
    }

    pub fn get(&self, rest: &str) -> (u16, String) {
        call("GET", &self.url(rest), None, &[])
    }
    pub fn put(&self, rest: &str, body: &str) -> (u16, String) {
        call("PUT", &self.url(rest), Some(body), &[])
    }
    pub fn post(&self, rest: &str, body: &str) -> (u16, String) {
        call("POST", &self.url(rest), Some(body), &[])
    }
    pub fn delete(&self, rest: &str) -> (u16, String) {
        call("DELETE", &self.url(rest), None, &[])
    }

    /// Loads the trades project as `name`, started.
    pub fn load_started(&self, name: &str) {
        let (s, b) = self.put(&format!("projects/{name}"), &trades(name));
        assert_eq!(
            (s, b.as_str()),
            (
                200,
                format!("<message>load project {name} succeeded</message>\n").as_str()
            )
        );
    }

    /// The row count of a window from `GET windows/...`.
    pub fn count(&self, p: &str, w: &str) -> usize {
        let (s, b) = self.get(&format!("windows/{p}/cq/{w}?count=true"));
        assert_eq!(s, 200, "{b}");
        let i = b.find("count=\"").expect("count attribute") + 7;
        b[i..].split('"').next().unwrap().parse().unwrap()
    }
}

/// One HTTP request; the status and body whatever the status.
pub fn call(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut r = agent.request(method, url);
    for (k, v) in headers {
        r = r.set(k, v);
    }
    let res = match body {
        Some(b) => r.send_string(b),
        None => r.call(),
    };
    match res {
        Ok(resp) => (resp.status(), resp.into_string().unwrap()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Retries `f` until it returns Some, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "sluice-server-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
