//! `sluice plugins list | check | new | componentize` through the real binary.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sluice_tests::gateway::binary;
use sluice_tests::{TempDir, fixtures};

fn sluice(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("SLUICE_CACHE_DIR", sluice_tests::gateway::cache_dir())
        .output()
        .expect("run sluice")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn list_shows_builtins_and_directory_plugins_with_their_limits() {
    let dir = TempDir::new();
    std::fs::copy(fixtures::CHAOS, dir.path.join("chaos.wasm")).expect("copy");
    std::fs::write(dir.path.join("broken.wasm"), b"not wasm").expect("write");
    let out = sluice(&[
        "plugins",
        "list",
        "--json",
        "--plugins",
        &dir.path.display().to_string(),
    ]);
    // A broken file makes the command fail, after listing everything else.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    let kinds: Vec<(String, String)> = json["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_owned(),
                p["kind"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for (name, kind) in [
        ("blocklist", "guardrail"),
        ("ollama-native", "provider"),
        ("latency-router", "router"),
        ("chaos", "guardrail"),
    ] {
        assert!(
            kinds.contains(&(name.to_owned(), kind.to_owned())),
            "{name}: {kinds:?}"
        );
    }
    let errors = json["errors"].to_string();
    assert!(
        errors.contains("broken") && errors.contains("not a WebAssembly component"),
        "{errors}"
    );

    let table = sluice(&["plugins", "list", "--plugins", "/nonexistent"]);
    assert!(table.status.success(), "{}", text(&table));
    let table = text(&table);
    assert!(
        table.contains("NAME") && table.contains("latency-router") && table.contains("pooled"),
        "{table}"
    );
}

#[test]
fn check_describes_a_component_and_explains_what_is_wrong() {
    let out = sluice(&["plugins", "check", fixtures::WASI_PROBE]);
    assert!(out.status.success(), "{}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["kind"], "guardrail");
    assert_eq!(json["wasi"], true);
    assert_eq!(json["sdk_version"], sluice::plugins::SDK_VERSION);
    assert_eq!(json["wit_version"], sluice::plugins::WIT_PACKAGE_VERSION);

    let out = sluice(&[
        "plugins",
        "check",
        fixtures::BLOCKLIST,
        "--with-config",
        r#"{"words": []}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("at least one"), "{}", text(&out));

    // A core module is not a component: the message says how to make one.
    let dir = TempDir::new();
    let core = dir.path.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let out = sluice(&["plugins", "check", &core.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("sluice plugins componentize"),
        "{}",
        text(&out)
    );
}

/// `plugins new` for every kind writes a crate that builds; `componentize` turns
/// its core module into a component that `check` accepts.
#[test]
fn new_plugins_build_componentize_and_load() {
    let dir = TempDir::new();
    let target_dir = binary()
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("plugins"))
        .expect("target dir");
    for kind in ["guardrail", "router", "provider"] {
        let name = format!("my-{kind}");
        let crate_dir = dir.path.join(&name);
        let out = sluice(&[
            "plugins",
            "new",
            &name,
            "--kind",
            kind,
            "--dir",
            &crate_dir.display().to_string(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "--manifest-path",
            ])
            .arg(crate_dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("CARGO_ENCODED_RUSTFLAGS", "")
            .env_remove("RUSTFLAGS");
        let built = cargo.output().expect("cargo");
        assert!(built.status.success(), "{kind}: {}", text(&built));
        let core = target_dir
            .join("wasm32-unknown-unknown/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let component = dir.path.join(format!("{name}.wasm"));
        let out = sluice(&[
            "plugins",
            "componentize",
            &core.display().to_string(),
            "--world",
            kind,
            "-o",
            &component.display().to_string(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let out = sluice(&["plugins", "check", &component.display().to_string()]);
        assert!(out.status.success(), "{}", text(&out));
        let json: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(json["kind"], kind);
        assert_eq!(json["wasi"], false);
    }
    let out = sluice(&["plugins", "new", "Bad Name", "--kind", "router"]);
    assert!(!out.status.success());
}
