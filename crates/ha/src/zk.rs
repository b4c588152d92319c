//! The ZooKeeper side of the election: turns ZooKeeper replies and events into the facts the
//! pure decision ([`decide`](crate::decide)) and the [`Lease`] work from.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, MissedTickBehavior};
use tracing::{debug, info, warn};
use zookeeper_client as zk;

use crate::election::{decide, node_sequence, role_for, Standing, NODE_PREFIX};
use crate::{Lease, Role};

/// What can go wrong joining or leaving the election.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("bad hot failover election path '{path}': {reason}")]
    BadRoot { path: String, reason: &'static str },
    #[error("cannot open a ZooKeeper session with {hosts}: {source}")]
    Connect {
        hosts: String,
        #[source]
        source: zk::Error,
    },
    #[error("ZooKeeper {op} of {path} failed: {source}")]
    Zk {
        op: &'static str,
        path: String,
        #[source]
        source: zk::Error,
    },
    #[error("ZooKeeper {op} of {path} got no reply within {timeout:?}")]
    Timeout {
        op: &'static str,
        path: String,
        timeout: Duration,
    },
}

/// A look at the election from one member, for status pages and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElectionState {
    /// This member's node (full path), while it has one.
    pub node: Option<String>,
    /// The predecessor node it watches (full path), while it is standby.
    pub watching: Option<String>,
    /// The ZooKeeper session ID (`0x…`), while connected.
    pub session: Option<String>,
    /// How many times this member joined again after losing its node (session expired).
    pub rejoins: u64,
}

