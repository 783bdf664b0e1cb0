//! A provider plugin (the `provider` world) behind the [`Provider`] trait: the
//! plugin builds the upstream request and reads the answer; the host sends it.
//! Each request holds the plugin version it was routed with, so a reload in the
//! middle of a stream does not change its translator.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::{Call, ChunkTranslator, Endpoint, Provider, ProviderFuture, UpstreamRequest, body};
use crate::GatewayError;
use crate::plugins::{Plugin, PluginError, ProviderCall, StreamTranslator};

/// A loaded provider plugin.
#[derive(Debug, Clone)]
pub struct WasmProvider {
    plugin: Arc<Plugin>,
}

impl WasmProvider {
    /// Wraps a plugin; it must be a provider.
    pub fn new(plugin: Arc<Plugin>) -> Result<Self, PluginError> {
        plugin.as_provider()?;
        Ok(Self { plugin })
    }

    fn bad(&self, what: String) -> GatewayError {
        GatewayError::Plugin(PluginError::Failed {
            plugin: self.plugin.name.to_string(),
            detail: what,
        })
    }

    async fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        self.require(call.endpoint)?;
        let peek = body::peek(&call.body)?;
        let options = serde_json::to_string(call.options)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let built = self
            .plugin
            .as_provider()?
            .build_request(ProviderCall {
                endpoint: call.endpoint,
                body: &call.body,
                model: peek.model.map(|m| m.into_owned()),
                streaming: peek.stream.unwrap_or(false),
                base_url: call.custom_host.map(str::to_owned),
                api_key: call.api_key.map(|k| k.expose().to_owned()),
                options,
            })
            .await?;
        let method = Method::from_bytes(built.method.as_bytes())
            .map_err(|_| self.bad(format!("built an invalid method `{}`", built.method)))?;
        let url = url::Url::parse(&built.url)
            .map_err(|e| self.bad(format!("built an invalid URL: {e}")))?;
        let mut headers = HeaderMap::new();
        for (k, v) in built.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| self.bad(format!("built an invalid header name `{k}`")))?;
            let mut value = HeaderValue::from_str(&v)
                .map_err(|_| self.bad(format!("built an invalid value for header `{k}`")))?;
            if name == http::header::AUTHORIZATION || k.to_ascii_lowercase().contains("key") {
                value.set_sensitive(true);
            }
            headers.append(name, value);
        }
        Ok(UpstreamRequest {
            method,
            url,
            headers,
            body: Bytes::from(built.body),
        })
    }
}

impl Provider for WasmProvider {
    fn slug(&self) -> &str {
        &self.plugin.name
    }

    fn supports(&self, endpoint: Endpoint) -> bool {
        self.plugin
            .as_provider()
            .is_ok_and(|p| p.endpoints.contains(&endpoint))
    }

    fn build_request<'a>(&'a self, call: &'a Call<'a>) -> ProviderFuture<'a, UpstreamRequest> {
        Box::pin(self.build(call))
    }

    fn map_response<'a>(
        &'a self,
        endpoint: Endpoint,
        status: StatusCode,
        headers: &'a http::HeaderMap,
        body: Bytes,
        _options: &'a super::AnswerOptions,
    ) -> ProviderFuture<'a, Bytes> {
        // Header values that are not text are left out (the WIT carries strings).
        let headers: Vec<(String, String)> = headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        Box::pin(async move {
            let text = self
                .plugin
                .as_provider()?
                .parse_response(endpoint, status.as_u16(), headers, &body)
                .await?;
            Ok(Bytes::from(text))
        })
    }

    fn maps_errors(&self) -> bool {
        true
    }

    fn stream_translator<'a>(
        &'a self,
        endpoint: Endpoint,
        options: super::AnswerOptions,
    ) -> ProviderFuture<'a, Option<Box<dyn ChunkTranslator>>> {
        Box::pin(async move {
            let translator = self.plugin.stream(endpoint, options.model).await?;
            Ok(Some(
                Box::new(WasmStream(translator)) as Box<dyn ChunkTranslator>
            ))
        })
    }
}

struct WasmStream(StreamTranslator);

impl ChunkTranslator for WasmStream {
    fn push<'a>(&'a mut self, bytes: &'a [u8]) -> ProviderFuture<'a, Vec<String>> {
        Box::pin(async move { Ok(self.0.push(bytes).await?) })
    }

    fn finish(self: Box<Self>) -> ProviderFuture<'static, Vec<String>> {
        Box::pin(async move { Ok(self.0.finish().await?) })
    }
}
