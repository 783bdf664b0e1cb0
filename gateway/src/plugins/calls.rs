//! The calls the pipeline makes into plugins, in host-side types (so a later WIT
//! version converts into the same ones): `validate-config` and `describe` on every
//! plugin, `check` on guardrails, `route` on routers, and `build-request`,
//! `parse-response` and the `stream-translator` resource on providers.

use std::sync::Arc;

use wasmtime::component::ResourceAny;

use super::load::endpoint_to_wit;
use super::pool::{Lease, Pool};
use super::v0_1::provider::exports::sluice::plugin::adapter;
use super::v0_1::router::exports::sluice::plugin::routing;
use super::v0_1::{guardrail::exports::sluice::plugin::checks, provider, types};
use super::{Info, Kind, Plugin, PluginError, World};
use crate::providers::Endpoint;

/// What a guardrail check sees.
#[derive(Debug, Clone)]
pub struct CheckInput {
    pub after_response: bool,
    pub endpoint: Endpoint,
    pub provider: String,
    pub model: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// (role, text) in order.
    pub segments: Vec<(String, String)>,
    pub body: Option<String>,
    /// What the call may reach through `host` (headers, HTTP calls).
    pub grants: super::Grants,
}

/// A check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail {
        reason: String,
        deny: bool,
    },
    /// New text for each input segment, in order.
    Rewrite(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub outcome: Outcome,
    pub score: Option<f64>,
    /// The plugin's data: its JSON as it sent it (checked, not parsed into a
    /// tree: it only goes on into `hook_results`), or a JSON string of what it
    /// sent when that is not JSON.
    pub data: Option<Box<serde_json::value::RawValue>>,
}

/// `text` as raw JSON when it is JSON, else as a JSON string.
fn raw_json(text: String) -> Box<serde_json::value::RawValue> {
    serde_json::from_str(&text).unwrap_or_else(|_| {
        serde_json::value::to_raw_value(&text)
            .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned())
    })
}

/// One target as a router sees it.
#[derive(Debug, Clone)]
pub struct RouteCandidate {
    pub index: u32,
    pub provider: String,
    pub model: Option<String>,
    pub weight: f64,
    pub circuit_open: bool,
    pub error_rate: f64,
    pub latency_ms: Option<f64>,
    pub in_flight: u32,
    pub requests: u64,
}

fn role(r: &str) -> types::Role {
    match r {
        "system" => types::Role::System,
        "developer" => types::Role::Developer,
        "user" => types::Role::User,
        "assistant" => types::Role::Assistant,
        "tool" | "function" => types::Role::Tool,
        _ => types::Role::Other,
    }
}

