//! The `guardrail` world: check a request before it leaves, or a response before
//! it returns; pass it, fail it, or rewrite its text.
//!
//! What the host lends a check (WIT 0.1.1), re-exported here: [`log`],
//! [`now_millis`] (the wall clock), [`request_header`] (a header of the request
//! being checked; never the gateway's own credentials) and [`fetch`] (an HTTP
//! call the gateway makes for the plugin, under its SSRF policy, with a
//! timeout, answers up to 1 MiB and, for GETs that ask, a shared cache). These
//! are imports of the component: they run only inside the gateway, so test
//! the logic around them natively and the calls end to end (see `plugins/jwt`).

use serde::de::DeserializeOwned;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "guardrail",
        path: "../wit/v0.1.1",
        pub_export_macro: true,
        export_macro_name: "__export_guardrail_world",
        default_bindings_module: "::sluice_plugin_sdk::guardrail::bindings",
        runtime_path: "::sluice_plugin_sdk::__wit_bindgen::rt",
    });
}

pub use bindings::exports::sluice::plugin::checks::{CheckInput, Failure, Outcome, Verdict};
pub use bindings::sluice::plugin::host::{
    HttpRequest, HttpResponse, Level, fetch, log, now_millis, request_header,
};
pub use bindings::sluice::plugin::types::{Endpoint, Error, Pair, Role, Segment, Stage};

/// A guardrail. Implement [`Guardrail::check`]; everything else has a default.
pub trait Guardrail {
    /// The per-use configuration (the check's `parameters` in a config).
    type Config: DeserializeOwned;
    /// One line for `sluice plugins list`.
    const DESCRIPTION: &'static str = "";
    /// JSON Schema of [`Guardrail::Config`], for tools; empty when not given.
    const CONFIG_SCHEMA: &'static str = "";
    /// Whether [`CheckInput::body`] should carry the whole body.
    const WANTS_BODY: bool = false;

    /// Checks a configuration beyond what parsing it checked; called once when
    /// a config using this guardrail is loaded.
    fn validate(_config: &Self::Config) -> Result<(), Error> {
        Ok(())
    }

    /// Checks one request (or response).
    fn check(config: &Self::Config, input: &CheckInput) -> Result<Verdict, Error>;
}

impl Verdict {
    /// The check passed.
    pub fn pass() -> Self {
        Self::with(Outcome::Pass)
    }

    /// The check failed; the hook's `deny` decides what happens to the request.
    pub fn fail(reason: impl Into<String>) -> Self {
        Self::with(Outcome::Fail(Failure {
            reason: reason.into(),
            deny: false,
        }))
    }

    /// The check failed and the request must be denied whatever the hook says.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self::with(Outcome::Fail(Failure {
            reason: reason.into(),
            deny: true,
        }))
    }

    /// Replace the text of the input's segments (same number, same order).
    pub fn rewrite(segments: Vec<Segment>) -> Self {
        Self::with(Outcome::Rewrite(segments))
    }

    /// Adds a score in [0, 1] for the logs.
    pub fn with_score(mut self, score: f64) -> Self {
        self.score = Some(score);
        self
    }

    /// Adds data for the hook results.
    pub fn with_data(mut self, data: &serde_json::Value) -> Self {
        self.data = Some(data.to_string());
        self
    }

    fn with(outcome: Outcome) -> Self {
        Self {
            outcome,
            score: None,
            data: None,
        }
    }
}

impl CheckInput {
    /// The segments' text, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(|s| s.text.as_str())
    }

    /// The first segment matching `pred`.
    pub fn find(&self, pred: impl FnMut(&&Segment) -> bool) -> Option<&Segment> {
        self.segments.iter().find(pred)
    }

    /// A metadata value.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    /// The segments with every text passed through `f`, for [`Verdict::rewrite`].
    pub fn map_texts(&self, mut f: impl FnMut(&str) -> String) -> Vec<Segment> {
        self.segments
            .iter()
            .map(|s| Segment {
                role: s.role,
                text: f(&s.text),
            })
            .collect()
    }
}

/// Exports a [`Guardrail`] as the component's `guardrail` world.
#[macro_export]
macro_rules! export_guardrail {
    ($plugin:ty) => {
        const _: () = {
            use $crate::guardrail::Guardrail as _;
            struct __SluiceExport;
            $crate::__export_meta!(
                __SluiceExport,
                $plugin,
                Guardrail,
                $crate::guardrail::Guardrail,
                $crate::guardrail::bindings
            );
            impl $crate::guardrail::bindings::exports::sluice::plugin::checks::Guest
                for __SluiceExport
            {
                fn check(
                    config: String,
                    input: $crate::guardrail::CheckInput,
                ) -> Result<$crate::guardrail::Verdict, $crate::guardrail::Error> {
                    ::std::thread_local! {
                        static CONFIG: $crate::ConfigCache<
                            <$plugin as $crate::guardrail::Guardrail>::Config,
                        > = $crate::ConfigCache::default();
                    }
                    CONFIG.with(|cache| {
                        let config = cache
                            .get(&config)
                            .map_err($crate::guardrail::Error::InvalidConfig)?;
                        <$plugin as $crate::guardrail::Guardrail>::check(&config, &input)
                    })
                }
            }
            $crate::guardrail::bindings::__export_guardrail_world!(
                __SluiceExport with_types_in $crate::guardrail::bindings
            );
            $crate::__stamp_sdk_version!();
        };
    };
}
