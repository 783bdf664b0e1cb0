//! The Sluice plugin SDK: what a Rust plugin author depends on.
//!
//! A Sluice plugin is a WebAssembly component implementing one world of the WIT
//! package `sluice:plugin@0.1.1` (the repository's `wit/` folder): a guardrail, a
//! provider adapter or a router. With this crate a plugin is a type implementing
//! one trait and one export macro:
//!
//! | world | feature | trait | macro |
//! |---|---|---|---|
//! | `guardrail` | `guardrail` | [`Guardrail`](guardrail::Guardrail) | [`export_guardrail!`] |
//! | `provider` | `provider` | [`Provider`](provider::Provider) | [`export_provider!`] |
//! | `router` | `router` | [`Router`](router::Router) | [`export_router!`] |
//!
//! Enable exactly one feature: the bindings of every enabled world are linked
//! into the component. Build for `wasm32-unknown-unknown` and turn the core
//! module into a component (`sluice plugins componentize`, or
//! `wasm-tools component new`); the plugin then imports nothing but the WIT.
//!
//! ```ignore
//! use sluice_plugin_sdk::guardrail::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Config { word: String }
//!
//! struct NoWord;
//!
//! impl Guardrail for NoWord {
//!     type Config = Config;
//!     fn check(config: &Config, input: &CheckInput) -> Result<Verdict, Error> {
//!         match input.find(|s| s.text.contains(&config.word)) {
//!             Some(_) => Ok(Verdict::fail(format!("mentions {}", config.word))),
//!             None => Ok(Verdict::pass()),
//!         }
//!     }
//! }
//!
//! sluice_plugin_sdk::export_guardrail!(NoWord);
//! ```
#![deny(missing_docs)]

extern crate self as sluice_plugin_sdk;

#[cfg(any(
    all(feature = "guardrail", feature = "provider"),
    all(feature = "guardrail", feature = "router"),
    all(feature = "provider", feature = "router"),
))]
compile_error!(
    "enable one of the features `guardrail`, `provider`, `router`: a component implements one world \
     (in a workspace of plugins, build each plugin with its own `cargo build -p NAME` so features do not unify)"
);

#[cfg(feature = "guardrail")]
pub mod guardrail;
#[cfg(feature = "provider")]
pub mod provider;
#[cfg(feature = "router")]
pub mod router;

mod config;
pub use config::{ConfigCache, parse_config};

#[doc(hidden)]
pub use serde_json as __serde_json;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The WIT package version this SDK builds plugins against.
pub const WIT_PACKAGE_VERSION: &str = "0.1.1";

/// The SDK's own version, stamped into built components (custom section
/// [`SDK_VERSION_SECTION`]) and checked by the host when it loads them.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name of the custom section holding [`SDK_VERSION`].
pub const SDK_VERSION_SECTION: &str = "sluice-sdk-version";

#[doc(hidden)]
pub const __SDK_VERSION_LEN: usize = SDK_VERSION.len();

#[doc(hidden)]
pub const __SDK_VERSION_BYTES: [u8; __SDK_VERSION_LEN] = {
    let src = SDK_VERSION.as_bytes();
    let mut out = [0u8; __SDK_VERSION_LEN];
    let mut i = 0;
    while i < __SDK_VERSION_LEN {
        out[i] = src[i];
        i += 1;
    }
    out
};

/// Writes the SDK version into the component as a custom section. Used by the
/// export macros; a plugin does not call it.
#[doc(hidden)]
#[macro_export]
macro_rules! __stamp_sdk_version {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(link_section = "sluice-sdk-version")]
        #[used]
        static __SLUICE_SDK_VERSION: [u8; $crate::__SDK_VERSION_LEN] = $crate::__SDK_VERSION_BYTES;
    };
}

/// Implements the `meta` interface on the export type `$export` of a plugin:
/// name and version from the plugin crate, the rest from its trait's constants.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_meta {
    ($export:ident, $plugin:ty, $kind:ident, $trait:path, $($bindings:tt)*) => {
        impl $($bindings)*::exports::sluice::plugin::meta::Guest for $export {
            fn describe() -> $($bindings)*::sluice::plugin::types::PluginInfo {
                $($bindings)*::sluice::plugin::types::PluginInfo {
                    name: env!("CARGO_PKG_NAME").into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    kind: $($bindings)*::sluice::plugin::types::Kind::$kind,
                    description: <$plugin as $trait>::DESCRIPTION.into(),
                    config_schema: <$plugin as $trait>::CONFIG_SCHEMA.into(),
                    wants_body: <$plugin as $trait>::WANTS_BODY,
                }
            }
            fn validate_config(
                config: String,
            ) -> Result<(), $($bindings)*::sluice::plugin::types::Error> {
                let parsed = $crate::parse_config::<<$plugin as $trait>::Config>(&config)
                    .map_err($($bindings)*::sluice::plugin::types::Error::InvalidConfig)?;
                <$plugin as $trait>::validate(&parsed)
            }
        }
    };
}

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
        assert_eq!(&super::__SDK_VERSION_BYTES, super::SDK_VERSION.as_bytes());
    }
}
