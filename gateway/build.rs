//! Builds the first-party plugins under `plugins/` into components and embeds them
//! as built-ins (`src/plugins/builtin.rs`), so `cargo run` needs no extra step.

#[path = "../plugins/build_support.rs"]
mod build_support;

use build_support::Plugin;

/// The built-ins: one of each world, and the `default` checks.
const BUILTINS: &[Plugin] = &[
    Plugin {
        package: "blocklist",
        target: "wasm32-unknown-unknown",
    },
    Plugin {
        package: "default",
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
    build_support::write_out("builtins.rs", &built, true);
}
