//! Host bindings of `sluice:plugin@0.1.0` (`wit/v0.1.0/`), one module per world.
//!
//! A released WIT version is frozen. When `0.2.0` comes, it gets a module of its
//! own beside this one, and the loader picks the module from the version in a
//! component's export names, so old plugins keep loading (Zed's per-version host
//! modules).

/// The version of the package, as it appears in export names.
pub const VERSION: &str = "0.1.0";

/// The `guardrail` world, with the shared `types` and `host` interfaces.
pub mod guardrail {
    wasmtime::component::bindgen!({
        world: "guardrail",
        path: "../wit/v0.1.0",
        exports: { default: async },
    });
}

/// The `provider` world; shares `types` and `host` with [`guardrail`].
pub mod provider {
    wasmtime::component::bindgen!({
        world: "provider",
        path: "../wit/v0.1.0",
        exports: { default: async },
        with: {
            "sluice:plugin/types": super::guardrail::sluice::plugin::types,
            "sluice:plugin/host": super::guardrail::sluice::plugin::host,
        },
    });
}

/// The `router` world; shares `types` and `host` with [`guardrail`].
pub mod router {
    wasmtime::component::bindgen!({
        world: "router",
        path: "../wit/v0.1.0",
        exports: { default: async },
        with: {
            "sluice:plugin/types": super::guardrail::sluice::plugin::types,
            "sluice:plugin/host": super::guardrail::sluice::plugin::host,
        },
    });
}

pub use guardrail::sluice::plugin::host;
pub use guardrail::sluice::plugin::types;
