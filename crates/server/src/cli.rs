//! `sluice server` options. The single-dash spellings of `dfesp_xml_server` (`-http 8080`,
//! `-model file://m.xml`) are accepted too.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::Config;

/// Starts the Sluice server.
#[derive(Parser, Debug)]
#[command(
    name = "sluice server",
    about = "Starts the Sluice server: REST admin API, WebSocket and pubsub publish/subscribe."
)]
struct Args {
    /// HTTP port of the REST API and WebSocket publishers/subscribers (0: any free port).
    #[arg(long, default_value_t = 0)]
    http: u16,
    /// Port of the line-oriented publish/subscribe protocol (0: any free port).
    #[arg(long)]
    pubsub: Option<u16>,
    /// Address to bind (default 127.0.0.1; 0.0.0.0 for every interface). An address other
    /// machines can reach needs --auth-token (or --insecure-no-token).
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Appends refused events and unreadable input lines, with the reason, to this file.
    #[arg(long)]
    badevents: Option<PathBuf>,
    /// Model to load and start, with its connectors, at startup (`file://` optional; repeatable).
    #[arg(long)]
    model: Vec<String>,
    /// Logger levels: one level (`debug`) or `esp=trace,esp.http=debug`.
    #[arg(long)]
    loglevel: Option<String>,
    /// Require the token on every listener: HTTP and WebSocket (`Authorization: Bearer TOKEN`,
    /// Basic with the token as password, or `?access_token=TOKEN`) and the pubsub port
    /// (`access_token=TOKEN` on the first line). Also SLUICE_AUTH_TOKEN.
    #[arg(long, env = "SLUICE_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Allow a --bind address other machines can reach without --auth-token (a trusted
    /// network only: anyone who reaches the ports controls the server).
    #[arg(long)]
    insecure_no_token: bool,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_body: usize,
    /// Events a WebSocket or pubsub-port subscriber may have waiting to be sent; one that falls
    /// further behind is disconnected, and the project goes on.
    #[arg(long, default_value_t = crate::subqueue::DEFAULT_BOUND as u64, value_parser = clap::value_parser!(u64).range(1..))]
    subscriber_queue: u64,
    /// Persist and restore paths must lie inside this directory.
    #[arg(long)]
    persist_root: Option<PathBuf>,
    /// Files and directories named over the API (eventUrl, projectUrl, fs connectors of models
    /// loaded over REST, persist and restore paths) must lie inside DIR (repeatable; symbolic
    /// links resolved). Without it, any path the server can read is allowed.
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_path: Vec<PathBuf>,
    /// Time an HTTP connection may take to send a request's headers (and may stay idle
    /// between requests): 30s, 5s, 500ms.
    #[arg(long, default_value = "30s", value_parser = crate::recovery::parse_duration)]
    header_read_timeout: std::time::Duration,
    /// Seconds between "current publish rate" log lines of running connectors.
    #[arg(long, default_value_t = 10)]
    rate_interval: u64,
    /// Persist every project on schedule to DIR/<project>/<UTC timestamp>-<seq>, only while
    /// this instance is a hot failover standby, one standby at a time (ZooKeeper lock).
    #[arg(long)]
    persist_dir: Option<PathBuf>,
    /// Time between scheduled snapshots: 30s, 5m, 1h, 500ms.
    #[arg(long, default_value = "5m", value_parser = crate::recovery::parse_duration)]
    persist_interval: Duration,
    /// Scheduled snapshots kept per project (the newest; older ones are deleted after a new one
    /// is committed).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    persist_keep: u64,
    /// At start, restore each --model project from the newest usable snapshot under
    /// DIR/<project>, then start it and its connectors.
    #[arg(long, requires = "model")]
    restore_from: Option<PathBuf>,
}

/// Turns `-http` into `--http` (single-dash long options of the commercial tool).
pub fn normalize(args: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| {
            if a.len() > 2 && a.starts_with('-') && !a.starts_with("--") {
                format!("-{a}")
            } else {
                a.clone()
            }
        })
        .collect()
}

