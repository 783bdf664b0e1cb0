//! Every provider that speaks OpenAI's wire format, driven by its [`ProviderSpec`].
//! The body is sent as prepared; only the URL, auth and a few headers differ.

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use std::collections::BTreeMap;

use super::spec::{fill, template_vars};
use super::{
    Auth, BodyKind, Call, Endpoint, Provider, ProviderFuture, ProviderSpec, UpstreamRequest,
};
use crate::GatewayError;

const UA: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

/// A provider of the OpenAI wire format.
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    spec: ProviderSpec,
    /// The base URL parsed once, when it has no `{var}` to fill.
    fixed_base: Option<url::Url>,
    /// For every variable the templates use, the two request headers that may
    /// carry it (built once, not per request).
    var_headers: BTreeMap<String, [HeaderName; 2]>,
}

impl OpenAiCompatible {
    /// Wraps a spec.
    pub fn new(spec: ProviderSpec) -> Self {
        let fixed_base = spec
            .base_url
            .as_deref()
            .filter(|b| !b.contains('{'))
            .and_then(|b| url::Url::parse(b).ok());
        let templates = spec
            .base_url
            .iter()
            .chain(spec.deployment_path.iter())
            .chain(spec.query.values())
            .chain(spec.headers.values());
        let var_headers = templates
            .flat_map(|t| template_vars(t))
            .filter_map(|var| {
                let suffix = spec.header_for(var);
                let portkey =
                    HeaderName::from_bytes(format!("x-portkey-{suffix}").as_bytes()).ok()?;
                let sluice =
                    HeaderName::from_bytes(format!("x-sluice-{suffix}").as_bytes()).ok()?;
                Some((var.to_owned(), [portkey, sluice]))
            })
            .collect();
        Self {
            spec,
            fixed_base,
            var_headers,
        }
    }

    /// A variable's value: config target option, then `x-portkey-`/`x-sluice-`
    /// header, then the catalog default.
    fn var(&self, call: &Call<'_>, name: &str) -> Option<String> {
        if let Some(Value::String(s)) = call.options.get(name) {
            return Some(s.clone());
        }
        self.var_headers
            .get(name)
            .into_iter()
            .flatten()
            .find_map(|header| {
                call.client_headers
                    .get(header)?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })
            .or_else(|| self.spec.defaults.get(name).cloned())
    }

    /// A variable that goes into a URL host or path: must be present and plain.
    fn url_var(&self, call: &Call<'_>, name: &str) -> Result<String, GatewayError> {
        let value = self
            .var(call, name)
            .ok_or_else(|| GatewayError::MissingProviderSetting {
                provider: self.spec.slug.clone(),
                what: format!(
                    "`{name}` (config field `{name}` or header `x-portkey-{}`)",
                    self.spec.header_for(name)
                ),
            })?;
        let plain = !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if plain {
            Ok(value)
        } else {
            Err(GatewayError::invalid(
                format!("`{name}` may hold only letters, digits, `-`, `_` and `.`"),
                Some(name),
            ))
        }
    }

    fn fill_url(&self, call: &Call<'_>, template: &str) -> Result<String, GatewayError> {
        let mut failure = None;
        let filled = fill(template, &mut |name| match self.url_var(call, name) {
            Ok(v) => Some(v),
            Err(e) => {
                failure.get_or_insert(e);
                None
            }
        });
        match (filled, failure) {
            (Some(s), _) => Ok(s),
            (None, Some(e)) => Err(e),
            (None, None) => Err(GatewayError::Internal(format!("bad template `{template}`"))),
        }
    }

