//! The WebAssembly plugin host: guardrails, provider adapters and routers as
//! components of the WIT package in `wit/` (`sluice:plugin@0.1`), sandboxed,
//! pooled, hot-reloaded.
//!
//! - [`engine`]: the one wasmtime engine (pooling allocator, epoch ticker, code
//!   cache) and the per-instance host state, which grants nothing but the
//!   `host` interface (and, to plugins that import WASI, a WASI context with no
//!   files, env or sockets).
//! - [`grants`]: what `host` gives a call made for a request: its headers, and
//!   HTTP calls the pipeline's client makes for it.
//! - [`limits`]: every limit, in one place.
//! - [`load`]: bytes → a checked, pre-instantiated [`Plugin`].
//! - [`pool`]: warm instances, one call at a time each.
//! - [`calls`]: the typed calls the pipeline makes (check, route, build/parse,
//!   stream translation).
//! - [`registry`]: built-ins and the plugins directory, by name, swapped
//!   atomically on reload; [`watch`] reloads on file changes.
//!
//! Plugins join the pipeline through the seams native code uses: provider
//! plugins as [`crate::providers::Provider`]s, guardrails in
//! [`crate::guardrails`], routers as a routing strategy. This module calls
//! nothing in the pipeline.

pub mod builtin;
mod calls;
pub mod engine;
pub mod grants;
pub mod host;
pub mod limits;
mod load;
mod pool;
mod registry;
pub mod v0_1;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use calls::{
    BuiltRequest, CheckInput, Outcome, ProviderCall, ProviderPlugin, RouteCandidate,
    StreamTranslator, Verdict,
};
pub use engine::PluginEngine;
pub use grants::{FetchFuture, FetchRequest, FetchResponse, Grants, Outbound};
pub use limits::{EngineLimits, Isolation, Limits};
pub use load::load;
pub use registry::{Registry, Status};
pub use sluice_plugin_sdk::{SDK_VERSION, SDK_VERSION_SECTION, WIT_PACKAGE_VERSION};
pub use watch::Watcher;

use crate::providers::Endpoint;

/// What a component is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    Guardrail,
    Provider,
    Router,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Guardrail => "guardrail",
            Kind::Provider => "provider",
            Kind::Router => "router",
        }
    }
}

/// What a plugin said about itself (`describe()`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub description: String,
    pub config_schema: String,
    pub wants_body: bool,
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Built with the gateway from `plugins/` and embedded.
    Builtin,
    /// A file in the plugins directory.
    File(PathBuf),
}

/// One loaded plugin version. Requests hold an `Arc<Plugin>`, so a request that
/// started on a version finishes on it when a reload swaps in another.
pub struct Plugin {
    pub name: Arc<str>,
    pub info: Info,
    pub source: Source,
    /// Whether it imports WASI (and so runs with the empty WASI context).
    pub wasi: bool,
    /// The SDK version stamped into it; `None` for plugins not built with the SDK.
    pub sdk_version: Option<String>,
    pub wit_version: String,
    pub size: usize,
    pub loaded_at: SystemTime,
    world: World,
    /// `validate-config` results by configuration text, so each configuration is
    /// checked once per plugin version.
    validated: Mutex<HashMap<String, Result<(), PluginError>>>,
}

/// Configurations remembered per plugin version before the memo starts over.
const VALIDATED_MEMO: usize = 1024;

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("kind", &self.info.kind)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

enum World {
    Guardrail(pool::Pool<v0_1::guardrail::GuardrailPre<engine::HostState>>),
    Provider {
        pool: pool::Pool<v0_1::provider::ProviderPre<engine::HostState>>,
        endpoints: Vec<Endpoint>,
    },
    Router(pool::Pool<v0_1::router::RouterPre<engine::HostState>>),
}

