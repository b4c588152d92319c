//! The hot failover election against a real ZooKeeper server (SLUICE_ZOOKEEPER=host:port, as
//! written by `scripts/services.sh start`). Each test uses its own election path.
//!
//! Every wait is a bounded wait for a condition; while waiting, the tests check that no two
//! members are active, and that no two may write, at any observed moment.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sluice_ha::{Role, ZkElection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Session timeout asked for (the test server allows 400 ms and up).
const SESSION: Duration = Duration::from_millis(600);
/// Slack on top of the session timeout for a takeover on a busy machine.
const SLACK: Duration = Duration::from_secs(3);

fn zookeeper(test: &str) -> Option<String> {
    init_log();
    match std::env::var("SLUICE_ZOOKEEPER") {
        Ok(hosts) if !hosts.trim().is_empty() => Some(hosts.trim().to_string()),
        _ => {
            if std::env::var("SLUICE_REQUIRE")
                .unwrap_or_default()
                .contains("zookeeper")
            {
                panic!("start ZooKeeper: scripts/services.sh start (or set SLUICE_ZOOKEEPER)");
            }
            println!("SKIPPED {test}: set SLUICE_ZOOKEEPER or run scripts/services.sh start");
            None
        }
    }
}

/// Everything logged by any test, to check the log lines operators know from ESP.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("SLUICE_TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        LOG.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_log() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "esp.failover=debug,sluice_ha=debug,zookeeper_client=warn",
            ))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

fn logged(line: &str) -> bool {
    String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|e| e.into_inner())).contains(line)
}

/// An election path of its own for each test.
fn unique_root(test: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!(
        "/sluice-test/{test}-{}-{:016x}",
        std::process::id(),
        h.finish()
    )
}

async fn join(hosts: &str, root: &str) -> ZkElection {
    ZkElection::join(hosts, root, SESSION)
        .await
        .unwrap_or_else(|e| panic!("join {root}: {e}"))
}

/// Joins on a runtime of its own, so the member can "crash": shutting that runtime down drops
/// the ZooKeeper connection without closing the session, as a killed process would.
async fn join_crashable(hosts: &str, root: &str) -> (ZkElection, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (h, r) = (hosts.to_string(), root.to_string());
    let e = rt
        .spawn(async move { ZkElection::join(&h, &r, SESSION).await })
        .await
        .unwrap();
    (e.unwrap_or_else(|e| panic!("join {root}: {e}")), rt)
}

fn roles(members: &[&ZkElection]) -> Vec<Role> {
    members.iter().map(|m| m.role()).collect()
}

/// No two members active and no two allowed to write, now.
fn check_single_active(members: &[&ZkElection]) {
    let r = roles(members);
    assert!(
        r.iter().filter(|r| **r == Role::Active).count() <= 1,
        "two actives: {r:?}"
    );
    let writers = members.iter().filter(|m| m.may_write()).count();
    assert!(writers <= 1, "{writers} members may write at once: {r:?}");
}

