//! Host bindings of `sluice:plugin@0.1` — the newest 0.1 release,
//! `wit/v0.1.1/` — one module per world.
//!
//! A released WIT version is frozen; a new one goes beside it. Versions of one
//! minor line only add (0.1.1 added `host.now-millis`, `host.request-header`
//! and `host.fetch`), so the host binds the newest of the line and loads every
//! older component of it:
//! wasmtime matches a component's `…@0.1.0` imports and exports to these
//! `…@0.1.1` ones by semver. A breaking version (`0.2.0`) would get a module of
//! its own beside this one, picked by the version in a component's export names
//! (Zed's per-version host modules).

/// The newest version of the line, as it appears in export names.
pub const VERSION: &str = "0.1.1";

/// The `guardrail` world, with the shared `types` and `host` interfaces.
pub mod guardrail {
    wasmtime::component::bindgen!({
        world: "guardrail",
        path: "../wit/v0.1.1",
        imports: { "sluice:plugin/host.fetch": async },
        exports: { default: async },
    });
}

/// The `provider` world; shares `types` and `host` with [`guardrail`].
pub mod provider {
    wasmtime::component::bindgen!({
        world: "provider",
        path: "../wit/v0.1.1",
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
        path: "../wit/v0.1.1",
        exports: { default: async },
        with: {
            "sluice:plugin/types": super::guardrail::sluice::plugin::types,
            "sluice:plugin/host": super::guardrail::sluice::plugin::host,
        },
    });
}

pub use guardrail::sluice::plugin::host;
pub use guardrail::sluice::plugin::types;
