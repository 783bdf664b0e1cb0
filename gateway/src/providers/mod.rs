//! Providers: how a unified (OpenAI-shaped) call becomes an upstream HTTP request,
//! and how the answer comes back.
//!
//! Every provider implements [`Provider`]; the pipeline holds `Arc<dyn Provider>`
//! from the [`Registry`] and does not know what is behind it. The OpenAI-wire
//! providers are one implementation driven by data (`catalog.toml`); native
//! adapters (`anthropic`, `google`, `vertex-ai`, `cohere`, `bedrock`, sharing
//! `native.rs`)
//! and wasm provider plugins register into the same registry. Providers build
//! requests and map answers; they do no I/O — the `upstream` module does.
//!
//! Two client formats besides OpenAI's chat are served over chat completions
//! for providers that lack them: Anthropic's Messages API ([`messages`]) and
//! OpenAI's Responses API ([`responses`]); the proxy converts requests and
//! answers at the edges.

mod anthropic;
mod bedrock;
pub mod body;
mod cohere;
mod endpoint;
mod google;
mod native;
mod openai_compatible;
/// OpenAI's Responses API as an ingress format, over chat completions.
pub mod responses;
mod spec;
pub mod sse;
mod vertex;
mod wasm;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde_json::{Map, Value};

pub use anthropic::Anthropic;
/// Anthropic's Messages API as an ingress format, over chat completions.
pub use anthropic::ingress as messages;
pub use bedrock::Bedrock;
pub use cohere::Cohere;
pub use endpoint::{BodyKind, Endpoint};
pub use google::Google;
pub use native::FromChatChunks;
pub use openai_compatible::OpenAiCompatible;
pub use spec::{Auth, ProviderSpec};
pub use sse::SseData;
pub use vertex::Vertex;
pub use wasm::WasmProvider;

use crate::GatewayError;
use crate::config::Secret;
use crate::config::reader::{Problems, join, toml_document};
use crate::upstream::TokenSource;

/// The built-in catalog of OpenAI-wire providers.
pub const CATALOG: &str = include_str!("catalog.toml");

/// Everything a provider needs to build one upstream request.
#[derive(Debug)]
pub struct Call<'a> {
    pub endpoint: Endpoint,
    pub method: Method,
    /// The provider key (config `api_key`, or the client's bearer token).
    pub api_key: Option<&'a Secret>,
    /// A base URL given by the client instead of the provider's own.
    pub custom_host: Option<&'a str>,
    /// Provider-specific settings from the config target.
    pub options: &'a Map<String, Value>,
    /// The client's headers (for `x-portkey-<var>` settings).
    pub client_headers: &'a HeaderMap,
    /// Client header names to forward as they are.
    pub forward_headers: &'a [http::HeaderName],
    /// The client's query string.
    pub query: Option<&'a str>,
    /// For [`Endpoint::Proxy`]: the path after `/v1`.
    pub proxy_path: &'a str,
    /// The body to send, already prepared by the pipeline.
    pub body: Bytes,
    /// The access token fetched for [`Provider::token_source`], if it asked.
    pub token: Option<&'a Secret>,
}

/// An HTTP request for the upstream client to send.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub method: Method,
    pub url: url::Url,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One provider. Native adapters and wasm plugins implement the same trait.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The slug clients name it by.
    fn slug(&self) -> &str;

    /// Whether it serves `endpoint`.
    fn supports(&self, endpoint: Endpoint) -> bool;

    /// [`Provider::supports`] as the error a client gets when it does not.
    fn require(&self, endpoint: Endpoint) -> Result<(), GatewayError> {
        if self.supports(endpoint) {
            Ok(())
        } else {
            Err(GatewayError::UnsupportedEndpoint {
                provider: self.slug().to_owned(),
                endpoint: endpoint.describe(),
            })
        }
    }

    /// Whether `endpoint` is served natively for `model` (by default, whether
    /// it is served at all). Bedrock and Vertex AI take Anthropic's Messages
    /// API as it is only for Claude models; other models get it over chat
    /// completions.
    fn serves(&self, endpoint: Endpoint, _model: Option<&str>) -> bool {
        self.supports(endpoint)
    }

    /// An access token the call needs first (an OAuth exchange of the
    /// credentials the call carries); the pipeline fetches it, caches it and
    /// passes it in [`Call::token`].
    fn token_source(&self, _call: &Call<'_>) -> Result<Option<TokenSource>, GatewayError> {
        Ok(None)
    }

    /// Builds the upstream request for a call.
    fn build_request<'a>(&'a self, call: &'a Call<'a>) -> ProviderFuture<'a, UpstreamRequest>;

    /// Maps a complete upstream answer to the unified shape: a 2xx body, or
    /// (when [`Provider::maps_errors`]) an error answer into the error to return.
    /// The identity for providers of the OpenAI wire format.
    fn map_response<'a>(
        &'a self,
        _endpoint: Endpoint,
        _status: http::StatusCode,
        _headers: &'a HeaderMap,
        body: Bytes,
        _options: &'a AnswerOptions,
    ) -> ProviderFuture<'a, Bytes> {
        Box::pin(std::future::ready(Ok(body)))
    }

    /// Whether error answers go through [`Provider::map_response`] too (adapters
    /// that know their upstream's error shape). Otherwise a JSON error answer is
    /// passed through and any other is wrapped in OpenAI's shape.
    fn maps_errors(&self) -> bool {
        false
    }

    /// How a stream's token usage is had when the client did not ask for it
    /// (the gateway counts tokens for limits, budgets and the request log).
    fn stream_usage(&self) -> StreamUsage {
        StreamUsage::IfAsked
    }

    /// A translator for a streamed 2xx answer into OpenAI's SSE chunks; `None`
    /// passes the upstream's SSE through as it is.
    fn stream_translator<'a>(
        &'a self,
        _endpoint: Endpoint,
        _options: AnswerOptions,
    ) -> ProviderFuture<'a, Option<Box<dyn ChunkTranslator>>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// How a provider's streams report token usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUsage {
    /// Only when the client asks (`stream_options.include_usage`).
    IfAsked,
    /// The adapter makes OpenAI's usage chunk from its upstream's stream
    /// when [`AnswerOptions::include_usage`] says so.
    Translated,
    /// The upstream speaks OpenAI's format and takes
    /// `stream_options.include_usage` in the body.
    Requested,
}

