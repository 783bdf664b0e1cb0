//! The `provider` world: an adapter for an API the core does not speak. The host
//! does the I/O; the adapter builds the upstream request and reads the answer,
//! streamed or whole, into OpenAI's shape.

use serde::de::DeserializeOwned;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "provider",
        path: "../wit/v0.1.1",
        pub_export_macro: true,
        export_macro_name: "__export_provider_world",
        default_bindings_module: "::sluice_plugin_sdk::provider::bindings",
        runtime_path: "::sluice_plugin_sdk::__wit_bindgen::rt",
    });
}

pub use bindings::exports::sluice::plugin::adapter::{Call, HttpRequest};
pub use bindings::sluice::plugin::host::{Level, log};
pub use bindings::sluice::plugin::types::{Endpoint, Error, Pair, UpstreamError};

/// A provider adapter.
pub trait Provider {
    /// The target's provider settings in a config (besides `provider` itself).
    type Config: DeserializeOwned;
    /// Translates one streamed answer.
    type Stream: StreamTranslator + 'static;
    /// One line for `sluice plugins list`.
    const DESCRIPTION: &'static str = "";
    /// JSON Schema of [`Provider::Config`]; empty when not given.
    const CONFIG_SCHEMA: &'static str = "";
    /// Not used by providers (the body is always given).
    const WANTS_BODY: bool = true;
    /// The endpoints the adapter serves.
    const ENDPOINTS: &'static [Endpoint];

    /// Checks a configuration beyond parsing; called once when a config is loaded.
    fn validate(_config: &Self::Config) -> Result<(), Error> {
        Ok(())
    }

    /// Builds the upstream request.
    fn build_request(config: &Self::Config, call: &Call) -> Result<HttpRequest, Error>;

    /// Reads a complete answer into an OpenAI response body (JSON text).
    fn parse_response(
        endpoint: Endpoint,
        status: u16,
        headers: &[Pair],
        body: &[u8],
    ) -> Result<String, Error>;

    /// A translator for one streamed answer.
    fn stream(endpoint: Endpoint, model: Option<String>) -> Self::Stream;
}

/// Turns a streamed upstream body into OpenAI chat-completion chunks.
pub trait StreamTranslator {
    /// The next bytes (split anywhere) → the chunks completed so far.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, Error>;
    /// The stream ended → the last chunks.
    fn finish(&mut self) -> Result<Vec<String>, Error>;
}

/// Splits bytes that arrive in pieces into lines (NDJSON, SSE).
#[derive(Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Adds bytes; returns the lines they completed, without line endings.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            lines.push(text.trim_end_matches(['\n', '\r']).to_owned());
        }
        lines
    }

    /// The unterminated last line, if any.
    pub fn rest(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.partial);
        let text = String::from_utf8_lossy(&rest).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }
}

impl Call {
    /// The request body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, Error> {
        serde_json::from_str(&self.body)
            .map_err(|e| Error::InvalidInput(format!("the request body is not JSON: {e}")))
    }
}

impl HttpRequest {
    /// A POST with a JSON body.
    pub fn post_json(url: impl Into<String>, body: &serde_json::Value) -> Self {
        Self {
            method: "POST".into(),
            url: url.into(),
            headers: vec![Pair {
                key: "content-type".into(),
                value: "application/json".into(),
            }],
            body: body.to_string().into_bytes(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Pair {
            key: key.into(),
            value: value.into(),
        });
        self
    }
}

/// Exports a [`Provider`] as the component's `provider` world.
#[macro_export]
macro_rules! export_provider {
    ($plugin:ty) => {
        const _: () = {
            use $crate::provider::bindings::exports::sluice::plugin::adapter as __adapter;
            struct __SluiceExport;
            struct __SluiceStream(
                ::std::cell::RefCell<<$plugin as $crate::provider::Provider>::Stream>,
            );
            ::std::thread_local! {
                static CONFIG: $crate::ConfigCache<
                    <$plugin as $crate::provider::Provider>::Config,
                > = $crate::ConfigCache::default();
            }
            $crate::__export_meta!(
                __SluiceExport,
                $plugin,
                Provider,
                $crate::provider::Provider,
                $crate::provider::bindings
            );
            impl __adapter::Guest for __SluiceExport {
                type StreamTranslator = __SluiceStream;
                fn endpoints() -> Vec<$crate::provider::Endpoint> {
                    <$plugin as $crate::provider::Provider>::ENDPOINTS.to_vec()
                }
                fn build_request(
                    call: $crate::provider::Call,
                ) -> Result<$crate::provider::HttpRequest, $crate::provider::Error> {
                    CONFIG.with(|cache| {
                        let config = cache
                            .get(&call.options)
                            .map_err($crate::provider::Error::InvalidConfig)?;
                        <$plugin as $crate::provider::Provider>::build_request(&config, &call)
                    })
                }
                fn parse_response(
                    endpoint: $crate::provider::Endpoint,
                    status: u16,
                    headers: Vec<$crate::provider::Pair>,
                    body: Vec<u8>,
                ) -> Result<String, $crate::provider::Error> {
                    <$plugin as $crate::provider::Provider>::parse_response(
                        endpoint, status, &headers, &body,
                    )
                }
            }
            impl __adapter::GuestStreamTranslator for __SluiceStream {
                fn new(endpoint: $crate::provider::Endpoint, model: Option<String>) -> Self {
                    __SluiceStream(::std::cell::RefCell::new(
                        <$plugin as $crate::provider::Provider>::stream(endpoint, model),
                    ))
                }
                fn push(&self, bytes: Vec<u8>) -> Result<Vec<String>, $crate::provider::Error> {
                    $crate::provider::StreamTranslator::push(&mut *self.0.borrow_mut(), &bytes)
                }
                fn finish(&self) -> Result<Vec<String>, $crate::provider::Error> {
                    $crate::provider::StreamTranslator::finish(&mut *self.0.borrow_mut())
                }
            }
            $crate::provider::bindings::__export_provider_world!(
                __SluiceExport with_types_in $crate::provider::bindings
            );
            $crate::__stamp_sdk_version!();
        };
    };
}
