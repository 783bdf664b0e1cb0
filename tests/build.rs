//! Builds the plugin test fixtures under `plugins/fixtures/` into components and
//! tells the tests where they are (`src/fixtures.rs`).

#[path = "../plugins/build_support.rs"]
mod build_support;

use build_support::Plugin;

const FIXTURES: &[Plugin] = &[
    // Loops, exhausts memory or panics on demand.
    Plugin::new("chaos", "wasm32-unknown-unknown"),
    // Built for WASI, tries files, env and sockets.
    Plugin::new("wasi-probe", "wasm32-wasip2"),
    // The built-ins again, as files, for hot-reload tests.
    Plugin::new("blocklist", "wasm32-unknown-unknown"),
    Plugin::new("ollama-native", "wasm32-unknown-unknown"),
    Plugin::new("latency-router", "wasm32-unknown-unknown"),
    Plugin::new("default", "wasm32-unknown-unknown"),
];

fn main() {
    let built = build_support::build(FIXTURES);
    build_support::write_out("fixtures.rs", &built, false);
}
