//! The `router` world: order a config's targets for one request, from what the
//! gateway has seen of each lately.

use serde::de::DeserializeOwned;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "router",
        path: "../wit/v0.1.1",
        pub_export_macro: true,
        export_macro_name: "__export_router_world",
        default_bindings_module: "::sluice_plugin_sdk::router::bindings",
        runtime_path: "::sluice_plugin_sdk::__wit_bindgen::rt",
    });
}

pub use bindings::exports::sluice::plugin::routing::{Candidate, RouteInput};
pub use bindings::sluice::plugin::host::{Level, log};
pub use bindings::sluice::plugin::types::{Endpoint, Error, Pair};

/// A router. Implement [`Router::route`]; everything else has a default.
pub trait Router {
    /// The per-use configuration (the strategy's `parameters` in a config).
    type Config: DeserializeOwned;
    /// One line for `sluice plugins list`.
    const DESCRIPTION: &'static str = "";
    /// JSON Schema of [`Router::Config`]; empty when not given.
    const CONFIG_SCHEMA: &'static str = "";
    /// Whether [`RouteInput::body`] should carry the whole body.
    const WANTS_BODY: bool = false;

    /// Checks a configuration beyond parsing; called once when a config is loaded.
    fn validate(_config: &Self::Config) -> Result<(), Error> {
        Ok(())
    }

    /// The order to try the candidates in, by their `index`.
    fn route(config: &Self::Config, input: &RouteInput) -> Result<Vec<u32>, Error>;
}

impl RouteInput {
    /// The candidates whose circuit is closed (all of them when every one is open,
    /// so that a request is tried rather than refused).
    pub fn available(&self) -> Vec<&Candidate> {
        let open: Vec<&Candidate> = self.candidates.iter().filter(|c| !c.circuit_open).collect();
        if open.is_empty() {
            self.candidates.iter().collect()
        } else {
            open
        }
    }
}

/// Exports a [`Router`] as the component's `router` world.
#[macro_export]
macro_rules! export_router {
    ($plugin:ty) => {
        const _: () = {
            struct __SluiceExport;
            $crate::__export_meta!(
                __SluiceExport,
                $plugin,
                Router,
                $crate::router::Router,
                $crate::router::bindings
            );
            impl $crate::router::bindings::exports::sluice::plugin::routing::Guest
                for __SluiceExport
            {
                fn route(
                    config: String,
                    input: $crate::router::RouteInput,
                ) -> Result<Vec<u32>, $crate::router::Error> {
                    ::std::thread_local! {
                        static CONFIG: $crate::ConfigCache<
                            <$plugin as $crate::router::Router>::Config,
                        > = $crate::ConfigCache::default();
                    }
                    CONFIG.with(|cache| {
                        let config = cache
                            .get(&config)
                            .map_err($crate::router::Error::InvalidConfig)?;
                        <$plugin as $crate::router::Router>::route(&config, &input)
                    })
                }
            }
            $crate::router::bindings::__export_router_world!(
                __SluiceExport with_types_in $crate::router::bindings
            );
            $crate::__stamp_sdk_version!();
        };
    };
}
