//! Recovery automation (docs/operations.md): scheduled snapshots taken by one standby
//! (`--persist-dir`, `--persist-interval`, `--persist-keep`) and the one-command restore at
//! start (`--restore-from`).
//!
//! Snapshots of project `p` live under `DIR/p/<UTC timestamp>-<seq>` (e.g.
//! `DIR/p/20261126T130501.123Z-000004`): names sort by age, newest last.
//!
//! Who persists: a project with hot failover subscribers persists only while every one of them
//! is a standby, and only the standby holding the ZooKeeper lock
//! `<zookeeperpath>/persist-lock/<project>` (an ephemeral node, so it goes with its holder's
//! session) does it; the others skip the round and log who holds it. The lock is kept while
//! the instance stays an eligible standby, and released as soon as it is not (active, role
//! unknown, project stopped). A project without hot failover subscribers has no active or
//! standby: every instance persists it on schedule, without a lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_model::ProjectSpec;
use zookeeper_client as zk;

use crate::kafka::FailoverSpec;
use crate::registry::LoadOptions;
use crate::AppState;

/// The snapshot directories under `parent`, newest first (by name: UTC timestamps). Leftovers
/// of interrupted persists (`*.tmp-*`) and plain files are not listed.
pub fn snapshot_dirs(parent: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().contains(".tmp-"))
        .map(|e| e.path())
        .collect();
    out.sort_by(|a, b| b.file_name().cmp(&a.file_name()));
    out
}

/// True for names this server gives its scheduled snapshots (only those are pruned).
fn scheduled_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 21
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && name[19..].starts_with("Z-")
}

/// `YYYYMMDDTHHMMSS.mmmZ-SEQ` for a time since the epoch.
pub fn snapshot_name(since_epoch: Duration, seq: u64) -> String {
    let secs = since_epoch.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z-{seq:06}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// `30s`, `5m`, `1h`, `500ms`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: use e.g. 30s, 5m, 1h or 500ms"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (use ms, s, m or h)"
            ))
        }
    };
    if d.is_zero() {
        return Err(format!("'{text}': the interval must be more than zero"));
    }
    Ok(d)
}

/// The election settings of the project's first hot failover Kafka subscriber.
fn failover_of(spec: &ProjectSpec) -> Option<FailoverSpec> {
    crate::kafka::failover_subscribers(spec).find_map(|c| FailoverSpec::of(c).ok().flatten())
}

/// `--restore-from DIR`: loads each `--model` project without starting it, restores `DIR` itself
/// when it is one snapshot (`DIR/MANIFEST`), else the newest snapshot under `DIR/<project>`
/// that verifies and whose Kafka offsets the broker still holds
/// (warning about each newer one skipped, with the reason), then starts it and its connectors.
/// Fails, listing every reason, when no snapshot of a project is usable.
pub async fn restore_startup_models(st: &AppState, dir: &Path) -> Result<usize, String> {
    let specs = crate::read_models(&st.cfg.models).map_err(|e| e.to_string())?;
    let n = specs.len();
    for spec in specs {
        let name = spec.name.clone();
        st.registry
            .load(
                spec,
                LoadOptions {
                    overwrite: true,
                    start: false,
                    connectors: false,
                },
            )
            .await
            .map_err(|e| format!("project {name}: {e}"))?;
        // `DIR` is one snapshot (the seed's layout, `DIR/MANIFEST`) or the scheduled layout
        // (`DIR/<project>/<time>-<seq>`, newest first).
        let single = dir.join("MANIFEST").is_file();
        let parent = if single {
            dir.to_path_buf()
        } else {
            dir.join(&name)
        };
        let candidates = if single {
            vec![dir.to_path_buf()]
        } else {
            snapshot_dirs(&parent)
        };
        let mut reasons = Vec::new();
        let mut restored = None;
        for d in candidates {
            match st.registry.restore_only(&name, d.clone()).await {
                Ok(_) => {
                    restored = Some(d);
                    break;
                }
                Err(e) => {
                    tracing::warn!(target: "esp.server", "project {name}: --restore-from skips snapshot {}: {}", d.display(), e.message);
                    reasons.push(format!("{}: {}", d.display(), e.message));
                }
            }
        }
        let Some(d) = restored else {
            let _ = st.registry.delete(&name).await;
            return Err(if reasons.is_empty() {
                format!(
                    "project {name}: --restore-from found no snapshot under {} (scheduled snapshots are written there by --persist-dir {})",
                    parent.display(),
                    dir.display()
                )
            } else {
                format!(
                    "project {name}: no usable snapshot under {} ({} tried): {}",
                    parent.display(),
                    reasons.len(),
                    reasons.join("; ")
                )
            });
        };
        st.registry
            .start(&name)
            .await
            .map_err(|e| format!("project {name}: {e}"))?;
        st.registry
            .start_connectors(&name)
            .await
            .map_err(|e| format!("project {name}: {e}"))?;
        tracing::info!(target: "esp.server", "project {name} restored from {} ({} newer snapshot(s) skipped), started with its connectors: replaying Kafka from the snapshot's offsets", d.display(), reasons.len());
    }
    Ok(n)
}

