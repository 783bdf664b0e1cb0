//! Routing: from the request's headers and the routing config to the targets
//! to call, and the engine that calls them ([`engine`]).
//!
//! Where the config comes from, first match wins: `x-portkey-config` (JSON, or the
//! name of a config under `[configs]` in the server file) > the server's
//! `default_config` > the plain headers (`x-portkey-provider`, `Authorization`,
//! `x-portkey-custom-host`, `x-portkey-retry-count`, ...), read as a one-target
//! config. `x-sluice-*` names are aliases of every `x-portkey-*` header.
//!
//! This module may call `config`, `providers` and `plugins`; it does no I/O
//! itself (the engine's [`engine::Attempts`] does).

mod config_cache;
pub mod engine;
mod headers;
pub mod targets;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method};
use serde_json::{Map, Value};

pub use config_cache::ConfigCache;
pub use engine::{Attempts, Deadline, Engine, Step, Total, Tried};
pub use headers::{PortkeyHeader, header_str, metadata as headers_metadata};
pub use targets::{BreakerSettings, InFlight, TargetHealth, Targets};

use crate::GatewayError;
use crate::config::routing::{Inherited, Node, Retry};
use crate::config::{RoutingConfig, Secret, ServerConfig, routing};
use crate::keys::VirtualKeys;
use crate::plugins;
use crate::providers::{Call, Endpoint, Provider, WasmProvider};

/// One provider call, with everything resolved.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Arc<dyn Provider>,
    pub api_key: Option<Secret>,
    /// A client-chosen base URL (checked against the SSRF policy).
    pub custom_host: Option<String>,
    /// Provider-specific settings from the config.
    pub options: Map<String, Value>,
    /// Merged into the request body; the config wins per key.
    pub override_params: Map<String, Value>,
    pub request_timeout: Option<Duration>,
    pub stream_idle_timeout: Option<Duration>,
    pub forward_headers: Vec<HeaderName>,
    pub retry: Option<Retry>,
    /// Portkey's `strict_open_ai_compliance` (default true).
    pub strict: bool,
    /// The hooks in effect for the target.
    pub hooks: routing::Hooks,
    /// Its identity for health and circuit breaking ([`targets::key`]).
    pub key: String,
    /// The virtual key whose secret it is called with.
    pub virtual_key: Option<String>,
    /// `cache: {mode, max_age}`, inherited.
    pub cache: Option<crate::config::routing::Cache>,
}

/// Marks an answer the gateway made without calling the target (a cache
/// hit): it says nothing of the target's health.
#[derive(Debug, Clone, Copy)]
pub struct Local;

impl Target {
    /// The provider call for this target: its key, host and settings, with the
    /// request's own parts.
    pub fn call<'a>(
        &'a self,
        endpoint: Endpoint,
        method: Method,
        client_headers: &'a HeaderMap,
        query: Option<&'a str>,
        proxy_path: &'a str,
        body: Bytes,
    ) -> Call<'a> {
        Call {
            endpoint,
            method,
            api_key: self.api_key.as_ref(),
            custom_host: self.custom_host.as_deref(),
            options: &self.options,
            client_headers,
            forward_headers: &self.forward_headers,
            query,
            proxy_path,
            body,
            token: None,
        }
    }
}

/// How the config in use is named in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigLabel {
    /// A config under `[configs]`.
    Named(String),
    /// JSON in `x-portkey-config`.
    Header,
    /// Plain headers, read as a one-target config.
    Headers,
}

impl fmt::Display for ConfigLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Named(name) => write!(f, "config `{name}`"),
            Self::Header => f.write_str("the `x-portkey-config` config"),
            Self::Headers => f.write_str("the request headers"),
        }
    }
}

/// What routing decided before the body is read: the config to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: Arc<RoutingConfig>,
    pub label: ConfigLabel,
}

impl Plan {
    /// Whether open circuits are skipped: for configs. A plain-header request
    /// names one upstream and gets its answers, as from Portkey.
    pub fn breakers(&self) -> bool {
        self.label != ConfigLabel::Headers
    }

