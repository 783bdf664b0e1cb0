//! Builds the plugin test fixtures under `plugins/fixtures/` into components and
//! tells the tests where they are (`src/fixtures.rs`).

#[path = "../plugins/build_support.rs"]
mod build_support;

use build_support::Plugin;

const FIXTURES: &[Plugin] = &[
    // Loops, exhausts memory or panics on demand.
    Plugin {
        package: "chaos",
        target: "wasm32-unknown-unknown",
    },
    // Built for WASI, tries files, env and sockets.
    Plugin {
        package: "wasi-probe",
        target: "wasm32-wasip2",
    },
    // The built-ins again, as files, for hot-reload tests.
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
    Plugin {
        package: "default",
        target: "wasm32-unknown-unknown",
    },
];

fn main() {
    let built = build_support::build(FIXTURES);
    build_support::write_out("fixtures.rs", &built, false);
}