struct Shared {
    state: ElectionState,
    lease: Lease,
    sequence: Option<u64>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// One instance's membership in the hot failover election under a ZooKeeper path: an
/// ephemeral sequential node `{root}/server-n_<seq>`; the lowest node is active, every other
/// member watches only the node just below its own.
///
/// Writers must ask [`may_write`](Self::may_write) before each write: it is true only while
/// this member is active *and* its lease (2/3 of the session timeout, renewed by every reply
/// from ZooKeeper) is valid, so a paused or cut-off former active stops before its node can
/// vanish and another member take over.
pub struct ZkElection {
    root: String,
    session_timeout: Duration,
    shared: Arc<Mutex<Shared>>,
    roles: watch::Receiver<Role>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ZkElection {
    /// Joins the election under `root` (e.g. `/ESP`; created if missing) on the ZooKeeper
    /// ensemble `hosts` (`host:port[,host:port…]`), with the given session timeout (the server
    /// bounds it by its min/max session timeout). Returns once this member's node exists and
    /// its first role is known (or after two session timeouts, with the role still
    /// [`Role::Unknown`]). Needs a tokio runtime with timers.
    pub async fn join(
        hosts: &str,
        root: &str,
        session_timeout: Duration,
    ) -> Result<ZkElection, HaError> {
        let (base, dir) = election_dir(root)?;
        let client = connect(hosts, session_timeout).await?;
        let negotiated = client.session_timeout();
        let shared = Arc::new(Mutex::new(Shared {
            state: ElectionState::default(),
            lease: Lease::for_session(negotiated),
            sequence: None,
        }));
        let (roles_tx, roles) = watch::channel(Role::Unknown);
        let mut worker = Worker {
            hosts: hosts.to_string(),
            base,
            dir,
            requested_timeout: session_timeout,
            shared: shared.clone(),
            roles: roles_tx,
            client,
            node: String::new(),
        };
        worker.create_node().await?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(worker.run(stop_rx));
        let mut first = roles.clone();
        // A bounded wait for the first decision; it normally takes one round trip.
        let _ = timeout(negotiated * 2, first.wait_for(|r| *r != Role::Unknown)).await;
        Ok(ZkElection {
            root: root.to_string(),
            session_timeout: negotiated,
            shared,
            roles,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The election path given to [`join`](Self::join).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The session timeout ZooKeeper granted.
    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    /// The lease length (2/3 of the session timeout).
    pub fn lease_duration(&self) -> Duration {
        lock(&self.shared).lease.duration()
    }

    /// The current role: the election's decision, but [`Role::Unknown`] once the lease has run
    /// out (even before the election task has run to say so) or the election task has stopped.
    pub fn role(&self) -> Role {
        if self.roles.has_changed().is_err() {
            return Role::Unknown;
        }
        let role = *self.roles.borrow();
        if role != Role::Unknown && !lock(&self.shared).lease.valid(Instant::now()) {
            return Role::Unknown;
        }
        role
    }

    /// A receiver that sees every role switch (a switch to [`Role::Unknown`] because the lease
    /// ran out arrives when the election task sees it; [`role`](Self::role) and
    /// [`may_write`](Self::may_write) know at once).
    pub fn roles(&self) -> watch::Receiver<Role> {
        self.roles.clone()
    }

    /// Whether this member may write output now: active and within its lease.
    pub fn may_write(&self) -> bool {
        self.role() == Role::Active
    }

    /// The fencing term while active: the sequence of this member's node. Each new active has a
    /// higher one than every active before it (the lowest live node wins, and sequences only
    /// grow), so it can go on output records and snapshot manifests.
    pub fn term(&self) -> Option<u64> {
        if self.role() == Role::Active {
            lock(&self.shared).sequence
        } else {
            None
        }
    }

    /// This member's node (full path), while it has one.
    pub fn node_path(&self) -> Option<String> {
        lock(&self.shared).state.node.clone()
    }

    /// The predecessor node this member watches (full path), while standby.
    pub fn watching(&self) -> Option<String> {
        lock(&self.shared).state.watching.clone()
    }

    /// Node, watched node, session and rejoin count together.
    pub fn state(&self) -> ElectionState {
        lock(&self.shared).state.clone()
    }

    /// Leaves the election: deletes this member's node (so its successor takes over at once)
    /// and closes the session. The role becomes [`Role::Unknown`].
    pub async fn leave(mut self) -> Result<(), HaError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

impl Drop for ZkElection {
    /// Dropping without [`leave`](Self::leave) still stops the election task, which deletes the
    /// node and closes the session in the background.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `(base, dir)`: the prefix for node paths (no trailing slash, empty for `/`) and the path
/// whose children are listed.
fn election_dir(root: &str) -> Result<(String, String), HaError> {
    let bad = |reason| HaError::BadRoot {
        path: root.to_string(),
        reason,
    };
    if !root.starts_with('/') {
        return Err(bad("it must be an absolute path, e.g. /ESP"));
    }
    let base = root.trim_end_matches('/');
    if base.contains("//") {
        return Err(bad("it has an empty path segment"));
    }
    let dir = if base.is_empty() { "/" } else { base };
    Ok((base.to_string(), dir.to_string()))
}

async fn connect(hosts: &str, session_timeout: Duration) -> Result<zk::Client, HaError> {
    let client = zk::Client::connector()
        .with_session_timeout(session_timeout)
        .connect(hosts)
        .await
        .map_err(|source| HaError::Connect {
            hosts: hosts.to_string(),
            source,
        })?;
    info!(target: "esp.failover",
        "Opened ZooKeeper session {} with {hosts} (session timeout {} ms)",
        client.session_id(),
        client.session_timeout().as_millis()
    );
    Ok(client)
}

/// Why a round of the election ended.
enum Next {
    Stop,
    /// This member's node is gone (or its session): join again.
    Rejoin(String),
}

const LEFT: &str = "left the election";

type Renewal = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<zk::Stat>, zk::Error>> + Send>,
>;

async fn sleep_until_instant(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn session_lost(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::SessionExpired
            | zk::Error::ClientClosed
            | zk::Error::AuthFailed
            | zk::Error::NoHosts
    )
}

struct Worker {
    hosts: String,
    base: String,
    dir: String,
    requested_timeout: Duration,
    shared: Arc<Mutex<Shared>>,
    roles: watch::Sender<Role>,
    client: zk::Client,
    /// Own node's name (not path).
    node: String,
}

impl Worker {
    fn path_of(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn lease(&self) -> Lease {
        lock(&self.shared).lease
    }

    fn renew(&self, sent: Instant) {
        lock(&self.shared).lease.renew(sent);
    }

    /// Time given to one request: half the lease, so a slow reply costs at most one renewal.
    fn op_timeout(&self) -> Duration {
        (self.lease().duration() / 2).max(Duration::from_millis(50))
    }

    fn set_role(&self, role: Role, why: &str) {
        let old = self.roles.send_replace(role);
        if old == role {
            return;
        }
        match role {
            Role::Active => info!(target: "esp.failover", "Hot failover state switched to active"),
            Role::Standby => {
                info!(target: "esp.failover", "Hot failover state switched to standby")
            }
            Role::Unknown if why == LEFT => {
                info!(target: "esp.failover", "Hot failover state unknown ({why})")
            }
            Role::Unknown => {
                warn!(target: "esp.failover", "Hot failover state unknown ({why}): not writing output")
            }
        }
    }

    /// Why the session ended, for the log.
    fn session_ended(&self, state: zk::SessionState, own: &str) -> String {
        let id = self.client.session_id();
        match state {
            zk::SessionState::Expired => {
                format!("ZooKeeper session {id} expired, so node {own} is gone")
            }
            other => format!("ZooKeeper session {id} ended ({other:?}), so node {own} is gone"),
        }
    }

    fn set_watching(&self, path: Option<String>) {
        let mut s = lock(&self.shared);
        if s.state.watching != path {
            if let Some(p) = &path {
                info!(target: "esp.failover", "Watching zookeeper node {p}");
            }
            s.state.watching = path;
        }
    }

    /// Creates the parent path if missing and this member's ephemeral sequential node.
    async fn create_node(&mut self) -> Result<(), HaError> {
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        if !self.base.is_empty() {
            self.client
                .mkdir(&self.base, &persistent)
                .await
                .map_err(|source| HaError::Zk {
                    op: "create",
                    path: self.base.clone(),
                    source,
                })?;
        }
        let prefix = self.path_of(NODE_PREFIX);
        let ephemeral = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let sent = Instant::now();
        let (_, seq) = self
            .client
            .create(&prefix, &[], &ephemeral)
            .await
            .map_err(|source| HaError::Zk {
                op: "create",
                path: prefix.clone(),
                source,
            })?;
        self.node = format!("{NODE_PREFIX}{seq}");
        let path = self.path_of(&self.node);
        info!(target: "esp.failover", "Created zookeeper node {path}");
        let mut s = lock(&self.shared);
        s.lease.renew(sent);
        s.sequence = node_sequence(&self.node);
        s.state.node = Some(path);
        s.state.session = Some(self.client.session_id().to_string());
        Ok(())
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            let why = match self.serve(&mut stop).await {
                Next::Stop => break,
                Next::Rejoin(why) => why,
            };
            {
                let mut s = lock(&self.shared);
                s.lease.revoke();
                s.sequence = None;
                s.state.node = None;
                s.state.watching = None;
                s.state.rejoins += 1;
            }
            self.set_role(Role::Unknown, &why);
            warn!(target: "esp.failover", "Hot failover: {why}; joining the election again with a new node");
            if !self.rejoin(&mut stop).await {
                break;
            }
        }
        self.leave().await;
    }

    /// Joins again, with a new session if the old one is over, until it works or `stop`.
    async fn rejoin(&mut self, stop: &mut oneshot::Receiver<()>) -> bool {
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                if self.client.state().is_terminated() {
                    self.client = connect(&self.hosts, self.requested_timeout).await?;
                    lock(&self.shared).lease = Lease::for_session(self.client.session_timeout());
                }
                self.create_node().await
            };
            tokio::select! {
                _ = &mut *stop => return false,
                r = attempt => match r {
                    Ok(()) => return true,
                    Err(e) => warn!(target: "esp.failover", "Hot failover: cannot join the election again yet: {e}"),
                },
            }
            tokio::select! {
                _ = &mut *stop => return false,
                _ = sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.requested_timeout.max(Duration::from_millis(100)));
        }
    }

    /// Deletes the node (best effort, bounded) and lets the session close as the client drops.
    async fn leave(self) {
        let path = lock(&self.shared).state.node.clone();
        {
            let mut s = lock(&self.shared);
            s.lease.revoke();
            s.sequence = None;
            s.state = ElectionState {
                rejoins: s.state.rejoins,
                ..ElectionState::default()
            };
        }
        self.set_role(Role::Unknown, LEFT);
        if let Some(path) = path {
            match timeout(self.op_timeout(), self.client.delete(&path, None)).await {
                Ok(Ok(())) | Ok(Err(zk::Error::NoNode)) => {
                    info!(target: "esp.failover", "Left the hot failover election: deleted {path}")
                }
                Ok(Err(e)) => {
                    warn!(target: "esp.failover", "Leaving the hot failover election: cannot delete {path}: {e}")
                }
                Err(_) => {
                    warn!(target: "esp.failover", "Leaving the hot failover election: no reply deleting {path}")
                }
            }
        }
        // Dropping the last client handle sends CloseSession.
    }

    /// One election round per loop: list, decide, wait for what can change the decision.
    async fn serve(&mut self, stop: &mut oneshot::Receiver<()>) -> Next {
        let mut states = self.client.state_watcher();
        let lease = self.lease().duration();
        let mut tick = tokio::time::interval((lease / 4).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let own = self.path_of(&self.node);
        loop {
            let sent = Instant::now();
            let children = match timeout(self.op_timeout(), self.client.list_children(&self.dir))
                .await
            {
                Ok(Ok(children)) => {
                    self.renew(sent);
                    children
                }
                Ok(Err(e)) if session_lost(&e) => {
                    return Next::Rejoin(format!("ZooKeeper session lost ({e})"))
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no reply".to_string(),
                    };
                    debug!(target: "esp.failover", "hot failover: listing {} failed: {why}", self.dir);
                    self.check_lease();
                    // Wait for something to change before trying again.
                    tokio::select! {
                        _ = &mut *stop => return Next::Stop,
                        s = states.changed() => if s.is_terminated() {
                            return Next::Rejoin(self.session_ended(s, &own));
                        },
                        _ = tick.tick() => {}
                    }
                    continue;
                }
            };
            let standing = decide(&self.node, &children);
            let watcher = match &standing {
                Standing::Lost => return Next::Rejoin(format!("zookeeper node {own} is gone")),
                Standing::Active => {
                    self.set_watching(None);
                    None
                }
                Standing::Standby { predecessor } => {
                    let path = self.path_of(predecessor);
                    let sent = Instant::now();
                    match timeout(self.op_timeout(), self.client.check_and_watch_stat(&path)).await
                    {
                        Ok(Ok((None, _))) => {
                            self.renew(sent);
                            continue; // gone meanwhile: list again
                        }
                        Ok(Ok((Some(stat), _)))
                            if stat.ephemeral_owner == self.client.session_id().0 =>
                        {
                            // A node of this very session (a create whose reply was lost):
                            // remove it, or this member would wait on itself.
                            self.renew(sent);
                            warn!(target: "esp.failover", "Hot failover: deleting {path}, a stray node of this member's own session");
                            let _ =
                                timeout(self.op_timeout(), self.client.delete(&path, None)).await;
                            continue;
                        }
                        Ok(Ok((Some(_), watcher))) => {
                            self.renew(sent);
                            self.set_watching(Some(path));
                            Some(watcher)
                        }
                        Ok(Err(e)) if session_lost(&e) => {
                            return Next::Rejoin(format!("ZooKeeper session lost ({e})"))
                        }
                        _ => {
                            self.check_lease();
                            tokio::select! {
                                _ = &mut *stop => return Next::Stop,
                                _ = tick.tick() => {}
                            }
                            continue;
                        }
                    }
                }
            };
            self.set_role(
                role_for(&standing, self.lease().valid(Instant::now())),
                "lease ran out",
            );
            // Wait for the predecessor to go, the session to change, or the lease to need
            // renewal; then decide again.
            let fired = async {
                match watcher {
                    Some(w) => {
                        let event = w.changed().await;
                        debug!(target: "esp.failover",
                            "hot failover: watch fired: {:?} {}",
                            event.event_type, event.path
                        );
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(fired);
            // The renewal in flight: a check that this member's node still exists, sent at the
            // instant kept beside it. Polled in the loop, so a slow reply delays nothing.
            let mut renewal: Option<(Instant, Renewal)> = None;
            loop {
                let lease_end = match *self.roles.borrow() {
                    Role::Unknown => None,
                    _ => self.lease().expires_at(),
                };
                tokio::select! {
                    _ = &mut *stop => return Next::Stop,
                    _ = &mut fired => break,
                    s = states.changed() => {
                        if s.is_terminated() {
                            return Next::Rejoin(self.session_ended(s, &own));
                        }
                        debug!(target: "esp.failover", "hot failover: ZooKeeper session {s:?}");
                        if s == zk::SessionState::SyncConnected {
                            break;
                        }
                    }
                    _ = tick.tick() => {
                        let stale = renewal.as_ref().is_none_or(|(sent, _)| sent.elapsed() >= lease);
                        if stale {
                            let (client, own) = (self.client.clone(), own.clone());
                            let check: Renewal = Box::pin(async move { client.check_stat(&own).await });
                            renewal = Some((Instant::now(), check));
                        }
                    }
                    r = async { renewal.as_mut().expect("guarded").1.as_mut().await }, if renewal.is_some() => {
                        let (sent, _) = renewal.take().expect("guarded");
                        match r {
                            Ok(Some(_)) => self.renew(sent),
                            Ok(None) => return Next::Rejoin(format!("zookeeper node {own} is gone")),
                            Err(e) if session_lost(&e) => {
                                return Next::Rejoin(format!("ZooKeeper session lost ({e})"))
                            }
                            Err(e) => debug!(target: "esp.failover", "hot failover: checking {own} failed: {e}"),
                        }
                        if *self.roles.borrow() == Role::Unknown && self.lease().valid(Instant::now()) {
                            break; // the lease is back: decide again
                        }
                    }
                    _ = sleep_until_instant(lease_end), if lease_end.is_some() => {
                        self.check_lease();
                    }
                }
            }
        }
    }

    /// Makes the role Unknown once the lease has run out. Returns whether it had run out.
    fn check_lease(&self) -> bool {
        let expired = !self.lease().valid(Instant::now());
        if expired {
            self.set_role(Role::Unknown, "no word from ZooKeeper within the lease");
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_paths() {
        assert_eq!(
            election_dir("/ESP").unwrap(),
            ("/ESP".to_string(), "/ESP".to_string())
        );
        assert_eq!(
            election_dir("/a/b/").unwrap(),
            ("/a/b".to_string(), "/a/b".to_string())
        );
        assert_eq!(election_dir("/").unwrap(), (String::new(), "/".to_string()));
        assert!(election_dir("ESP")
            .unwrap_err()
            .to_string()
            .contains("absolute path"));
        assert!(election_dir("/a//b")
            .unwrap_err()
            .to_string()
            .contains("empty path segment"));
    }
}