    /// When the config can only ever call one target (no fallback, balancing or
    /// condition on the way), that target's provider, so a wrong route is
    /// answered before a large upload is read.
    pub fn sole_provider(
        &self,
        config: &ServerConfig,
        plugins: &plugins::Registry,
    ) -> Result<Option<Arc<dyn Provider>>, GatewayError> {
        let mut node = &self.config.root;
        while let Some(strategy) = &node.strategy {
            if strategy.mode != "single" && node.targets.len() != 1 {
                return Ok(None);
            }
            if strategy.mode == "conditional" || strategy.mode == "router" {
                return Ok(None);
            }
            node = &node.targets[0];
        }
        match &node.target.provider {
            Some(slug) => provider(config, plugins, slug).map(Some),
            None => Ok(None),
        }
    }
}

impl Plan {
    /// The config's first target (following first targets down the tree),
    /// resolved with the request's headers.
    pub fn first_target(
        &self,
        config: &ServerConfig,
        plugins: &plugins::Registry,
        vkeys: &VirtualKeys,
        headers: &HeaderMap,
    ) -> Result<Target, GatewayError> {
        let mut node = &self.config.root;
        while let Some(first) = node.targets.first() {
            node = first;
        }
        resolve_target(config, plugins, vkeys, headers, node)
    }
}

/// Decides the config for a request.
pub fn plan(
    config: &ServerConfig,
    cache: &ConfigCache,
    plugins: &plugins::Registry,
    vkeys: &VirtualKeys,
    headers: &HeaderMap,
    key_default: Option<&str>,
) -> Result<Plan, GatewayError> {
    // The request's config, else its gateway key's, else the server's.
    if let Some(text) = header_str(headers, PortkeyHeader::Config)? {
        return config_from_header(config, cache, plugins, text.trim());
    }
    if let Some(text) = key_default {
        return config_from_header(config, cache, plugins, text.trim());
    }
    if let Some(name) = &config.default_config
        && let Some(c) = config.configs.get(name)
    {
        return Ok(Plan {
            config: c.clone(),
            label: ConfigLabel::Named(name.clone()),
        });
    }
    plan_headers(config, plugins, vkeys, headers)
}

fn config_from_header(
    config: &ServerConfig,
    cache: &ConfigCache,
    plugins: &plugins::Registry,
    text: &str,
) -> Result<Plan, GatewayError> {
    if text.starts_with('{') {
        let parsed = cache.get_or_parse(text, || {
            routing::parse_json(text, &|slug| {
                config.providers.contains(slug) || plugins.has_provider(slug)
            })
            .map_err(GatewayError::InvalidConfig)
        })?;
        return Ok(Plan {
            config: parsed,
            label: ConfigLabel::Header,
        });
    }
    match config.configs.get(text) {
        Some(c) => Ok(Plan {
            config: c.clone(),
            label: ConfigLabel::Named(text.to_owned()),
        }),
        None => Err(GatewayError::invalid(
            format!(
                "`x-portkey-config` is neither a JSON object nor the name of a config under [configs] in the server config: `{text}`"
            ),
            Some("x-portkey-config"),
        )),
    }
}

/// A catalog provider, else a provider plugin (the version loaded now: the
/// request keeps it even if a reload swaps it).
fn provider(
    config: &ServerConfig,
    plugins: &plugins::Registry,
    slug: &str,
) -> Result<Arc<dyn Provider>, GatewayError> {
    if let Some(p) = config.providers.get(slug) {
        return Ok(p.clone());
    }
    match plugins.get(slug) {
        Some(plugin) => Ok(Arc::new(WasmProvider::new(plugin)?)),
        None => Err(GatewayError::UnknownProvider(slug.to_owned())),
    }
}

