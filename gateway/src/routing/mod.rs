//! Routing: from the request's headers and the routing config to the target to call.
//!
//! Where the config comes from, first match wins: `x-portkey-config` (JSON, or the
//! name of a config under `[configs]` in the server file) > the server's
//! `default_config` > the plain headers (`x-portkey-provider`, `Authorization`,
//! `x-portkey-custom-host`, ...). `x-sluice-*` names are aliases of every
//! `x-portkey-*` header.
//!
//! This module may call `config` and `providers`; it does no I/O. A `single`
//! strategy (Portkey's: its first target) is executed here, nested to any depth,
//! with settings inherited parent → child. The other strategy modes are validated
//! but answered with a clear 400 until the routing engine executes them.

mod config_cache;
mod headers;
mod health;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method};
use serde_json::{Map, Value};

pub use config_cache::ConfigCache;
pub use headers::{PortkeyHeader, header_str, metadata as headers_metadata};
pub use health::{Health, TargetHealth};

use crate::GatewayError;
use crate::config::routing::{Inherited, Node};
use crate::config::{RoutingConfig, Secret, ServerConfig, routing};
use crate::plugins::{self, Kind, RouteCandidate};
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
    pub forward_headers: Vec<HeaderName>,
    /// Its load-balancing weight in the config.
    pub weight: f64,
}

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
        }
    }
}

/// What routing decided for a request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    /// Portkey's `x-portkey-last-used-option-index`: the path of the target in
    /// the config (`config`, `config.targets[1].targets[0]`). Plain headers are a
    /// one-target config to Portkey, so they answer `config` too.
    pub option_path: String,
    /// The hooks in effect for the target (the nearest node that sets any).
    pub hooks: routing::Hooks,
    /// A router strategy still to run once the body is read.
    pub router: Option<RouterStep>,
}

/// A `router` strategy: the plugin, its parameters, and the candidate targets.
#[derive(Debug, Clone)]
pub struct RouterStep {
    pub plugin: String,
    pub parameters: String,
    pub candidates: Vec<(String, Target)>,
}

impl Plan {
    /// Runs a pending router strategy: the router orders the candidates and the
    /// first becomes the target. (Trying the rest in order when one fails is the
    /// routing engine's fallback.)
    pub async fn resolve(
        &mut self,
        plugins: &plugins::Registry,
        health: &Health,
        endpoint: Endpoint,
        model: Option<String>,
        metadata: &Map<String, Value>,
        body: Option<&[u8]>,
    ) -> Result<(), GatewayError> {
        let Some(step) = self.router.take() else {
            return Ok(());
        };
        let router = plugins.get_kind(&step.plugin, Kind::Router)?;
        let candidates: Vec<RouteCandidate> = step
            .candidates
            .iter()
            .enumerate()
            .map(|(i, (path, t))| {
                let seen = health.get(&Health::key(path, t.provider.slug()));
                RouteCandidate {
                    index: i as u32,
                    provider: t.provider.slug().to_owned(),
                    model: t
                        .override_params
                        .get("model")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    weight: t.weight,
                    circuit_open: false,
                    error_rate: seen.error_rate,
                    latency_ms: seen.latency_ms,
                    in_flight: seen.in_flight,
                    requests: seen.requests,
                }
            })
            .collect();
        let meta: Vec<(String, String)> = metadata
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect();
        let order = router
            .route(
                &step.parameters,
                endpoint,
                model,
                &meta,
                &candidates,
                body.map(|b| String::from_utf8_lossy(b).into_owned()),
            )
            .await?;
        let Some((path, target)) = order
            .first()
            .and_then(|&i| step.candidates.get(i as usize))
            .cloned()
        else {
            return Err(GatewayError::Unsupported(format!(
                "router `{}` chose no target for this request",
                step.plugin
            )));
        };
        tracing::debug!(router = %step.plugin, chosen = %path, ?order, ?candidates, "router chose a target");
        self.target = target;
        self.option_path = path;
        Ok(())
    }
}

/// Decides the target for a request.
pub fn plan(
    config: &ServerConfig,
    cache: &ConfigCache,
    plugins: &plugins::Registry,
    headers: &HeaderMap,
) -> Result<Plan, GatewayError> {
    let routing = match header_str(headers, PortkeyHeader::Config)? {
        Some(text) => Some(config_from_header(config, cache, plugins, text)?),
        None => config
            .default_config
            .as_ref()
            .and_then(|name| config.configs.get(name).cloned()),
    };
    match routing {
        Some(c) => plan_config(config, plugins, headers, &c),
        None => plan_headers(config, plugins, headers),
    }
}

