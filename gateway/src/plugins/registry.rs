//! The loaded plugins by name: built-ins (embedded at build time) and the plugins
//! directory's `*.wasm` files, where a file overrides the built-in of the same
//! name. A reload swaps the `Arc<Plugin>` under a lock held only for the swap;
//! requests keep the version they looked up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::engine::PluginEngine;
use super::limits::Limits;
use super::{Kind, Plugin, PluginError, Source, builtin, load};

/// What happened to a file in the plugins directory last.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Loaded,
    /// The last attempt failed; the previous version (if any) is still in use.
    Failed(String),
}

#[derive(Default)]
struct Tables {
    builtins: BTreeMap<String, Arc<Plugin>>,
    files: BTreeMap<String, Arc<Plugin>>,
    status: BTreeMap<String, Status>,
    reloads: u64,
}

/// Every plugin the gateway has.
pub struct Registry {
    engine: PluginEngine,
    dir: PathBuf,
    defaults: Limits,
    overrides: BTreeMap<String, Limits>,
    tables: RwLock<Tables>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The name configs use for a plugin file: its stem (`blocklist.wasm` → `blocklist`).
pub fn name_of(path: &Path) -> Option<String> {
    if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let valid = !stem.is_empty()
        && !stem.starts_with('.')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    valid.then(|| stem.to_owned())
}

impl Registry {
    pub fn new(
        engine: PluginEngine,
        dir: PathBuf,
        defaults: Limits,
        overrides: BTreeMap<String, Limits>,
    ) -> Self {
        Self {
            engine,
            dir,
            defaults,
            overrides,
            tables: RwLock::new(Tables::default()),
        }
    }

    /// A registry with no plugins and a small engine, for tools, benches and
    /// tests that route without plugins.
    pub fn without_plugins() -> Result<Self, PluginError> {
        let limits = super::EngineLimits {
            total_memories: 8,
            total_instances: 8,
            ..Default::default()
        };
        let engine = PluginEngine::new(&limits, None).map_err(|e| PluginError::Load {
            plugin: "(engine)".into(),
            detail: super::describe(&e),
        })?;
        Ok(Self::new(
            engine,
            PathBuf::new(),
            Limits::default(),
            BTreeMap::new(),
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn limits(&self, name: &str) -> Limits {
        self.overrides
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }

    /// The plugin named `name`: the directory's version, else the built-in.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        let t = self.tables.read().ok()?;
        t.files.get(name).or_else(|| t.builtins.get(name)).cloned()
    }

    /// The plugin named `name` if it is of `kind`.
    pub fn get_kind(&self, name: &str, kind: Kind) -> Result<Arc<Plugin>, PluginError> {
        let plugin = self
            .get(name)
            .ok_or_else(|| PluginError::NotLoaded(name.to_owned()))?;
        if plugin.kind() != kind {
            return Err(PluginError::WrongKind {
                plugin: name.to_owned(),
                actual: plugin.kind().as_str(),
                wanted: kind.as_str(),
            });
        }
        Ok(plugin)
    }

    /// Whether a provider plugin named `name` is loaded.
    pub fn has_provider(&self, name: &str) -> bool {
        self.get(name).is_some_and(|p| p.kind() == Kind::Provider)
    }

    /// The plugins in effect, by name.
    pub fn list(&self) -> Vec<Arc<Plugin>> {
        let Ok(t) = self.tables.read() else {
            return Vec::new();
        };
        let mut all: BTreeMap<&String, &Arc<Plugin>> = t.builtins.iter().collect();
        all.extend(t.files.iter());
        all.into_values().cloned().collect()
    }

    /// The last load status of each directory file.
    pub fn statuses(&self) -> BTreeMap<String, Status> {
        self.tables
            .read()
            .map(|t| t.status.clone())
            .unwrap_or_default()
    }

    /// How many times a directory file was (re)loaded or removed.
    pub fn reloads(&self) -> u64 {
        self.tables.read().map(|t| t.reloads).unwrap_or(0)
    }

    /// Loads the embedded built-ins. A built-in that fails to load is a bug in
    /// the build; it is reported and skipped.
    pub async fn load_builtins(&self) -> Vec<PluginError> {
        let mut errors = Vec::new();
        for (name, bytes) in builtin::BUILTINS {
            match load(
                &self.engine,
                name,
                bytes,
                Source::Builtin,
                self.limits(name),
            )
            .await
            {
                Ok(p) => {
                    if let Ok(mut t) = self.tables.write() {
                        t.builtins.insert((*name).to_owned(), Arc::new(p));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Loads every `*.wasm` at the top of the directory.
    pub async fn load_dir(&self) -> Vec<PluginError> {
        let mut errors = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return errors;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if name_of(&path).is_some()
                && path.is_file()
                && let Err(e) = self.load_file(&path).await
            {
                errors.push(e);
            }
        }
        errors
    }

    /// Loads (or reloads) one file; on failure the previous version stays.
    pub async fn load_file(&self, path: &Path) -> Result<Arc<Plugin>, PluginError> {
        let Some(name) = name_of(path) else {
            return Err(PluginError::Load {
                plugin: path.display().to_string(),
                detail: "plugin files are named NAME.wasm (letters, digits, `-`, `_`, `.`)".into(),
            });
        };
        let result = match std::fs::read(path) {
            Ok(bytes) => {
                load(
                    &self.engine,
                    &name,
                    &bytes,
                    Source::File(path.to_owned()),
                    self.limits(&name),
                )
                .await
            }
            Err(e) => Err(PluginError::Load {
                plugin: name.clone(),
                detail: format!("cannot read {}: {e}", path.display()),
            }),
        };
        let mut t = self
            .tables
            .write()
            .map_err(|_| PluginError::Unavailable(name.clone()))?;
        t.reloads += 1;
        match result {
            Ok(plugin) => {
                let plugin = Arc::new(plugin);
                t.files.insert(name.clone(), plugin.clone());
                t.status.insert(name, Status::Loaded);
                Ok(plugin)
            }
            Err(e) => {
                t.status.insert(name, Status::Failed(e.to_string()));
                Err(e)
            }
        }
    }

    /// Forgets a removed file; a built-in of the same name applies again.
    pub fn unload_file(&self, path: &Path) -> bool {
        let Some(name) = name_of(path) else {
            return false;
        };
        let Ok(mut t) = self.tables.write() else {
            return false;
        };
        t.reloads += 1;
        t.status.remove(&name);
        t.files.remove(&name).is_some()
    }
}
