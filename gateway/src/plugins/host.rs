//! Starting the plugin host from the server's settings: the engine, the
//! built-ins, the directory, and the watcher. Used by `sluice serve` and by
//! `sluice plugins list`.

use std::path::Path;
use std::sync::Arc;

use super::{PluginEngine, PluginError, Registry, Watcher};
use crate::config::plugins::PluginSettings;

/// The registry with built-ins and the directory loaded, and every load error.
pub async fn open(
    settings: &PluginSettings,
    dir: &Path,
) -> Result<(Arc<Registry>, Vec<PluginError>), String> {
    if let Some(cache) = &settings.cache_dir {
        // Without the directory the cache only warns on each compile.
        let _ = std::fs::create_dir_all(cache);
    }
    let engine = PluginEngine::new(&settings.engine, settings.cache_dir.clone())
        .map_err(|e| format!("cannot start the plugin engine: {}", super::describe(&e)))?;
    let registry = Arc::new(Registry::new(
        engine,
        dir.to_owned(),
        settings.defaults.clone(),
        settings.limits.clone(),
    ));
    let mut errors = registry.load_builtins().await;
    errors.extend(registry.load_dir().await);
    Ok((registry, errors))
}

/// Watches the directory when the settings ask for it and it exists.
pub fn watch(settings: &PluginSettings, registry: &Arc<Registry>) -> Option<Watcher> {
    if !settings.watch || !registry.dir().is_dir() {
        return None;
    }
    match Watcher::start(registry.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "plugins will not be hot-reloaded");
            None
        }
    }
}

/// Checks every plugin a config uses: guardrail checks and their parameters,
/// router strategies and theirs. Returns the problems with their paths.
pub async fn check_config(
    registry: &Registry,
    name: &str,
    config: &crate::config::RoutingConfig,
) -> Vec<String> {
    use super::Kind;
    let mut problems = Vec::new();
    let mut stack = vec![(format!("configs.{name}"), &config.root)];
    while let Some((path, node)) = stack.pop() {
        let mut uses: Vec<(Kind, String, String)> = node
            .inherit
            .hooks
            .checks()
            .map(|c| (Kind::Guardrail, c.plugin.clone(), c.parameters.clone()))
            .collect();
        if let Some(s) = &node.strategy
            && let Some(router) = &s.router
        {
            let params = s
                .parameters
                .as_ref()
                .map_or_else(|| "{}".to_owned(), ToString::to_string);
            uses.push((Kind::Router, router.clone(), params));
        }
        for (kind, plugin, params) in uses {
            let checked = match registry.get_kind(&plugin, kind) {
                Ok(p) => p.ensure_valid(&params).await,
                Err(e) => Err(e),
            };
            if let Err(e) = checked {
                problems.push(format!("{path}: {e}"));
            }
        }
        for (i, child) in node.targets.iter().enumerate() {
            stack.push((format!("{path}.targets[{i}]"), child));
        }
    }
    problems
}
