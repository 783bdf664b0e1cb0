//! Builds the first-party plugins under `plugins/` into components and embeds them
//! as built-ins (`src/plugins/builtin.rs`), so `cargo run` needs no extra step.

#[path = "../plugins/build_support.rs"]
mod build_support;

use build_support::Plugin;

/// The built-ins: one of each world, the `default` checks, and the checks that
/// need the host (`jwt`, `webhook`, `log`).
const BUILTINS: &[Plugin] = &[
    Plugin::new("blocklist", "wasm32-unknown-unknown"),
    Plugin::new("default", "wasm32-unknown-unknown"),
    Plugin::new("jwt", "wasm32-unknown-unknown"),
    Plugin::new("webhook", "wasm32-unknown-unknown"),
    Plugin {
        name: "log",
        ..Plugin::new("http-log", "wasm32-unknown-unknown")
    },
    Plugin::new("ollama-native", "wasm32-unknown-unknown"),
    Plugin::new("latency-router", "wasm32-unknown-unknown"),
];

fn main() {
    let built = build_support::build(BUILTINS);
    build_support::write_out("builtins.rs", &built, true);
}