fn pairs(items: &[(String, String)]) -> Vec<types::Pair> {
    items
        .iter()
        .map(|(k, v)| types::Pair {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// Calls a function of the `meta` interface, which every world exports (each
/// world's bindings have their own type for it), on a leased instance.
macro_rules! meta_call {
    ($plugin:expr, $method:ident $(, $arg:expr)*) => {{
        macro_rules! on {
            ($pool:expr) => {{
                let mut lease = $pool.lease().await?;
                let inst = &mut lease.instance;
                let r = inst
                    .bindings
                    .sluice_plugin_meta()
                    .$method(&mut inst.store $(, $arg)*)
                    .await;
                $pool.finish(lease, r)?
            }};
        }
        match &$plugin.world {
            World::Guardrail(p) => on!(p),
            World::Provider { pool, .. } => on!(pool),
            World::Router(p) => on!(p),
        }
    }};
}

impl Plugin {
    pub(crate) fn wrong_kind(&self, wanted: Kind) -> PluginError {
        PluginError::WrongKind {
            plugin: self.name.to_string(),
            actual: self.info.kind.as_str(),
            wanted: wanted.as_str(),
        }
    }

    /// Maps a plugin's typed error.
    fn error(&self, e: types::Error) -> PluginError {
        let plugin = self.name.to_string();
        match e {
            types::Error::InvalidConfig(detail) => PluginError::InvalidConfig { plugin, detail },
            types::Error::Upstream(u) => PluginError::Upstream {
                plugin,
                status: u.status,
                message: u.message,
                code: u.code,
            },
            types::Error::InvalidInput(d) => PluginError::Failed {
                plugin,
                detail: format!("invalid input: {d}"),
            },
            types::Error::Unsupported(d) => PluginError::Failed {
                plugin,
                detail: format!("unsupported: {d}"),
            },
            types::Error::Internal(d) => PluginError::Failed { plugin, detail: d },
        }
    }

    /// `describe()`.
    pub async fn describe(&self) -> Result<Info, PluginError> {
        let info = meta_call!(self, call_describe);
        Ok(Info {
            name: info.name,
            version: info.version,
            kind: match info.kind {
                types::Kind::Guardrail => Kind::Guardrail,
                types::Kind::Provider => Kind::Provider,
                types::Kind::Router => Kind::Router,
            },
            description: info.description,
            config_schema: info.config_schema,
            wants_body: info.wants_body,
        })
    }

    /// `validate-config(config)`: called once when a config using the plugin loads.
    pub async fn validate_config(&self, config: &str) -> Result<(), PluginError> {
        let result = meta_call!(self, call_validate_config, config);
        result.map_err(|e| match self.error(e) {
            PluginError::Failed { plugin, detail } => PluginError::InvalidConfig { plugin, detail },
            other => other,
        })
    }

    /// A guardrail check.
    pub async fn check(&self, config: &str, input: &CheckInput) -> Result<Verdict, PluginError> {
        let World::Guardrail(pool) = &self.world else {
            return Err(self.wrong_kind(Kind::Guardrail));
        };
        let wit = checks::CheckInput {
            stage: if input.after_response {
                types::Stage::AfterResponse
            } else {
                types::Stage::BeforeRequest
            },
            endpoint: endpoint_to_wit(input.endpoint),
            provider: input.provider.clone(),
            model: input.model.clone(),
            metadata: pairs(&input.metadata),
            segments: input
                .segments
                .iter()
                .map(|(r, t)| types::Segment {
                    role: role(r),
                    text: t.clone(),
                })
                .collect(),
            body: if self.info.wants_body {
                input.body.clone()
            } else {
                None
            },
        };
        let mut lease = pool.lease().await?;
        let inst = &mut lease.instance;
        inst.store.data_mut().grants = Some(input.grants.clone());
        let r = inst
            .bindings
            .sluice_plugin_checks()
            .call_check(&mut inst.store, config, &wit)
            .await;
        inst.store.data_mut().grants = None;
        let verdict = pool.finish(lease, r)?.map_err(|e| self.error(e))?;
        let outcome = match verdict.outcome {
            checks::Outcome::Pass => Outcome::Pass,
            checks::Outcome::Fail(f) => Outcome::Fail {
                reason: f.reason,
                deny: f.deny,
            },
            checks::Outcome::Rewrite(segments) => {
                if segments.len() != input.segments.len() {
                    return Err(PluginError::Failed {
                        plugin: self.name.to_string(),
                        detail: format!(
                            "rewrite returned {} segments for {} given",
                            segments.len(),
                            input.segments.len()
                        ),
                    });
                }
                Outcome::Rewrite(segments.into_iter().map(|s| s.text).collect())
            }
        };
        Ok(Verdict {
            outcome,
            score: verdict.score,
            data: verdict.data.map(raw_json),
        })
    }

    /// A router's order of the candidates (their indexes).
    pub async fn route(
        &self,
        config: &str,
        endpoint: Endpoint,
        model: Option<String>,
        metadata: &[(String, String)],
        candidates: &[RouteCandidate],
        body: Option<String>,
    ) -> Result<Vec<u32>, PluginError> {
        let World::Router(pool) = &self.world else {
            return Err(self.wrong_kind(Kind::Router));
        };
        let input = routing::RouteInput {
            endpoint: endpoint_to_wit(endpoint),
            model,
            metadata: pairs(metadata),
            candidates: candidates
                .iter()
                .map(|c| routing::Candidate {
                    index: c.index,
                    provider: c.provider.clone(),
                    model: c.model.clone(),
                    weight: c.weight,
                    circuit_open: c.circuit_open,
                    error_rate: c.error_rate,
                    latency_ms: c.latency_ms,
                    in_flight: c.in_flight,
                    requests: c.requests,
                })
                .collect(),
            body: if self.info.wants_body { body } else { None },
        };
        let mut lease = pool.lease().await?;
        let inst = &mut lease.instance;
        let r = inst
            .bindings
            .sluice_plugin_routing()
            .call_route(&mut inst.store, config, &input)
            .await;
        pool.finish(lease, r)?.map_err(|e| self.error(e))
    }

    /// This plugin as a provider, or why not.
    pub fn as_provider(&self) -> Result<ProviderPlugin<'_>, PluginError> {
        match &self.world {
            World::Provider { pool, endpoints } => Ok(ProviderPlugin {
                plugin: self,
                pool,
                endpoints,
            }),
            _ => Err(self.wrong_kind(Kind::Provider)),
        }
    }
}

/// A provider plugin's calls.
pub struct ProviderPlugin<'p> {
    plugin: &'p Plugin,
    pool: &'p ProviderPool,
    pub endpoints: &'p [Endpoint],
}

/// What a provider plugin built.
#[derive(Debug)]
pub struct BuiltRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The inputs of `build-request`.
#[derive(Debug)]
pub struct ProviderCall<'a> {
    pub endpoint: Endpoint,
    pub body: &'a [u8],
    pub model: Option<String>,
    pub streaming: bool,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub options: String,
}