/// Waits until `cond` holds, at most `bound`, checking [`check_single_active`] all along;
/// returns how long it took.
async fn wait_for(
    what: &str,
    bound: Duration,
    members: &[&ZkElection],
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        check_single_active(members);
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > bound {
            panic!("no {what} within {bound:?}; roles {:?}", roles(members));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn node_name_ok(path: &str, root: &str) -> bool {
    path.strip_prefix(root)
        .and_then(|rest| rest.strip_prefix("/server-n_"))
        .is_some_and(|seq| seq.len() == 10 && seq.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_first_is_active_each_watches_its_predecessor() {
    let Some(hosts) = zookeeper("three_members_first_is_active_each_watches_its_predecessor")
    else {
        return;
    };
    let root = unique_root("three");
    let a = join(&hosts, &root).await;
    let b = join(&hosts, &root).await;
    let c = join(&hosts, &root).await;
    let all = [&a, &b, &c];
    wait_for("roles settled", SESSION + SLACK, &all, || {
        roles(&all) == [Role::Active, Role::Standby, Role::Standby]
    })
    .await;

    let (na, nb, nc) = (
        a.node_path().unwrap(),
        b.node_path().unwrap(),
        c.node_path().unwrap(),
    );
    for n in [&na, &nb, &nc] {
        assert!(node_name_ok(n, &root), "node path {n}");
    }
    assert!(na < nb && nb < nc, "{na} {nb} {nc}");
    assert_eq!(a.watching(), None);
    assert_eq!(b.watching().as_deref(), Some(na.as_str()), "b watches a");
    assert_eq!(
        c.watching().as_deref(),
        Some(nb.as_str()),
        "c watches b, not the lowest"
    );
    assert!(a.may_write());
    assert!(!b.may_write() && !c.may_write());
    let seq_a: u64 = na.rsplit('_').next().unwrap().parse().unwrap();
    assert_eq!(a.term(), Some(seq_a));
    assert_eq!(b.term(), None);
    assert_eq!(a.session_timeout(), SESSION);
    assert_eq!(a.lease_duration(), SESSION * 2 / 3);

    for line in [
        format!("Created zookeeper node {na}"),
        format!("Created zookeeper node {nc}"),
        format!("Watching zookeeper node {na}"),
        format!("Watching zookeeper node {nb}"),
        "Hot failover state switched to active".to_string(),
        "Hot failover state switched to standby".to_string(),
    ] {
        assert!(logged(&line), "not logged: {line}");
    }
    for m in [a, b, c] {
        m.leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_leaves_next_takes_over() {
    let Some(hosts) = zookeeper("active_leaves_next_takes_over") else {
        return;
    };
    let root = unique_root("leave");
    let a = join(&hosts, &root).await;
    let b = join(&hosts, &root).await;
    let c = join(&hosts, &root).await;
    wait_for("roles settled", SESSION + SLACK, &[&a, &b, &c], || {
        roles(&[&a, &b, &c]) == [Role::Active, Role::Standby, Role::Standby]
    })
    .await;
    let mut b_roles = b.roles();
    let nb = b.node_path().unwrap();

    let start = Instant::now();
    a.leave().await.unwrap();
    wait_for("b active", SESSION + SLACK, &[&b, &c], || {
        b.role() == Role::Active
    })
    .await;
    let took = start.elapsed();
    println!("takeover after the active left: {} ms", took.as_millis());
    assert!(
        b_roles.has_changed().unwrap(),
        "the roles receiver sees the switch"
    );
    assert_eq!(*b_roles.borrow_and_update(), Role::Active);
    assert!(b.may_write());
    assert_eq!(b.watching(), None);
    assert_eq!(c.role(), Role::Standby);
    assert_eq!(c.watching().as_deref(), Some(nb.as_str()));
    // Leaving deletes the node: no need to wait for the session to time out.
    assert!(took < SESSION, "took {took:?}, a session timeout or more");
    b.leave().await.unwrap();
    c.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_active_is_replaced_after_its_session_times_out() {
    let Some(hosts) = zookeeper("crashed_active_is_replaced_after_its_session_times_out") else {
        return;
    };
    let root = unique_root("crash");
    let (a, rt) = join_crashable(&hosts, &root).await;
    let b = join(&hosts, &root).await;
    let c = join(&hosts, &root).await;
    wait_for("roles settled", SESSION + SLACK, &[&a, &b, &c], || {
        roles(&[&a, &b, &c]) == [Role::Active, Role::Standby, Role::Standby]
    })
    .await;
    let nb = b.node_path().unwrap();

    let start = Instant::now();
    rt.shutdown_background(); // a "dies": no CloseSession, no delete
    let mut a_stopped = None;
    wait_for("b active", SESSION + SLACK, &[&b, &c], || {
        if a_stopped.is_none() && !a.may_write() {
            a_stopped = Some(start.elapsed());
        }
        assert!(!(a.may_write() && b.may_write()), "a and b may both write");
        b.role() == Role::Active
    })
    .await;
    let took = start.elapsed();
    println!(
        "takeover after the active crashed: {} ms (session timeout {} ms)",
        took.as_millis(),
        SESSION.as_millis()
    );
    // ZooKeeper keeps a dead session's node until the session times out.
    assert!(
        took >= SESSION / 2,
        "took {took:?}: sooner than the session could expire"
    );
    assert!(took <= SESSION + SLACK);
    assert_eq!(c.watching().as_deref(), Some(nb.as_str()));
    assert_eq!(c.role(), Role::Standby);
    b.leave().await.unwrap();
    c.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middle_standby_leaves_last_watches_the_first() {
    let Some(hosts) = zookeeper("middle_standby_leaves_last_watches_the_first") else {
        return;
    };
    let root = unique_root("middle");
    let a = join(&hosts, &root).await;
    let b = join(&hosts, &root).await;
    let c = join(&hosts, &root).await;
    wait_for("roles settled", SESSION + SLACK, &[&a, &b, &c], || {
        roles(&[&a, &b, &c]) == [Role::Active, Role::Standby, Role::Standby]
    })
    .await;
    let na = a.node_path().unwrap();

    b.leave().await.unwrap();
    wait_for("c to watch a", SESSION + SLACK, &[&a, &c], || {
        c.watching().as_deref() == Some(na.as_str())
    })
    .await;
    assert_eq!(c.role(), Role::Standby);
    assert_eq!(a.role(), Role::Active);
    assert!(logged(&format!("Watching zookeeper node {na}")));

    // And when a goes too, c takes over.
    a.leave().await.unwrap();
    wait_for("c active", SESSION + SLACK, &[&c], || {
        c.role() == Role::Active
    })
    .await;
    c.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_never_shows_two_actives() {
    let Some(hosts) = zookeeper("churn_never_shows_two_actives") else {
        return;
    };
    let root = unique_root("churn");
    let mut members = vec![
        join(&hosts, &root).await,
        join(&hosts, &root).await,
        join(&hosts, &root).await,
    ];
    for round in 0..4 {
        let refs: Vec<&ZkElection> = members.iter().collect();
        wait_for("one active", SESSION + SLACK, &refs, || {
            roles(&refs).iter().filter(|r| **r == Role::Active).count() == 1
        })
        .await;
        // The oldest member is the active one; it leaves and a new member joins at the end.
        assert_eq!(members[0].role(), Role::Active, "round {round}");
        let leaving = members.remove(0);
        leaving.leave().await.unwrap();
        members.push(join(&hosts, &root).await);
    }
    for m in members {
        m.leave().await.unwrap();
    }
}

/// A TCP relay that can cut the line: while cut, bytes in both directions are dropped (and a
/// connection that lost bytes stays dead), but no connection is closed: a network partition.
struct Relay {
    addr: String,
    cut: watch::Sender<bool>,
}

async fn relay(target: String) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (cut, cut_rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                continue;
            };
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::spawn(pump(ir, ow, cut_rx.clone()));
            tokio::spawn(pump(or, iw, cut_rx.clone()));
        }
    });
    Relay { addr, cut }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut dead = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dead |= *cut.borrow();
        if !dead && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_active_stops_writing_before_another_takes_over_then_rejoins() {
    let Some(hosts) =
        zookeeper("partitioned_active_stops_writing_before_another_takes_over_then_rejoins")
    else {
        return;
    };
    let root = unique_root("partition");
    let line = relay(hosts.clone()).await;
    let a = join(&line.addr, &root).await;
    let b = join(&hosts, &root).await;
    wait_for("roles settled", SESSION + SLACK, &[&a, &b], || {
        roles(&[&a, &b]) == [Role::Active, Role::Standby]
    })
    .await;
    let na = a.node_path().unwrap();
    let nb = b.node_path().unwrap();

    let start = Instant::now();
    line.cut.send_replace(true);
    let mut a_stopped = None;
    wait_for("b active", SESSION + SLACK, &[&a, &b], || {
        if a_stopped.is_none() && !a.may_write() {
            a_stopped = Some(start.elapsed());
        }
        b.role() == Role::Active
    })
    .await;
    let took = start.elapsed();
    let a_stopped = a_stopped.expect("a stopped writing before b became active");
    println!(
        "partition: the old active stopped writing after {} ms, the new active took over after {} ms \
         (lease {} ms, session timeout {} ms)",
        a_stopped.as_millis(),
        took.as_millis(),
        a.lease_duration().as_millis(),
        SESSION.as_millis()
    );
    assert!(
        a_stopped <= a.lease_duration() + Duration::from_millis(300),
        "a wrote for {a_stopped:?}"
    );
    assert_ne!(a.role(), Role::Active);

    // The line comes back: a learns its session expired and joins again with a new session
    // and node, as a standby behind b.
    line.cut.send_replace(false);
    wait_for("a back as standby", SESSION + SLACK * 2, &[&a, &b], || {
        a.role() == Role::Standby && a.watching().as_deref() == Some(nb.as_str())
    })
    .await;
    let state = a.state();
    assert_eq!(state.rejoins, 1);
    let new_node = state.node.unwrap();
    assert!(new_node > nb, "{new_node} after {nb}");
    assert_ne!(new_node, na);
    assert!(logged(&format!("Created zookeeper node {new_node}")));
    assert_eq!(b.role(), Role::Active);
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_fails_clearly_without_zookeeper() {
    init_log();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hosts = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let err = match ZkElection::join(&hosts, "/ESP", SESSION).await {
        Ok(_) => panic!("joined without a server"),
        Err(e) => e,
    };
    assert!(
        start.elapsed() < SESSION + SLACK,
        "took {:?}",
        start.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("cannot open a ZooKeeper session with {hosts}")),
        "{text}"
    );
    let bad = match ZkElection::join(&hosts, "ESP", SESSION).await {
        Ok(_) => panic!("joined with a relative path"),
        Err(e) => e,
    };
    assert!(bad.to_string().contains("absolute path"), "{bad}");
}