/// Plain headers as a one-target config; the key, timeout and forwarded
/// headers are read from the headers when the target is resolved.
fn plan_headers(
    config: &ServerConfig,
    plugins: &plugins::Registry,
    vkeys: &VirtualKeys,
    headers: &HeaderMap,
) -> Result<Plan, GatewayError> {
    // A virtual key names its provider; a provider header may name it too.
    let virtual_key = header_str(headers, PortkeyHeader::VirtualKey)?.map(str::trim);
    let named = header_str(headers, PortkeyHeader::Provider)?.map(str::trim);
    let slug = match (named, virtual_key) {
        (Some(slug), _) => slug.to_owned(),
        (None, Some(name)) => vkeys.resolve(name)?.provider.clone(),
        (None, None) => return Err(GatewayError::MissingProvider),
    };
    // Known? (Answered before the body is read.)
    provider(config, plugins, &slug)?;
    let root = Node {
        strategy: None,
        targets: Vec::new(),
        name: None,
        weight: 1.0,
        on_status_codes: None,
        target: routing::Target {
            provider: Some(slug),
            virtual_key: virtual_key.map(str::to_owned),
            ..routing::Target::default()
        },
        inherit: Inherited {
            custom_host: header_str(headers, PortkeyHeader::CustomHost)?.map(str::to_owned),
            retry: headers::retry_count(headers)?.map(Retry::attempts),
            ..Inherited::default()
        },
    };
    Ok(Plan {
        config: Arc::new(RoutingConfig {
            root,
            total_timeout_ms: None,
        }),
        label: ConfigLabel::Headers,
    })
}

/// The key a leaf is called with: its own, else the client's bearer token.
fn leaf_api_key<'a>(node: &'a Node, headers: &HeaderMap) -> Option<std::borrow::Cow<'a, str>> {
    match &node.target.api_key {
        Some(k) => Some(std::borrow::Cow::Borrowed(k.expose())),
        None => headers::bearer(headers)
            .ok()
            .flatten()
            .map(|s| std::borrow::Cow::Owned(s.expose().to_owned())),
    }
}

/// A leaf's identity for health and breakers, without resolving it.
pub fn leaf_key(node: &Node, headers: &HeaderMap) -> Option<String> {
    let t = &node.target;
    let provider = t.provider.as_deref().or(t.virtual_key.as_deref())?;
    // A virtual key's secret is not read here: its name stands for it.
    let key = match &t.virtual_key {
        Some(name) if t.api_key.is_none() => Some(std::borrow::Cow::Owned(format!("vk:{name}"))),
        _ => leaf_api_key(node, headers),
    };
    Some(targets::key(
        provider,
        node.inherit.custom_host.as_deref(),
        node.inherit
            .override_params
            .get("model")
            .and_then(Value::as_str),
        key.as_deref(),
    ))
}