impl ProviderPlugin<'_> {
    pub async fn build_request(&self, call: ProviderCall<'_>) -> Result<BuiltRequest, PluginError> {
        let wit = adapter::Call {
            endpoint: endpoint_to_wit(call.endpoint),
            body: String::from_utf8_lossy(call.body).into_owned(),
            model: call.model,
            streaming: call.streaming,
            base_url: call.base_url,
            api_key: call.api_key,
            options: call.options,
        };
        let mut lease = self.pool.lease().await?;
        let inst = &mut lease.instance;
        let r = inst
            .bindings
            .sluice_plugin_adapter()
            .call_build_request(&mut inst.store, &wit)
            .await;
        let req = self
            .pool
            .finish(lease, r)?
            .map_err(|e| self.plugin.error(e))?;
        Ok(BuiltRequest {
            method: req.method,
            url: req.url,
            headers: req.headers.into_iter().map(|p| (p.key, p.value)).collect(),
            body: req.body,
        })
    }

    pub async fn parse_response(
        &self,
        endpoint: Endpoint,
        status: u16,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Result<String, PluginError> {
        let headers = pairs(&headers);
        let mut lease = self.pool.lease().await?;
        let inst = &mut lease.instance;
        let r = inst
            .bindings
            .sluice_plugin_adapter()
            .call_parse_response(
                &mut inst.store,
                endpoint_to_wit(endpoint),
                status,
                &headers,
                body,
            )
            .await;
        self.pool
            .finish(lease, r)?
            .map_err(|e| self.plugin.error(e))
    }
}

impl Plugin {
    fn provider_pool(&self) -> Result<&ProviderPool, PluginError> {
        match &self.world {
            World::Provider { pool, .. } => Ok(pool),
            _ => Err(self.wrong_kind(Kind::Provider)),
        }
    }

    /// A translator for one stream; it holds an instance until it is finished.
    pub async fn stream(
        self: &Arc<Self>,
        endpoint: Endpoint,
        model: Option<String>,
    ) -> Result<StreamTranslator, PluginError> {
        let pool = self.provider_pool()?;
        let mut lease = pool.lease().await?;
        let inst = &mut lease.instance;
        let r = inst
            .bindings
            .sluice_plugin_adapter()
            .stream_translator()
            .call_constructor(&mut inst.store, endpoint_to_wit(endpoint), model.as_deref())
            .await;
        match r {
            Ok(resource) => Ok(StreamTranslator {
                plugin: self.clone(),
                lease: Some(lease),
                resource,
            }),
            Err(trap) => Err(trapped(pool, lease, trap, &self.name)),
        }
    }
}

type ProviderPool = Pool<provider::ProviderPre<super::engine::HostState>>;

fn trapped(
    pool: &ProviderPool,
    lease: Lease<provider::ProviderPre<super::engine::HostState>>,
    trap: wasmtime::Error,
    name: &str,
) -> PluginError {
    pool.finish(lease, Err::<(), _>(trap))
        .err()
        .unwrap_or_else(|| PluginError::Unavailable(name.to_owned()))
}

/// One stream's translator: the instance stays leased for the whole stream, and
/// the plugin version stays loaded while it lives.
pub struct StreamTranslator {
    plugin: Arc<Plugin>,
    lease: Option<Lease<provider::ProviderPre<super::engine::HostState>>>,
    resource: ResourceAny,
}

impl StreamTranslator {
    /// Upstream bytes in, OpenAI chunk JSON texts out.
    pub async fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, PluginError> {
        self.call(Some(bytes)).await
    }

    /// The last chunks; gives the instance back.
    pub async fn finish(mut self) -> Result<Vec<String>, PluginError> {
        let out = self.call(None).await;
        let pool = self.plugin.provider_pool()?;
        if let Some(mut lease) = self.lease.take() {
            let inst = &mut lease.instance;
            let dropped = self.resource.resource_drop_async(&mut inst.store).await;
            pool.finish(lease, dropped)?;
        }
        out
    }

    async fn call(&mut self, bytes: Option<&[u8]>) -> Result<Vec<String>, PluginError> {
        let plugin = self.plugin.clone();
        let pool = plugin.provider_pool()?;
        let Some(lease) = self.lease.as_mut() else {
            return Err(PluginError::Unavailable(plugin.name.to_string()));
        };
        let inst = &mut lease.instance;
        inst.store.data_mut().begin_call(pool.limits.cpu_budget);
        inst.store.set_epoch_deadline(1);
        let translator = inst.bindings.sluice_plugin_adapter().stream_translator();
        let r = match bytes {
            Some(b) => {
                translator
                    .call_push(&mut inst.store, self.resource, b)
                    .await
            }
            None => translator.call_finish(&mut inst.store, self.resource).await,
        };
        match r {
            Ok(Ok(chunks)) => Ok(chunks),
            Ok(Err(e)) => Err(plugin.error(e)),
            Err(trap) => match self.lease.take() {
                // A trapped instance is poisoned: account for it and drop it.
                Some(lease) => Err(trapped(pool, lease, trap, &plugin.name)),
                None => Err(PluginError::Unavailable(plugin.name.to_string())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::raw_json;

    #[test]
    fn a_plugins_data_is_kept_as_json_or_made_a_string() {
        assert_eq!(
            raw_json(r#"{"a": [1, 2]}"#.into()).get(),
            r#"{"a": [1, 2]}"#
        );
        assert_eq!(raw_json("not json".into()).get(), r#""not json""#);
        assert_eq!(raw_json(r#"{"a": 1"#.into()).get(), r#""{\"a\": 1""#);
    }
}