/// Parses the options: Ok(None) after `--help`, Err(exit code) on a bad option.
#[allow(clippy::result_large_err)]
pub fn parse(args: &[String]) -> Result<Option<(Config, Option<String>)>, ExitCode> {
    let argv = std::iter::once("sluice server".to_string()).chain(normalize(args));
    let a = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Err(ExitCode::from(2))
            } else {
                Ok(None)
            };
        }
    };
    let models = a
        .model
        .iter()
        .map(|m| PathBuf::from(m.strip_prefix("file://").unwrap_or(m)))
        .collect();
    let cfg = Config {
        bind: a.bind,
        http_port: a.http,
        pubsub_port: Some(a.pubsub.unwrap_or(0)),
        badevents: a.badevents,
        models,
        auth_token: a.auth_token.filter(|t| !t.is_empty()),
        insecure_no_token: a.insecure_no_token,
        max_body: a.max_body,
        subscriber_queue: usize::try_from(a.subscriber_queue).unwrap_or(usize::MAX),
        header_read_timeout: a.header_read_timeout,
        persist_root: a.persist_root,
        file_roots: a.allow_path,
        rate_interval: Duration::from_secs(a.rate_interval.max(1)),
        persist_dir: a.persist_dir,
        persist_interval: a.persist_interval,
        persist_keep: a.persist_keep as usize,
        restore_from: a.restore_from,
        handle_signals: true,
        ..Config::default()
    };
    Ok(Some((cfg, a.loglevel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_options_parse() {
        let args: Vec<String> = ["-http", "8123", "-pubsub", "8124", "-model", "file://m.xml"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (cfg, _) = parse(&args).unwrap().unwrap();
        assert_eq!(cfg.http_port, 8123);
        assert_eq!(cfg.pubsub_port, Some(8124));
        assert_eq!(cfg.models, vec![PathBuf::from("m.xml")]);
        assert_eq!(cfg.bind.to_string(), "127.0.0.1");
    }

    #[test]
    fn recovery_options_parse() {
        let args: Vec<String> = [
            "--persist-dir",
            "/snaps",
            "--persist-interval",
            "30s",
            "--persist-keep",
            "5",
            "--model",
            "m.xml",
            "--restore-from",
            "/snaps",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (cfg, _) = parse(&args).unwrap().unwrap();
        assert_eq!(cfg.persist_dir, Some(PathBuf::from("/snaps")));
        assert_eq!(cfg.persist_interval, Duration::from_secs(30));
        assert_eq!(cfg.persist_keep, 5);
        assert_eq!(cfg.restore_from, Some(PathBuf::from("/snaps")));
        let no_model: Vec<String> = ["--restore-from", "/snaps"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(parse(&no_model).is_err());
    }

    #[test]
    fn a_public_bind_needs_a_token_or_the_opt_out() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (cfg, _) = parse(&args(&["--bind", "0.0.0.0"])).unwrap().unwrap();
        let e = cfg.check().unwrap_err().to_string();
        assert!(
            e.contains("--bind 0.0.0.0")
                && e.contains("--auth-token")
                && e.contains("--insecure-no-token"),
            "{e}"
        );
        let (cfg, _) = parse(&args(&["--bind", "0.0.0.0", "--insecure-no-token"]))
            .unwrap()
            .unwrap();
        assert!(cfg.insecure_no_token && cfg.check().is_ok());
        let (cfg, _) = parse(&args(&["-bind", "0.0.0.0", "-auth-token", "t"]))
            .unwrap()
            .unwrap();
        assert!(cfg.check().is_ok());
        // An empty token is no token.
        let (cfg, _) = parse(&args(&["--bind", "::", "--auth-token", ""]))
            .unwrap()
            .unwrap();
        assert!(cfg.check().is_err());
    }
}
