//! The WebAssembly plugin host: provider adapters, guardrails and routers as
//! components of the WIT package in `wit/`, loaded from the plugins directory
//! (`server.plugins_dir`, `--plugins`), sandboxed, hot-reloaded.
//!
//! Plugins join the pipeline through the same seams native code uses:
//! [`crate::providers::Registry::register`] for provider adapters and
//! [`crate::guardrails::Guardrails`] for hooks. This build loads none yet; it
//! reports the directory it would watch.

use std::path::Path;

/// What `sluice serve` logs about the plugins directory at start.
pub fn describe_dir(dir: &Path) -> String {
    if dir.is_dir() {
        format!(
            "plugins directory {} (plugin loading arrives with the plugin host)",
            dir.display()
        )
    } else {
        format!(
            "plugins directory {} does not exist; no plugins",
            dir.display()
        )
    }
}
