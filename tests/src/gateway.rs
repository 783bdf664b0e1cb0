//! The full-gateway harness: the real `sluice` binary on an ephemeral loopback
//! port, a config string in, its stdout/stderr captured.
//!
//! The binary is `$SLUICE_BIN` when set, else `target/<profile>/sluice` next to
//! the running test executable; the test command in README.md builds it first.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the `sluice` binary is.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("sluice"))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "the sluice binary is not in {candidates:?}: build it first (`cargo build -p sluice`) or set SLUICE_BIN"
        )
    })
}

/// The compiled-plugin cache the tests share: beside the binary.
pub fn cache_dir() -> PathBuf {
    binary()
        .parent()
        .map(|d| d.join("sluice-test-cache"))
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-test-cache"))
}

/// A running gateway process. Killed on drop.
pub struct Gateway {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    logs: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl Gateway {
    /// Starts `sluice serve` with `config` (TOML) and extra environment.
    pub fn start(config: &str) -> Self {
        Self::start_with(config, &[])
    }

    /// Starts with extra environment variables.
    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_full(config, env, &[])
    }

    /// Starts with plugin files already in its plugins directory:
    /// `(file name, component path)`.
    pub fn start_with_plugins(config: &str, plugins: &[(&str, &str)]) -> Self {
        Self::start_full(config, &[], plugins)
    }

    fn start_full(config: &str, env: &[(&str, &str)], plugins: &[(&str, &str)]) -> Self {
        let dir = TempDir::new();
        let config_path = dir.path.join("sluice.toml");
        std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("write config: {e}"));
        // The plugins directory exists, so the gateway watches it.
        std::fs::create_dir_all(dir.path.join("plugins"))
            .unwrap_or_else(|e| panic!("plugins dir: {e}"));
        for (name, from) in plugins {
            std::fs::copy(from, dir.path.join("plugins").join(name))
                .unwrap_or_else(|e| panic!("copy {from}: {e}"));
        }
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--config"])
            .arg(&config_path)
            .arg("--plugins")
            .arg(dir.path.join("plugins"))
            .env_remove("RUST_LOG")
            .env_remove("SLUICE_LOG")
            .env_remove("SLUICE_LOG_FORMAT")
            .env_remove("SLUICE_MASTER_KEY")
            // Compiled plugins are cached between test runs, as the gateway
            // caches them between restarts.
            .env("SLUICE_CACHE_DIR", cache_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn sluice: {e}"));
        let logs = Arc::new(Mutex::new(String::new()));
        if let Some(mut stderr) = child.stderr.take() {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut l) = logs.lock() {
                        l.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(180))
            .unwrap_or_else(|_| {
                let logs = logs.lock().map(|l| l.clone()).unwrap_or_default();
                panic!("sluice did not start (exited, or silent for 180 s); stderr:\n{logs}")
            });
        let url = line
            .strip_prefix("sluice listening on ")
            .unwrap_or_else(|| panic!("unexpected first stdout line: {line}"))
            .to_owned();
        Self {
            child: Some(child),
            url,
            logs,
            _dir: dir,
        }
    }

    /// The plugins directory it watches.
    pub fn plugins_dir(&self) -> PathBuf {
        self._dir.path.join("plugins")
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Everything the gateway has written to stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new() -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("sluice-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