/// A leaf of a config (its settings already inherited) as a call to make;
/// what the config leaves out comes from the request's headers.
pub fn resolve_target(
    config: &ServerConfig,
    plugins: &plugins::Registry,
    vkeys: &VirtualKeys,
    headers: &HeaderMap,
    node: &Node,
) -> Result<Target, GatewayError> {
    let t = &node.target;
    let inherited = &node.inherit;
    let virtual_key = t
        .virtual_key
        .as_deref()
        .map(|name| vkeys.resolve(name))
        .transpose()?;
    let slug = match (&t.provider, &virtual_key) {
        (Some(slug), Some(vk)) if *slug != vk.provider => {
            return Err(GatewayError::invalid(
                format!(
                    "virtual key `{}` is for provider `{}`, not `{slug}`",
                    t.virtual_key.as_deref().unwrap_or_default(),
                    vk.provider
                ),
                Some("virtual_key"),
            ));
        }
        (Some(slug), _) => slug,
        (None, Some(vk)) => &vk.provider,
        (None, None) => {
            return Err(GatewayError::Internal(
                "a target without a provider or a virtual key passed validation".into(),
            ));
        }
    };
    let forward_headers = match &inherited.forward_headers {
        Some(names) => headers::parse_forward_names(names.iter().map(String::as_str))?,
        None => headers::forward_list(headers)?,
    };
    let request_timeout = match inherited.request_timeout_ms {
        Some(ms) => Some(Duration::from_millis(ms)),
        None => headers::request_timeout(headers)?,
    };
    // The config's own key, else the virtual key's, else the client's.
    let api_key = match (&t.api_key, &virtual_key) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(vk)) => Some(vk.secret.clone()),
        (None, None) => headers::bearer(headers)?,
    };
    // The same identity the engine checks circuits by before resolving.
    let key = leaf_key(node, headers).unwrap_or_else(|| slug.clone());
    Ok(Target {
        provider: provider(config, plugins, slug)?,
        api_key,
        custom_host: inherited.custom_host.clone(),
        options: t.provider_options.clone(),
        override_params: inherited.override_params.clone(),
        request_timeout,
        stream_idle_timeout: inherited.stream_idle_timeout_ms.map(Duration::from_millis),
        forward_headers,
        retry: inherited.retry.clone(),
        strict: match inherited.strict_open_ai_compliance {
            Some(strict) => strict,
            None => headers::strict(headers)?.unwrap_or(true),
        },
        hooks: inherited.hooks.clone(),
        key,
        virtual_key: t.virtual_key.clone().filter(|_| t.api_key.is_none()),
        cache: inherited.cache.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn no_plugins() -> plugins::Registry {
        plugins::Registry::new(
            plugins::engine::test_engine(),
            std::path::PathBuf::from("/nonexistent"),
            plugins::Limits::default(),
            Default::default(),
        )
    }

    fn server() -> ServerConfig {
        ServerConfig::parse(
            "[configs.named]\nprovider = \"groq\"\napi_key = \"gk\"\n[configs.named.override_params]\nmodel = \"llama\"\n",
        )
        .expect("config")
    }

    /// The plan, and its first leaf resolved with the same headers.
    fn first_target(s: &ServerConfig, pairs: &[(&'static str, &str)]) -> (Plan, Target) {
        let h = headers(pairs);
        let plugins = no_plugins();
        let plan = plan(
            s,
            &ConfigCache::default(),
            &plugins,
            &VirtualKeys::none().expect("no virtual keys"),
            &h,
            None,
        )
        .expect("plan");
        let target = plan
            .first_target(
                s,
                &plugins,
                &VirtualKeys::none().expect("no virtual keys"),
                &h,
            )
            .expect("target");
        (plan, target)
    }

    #[test]
    fn headers_alone_name_provider_key_and_settings() {
        let (plan, t) = first_target(
            &server(),
            &[
                ("x-portkey-provider", "openai"),
                ("authorization", "Bearer sk-1"),
                ("x-sluice-custom-host", "http://127.0.0.1:9/v1"),
                ("x-portkey-request-timeout", "250"),
                ("x-portkey-forward-headers", "x-a, X-B"),
                ("x-portkey-retry-count", "3"),
                ("x-portkey-strict-open-ai-compliance", "false"),
            ],
        );
        assert!(!t.strict);
        assert_eq!(t.provider.slug(), "openai");
        assert_eq!(t.api_key.as_ref().map(Secret::expose), Some("sk-1"));
        assert_eq!(t.custom_host.as_deref(), Some("http://127.0.0.1:9/v1"));
        assert_eq!(t.request_timeout, Some(Duration::from_millis(250)));
        assert_eq!(t.forward_headers, ["x-a", "x-b"]);
        assert_eq!(t.retry.as_ref().map(|r| r.attempts), Some(3));
        assert_eq!(plan.label, ConfigLabel::Headers);
        assert!(!plan.breakers(), "plain headers get the upstream's answers");
        assert!(!t.key.contains("sk-1"), "{}", t.key);
    }

    #[test]
    fn missing_unknown_and_malformed_settings_are_client_errors() {
        let s = server();
        let cases: [(&[(&'static str, &str)], &str); 6] = [
            (&[], "missing_provider"),
            (&[("x-portkey-provider", "nope")], "unknown_provider"),
            (
                &[
                    ("x-portkey-provider", "openai"),
                    ("x-portkey-retry-count", "11"),
                ],
                "invalid_request",
            ),
            (
                &[("x-portkey-config", "{\"provider\": 1}")],
                "invalid_config",
            ),
            (&[("x-portkey-config", "pc-unknown")], "invalid_request"),
            (
                &[(
                    "x-portkey-config",
                    "{\"strategy\":{\"mode\":\"fallback\"},\"targets\":[]}",
                )],
                "invalid_config",
            ),
        ];
        for (pairs, code) in cases {
            let err = plan(
                &s,
                &ConfigCache::default(),
                &no_plugins(),
                &VirtualKeys::none().expect("no virtual keys"),
                &headers(pairs),
                None,
            )
            .expect_err(code);
            assert_eq!(err.code(), code, "{pairs:?}: {err}");
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn a_config_header_wins_and_targets_inherit() {
        let cfg = r#"{"strategy":{"mode":"single"},"request_timeout":100,
            "override_params":{"model":"a","temperature":0},"forward_headers":["x-keep"],
            "retry":{"attempts":2},"stream_idle_timeout":50,
            "targets":[{"provider":"azure-openai","resource_name":"r","override_params":{"model":"b"}}]}"#;
        let (plan, t) = first_target(
            &server(),
            &[
                ("x-portkey-config", &cfg.replace('\n', " ")),
                ("x-portkey-provider", "groq"),
                ("authorization", "Bearer from-client"),
            ],
        );
        assert_eq!(plan.label, ConfigLabel::Header);
        assert!(plan.breakers());
        assert_eq!(t.provider.slug(), "azure-openai");
        assert_eq!(t.override_params["model"], "b");
        assert_eq!(t.override_params["temperature"], 0);
        assert_eq!(t.request_timeout, Some(Duration::from_millis(100)));
        assert_eq!(t.stream_idle_timeout, Some(Duration::from_millis(50)));
        assert_eq!(t.retry.as_ref().map(|r| r.attempts), Some(2));
        assert!(t.strict, "strict unless told otherwise");
        assert_eq!(t.forward_headers, ["x-keep"]);
        assert_eq!(t.options["resource_name"], "r");
        assert_eq!(t.api_key.as_ref().map(Secret::expose), Some("from-client"));
        assert!(t.key.starts_with("azure-openai b key:"), "{}", t.key);
    }

    #[test]
    fn named_and_default_configs() {
        let (plan1, t) = first_target(&server(), &[("x-portkey-config", "named")]);
        assert_eq!(plan1.label, ConfigLabel::Named("named".into()));
        assert_eq!(t.provider.slug(), "groq");
        assert_eq!(t.api_key.as_ref().map(Secret::expose), Some("gk"));

        let mut s = server();
        s.default_config = Some("named".into());
        let (_, t) = first_target(&s, &[]);
        assert_eq!(t.override_params["model"], "llama");
    }

    #[test]
    fn only_a_config_without_branches_has_a_sole_provider() {
        let s = server();
        let plugins = no_plugins();
        let sole = |cfg: &str| {
            let h = headers(&[("x-portkey-config", cfg)]);
            plan(
                &s,
                &ConfigCache::default(),
                &plugins,
                &VirtualKeys::none().expect("no virtual keys"),
                &h,
                None,
            )
            .expect("plan")
            .sole_provider(&s, &plugins)
            .expect("provider")
            .map(|p| p.slug().to_owned())
        };
        assert_eq!(
            sole(r#"{"strategy":{"mode":"single"},"targets":[{"provider":"groq"},{"provider":"openai"}]}"#).as_deref(),
            Some("groq")
        );
        assert_eq!(
            sole(
                r#"{"strategy":{"mode":"fallback"},"targets":[{"provider":"groq"},{"provider":"openai"}]}"#
            ),
            None
        );
        assert_eq!(
            sole(r#"{"strategy":{"mode":"fallback"},"targets":[{"provider":"openai"}]}"#)
                .as_deref(),
            Some("openai")
        );
    }
}
