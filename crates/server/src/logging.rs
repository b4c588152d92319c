//! Logs: one line per event of interest with time, level, component (the tracing target, an
//! ESP logger name such as `esp.server`) and message, on standard error. Levels can be changed
//! at run time through the `loggers` endpoint (a reloadable filter).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The loggers that always exist.
pub const LOGGERS: [&str; 7] = [
    "esp",
    "esp.server",
    "esp.http",
    "esp.windows",
    "esp.connectors",
    "esp.pubsub",
    "esp.failover",
];

/// Loggers whose level also drives the log lines of a library crate (its tracing target);
/// sluice-ha logs under `esp.failover` itself, the alias covers anything logged by module path.
const ALIASES: [(&str, &str); 1] = [("esp.failover", "sluice_ha")];

/// Levels a logger accepts.
pub const LEVELS: [&str; 7] = ["trace", "debug", "info", "warn", "error", "fatal", "off"];

/// The process-wide logger levels and the filter they drive.
pub struct LogControl {
    levels: Mutex<BTreeMap<String, String>>,
    handle: OnceLock<reload::Handle<EnvFilter, Registry>>,
}

static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// The process's log control.
pub fn control() -> &'static LogControl {
    CONTROL.get_or_init(|| LogControl {
        levels: Mutex::new(
            LOGGERS
                .iter()
                .map(|l| (l.to_string(), "info".to_string()))
                .collect(),
        ),
        handle: OnceLock::new(),
    })
}

fn norm_level(l: &str) -> Option<&'static str> {
    let l = l.trim().to_ascii_lowercase();
    Some(match l.as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" => "error",
        "off" | "none" => "off",
        _ => return None,
    })
}

impl LogControl {
    /// Applies a `--loglevel` value: one level for every logger, or `name=level,...`.
    pub fn apply_spec(&self, spec: &str) -> Result<(), String> {
        let mut levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => {
                    let l = norm_level(part).ok_or_else(|| bad_level(part))?;
                    for v in levels.values_mut() {
                        *v = l.to_string();
                    }
                }
                Some((name, level)) => {
                    let l = norm_level(level).ok_or_else(|| bad_level(level))?;
                    levels.insert(name.trim().to_string(), l.to_string());
                }
            }
        }
        drop(levels);
        self.reload();
        Ok(())
    }

    /// All loggers and their levels.
    pub fn levels(&self) -> BTreeMap<String, String> {
        self.levels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets one existing logger's level. Err(None) when the logger does not exist.
    pub fn set(&self, name: &str, level: &str) -> Result<String, Option<String>> {
        let l = norm_level(level).ok_or_else(|| Some(bad_level(level)))?;
        {
            let mut levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
            let v = levels.get_mut(name).ok_or(None)?;
            *v = l.to_string();
        }
        self.reload();
        Ok(l.to_string())
    }

    fn filter_text(&self) -> String {
        let levels = self.levels();
        let mut s = String::from("warn");
        for (k, v) in &levels {
            s.push_str(&format!(",{k}={v}"));
        }
        for (logger, target) in ALIASES {
            if let Some(v) = levels.get(logger) {
                s.push_str(&format!(",{target}={v}"));
            }
        }
        s
    }

    fn reload(&self) {
        if let Some(h) = self.handle.get() {
            if let Ok(f) = EnvFilter::try_new(self.filter_text()) {
                let _ = h.reload(f);
            }
        }
    }
}

fn bad_level(l: &str) -> String {
    format!("unknown log level '{l}' (use trace, debug, info, warn, error or off)")
}

/// Installs the process's log output (once; later calls only apply the levels).
pub fn init(spec: Option<&str>) -> Result<(), String> {
    let c = control();
    if let Some(s) = spec {
        c.apply_spec(s)?;
    }
    if c.handle.get().is_some() {
        return Ok(());
    }
    let filter = EnvFilter::try_new(c.filter_text()).map_err(|e| e.to_string())?;
    let (layer, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = c.handle.set(handle);
    }
    Ok(())
}