    fn url(&self, call: &Call<'_>) -> Result<url::Url, GatewayError> {
        let parse = |base: &str| {
            url::Url::parse(base).map_err(|e| {
                GatewayError::invalid(
                    format!("custom host is not a valid URL: {e}"),
                    Some("custom_host"),
                )
            })
        };
        let mut url = match (call.custom_host, &self.fixed_base, &self.spec.base_url) {
            (Some(host), _, _) => parse(host)?,
            (None, Some(fixed), _) => fixed.clone(),
            (None, None, Some(template)) => parse(&self.fill_url(call, template)?)?,
            (None, None, None) => {
                return Err(GatewayError::MissingProviderSetting {
                    provider: self.spec.slug.clone(),
                    what: "a custom host (header `x-portkey-custom-host` or config `custom_host`)"
                        .into(),
                });
            }
        };
        let deployment = match (
            &self.spec.deployment_path,
            call.endpoint.deployment_scoped(),
        ) {
            (Some(t), true) => self.fill_url(call, t)?,
            _ => String::new(),
        };
        let tail = match call.endpoint {
            Endpoint::Proxy => call.proxy_path,
            other => other.path(),
        };
        let path = format!("{}{deployment}{tail}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.set_query(call.query.filter(|q| !q.is_empty()));
        let client_keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        for (key, template) in &self.spec.query {
            if client_keys.contains(key) {
                continue;
            }
            let value = fill(template, &mut |n| self.var(call, n)).ok_or_else(|| {
                GatewayError::MissingProviderSetting {
                    provider: self.spec.slug.clone(),
                    what: format!("a value for query parameter `{key}`"),
                }
            })?;
            url.query_pairs_mut().append_pair(key, &value);
        }
        Ok(url)
    }

    fn headers(&self, call: &Call<'_>) -> Result<HeaderMap, GatewayError> {
        let mut headers = HeaderMap::new();
        for name in call.forward_headers {
            for value in call.client_headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(UA));
        let content_type = match call.endpoint.body_kind() {
            BodyKind::Json => Some(HeaderValue::from_static("application/json")),
            BodyKind::Multipart | BodyKind::Raw => call.client_headers.get(CONTENT_TYPE).cloned(),
            BodyKind::Empty => None,
        };
        if let Some(ct) = content_type {
            headers.insert(CONTENT_TYPE, ct);
        }
        if let Some(accept) = call.client_headers.get(ACCEPT) {
            headers.insert(ACCEPT, accept.clone());
        }
        for (name, template) in &self.spec.headers {
            let value = fill(template, &mut |n| self.var(call, n));
            if let (Ok(name), Some(Ok(mut value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_deref().map(HeaderValue::from_str),
            ) {
                // Credentials given as templates (Entra tokens) stay out of
                // anything that prints headers.
                value.set_sensitive(name == AUTHORIZATION || name.as_str().ends_with("-key"));
                headers.insert(name, value);
            }
        }
        if let Some(key) = call.api_key {
            let (name, raw) = match &self.spec.auth {
                Auth::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
                Auth::Header(name) => (name.clone(), key.expose().to_owned()),
                Auth::None => return Ok(headers),
            };
            let mut value = HeaderValue::from_str(&raw).map_err(|_| {
                GatewayError::invalid(
                    "the provider key has characters a header cannot carry",
                    None,
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(headers)
    }
}

impl Provider for OpenAiCompatible {
    fn slug(&self) -> &str {
        &self.spec.slug
    }

    fn supports(&self, endpoint: Endpoint) -> bool {
        self.spec.supports(endpoint)
    }

    fn build_request<'a>(&'a self, call: &'a Call<'a>) -> ProviderFuture<'a, UpstreamRequest> {
        Box::pin(std::future::ready(self.build(call)))
    }

    fn stream_usage(&self) -> super::StreamUsage {
        if self.spec.stream_usage {
            super::StreamUsage::Requested
        } else {
            super::StreamUsage::IfAsked
        }
    }
}

impl OpenAiCompatible {
    /// The upstream request: the body as it is, the provider's URL and auth.
    pub fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        self.require(call.endpoint)?;
        Ok(UpstreamRequest {
            method: call.method.clone(),
            url: self.url(call)?,
            headers: self.headers(call)?,
            body: call.body.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use bytes::Bytes;
    use http::Method;
    use serde_json::Map;

    fn call<'a>(
        endpoint: Endpoint,
        key: Option<&'a Secret>,
        headers: &'a HeaderMap,
        options: &'a Map<String, Value>,
    ) -> Call<'a> {
        Call {
            endpoint,
            method: Method::POST,
            api_key: key,
            custom_host: None,
            options,
            client_headers: headers,
            forward_headers: &[],
            query: None,
            proxy_path: "",
            body: Bytes::from_static(b"{}"),
            token: None,
        }
    }

    fn provider(slug: &str) -> OpenAiCompatible {
        let specs =
            crate::providers::parse_catalog(crate::providers::CATALOG, "catalog").expect("catalog");
        OpenAiCompatible::new(
            specs
                .into_iter()
                .find(|s| s.slug == slug)
                .expect("provider"),
        )
    }

    #[test]
    fn openai_gets_a_bearer_key_and_the_endpoint_path() {
        let key = Secret::new("sk-test".into());
        let headers = HeaderMap::new();
        let options = Map::new();
        let req = provider("openai")
            .build(&call(Endpoint::Chat, Some(&key), &headers, &options))
            .expect("request");
        assert_eq!(
            req.url.as_str(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(req.headers[AUTHORIZATION], "Bearer sk-test");
        assert!(req.headers[AUTHORIZATION].is_sensitive());
        assert_eq!(req.headers[CONTENT_TYPE], "application/json");
        assert!(!req.headers.contains_key("openai-organization"));
    }

    #[test]
    fn azure_builds_deployment_urls_from_headers_or_config() {
        let key = Secret::new("az-key".into());
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-portkey-azure-resource-name",
            HeaderValue::from_static("res"),
        );
        headers.insert(
            "x-portkey-azure-deployment-id",
            HeaderValue::from_static("gpt4o"),
        );
        let options = Map::new();
        let req = provider("azure-openai")
            .build(&call(Endpoint::Embeddings, Some(&key), &headers, &options))
            .expect("request");
        assert_eq!(
            req.url.as_str(),
            "https://res.openai.azure.com/openai/deployments/gpt4o/embeddings?api-version=2024-10-21"
        );
        assert_eq!(req.headers["api-key"], "az-key");
        assert!(!req.headers.contains_key(AUTHORIZATION));

        let mut options = Map::new();
        options.insert("resource_name".into(), "cfg".into());
        options.insert("deployment_id".into(), "dep".into());
        options.insert("api_version".into(), "2025-01-01".into());
        let req = provider("azure-openai")
            .build(&call(
                Endpoint::Models,
                Some(&key),
                &HeaderMap::new(),
                &options,
            ))
            .expect("request");
        assert_eq!(
            req.url.as_str(),
            "https://cfg.openai.azure.com/openai/models?api-version=2025-01-01"
        );
    }

    #[test]
    fn azure_takes_an_entra_token_and_azure_ai_builds_foundry_urls() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-portkey-azure-resource-name",
            HeaderValue::from_static("res"),
        );
        headers.insert(
            "x-portkey-azure-deployment-id",
            HeaderValue::from_static("gpt4o"),
        );
        headers.insert(
            "x-portkey-azure-ad-token",
            HeaderValue::from_static("eyJ.entra.token"),
        );
        let options = Map::new();
        let req = provider("azure-openai")
            .build(&call(Endpoint::Chat, None, &headers, &options))
            .expect("request");
        assert_eq!(req.headers[AUTHORIZATION], "Bearer eyJ.entra.token");
        assert!(req.headers[AUTHORIZATION].is_sensitive());
        assert!(!req.headers.contains_key("api-key"));

        let key = Secret::new("foundry-key".into());
        let req = provider("azure-ai")
            .build(&call(Endpoint::Chat, Some(&key), &headers, &options))
            .expect("request");
        assert_eq!(
            req.url.as_str(),
            "https://res.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview"
        );
        assert_eq!(req.headers["api-key"], "foundry-key");
        assert!(!provider("azure-ai").supports(Endpoint::Images));
    }

    #[test]
    fn azure_refuses_missing_or_unsafe_settings() {
        let headers = HeaderMap::new();
        let options = Map::new();
        let err = provider("azure-openai")
            .build(&call(Endpoint::Chat, None, &headers, &options))
            .expect_err("missing resource");
        assert!(
            err.to_string().contains("x-portkey-azure-resource-name"),
            "{err}"
        );

        let mut headers = HeaderMap::new();
        headers.insert(
            "x-portkey-azure-resource-name",
            HeaderValue::from_static("evil.com/x#"),
        );
        headers.insert(
            "x-portkey-azure-deployment-id",
            HeaderValue::from_static("d"),
        );
        let err = provider("azure-openai")
            .build(&call(Endpoint::Chat, None, &headers, &options))
            .expect_err("unsafe host part");
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn custom_hosts_query_and_proxy_paths_are_kept() {
        let headers = HeaderMap::new();
        let options = Map::new();
        let mut c = call(Endpoint::Proxy, None, &headers, &options);
        c.custom_host = Some("http://127.0.0.1:8000/v1/");
        c.proxy_path = "/files/abc";
        c.query = Some("limit=2&order=asc");
        let req = provider("openai-compatible").build(&c).expect("request");
        assert_eq!(
            req.url.as_str(),
            "http://127.0.0.1:8000/v1/files/abc?limit=2&order=asc"
        );

        let c = call(Endpoint::Chat, None, &headers, &options);
        let err = provider("openai-compatible")
            .build(&c)
            .expect_err("needs a host");
        assert!(err.to_string().contains("custom host"), "{err}");
    }

    #[test]
    fn unsupported_endpoints_and_forwarded_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-trace-me", HeaderValue::from_static("1"));
        headers.insert("x-not-me", HeaderValue::from_static("2"));
        let options = Map::new();
        let err = provider("perplexity-ai")
            .build(&call(Endpoint::Embeddings, None, &headers, &options))
            .expect_err("unsupported");
        assert!(err.to_string().contains("perplexity-ai"));

        let forward = [HeaderName::from_static("x-trace-me")];
        let mut c = call(Endpoint::Chat, None, &headers, &options);
        c.forward_headers = &forward;
        let req = provider("groq").build(&c).expect("request");
        assert_eq!(req.headers["x-trace-me"], "1");
        assert!(!req.headers.contains_key("x-not-me"));
    }
}