/// A held persist lock: the ZooKeeper session and the node.
struct Lock {
    client: zk::Client,
    path: String,
}

impl Lock {
    fn alive(&self) -> bool {
        !matches!(
            self.client.state(),
            zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
        )
    }

    async fn release(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.delete(&self.path, None))
            .await;
    }
}

/// Tries to take the persist lock of a project: Ok(Some) when taken, Ok(None) with the
/// holder's identity logged when another instance holds it.
async fn take_lock(fo: &FailoverSpec, project: &str, me: &str) -> Result<Option<Lock>, String> {
    let base = fo.path.trim_end_matches('/');
    let dir = format!("{base}/persist-lock");
    let path = format!("{dir}/{project}");
    let client = tokio::time::timeout(
        fo.session * 3,
        zk::Client::connector()
            .with_session_timeout(fo.session)
            .connect(&fo.hosts),
    )
    .await
    .map_err(|_| format!("ZooKeeper {} did not answer", fo.hosts))?
    .map_err(|e| format!("cannot open a ZooKeeper session with {}: {e}", fo.hosts))?;
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client
        .mkdir(&dir, &persistent)
        .await
        .map_err(|e| format!("ZooKeeper create of {dir} failed: {e}"))?;
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    match client.create(&path, me.as_bytes(), &ephemeral).await {
        Ok(_) => Ok(Some(Lock { client, path })),
        Err(zk::Error::NodeExists) => {
            let holder = match client.get_data(&path).await {
                Ok((d, _)) => String::from_utf8_lossy(&d).into_owned(),
                Err(_) => "another instance".to_string(),
            };
            tracing::info!(target: "esp.server", "project {project}: scheduled persist skipped: the persist lock {path} is held by {holder}");
            Ok(None)
        }
        Err(e) => Err(format!("ZooKeeper create of {path} failed: {e}")),
    }
}