/// What mapping an answer needs to know of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerOptions {
    /// The request's model (the answer's until the upstream names its own).
    pub model: Option<String>,
    /// `stream_options.include_usage`: end a stream with a usage chunk.
    pub include_usage: bool,
    /// Portkey's `strict_open_ai_compliance` (default true): when false,
    /// adapters add what OpenAI's shape has no field for (thinking blocks).
    pub strict: bool,
}

impl Default for AnswerOptions {
    fn default() -> Self {
        Self {
            model: None,
            include_usage: false,
            strict: true,
        }
    }
}

/// A boxed future, so providers can be trait objects.
pub type ProviderFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, GatewayError>> + Send + 'a>>;

/// Translates one streamed answer: upstream bytes in (split anywhere), event
/// JSON texts out — OpenAI chunks, or Anthropic's events on the Messages API
/// (Bedrock's InvokeModel stream); the relay frames them as SSE.
pub trait ChunkTranslator: Send {
    fn push<'a>(&'a mut self, bytes: &'a [u8]) -> ProviderFuture<'a, Vec<String>>;
    /// The stream ended.
    fn finish(self: Box<Self>) -> ProviderFuture<'static, Vec<String>>;
}

/// The providers the gateway knows, by slug.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_slug: BTreeMap<String, Arc<dyn Provider>>,
}

impl Registry {
    /// The built-in catalog and native adapters, plus `extra` specs (which
    /// replace same-slug entries).
    pub fn new(extra: &[ProviderSpec]) -> Result<Self, Problems> {
        let mut registry = Self::default();
        for spec in parse_catalog(CATALOG, "catalog")? {
            registry.register(Arc::new(OpenAiCompatible::new(spec)));
        }
        registry.register(Arc::new(Anthropic::new()?));
        registry.register(Arc::new(Google::new()?));
        registry.register(Arc::new(Cohere::new()?));
        registry.register(Arc::new(Bedrock::new()?));
        registry.register(Arc::new(Vertex::new()?));
        for spec in extra {
            registry.register(Arc::new(OpenAiCompatible::new(spec.clone())));
        }
        Ok(registry)
    }

    /// Adds or replaces a provider (how native adapters and plugins join).
    pub fn register(&mut self, provider: Arc<dyn Provider>) {
        self.by_slug.insert(provider.slug().to_owned(), provider);
    }

    /// The provider named `slug`.
    pub fn get(&self, slug: &str) -> Option<&Arc<dyn Provider>> {
        self.by_slug.get(slug)
    }

    /// Whether `slug` names a provider.
    pub fn contains(&self, slug: &str) -> bool {
        self.by_slug.contains_key(slug)
    }

    /// All slugs, sorted.
    pub fn slugs(&self) -> impl Iterator<Item = &str> {
        self.by_slug.keys().map(String::as_str)
    }
}

/// Parses a catalog document: a TOML array of `[[provider]]` tables.
pub fn parse_catalog(text: &str, path: &str) -> Result<Vec<ProviderSpec>, Problems> {
    let mut problems = Problems::default();
    let value = toml_document(text, path)?;
    let items = value
        .get("provider")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let specs = specs_from_values(&mut problems, &join(path, "provider"), &items);
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(problems)
    }
}

/// Reads a list of provider entries at `path`.
pub fn specs_from_values(
    problems: &mut Problems,
    path: &str,
    items: &[Value],
) -> Vec<ProviderSpec> {
    items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| ProviderSpec::from_value(problems, &join(path, &format!("[{i}]")), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_has_every_required_provider() {
        let registry = Registry::new(&[]).expect("catalog parses");
        for slug in [
            "openai",
            "azure-openai",
            "groq",
            "together-ai",
            "mistral-ai",
            "deepseek",
            "fireworks-ai",
            "openrouter",
            "perplexity-ai",
            "x-ai",
            "cerebras",
            "deepinfra",
            "ollama",
            "anyscale",
            "nebius",
            "sambanova",
            "moonshot",
            "lambda",
            "novita-ai",
            "siliconflow",
            "hyperbolic",
            "huggingface",
            "lm-studio",
            "openai-compatible",
            "azure-ai",
            "anthropic",
            "google",
            "cohere",
            "bedrock",
            "vertex-ai",
        ] {
            assert!(registry.contains(slug), "{slug} missing");
        }
    }

    #[test]
    fn config_entries_replace_and_extend_the_catalog() {
        let extra = parse_catalog(
            "[[provider]]\nslug = \"groq\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[[provider]]\nslug = \"my-vllm\"\nbase_url = \"http://10.0.0.2/v1\"\n",
            "x",
        )
        .expect("parses");
        let registry = Registry::new(&extra).expect("ok");
        assert!(registry.contains("my-vllm"));
        assert!(
            registry
                .get("groq")
                .is_some_and(|p| p.supports(Endpoint::Embeddings))
        );
    }
}