fn config_from_header(
    config: &ServerConfig,
    cache: &ConfigCache,
    plugins: &plugins::Registry,
    text: &str,
) -> Result<Arc<RoutingConfig>, GatewayError> {
    let text = text.trim();
    if text.starts_with('{') {
        cache.get_or_parse(text, || {
            routing::parse_json(text, &|slug| {
                config.providers.contains(slug) || plugins.has_provider(slug)
            })
            .map_err(GatewayError::InvalidConfig)
        })
    } else {
        config.configs.get(text).cloned().ok_or_else(|| {
            GatewayError::invalid(
                format!(
                    "`x-portkey-config` is neither a JSON object nor the name of a config under [configs] in the server config: `{text}`"
                ),
                Some("x-portkey-config"),
            )
        })
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

fn plan_headers(
    config: &ServerConfig,
    plugins: &plugins::Registry,
    headers: &HeaderMap,
) -> Result<Plan, GatewayError> {
    let slug =
        header_str(headers, PortkeyHeader::Provider)?.ok_or(GatewayError::MissingProvider)?;
    Ok(Plan {
        target: Target {
            provider: provider(config, plugins, slug.trim())?,
            api_key: headers::bearer(headers)?,
            custom_host: header_str(headers, PortkeyHeader::CustomHost)?.map(str::to_owned),
            options: Map::new(),
            override_params: Map::new(),
            request_timeout: headers::request_timeout(headers)?,
            forward_headers: headers::forward_list(headers)?,
            weight: 1.0,
        },
        option_path: "config".to_owned(),
        hooks: routing::Hooks::default(),
        router: None,
    })
}

fn plan_config(
    config: &ServerConfig,
    plugins: &plugins::Registry,
    headers: &HeaderMap,
    c: &RoutingConfig,
) -> Result<Plan, GatewayError> {
    descend(
        config,
        plugins,
        headers,
        &c.root,
        "config".to_owned(),
        c.root.inherit.clone(),
    )
}

/// From `node` down to a target, through `single` strategies; a `router`
/// strategy stops the descent with its candidates resolved.
fn descend(
    config: &ServerConfig,
    plugins: &plugins::Registry,
    headers: &HeaderMap,
    start: &Node,
    start_path: String,
    start_inherited: Inherited,
) -> Result<Plan, GatewayError> {
    let mut node = start;
    let mut path = start_path;
    let mut inherited = start_inherited;
    while let Some(strategy) = &node.strategy {
        if strategy.mode == "router" {
            let plugin = strategy.router.clone().unwrap_or_default();
            let mut candidates = Vec::with_capacity(node.targets.len());
            for (i, child) in node.targets.iter().enumerate() {
                let child_path = format!("{path}.targets[{i}]");
                let child_inherited = inherit(&inherited, &child.inherit);
                let plan = descend(config, plugins, headers, child, child_path, child_inherited)?;
                if plan.router.is_some() {
                    return Err(GatewayError::Unsupported(format!(
                        "`{path}`: a router strategy inside a router strategy is not supported"
                    )));
                }
                candidates.push((plan.option_path, plan.target));
            }
            let Some((first_path, first)) = candidates.first().cloned() else {
                return Err(GatewayError::Internal(format!(
                    "{path}: strategy without targets"
                )));
            };
            return Ok(Plan {
                target: first,
                option_path: first_path,
                hooks: inherited.hooks.clone(),
                router: Some(RouterStep {
                    plugin,
                    parameters: strategy
                        .parameters
                        .as_ref()
                        .map_or_else(|| "{}".to_owned(), Value::to_string),
                    candidates,
                }),
            });
        }
        if strategy.mode != "single" {
            return Err(GatewayError::Unsupported(format!(
                "strategy mode `{}` at `{path}` is valid but not executed by this build; use `single`",
                strategy.mode
            )));
        }
        let Some(first) = node.targets.first() else {
            return Err(GatewayError::Internal(format!(
                "{path}: strategy without targets"
            )));
        };
        node = first;
        path.push_str(".targets[0]");
        inherited = inherit(&inherited, &node.inherit);
    }
    leaf(config, plugins, headers, node, inherited, path)
}

/// A child's settings over its parent's: the child's own win, `override_params`
/// merge per key.
pub fn inherit(parent: &Inherited, child: &Inherited) -> Inherited {
    let mut override_params = parent.override_params.clone();
    for (k, v) in &child.override_params {
        override_params.insert(k.clone(), v.clone());
    }
    Inherited {
        custom_host: child
            .custom_host
            .clone()
            .or_else(|| parent.custom_host.clone()),
        request_timeout_ms: child.request_timeout_ms.or(parent.request_timeout_ms),
        forward_headers: child
            .forward_headers
            .clone()
            .or_else(|| parent.forward_headers.clone()),
        retry: child.retry.clone().or_else(|| parent.retry.clone()),
        cache: child.cache.clone().or_else(|| parent.cache.clone()),
        strict_open_ai_compliance: child
            .strict_open_ai_compliance
            .or(parent.strict_open_ai_compliance),
        override_params,
        hooks: if child.hooks.is_empty() {
            parent.hooks.clone()
        } else {
            child.hooks.clone()
        },
    }
}

fn leaf(
    config: &ServerConfig,
    plugins: &plugins::Registry,
    headers: &HeaderMap,
    node: &Node,
    inherited: Inherited,
    path: String,
) -> Result<Plan, GatewayError> {
    let t = &node.target;
    let Some(slug) = &t.provider else {
        return Err(GatewayError::Unsupported(format!(
            "`{path}` names a virtual key; virtual keys are not configured on this gateway"
        )));
    };
    let forward_headers = match &inherited.forward_headers {
        Some(names) => headers::parse_forward_names(names.iter().map(String::as_str))?,
        None => headers::forward_list(headers)?,
    };
    let request_timeout = match inherited.request_timeout_ms {
        Some(ms) => Some(Duration::from_millis(ms)),
        None => headers::request_timeout(headers)?,
    };
    Ok(Plan {
        target: Target {
            provider: provider(config, plugins, slug)?,
            api_key: match &t.api_key {
                Some(k) => Some(k.clone()),
                None => headers::bearer(headers)?,
            },
            custom_host: inherited.custom_host,
            options: t.provider_options.clone(),
            override_params: inherited.override_params,
            request_timeout,
            forward_headers,
            weight: node.weight,
        },
        option_path: path,
        hooks: inherited.hooks,
        router: None,
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

    #[test]
    fn headers_alone_name_provider_key_and_settings() {
        let plan = plan(
            &server(),
            &ConfigCache::default(),
            &no_plugins(),
            &headers(&[
                ("x-portkey-provider", "openai"),
                ("authorization", "Bearer sk-1"),
                ("x-sluice-custom-host", "http://127.0.0.1:9/v1"),
                ("x-portkey-request-timeout", "250"),
                ("x-portkey-forward-headers", "x-a, X-B"),
            ]),
        )
        .expect("plan");
        let t = plan.target;
        assert_eq!(t.provider.slug(), "openai");
        assert_eq!(t.api_key.as_ref().map(Secret::expose), Some("sk-1"));
        assert_eq!(t.custom_host.as_deref(), Some("http://127.0.0.1:9/v1"));
        assert_eq!(t.request_timeout, Some(Duration::from_millis(250)));
        assert_eq!(t.forward_headers, ["x-a", "x-b"]);
        assert_eq!(plan.option_path, "config");
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
                    ("x-portkey-request-timeout", "soon"),
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
                    "{\"strategy\":{\"mode\":\"fallback\"},\"targets\":[{\"provider\":\"openai\"}]}",
                )],
                "unsupported",
            ),
        ];
        for (pairs, code) in cases {
            let err =
                plan(&s, &ConfigCache::default(), &no_plugins(), &headers(pairs)).expect_err(code);
            assert_eq!(err.code(), code, "{pairs:?}: {err}");
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn a_config_header_wins_and_single_strategies_inherit() {
        let cfg = r#"{"strategy":{"mode":"single"},"request_timeout":100,
            "override_params":{"model":"a","temperature":0},"forward_headers":["x-keep"],
            "targets":[{"provider":"azure-openai","resource_name":"r","override_params":{"model":"b"}}]}"#;
        let plan = plan(
            &server(),
            &ConfigCache::default(),
            &no_plugins(),
            &headers(&[
                ("x-portkey-config", &cfg.replace('\n', " ")),
                ("x-portkey-provider", "groq"),
                ("authorization", "Bearer from-client"),
            ]),
        )
        .expect("plan");
        let t = plan.target;
        assert_eq!(t.provider.slug(), "azure-openai");
        assert_eq!(plan.option_path, "config.targets[0]");
        assert_eq!(t.override_params["model"], "b");
        assert_eq!(t.override_params["temperature"], 0);
        assert_eq!(t.request_timeout, Some(Duration::from_millis(100)));
        assert_eq!(t.forward_headers, ["x-keep"]);
        assert_eq!(t.options["resource_name"], "r");
        assert_eq!(t.api_key.as_ref().map(Secret::expose), Some("from-client"));
    }

    #[test]
    fn named_and_default_configs() {
        let s = server();
        let plan1 = plan(
            &s,
            &ConfigCache::default(),
            &no_plugins(),
            &headers(&[("x-portkey-config", "named")]),
        )
        .expect("named");
        assert_eq!(plan1.target.provider.slug(), "groq");
        assert_eq!(
            plan1.target.api_key.as_ref().map(Secret::expose),
            Some("gk")
        );
        assert_eq!(plan1.option_path, "config");

        let mut s = server();
        s.default_config = Some("named".into());
        let plan2 = plan(
            &s,
            &ConfigCache::default(),
            &no_plugins(),
            &HeaderMap::new(),
        )
        .expect("default");
        assert_eq!(plan2.target.override_params["model"], "llama");
    }
}
