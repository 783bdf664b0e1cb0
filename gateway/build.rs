//! Builds the first-party plugins under `plugins/` into components and embeds them
//! as built-ins (`src/plugins/builtin.rs`), so `cargo run` needs no extra step.

#[path = "../plugins/build_support.rs"]
mod build_support;

use build_support::Plugin;

/// The built-ins: one of each world.
const BUILTINS: &[Plugin] = &[
    Plugin {
        package: "blocklist",
        target: "wasm32-unknown-unknown",
    },
    Plugin {
        package: "ollama-native",
        target: "wasm32-unknown-unknown",
    },
    Plugin {
        package: "latency-router",
        target: "wasm32-unknown-unknown",
    },
];

fn main() {
    let built = build_support::build(BUILTINS);
    let mut table = String::from(
        "/// (name, component) of every built-in plugin.\npub const BUILTINS: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &built {
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    table.push_str("];\n");
    let out =
        std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("builtins.rs");
    if let Err(e) = std::fs::write(&out, table) {
        panic!("cannot write {}: {e}", out.display());
    }
}
