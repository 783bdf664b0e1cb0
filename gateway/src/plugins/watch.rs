//! Hot reload of the plugins directory (top level, `*.wasm`).
//!
//! A file is loaded when it is complete: on close-after-write (`cp`, an editor's
//! save) or when it is renamed into place (write to a temp name, then `mv`: the
//! recommended way). `Create` alone is ignored (the content may not be there yet).
//! Events are debounced per file; systems without close events (macOS) get the
//! plain modify events, debounced longer, and a file caught half-written simply
//! fails to load and keeps the previous version until the next event.
//!
//! Loading runs on this module's own thread (compiling a Python or JavaScript
//! component takes seconds), never on the request workers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::registry::{Registry, name_of};

/// After a close or a rename: the file is complete.
const SETTLE: Duration = Duration::from_millis(30);
/// After a plain modify: wait for writes to stop.
const QUIET: Duration = Duration::from_millis(300);

/// Keeps the watch alive; dropping it stops watching.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

enum Change {
    Ready(PathBuf, Duration),
    Removed(PathBuf),
}

fn classify(kind: &EventKind, path: &Path) -> Option<Change> {
    let path = path.to_owned();
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
            Some(Change::Ready(path, SETTLE))
        }
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any)
        | EventKind::Create(CreateKind::File) => Some(Change::Ready(path, QUIET)),
        EventKind::Remove(RemoveKind::File | RemoveKind::Any)
        | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Some(Change::Removed(path)),
        _ => None,
    }
}

impl Watcher {
    /// Watches the registry's directory; `on_change` is told of every load,
    /// failure or removal (for logs).
    pub fn start(registry: Arc<Registry>) -> Result<Self, String> {
        let dir = registry.dir().to_owned();
        let (tx, rx) = mpsc::channel::<Change>();
        let mut inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            for path in &event.paths {
                if name_of(path).is_some()
                    && let Some(change) = classify(&event.kind, path)
                {
                    let _ = tx.send(change);
                }
            }
        })
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        inner
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        std::thread::Builder::new()
            .name("sluice-plugins".into())
            .spawn(move || reload_loop(&registry, &rx))
            .map_err(|e| format!("cannot start the plugin reload thread: {e}"))?;
        Ok(Self { _inner: inner })
    }
}

fn reload_loop(registry: &Registry, rx: &mpsc::Receiver<Change>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "plugin reloads are off: cannot start their runtime");
            return;
        }
    };
    let mut pending: BTreeMap<PathBuf, Instant> = BTreeMap::new();
    loop {
        let wait = pending
            .values()
            .min()
            .map(|due| due.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(Change::Ready(path, settle)) => {
                let due = Instant::now() + settle;
                let entry = pending.entry(path).or_insert(due);
                // A close after a modify loads sooner; a modify after a close waits.
                *entry = due;
            }
            Ok(Change::Removed(path)) => {
                pending.remove(&path);
                if !path.exists() && registry.unload_file(&path) {
                    tracing::info!(path = %path.display(), "plugin unloaded (file removed)");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let due: Vec<PathBuf> = pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            pending.remove(&path);
            if !path.is_file() {
                continue;
            }
            let started = Instant::now();
            match runtime.block_on(registry.load_file(&path)) {
                Ok(plugin) => tracing::info!(
                    plugin = %plugin.name,
                    kind = plugin.kind().as_str(),
                    version = %plugin.info.version,
                    load_ms = started.elapsed().as_millis() as u64,
                    "plugin loaded"
                ),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "plugin not loaded; the previous version (if any) stays in use"
                ),
            }
        }
    }
}
