//! The `[plugins]` section of the server file: where compiled code is cached,
//! whether the directory is watched, the engine-wide pool, and each plugin's
//! limits (defaults, then per plugin by name).
//!
//! ```toml
//! [plugins]
//! watch = true                  # hot reload of server.plugins_dir
//! cache_dir = "/var/cache/sluice"   # default: $SLUICE_CACHE_DIR, else
//!                               # $XDG_CACHE_HOME/sluice, else ~/.cache/sluice; "" = off
//! total_memories = 512          # the pooling allocator's size, all plugins together
//! max_memory_mb = 256           # the ceiling of any plugin's max_memory_mb
//!
//! [plugins.defaults]            # every plugin; each field also per plugin below
//! cpu_budget_ms = 100
//! max_memory_mb = 64
//! max_table_elements = 200000
//! max_instances = 32
//! max_calls_per_instance = 100000
//! recycle_memory_mb = 48
//! isolation = "pooled"          # or "per-request"
//!
//! [plugins.limits.my-python-guard]
//! cpu_budget_ms = 250
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::reader::{Obj, Problems};
use crate::plugins::{EngineLimits, Isolation, Limits};

#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    pub watch: bool,
    pub cache_dir: Option<PathBuf>,
    pub engine: EngineLimits,
    pub defaults: Limits,
    pub limits: BTreeMap<String, Limits>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            watch: true,
            cache_dir: default_cache_dir(),
            engine: EngineLimits::default(),
            defaults: Limits::default(),
            limits: BTreeMap::new(),
        }
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .map(|d| d.join("sluice"))
}

const LIMIT_KEYS: &[&str] = &[
    "cpu_budget_ms",
    "max_memory_mb",
    "max_table_elements",
    "max_instances",
    "max_calls_per_instance",
    "recycle_memory_mb",
    "isolation",
];

fn limits(p: &mut Problems, o: &Obj<'_, '_>, base: &Limits, ceiling_mb: u64) -> Limits {
    o.deny_unknown(p, LIMIT_KEYS, |_| false);
    let mut l = base.clone();
    if let Some(ms) = o.uint(p, "cpu_budget_ms", 1, 600_000) {
        l.cpu_budget = Duration::from_millis(ms);
    }
    if let Some(mb) = o.uint(p, "max_memory_mb", 1, ceiling_mb) {
        l.max_memory_bytes = (mb as usize) << 20;
    }
    if let Some(n) = o.uint(p, "max_table_elements", 1, 10_000_000) {
        l.max_table_elements = n as usize;
    }
    if let Some(n) = o.uint(p, "max_instances", 1, 10_000) {
        l.max_instances = n as usize;
    }
    if let Some(n) = o.uint(p, "max_calls_per_instance", 1, u64::MAX) {
        l.max_calls_per_instance = n;
    }
    if let Some(mb) = o.uint(p, "recycle_memory_mb", 1, 1 << 20) {
        l.recycle_memory_bytes = (mb as usize) << 20;
    }
    if let Some(i) = o.choice(p, "isolation", &["pooled", "per-request"]) {
        l.isolation = if i == "pooled" {
            Isolation::Pooled
        } else {
            Isolation::PerRequest
        };
    }
    l
}

/// Reads `[plugins]` (absent: the defaults).
pub fn parse(p: &mut Problems, value: Option<&Value>) -> PluginSettings {
    let mut s = PluginSettings::default();
    let Some(value) = value else { return s };
    let Some(o) = Obj::new(p, "plugins", value) else {
        return s;
    };
    o.deny_unknown(
        p,
        &[
            "watch",
            "cache_dir",
            "total_memories",
            "max_memory_mb",
            "defaults",
            "limits",
        ],
        |_| false,
    );
    s.watch = o.bool(p, "watch").unwrap_or(true);
    if let Some(dir) = o.str(p, "cache_dir") {
        s.cache_dir = (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if let Some(n) = o.uint(p, "total_memories", 1, 100_000) {
        s.engine.total_memories = n as u32;
        s.engine.total_instances = n as u32;
    }
    if let Some(mb) = o.uint(p, "max_memory_mb", 1, 4096) {
        s.engine.max_memory_bytes = (mb as usize) << 20;
    }
    let ceiling = (s.engine.max_memory_bytes >> 20) as u64;
    s.defaults.max_memory_bytes = s.defaults.max_memory_bytes.min(s.engine.max_memory_bytes);
    if let Some(d) = o.get("defaults")
        && let Some(d) = Obj::new(p, "plugins.defaults", d)
    {
        s.defaults = limits(p, &d, &s.defaults, ceiling);
    }
    if let Some(table) = o.object(p, "limits") {
        for (name, v) in table {
            let path = format!("plugins.limits.{name}");
            if let Some(one) = Obj::new(p, &path, &v) {
                let l = limits(p, &one, &s.defaults, ceiling);
                s.limits.insert(name, l);
            }
        }
    }
    s
}