/// Deletes the oldest scheduled snapshots of a project beyond the `keep` newest.
fn prune(parent: &Path, keep: usize) -> usize {
    let mut deleted = 0;
    let dirs: Vec<PathBuf> = snapshot_dirs(parent)
        .into_iter()
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| scheduled_name(&n.to_string_lossy()))
        })
        .collect();
    for old in dirs.iter().skip(keep.max(1)) {
        match std::fs::remove_dir_all(old) {
            Ok(()) => deleted += 1,
            Err(e) => {
                tracing::warn!(target: "esp.server", "cannot delete old snapshot {}: {e}", old.display())
            }
        }
    }
    deleted
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The `--persist-dir` schedule: every `--persist-interval`, each eligible project is
/// persisted to a new snapshot directory, then the oldest beyond `--persist-keep` are deleted.
pub async fn persist_schedule(st: Arc<AppState>, dir: PathBuf) {
    let interval = st.cfg.persist_interval;
    let keep = st.cfg.persist_keep;
    let me = format!(
        "sluice server {} (pid {})",
        st.http_addr,
        std::process::id()
    );
    let mut locks: BTreeMap<String, Lock> = BTreeMap::new();
    let mut stop = st.shutdown.subscribe();
    tracing::info!(target: "esp.server", "scheduled persist every {} ms to {} (keeping the {keep} newest per project), on a standby only", interval.as_millis(), dir.display());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|v| *v) => break,
        }
        let projects = st.registry.all();
        // Locks of projects that are gone.
        let gone: Vec<String> = locks
            .keys()
            .filter(|n| !projects.iter().any(|(p, _)| p == *n))
            .cloned()
            .collect();
        for n in gone {
            if let Some(l) = locks.remove(&n) {
                l.release().await;
            }
        }
        for (name, v) in projects {
            let Some(h) = &v.handle else { continue };
            let status = h.kafka_status();
            let failover: Vec<_> = status.outputs.iter().filter(|o| o.hotfailover).collect();
            let fo = failover_of(&v.spec);
            let standby =
                v.running && v.connectors_started && failover.iter().all(|o| o.role == "standby");
            if fo.is_some() && (failover.is_empty() || !standby) {
                if let Some(l) = locks.remove(&name) {
                    tracing::info!(target: "esp.server", "project {name}: persist lock {} released: this instance is not a standby now", l.path);
                    l.release().await;
                }
                tracing::debug!(target: "esp.server", "project {name}: scheduled persist skipped: not a standby");
                continue;
            }
            if fo.is_none() && !v.running {
                continue;
            }
            if let Some(fo) = &fo {
                if locks.get(&name).is_some_and(|l| !l.alive()) {
                    locks.remove(&name);
                }
                if !locks.contains_key(&name) {
                    match take_lock(fo, &name, &me).await {
                        Ok(Some(l)) => {
                            tracing::info!(target: "esp.server", "project {name}: took the persist lock {}: this standby persists on schedule", l.path);
                            locks.insert(name.clone(), l);
                        }
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(target: "esp.server", "project {name}: scheduled persist skipped: {e}");
                            continue;
                        }
                    }
                }
            }
            let parent = dir.join(&name);
            let since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let snap = parent.join(snapshot_name(since, SEQ.fetch_add(1, Ordering::Relaxed)));
            let t0 = Instant::now();
            match st.registry.persist(&name, snap.clone()).await {
                Ok(_) => {
                    // Every file of the snapshot, the MANIFEST too.
                    let bytes: u64 = sluice_persist::read_manifest(&snap)
                        .map(|m| m.files.iter().map(|f| f.bytes).sum())
                        .unwrap_or(0)
                        + std::fs::metadata(snap.join("MANIFEST")).map_or(0, |m| m.len());
                    let deleted = prune(&parent, keep);
                    tracing::info!(target: "esp.server", "scheduled persist of project {name} to {}: {bytes} bytes in {} ms; {deleted} older snapshot(s) deleted, keeping {keep}", snap.display(), t0.elapsed().as_millis());
                }
                Err(e) => {
                    tracing::error!(target: "esp.server", "scheduled persist of project {name} to {} failed: {}", snap.display(), e.message)
                }
            }
        }
    }
    for (_, l) in locks {
        l.release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_are_recognised() {
        let a = snapshot_name(Duration::from_millis(1_764_162_301_123), 4);
        assert_eq!(a, "20251126T130501.123Z-000004");
        assert!(scheduled_name(&a));
        assert!(!scheduled_name("snap"));
        let b = snapshot_name(Duration::from_millis(1_764_162_302_000), 5);
        assert!(b > a);
        assert_eq!(
            snapshot_name(Duration::from_secs(951_782_400), 0),
            "20000229T000000.000Z-000000"
        );
    }

    /// A model whose one Kafka subscriber has hot failover, its direction written as `dir`
    /// (a property element or an attribute on `<connector>`).
    fn failover_model(dir: &str) -> ProjectSpec {
        let (attr, prop) = match dir.strip_prefix("attr:") {
            Some(a) => (format!(" type='{a}'"), String::new()),
            None => (
                String::new(),
                format!("<property name='type'>{dir}</property>"),
            ),
        };
        let xml = format!(
            "<project name='p' pubsub='none'><contqueries><contquery name='cq'><windows>\
             <window-source name='s'><schema-string>id*:int64</schema-string><connectors>\
             <connector class='kafka' name='out'{attr}><properties>{prop}\
             <property name='kafkahostport'>127.0.0.1:9</property><property name='kafkatopic'>t</property>\
             <property name='hotfailover'>true</property><property name='zookeeperhostport'>127.0.0.1:2181</property>\
             </properties></connector></connectors></window-source></windows></contquery></contqueries></project>"
        );
        sluice_model::parse_project(&xml, &|_| None).expect("model parses")
    }

    /// Every way the model parser accepts to write a subscriber's direction makes the
    /// project one with hot failover, so only a standby takes scheduled persists.
    #[test]
    fn failover_is_found_whatever_the_direction_form() {
        for dir in ["sub", "subscribe", " sub ", "attr:sub", "attr:subscribe"] {
            let fo = failover_of(&failover_model(dir));
            assert!(fo.is_some(), "direction written as {dir:?}");
            assert_eq!(fo.unwrap().hosts, "127.0.0.1:2181");
        }
        assert!(failover_of(&failover_model("pub")).is_none());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