impl Plugin {
    /// Validates a configuration once per plugin version (later calls read the
    /// remembered answer).
    pub async fn ensure_valid(&self, config: &str) -> Result<(), PluginError> {
        if let Some(known) = self
            .validated
            .lock()
            .ok()
            .and_then(|m| m.get(config).cloned())
        {
            return known;
        }
        let result = self.validate_config(config).await;
        // A trap or a timeout says nothing about the configuration: ask again next time.
        let definite = matches!(result, Ok(()) | Err(PluginError::InvalidConfig { .. }));
        if definite && let Ok(mut memo) = self.validated.lock() {
            if memo.len() >= VALIDATED_MEMO {
                memo.clear();
            }
            memo.insert(config.to_owned(), result.clone());
        }
        result
    }

    pub fn kind(&self) -> Kind {
        self.info.kind
    }

    /// Its limits.
    pub fn limits(&self) -> &Limits {
        match &self.world {
            World::Guardrail(p) => &p.limits,
            World::Provider { pool, .. } => &pool.limits,
            World::Router(p) => &p.limits,
        }
    }

    /// Call counters, as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let (stats, idle) = match &self.world {
            World::Guardrail(p) => (p.stats.snapshot(), p.idle()),
            World::Provider { pool, .. } => (pool.stats.snapshot(), pool.idle()),
            World::Router(p) => (p.stats.snapshot(), p.idle()),
        };
        let mut stats = stats;
        stats["idle_instances"] = idle.into();
        stats
    }

    /// For `plugins list` and the admin API.
    pub fn summary(&self) -> serde_json::Value {
        let limits = self.limits();
        serde_json::json!({
            "name": &*self.name,
            "kind": self.info.kind.as_str(),
            "version": self.info.version,
            "description": self.info.description,
            "source": match &self.source {
                Source::Builtin => "builtin".to_owned(),
                Source::File(p) => p.display().to_string(),
            },
            "wasi": self.wasi,
            "sdk_version": self.sdk_version,
            "wit_version": self.wit_version,
            "size_bytes": self.size,
            "limits": {
                "cpu_budget_ms": limits.cpu_budget.as_millis() as u64,
                "max_memory_mb": limits.max_memory_bytes >> 20,
                "max_table_elements": limits.max_table_elements,
                "max_instances": limits.max_instances,
                "isolation": match limits.isolation {
                    Isolation::Pooled => "pooled",
                    Isolation::PerRequest => "per-request",
                },
            },
            "stats": self.stats(),
        })
    }
}

/// Why a plugin could not be loaded or a call failed. Every message names the
/// plugin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("plugin `{plugin}` cannot be loaded: {detail}")]
    Load { plugin: String, detail: String },
    #[error("plugin `{plugin}` could not start an instance: {detail}")]
    Instantiate { plugin: String, detail: String },
    #[error("plugin `{plugin}` failed (trap): {detail}")]
    Trap { plugin: String, detail: String },
    #[error("plugin `{plugin}` ran past its CPU budget of {budget_ms} ms")]
    Timeout { plugin: String, budget_ms: u64 },
    #[error("plugin `{plugin}` rejected its configuration: {detail}")]
    InvalidConfig { plugin: String, detail: String },
    #[error("plugin `{plugin}` returned an error: {detail}")]
    Failed { plugin: String, detail: String },
    #[error("plugin `{plugin}` answered {status}: {message}")]
    Upstream {
        plugin: String,
        status: u16,
        message: String,
        code: Option<String>,
    },
    #[error("no plugin named `{0}` is loaded")]
    NotLoaded(String),
    #[error("plugin `{0}` is not available")]
    Unavailable(String),
    #[error("plugin `{plugin}` is a {actual}, not a {wanted}")]
    WrongKind {
        plugin: String,
        actual: &'static str,
        wanted: &'static str,
    },
}

/// A wasmtime error with its causes, on one line.
pub(crate) fn describe(e: &wasmtime::Error) -> String {
    let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.join(": ")
}
