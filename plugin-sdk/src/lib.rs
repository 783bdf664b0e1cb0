//! The Sluice plugin SDK: what a Rust plugin author depends on.
//!
//! Sluice plugins are WebAssembly components implementing one world of the WIT
//! package `sluice:plugin` (in the repository's `wit/` folder): `guardrail`,
//! `provider` or `router`. This crate will re-export the generated bindings,
//! helpers (segment iteration, verdict builders, config parsing) and one export
//! macro per world. For now it carries the contract's version, which the host
//! checks when it loads a plugin.
#![deny(missing_docs)]

/// The WIT package version this SDK builds plugins against.
pub const WIT_PACKAGE_VERSION: &str = "0.1.0";

/// The SDK's own version, stamped into built components.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_semver() {
        for v in [super::WIT_PACKAGE_VERSION, super::SDK_VERSION] {
            assert_eq!(
                v.split('.').filter(|p| p.parse::<u32>().is_ok()).count(),
                3,
                "{v}"
            );
        }
    }
}
