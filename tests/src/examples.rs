//! The example plugins in other languages (`plugins/examples/`), built by their
//! own build scripts into `target/<profile>/examples-wasm/`, once per change of
//! their sources.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

/// One build at a time: the scripts install their toolchains on first use.
static BUILDING: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn newest_source(dir: &Path) -> SystemTime {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && name != "node_modules" && !name.ends_with(".wasm")
        })
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Builds `plugins/examples/<lang>` (unless its component is newer than its
/// sources) and returns the component's path.
pub fn build(lang: &str, name: &str) -> PathBuf {
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo().join("plugins/examples").join(lang);
    let out_dir = crate::gateway::binary()
        .parent()
        .map(|d| d.join("examples-wasm"))
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-examples-wasm"));
    std::fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let out = out_dir.join(format!("{name}.wasm"));
    let wit = newest_source(&repo().join("wit/v0.1.0"));
    // A build that runs the gateway (`sluice plugins componentize`) is stale
    // when the binary is newer.
    let script = std::fs::read_to_string(dir.join("build.sh")).unwrap_or_default();
    let tool = if script.contains("SLUICE_BIN") {
        std::fs::metadata(crate::gateway::binary())
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        SystemTime::UNIX_EPOCH
    };
    let fresh = std::fs::metadata(&out)
        .and_then(|m| m.modified())
        .is_ok_and(|built| built > newest_source(&dir) && built > wit && built > tool);
    if !fresh {
        let status = Command::new(dir.join("build.sh"))
            .arg(&out)
            .env("SLUICE_BIN", crate::gateway::binary())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}/build.sh: {e}", dir.display()));
        assert!(status.success(), "{}/build.sh failed", dir.display());
    }
    out
}
