// Builds Rust plugins under `plugins/` into components, from a build script.
// Shared by `gateway/build.rs` (the built-ins) and `tests/build.rs` (the test
// fixtures) with `#[path] mod`. Follows wasmtime's test-programs artifacts
// pattern; every choice below is explained in `../shared/TOOLCHAINS.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A plugin crate to build.
pub struct Plugin {
    /// The package name in `plugins/Cargo.toml` (and its folder's).
    pub package: &'static str,
    /// `wasm32-unknown-unknown` (componentized here) or `wasm32-wasip2`
    /// (rustc emits a component).
    pub target: &'static str,
    /// What configs call it (the component's file stem): the package name
    /// unless a name is taken (`log` is a crate every build knows).
    pub name: &'static str,
}

impl Plugin {
    pub const fn new(package: &'static str, target: &'static str) -> Plugin {
        Plugin {
            package,
            target,
            name: package,
        }
    }
}

/// The repository root, from the build script's manifest dir.
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The outer target directory: the ancestor of `OUT_DIR` holding `CACHEDIR.TAG`.
fn outer_target_dir() -> PathBuf {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    out.ancestors()
        .find(|p| p.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"))
}

fn ensure_target(target: &str) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .is_dir()
    {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        panic!(
            "the Rust target {target} is needed to build Sluice's plugins; install it with: rustup target add {target}"
        );
    }
}

/// Builds `plugins` and returns each one's component bytes, written to
/// `<target>/plugins/components/NAME.wasm` too.
pub fn build(plugins: &[Plugin]) -> Vec<(String, PathBuf)> {
    let root = repo_root();
    let workspace = root.join("plugins");
    for watched in [
        "wit",
        "plugin-sdk",
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "plugins/build_support.rs",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = outer_target_dir().join("plugins");
    let components = target_dir.join("components");
    if let Err(e) = std::fs::create_dir_all(&components) {
        panic!("cannot create {}: {e}", components.display());
    }
    let mut out = Vec::new();
    for plugin in plugins {
        ensure_target(plugin.target);
        let dir = std::fs::read_dir(&workspace)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .chain(
                std::fs::read_dir(workspace.join("fixtures"))
                    .ok()
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            )
            .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(plugin.package));
        if let Some(dir) = dir {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&workspace)
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                plugin.target,
                "-p",
                plugin.package,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .arg("--config")
            .arg(format!("build.build-dir=\"{}\"", target_dir.display()));
        scrub(&mut cmd);
        // Cargo reads a build script's stdout as instructions.
        cmd.stdout(Stdio::from(std::io::stderr()));
        let status = cmd.status();
        if !matches!(status, Ok(s) if s.success()) {
            panic!(
                "building the plugin `{}` for {} failed (see the output above)",
                plugin.package, plugin.target
            );
        }
        let file = plugin.package.replace('-', "_");
        let built = target_dir
            .join(plugin.target)
            .join("release")
            .join(format!("{file}.wasm"));
        let bytes = std::fs::read(&built)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", built.display()));
        let component = if wasmparser_is_component(&bytes) {
            bytes
        } else {
            wit_component::ComponentEncoder::default()
                .module(&bytes)
                .and_then(|e| e.validate(true).encode())
                .unwrap_or_else(|e| panic!("cannot componentize `{}`: {e:#}", plugin.package))
        };
        let dest = components.join(format!("{}.wasm", plugin.name));
        if std::fs::read(&dest).ok().as_deref() != Some(&component[..]) {
            std::fs::write(&dest, &component)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
        }
        out.push((plugin.name.to_owned(), dest));
    }
    out
}

/// A component's header: magic, then version 0x0d and layer 1.
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

/// The nested cargo must not inherit the outer build's settings (TOOLCHAINS.md).
fn scrub(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(
            key,
            "CARGO_HOME" | "CARGO_MAKEFLAGS" | "CARGO_NET_OFFLINE" | "CARGO_TERM_COLOR"
        ) || key.starts_with("CARGO_REGISTRIES_")
            || key.starts_with("CARGO_HTTP_")
            || key.starts_with("CARGO_NET_");
        let drop = (key.starts_with("CARGO_") && !keep)
            || matches!(
                key,
                "RUSTFLAGS"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTC_WRAPPER"
                    | "CLIPPY_ARGS"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTDOCFLAGS"
            );
        if drop {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "");
}

/// Writes `OUT_DIR/file` with one `pub const` path per built plugin (`consts`)
/// or an embedded table of them (`table`).
pub fn write_out(file: &str, built: &[(String, PathBuf)], embed: bool) {
    let mut out = String::new();
    if embed {
        out.push_str("/// (name, component) of every built-in plugin.\npub const BUILTINS: &[(&str, &[u8])] = &[\n");
        for (name, path) in built {
            out.push_str(&format!(
                "    ({name:?}, include_bytes!({:?})),\n",
                path.display().to_string()
            ));
        }
        out.push_str("];\n");
    } else {
        for (name, path) in built {
            let ident = name.replace('-', "_").to_uppercase();
            out.push_str(&format!(
                "/// The `{name}` component.\npub const {ident}: &str = {:?};\n",
                path.display().to_string()
            ));
        }
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join(file);
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("cannot write {}: {e}", dest.display());
    }
}
