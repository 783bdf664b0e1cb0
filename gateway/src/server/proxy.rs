//! The proxy pipeline for one request, stage by stage, in this order:
//!
//! 1. routing — decide the config from headers (cheap, no body yet, so a bad
//!    header is answered before a large upload is read);
//! 2. body — read it within `server.max_body_bytes`;
//! 3. the routing engine walks the config's strategy tree; for each target it
//!    tries ([`Proxied`], the engine's [`Attempts`]):
//!    - prepare: check the body is what the route takes, apply the target's
//!      `override_params`, run its before-request hooks (which may rewrite the
//!      body or answer 446);
//!    - send, as often as its retries allow: the provider builds the upstream
//!      request, it is sent within the deadline, the answer is relayed (streams
//!      once their first byte is in), and the after-response hooks run on a
//!      complete answer;
//! 4. the chosen answer leaves with Portkey's routing headers.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Map, Value, json};

use super::caching;
use super::meter::Meter;
use super::relay;
use super::{AppState, RequestInfo};
use crate::GatewayError;
use crate::cache;
use crate::config::routing::Hooks;
use crate::guardrails::{self, StageResult};
use crate::keys::{Caller, KeySettings};
use crate::providers::{
    AnswerOptions, BodyKind, Endpoint, FromChatChunks, StreamUsage, body, messages, responses,
};
use crate::routing::{self, Attempts, Deadline, Engine, InFlight, Step, Target, Total, Tried};

/// The axum handler for every proxied route.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    endpoint: Endpoint,
    Extension(info): Extension<RequestInfo>,
    req: Request,
) -> Response {
    let mut meter = Meter::new(state.clone(), &info.id, req.uri().path());
    let response = match run(&state, endpoint, req, &mut meter).await {
        Ok(response) => response,
        Err(err) => failed(err, endpoint),
    };
    meter.attach(response)
}

/// The gateway's own error answer: OpenAI's shape, or Anthropic's on its routes.
fn failed(err: GatewayError, endpoint: Endpoint) -> Response {
    tracing::warn!(status = err.status().as_u16(), code = err.code(), error = %err, "request failed");
    if !endpoint.anthropic_format() {
        return err.into_response();
    }
    let message = err.to_string();
    let (mut parts, _) = err.into_response().into_parts();
    let body = messages::error_to_anthropic(
        parts.status,
        json!({"error": {"message": message}})
            .to_string()
            .as_bytes(),
    );
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// A client format served over chat completions for providers that lack it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingress {
    /// Anthropic's Messages API.
    Messages,
    /// OpenAI's Responses API.
    Responses,
}

impl Ingress {
    fn to_chat(self, body: &[u8]) -> Result<Vec<u8>, GatewayError> {
        match self {
            Self::Messages => messages::messages_to_chat(body),
            Self::Responses => responses::responses_to_chat(body),
        }
    }
}

/// How a target is called for a client endpoint: Anthropic's Messages API and
/// OpenAI's Responses API go as they are to providers that serve them, and over
/// chat completions (converted both ways) to the others. Whether a provider
/// serves the format may depend on the `model` (Claude on Bedrock and Vertex).
fn call_endpoint(
    provider: &dyn crate::providers::Provider,
    endpoint: Endpoint,
    model: Option<&str>,
) -> Result<(Endpoint, Option<Ingress>), GatewayError> {
    let ingress = match endpoint {
        Endpoint::Messages => Some(Ingress::Messages),
        Endpoint::Responses => Some(Ingress::Responses),
        _ => None,
    };
    if let Some(ingress) = ingress
        && !provider.serves(endpoint, model)
        && provider.supports(Endpoint::Chat)
    {
        return Ok((Endpoint::Chat, Some(ingress)));
    }
    provider.require(endpoint)?;
    Ok((endpoint, None))
}

/// The model a target is called with: its `override_params`, else the body's.
fn target_model(target: &Target, body: &[u8]) -> Option<String> {
    if let Some(Value::String(model)) = target.override_params.get("model") {
        return Some(model.clone());
    }
    #[derive(serde::Deserialize)]
    struct Model {
        model: Option<String>,
    }
    serde_json::from_slice::<Model>(body).ok()?.model
}

/// A body ready to send, or an answer that ends the request here.
enum Prepared {
    Send {
        body: Bytes,
        stream: bool,
        options: AnswerOptions,
        hook_results: Option<StageResult>,
    },
    Answer(Response),
}

async fn run(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    req: Request,
    meter: &mut Meter,
) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let caller = parts.extensions.get::<Caller>();
    let settings = caller.map(|c| &c.key.settings);
    let plan = routing::plan(
        &state.config,
        &state.configs,
        &state.plugins,
        &state.vkeys,
        &parts.headers,
        settings.and_then(|s| s.default_config.as_deref()),
    )?;
    let mut metadata = routing::headers_metadata(&parts.headers)?;
    // The key's metadata wins over the request's.
    if let Some(s) = settings {
        metadata.extend(s.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let virtual_key = match routing::header_str(&parts.headers, routing::PortkeyHeader::VirtualKey)?
    {
        Some(name) => Some(name.trim().to_owned()),
        None => plan.config.root.target.virtual_key.clone(),
    };
    let scopes = Scopes {
        key: caller.map(|c| c.key.id.as_str()),
        virtual_key: virtual_key.as_deref(),
        metadata: &metadata,
    };
    let now = crate::keys::now().max(0);
    meter.charges = budget_charges(state, settings, &scopes);
    meter.buckets = rate_buckets(state, settings, &scopes);
    let admitted = admit(state, &meter.charges, &meter.buckets, now).await?;
    meter.record.key_id = caller.map(|c| c.key.id.clone());
    meter.record.virtual_key.clone_from(&virtual_key);
    if !metadata.is_empty() && meter.needed() {
        meter.record.metadata = Some(Value::Object(metadata.clone()).to_string());
    }
    // Before the body is read: a wrong route must not cost a large upload.
    if let Some(provider) = plan.sole_provider(&state.config, &state.plugins)? {
        call_endpoint(provider.as_ref(), endpoint, None)?;
    }
    let bytes = read_body(body, &parts.headers, state.config.max_body_bytes).await?;
    if meter.keeps_bodies() {
        let max = state.usage.settings().max_body_bytes;
        meter.record.request_body = Some(crate::usage::redacted_body(&bytes, max));
    }

    let proxied = Proxied {
        state,
        endpoint,
        parts: &parts,
        bytes: bytes.clone(),
        metadata: &metadata,
        scopes,
        settings,
        grants: Default::default(),
        metering: meter.needed(),
        sent: Default::default(),
        cache_mode: caching::header_mode(&parts.headers)?,
    };
    let engine = Engine::new(
        &state.config,
        &state.plugins,
        &state.vkeys,
        &state.targets,
        &parts.headers,
        &plan.label,
        plan.breakers(),
        endpoint,
        &metadata,
        parts.uri.path(),
        &bytes,
        Total::new(
            plan.config.total_timeout_ms,
            state.config.upstream.total_timeout,
        ),
        &proxied,
    );
    let tried = engine.run(&plan.config).await;
    let mut cache_status = cache::Status::Disabled;
    if let Some(sent) = proxied.sent.into_inner().unwrap_or_else(|e| e.into_inner()) {
        meter.record.provider = Some(sent.provider);
        meter.record.model = sent.model;
        if sent.virtual_key.is_some() && sent.virtual_key != meter.record.virtual_key {
            // The answer is charged to the virtual key that answered it.
            let answered = Scopes {
                virtual_key: sent.virtual_key.as_deref(),
                ..scopes
            };
            meter.charges = budget_charges(state, settings, &answered);
            meter.record.virtual_key = sent.virtual_key;
        }
        meter.hide_usage = sent.hide_usage;
        cache_status = sent.cache;
    }
    meter.record.retries = tried.retries.max(0) as u32;
    meter.record.target = tried.target.as_ref().map(|(path, _)| path.clone());
    meter.cache = cache_status;
    let mut response = answer(tried, endpoint);
    caching::status_header(&mut response, cache_status);
    crate::limits::admitted_headers(response.headers_mut(), &admitted);
    Ok(response)
}

/// Checks the request's budgets, then counts it in its rate-limit buckets:
/// in Redis when the gateways share state (this gateway's own counters if
/// Redis fails), else in memory.
async fn admit(
    state: &AppState,
    charges: &[crate::limits::budget::Charge],
    buckets: &[crate::limits::Bucket],
    now: i64,
) -> Result<crate::limits::Admitted, GatewayError> {
    check_budgets(state, charges, now).await?;
    let redis = state.redis.as_deref();
    let shared_limits = crate::shared::ask(redis, "rate limits", async |r| {
        r.admit(buckets, now as u64).await
    })
    .await;
    shared_limits
        .unwrap_or_else(|| state.rate.admit(buckets, now as u64))
        .map_err(|l| GatewayError::RateLimited {
            bucket: l.bucket,
            unit: l.unit,
            limit: l.limit,
            retry_after: l.retry_after,
        })
}

/// Refuses a request whose budgets are spent: in Redis when the gateways
/// share state (this gateway's own spend if Redis fails), else in memory.
async fn check_budgets(
    state: &AppState,
    charges: &[crate::limits::budget::Charge],
    now: i64,
) -> Result<(), GatewayError> {
    // Answers at once, without I/O, when there is nothing to check.
    let shared = crate::shared::ask(state.redis.as_deref(), "budgets", async |r| {
        r.check_budgets(charges, now).await
    })
    .await;
    shared
        .unwrap_or_else(|| state.budgets.check(charges, now))
        .map_err(|e| GatewayError::BudgetExhausted {
            bucket: e.bucket,
            budget: e.budget,
            spent: e.spent,
        })
}

/// What a request is counted by in rate limits and budgets.
#[derive(Clone, Copy)]
struct Scopes<'a> {
    /// The gateway key's id.
    key: Option<&'a str>,
    virtual_key: Option<&'a str>,
    metadata: &'a Map<String, Value>,
}

impl Scopes<'_> {
    /// The bucket a request falls in for `scope` (`key:…`,
    /// `virtual_key:…`, `metadata.user:…`) and the scope's value, if the
    /// request has one.
    fn bucket(&self, scope: &crate::limits::Scope) -> Option<(String, &str)> {
        use crate::limits::Scope;
        match scope {
            Scope::Key => self.key.map(|k| (format!("key:{k}"), k)),
            Scope::VirtualKey => self.virtual_key.map(|v| (format!("virtual_key:{v}"), v)),
            Scope::Metadata(name) => self
                .metadata
                .get(name)
                .and_then(Value::as_str)
                .map(|v| (format!("metadata.{name}:{v}"), v)),
        }
    }
}

/// The rate-limit buckets a request counts in: one per `[[rate_limits]]`
/// rule whose scope it has (its gateway key, its virtual key, its metadata
/// value), with its key's own `rpm` and `tpm` in place of the key rule's.
fn rate_buckets(
    state: &AppState,
    settings: Option<&KeySettings>,
    scopes: &Scopes<'_>,
) -> Vec<crate::limits::Bucket> {
    use crate::limits::{Bucket, Scope};
    let rules = &state.config.rate_limits;
    let (key_rpm, key_tpm) = settings.map_or((None, None), |s| (s.rpm, s.tpm));
    if rules.is_empty() && key_rpm.is_none() && key_tpm.is_none() {
        return Vec::new();
    }
    let mut buckets: Vec<Bucket> = rules
        .iter()
        .filter_map(|rule| {
            let (id, _) = scopes.bucket(&rule.scope)?;
            let mut b = Bucket {
                id,
                rpm: rule.rpm,
                tpm: rule.tpm,
            };
            if rule.scope == Scope::Key {
                b.rpm = key_rpm.or(b.rpm);
                b.tpm = key_tpm.or(b.tpm);
            }
            Some(b)
        })
        .collect();
    if (key_rpm.is_some() || key_tpm.is_some())
        && !rules.iter().any(|r| r.scope == Scope::Key)
        && let Some((id, _)) = scopes.bucket(&Scope::Key)
    {
        buckets.push(Bucket {
            id,
            rpm: key_rpm,
            tpm: key_tpm,
        });
    }
    buckets
}

/// The budgets a request counts against: each `[[budgets]]` rule whose
/// scope it has (and whose `name`, if any, is its value), with its key's own
/// `budget` in place of the key rules.
fn budget_charges(
    state: &AppState,
    settings: Option<&KeySettings>,
    scopes: &Scopes<'_>,
) -> Vec<crate::limits::budget::Charge> {
    use crate::limits::Scope;
    use crate::limits::budget::Charge;
    let rules = &state.config.budgets;
    let own = settings.and_then(|s| s.budget);
    if rules.is_empty() && own.is_none() {
        return Vec::new();
    }
    let mut charges: Vec<Charge> = rules
        .iter()
        .filter(|rule| own.is_none() || rule.scope != Scope::Key)
        .filter_map(|rule| {
            let (id, value) = scopes.bucket(&rule.scope)?;
            if rule.name.as_deref().is_some_and(|n| n != value) {
                return None;
            }
            Some(Charge {
                id,
                budget: rule.budget,
            })
        })
        .collect();
    if let Some(budget) = own
        && let Some((id, _)) = scopes.bucket(&Scope::Key)
    {
        charges.push(Charge { id, budget });
    }
    charges
}

/// The engine's choice as the client's answer, with Portkey's headers: the
/// provider and config path of the target that answered, and the retries made.
fn answer(tried: Tried<Body>, endpoint: Endpoint) -> Response {
    let mut response = match tried.answer {
        Ok(r) => r,
        Err(e) => failed(e, endpoint),
    };
    let headers = response.headers_mut();
    if let Some((path, provider)) = &tried.target {
        if let Ok(v) = http::HeaderValue::from_str(provider) {
            headers.insert("x-portkey-provider", v);
        }
        if let Ok(v) = http::HeaderValue::from_str(path) {
            headers.insert("x-portkey-last-used-option-index", v);
        }
    }
    headers.insert(
        "x-portkey-retry-attempt-count",
        http::HeaderValue::from(tried.retries),
    );
    response
}

/// Whether the calling key may use `target` for the model asked for (the
/// config's override, else the body's).
fn allowed(settings: &KeySettings, target: &Target, body: &[u8]) -> Result<(), GatewayError> {
    let provider = target.provider.slug();
    let overridden = target.override_params.get("model").and_then(Value::as_str);
    let model = match (overridden, &settings.allowed_models) {
        (Some(m), _) => Some(std::borrow::Cow::Borrowed(m)),
        // The body is read only when models are limited.
        (None, Some(_)) => body::peek(body)
            .ok()
            .and_then(|p| p.model.map(|m| std::borrow::Cow::Owned(m.into_owned()))),
        (None, None) => None,
    };
    if settings.allows(provider, model.as_deref()) {
        return Ok(());
    }
    Err(GatewayError::Forbidden(match model {
        Some(m) => format!("this gateway key may not use model `{m}` on provider `{provider}`"),
        None => format!("this gateway key may not use provider `{provider}`"),
    }))
}

/// One request's side of the routing engine: what it prepares and sends to a
/// target.
struct Proxied<'a> {
    state: &'a Arc<AppState>,
    endpoint: Endpoint,
    parts: &'a http::request::Parts,
    bytes: Bytes,
    metadata: &'a Map<String, Value>,
    /// What the request counts in: a target's own virtual key may add a
    /// budget.
    scopes: Scopes<'a>,
    /// The calling gateway key's limits, when authentication is on.
    settings: Option<&'a KeySettings>,
    /// What guardrail plugins may reach, made once on first use.
    grants: std::sync::OnceLock<crate::plugins::Grants>,
    /// The answer is metered: a stream's usage may be asked for.
    metering: bool,
    /// The last attempt sent, for the request's record.
    sent: std::sync::Mutex<Option<Sent>>,
    /// `x-portkey-cache`: the cache asked for when a config names none.
    cache_mode: Option<&'static str>,
}

/// What the record says of the attempt that answered.
struct Sent {
    provider: String,
    model: Option<String>,
    virtual_key: Option<String>,
    hide_usage: bool,
    cache: cache::Status,
}

/// A body prepared for one target.
struct Ready {
    body: Bytes,
    /// The endpoint the target is called on.
    endpoint: Endpoint,
    /// The answer goes back in the client's format (converted from a chat
    /// completion).
    ingress: Option<Ingress>,
    stream: bool,
    options: AnswerOptions,
    before: Option<StageResult>,
    /// The gateway asked for the stream's usage; the client did not.
    hide_usage: bool,
}

impl Proxied<'_> {
    /// Sends the upstream request within the deadline and relays its answer
    /// (a stream once its first byte is in).
    async fn call_upstream(
        &self,
        target: &Target,
        ready: &Ready,
        deadline: &Deadline,
        in_flight: InFlight,
        upstream_req: crate::providers::UpstreamRequest,
    ) -> Result<Response, GatewayError> {
        let state = self.state;
        let provider = &target.provider;
        let response = tokio::time::timeout_at(
            deadline.at,
            state
                .upstream
                .send(provider.slug(), upstream_req, target.custom_host.is_some()),
        )
        .await
        .map_err(|_| deadline.error())??;
        let broken = relay::Broken::default();
        let mut response = relay::relay(
            response,
            provider.as_ref(),
            ready.endpoint,
            ready.stream,
            deadline,
            state.config.upstream.max_response_bytes,
            relay::Streaming {
                broken: broken.clone(),
                idle: target
                    .stream_idle_timeout
                    .unwrap_or(state.config.upstream.stream_idle_timeout),
                in_flight,
                options: ready.options.clone(),
            },
        )
        .await?;
        response.extensions_mut().insert(broken);
        Ok(response)
    }

    /// A target with a virtual key of its own, other than the request's
    /// (one deeper in a config): its budgets are checked before it is
    /// called. A spent one is a 412 that a fallback moves on from.
    async fn own_budgets(&self, target: &Target) -> Result<(), GatewayError> {
        use crate::limits::Scope;
        let Some(own) = target.virtual_key.as_deref() else {
            return Ok(());
        };
        let budgets = &self.state.config.budgets;
        if self.scopes.virtual_key == Some(own)
            || !budgets.iter().any(|b| b.scope == Scope::VirtualKey)
        {
            return Ok(());
        }
        let scopes = Scopes {
            virtual_key: Some(own),
            ..self.scopes
        };
        let charges: Vec<_> = budget_charges(self.state, self.settings, &scopes)
            .into_iter()
            .filter(|c| c.id.starts_with("virtual_key:"))
            .collect();
        check_budgets(self.state, &charges, crate::keys::now().max(0)).await
    }

    fn guardrails_context<'c>(
        &'c self,
        target: &'c Target,
        endpoint: Endpoint,
    ) -> guardrails::Context<'c> {
        guardrails::Context {
            endpoint,
            provider: target.provider.slug(),
            metadata: self.metadata,
            plugins: &self.state.plugins,
            stats: &self.state.guardrails,
            grants: if target.hooks.is_empty() {
                crate::plugins::Grants::default()
            } else {
                self.grants
                    .get_or_init(|| crate::plugins::Grants {
                        headers: Some(Arc::new(self.parts.headers.clone())),
                        outbound: Some(self.state.outbound.clone()),
                    })
                    .clone()
            },
        }
    }
}

impl Attempts for Proxied<'_> {
    type Body = Body;
    type Prepared = Ready;

    async fn prepare(&self, target: &Target) -> Result<Step<Ready, Body>, GatewayError> {
        if let Some(settings) = self.settings {
            allowed(settings, target, &self.bytes)?;
        }
        self.own_budgets(target).await?;
        let model = match self.endpoint {
            Endpoint::Messages | Endpoint::Responses => target_model(target, &self.bytes),
            _ => None,
        };
        let (endpoint, ingress) =
            call_endpoint(target.provider.as_ref(), self.endpoint, model.as_deref())?;
        let bytes = match ingress {
            Some(ingress) => Bytes::from(ingress.to_chat(&self.bytes)?),
            None => self.bytes.clone(),
        };
        let ctx = self.guardrails_context(target, endpoint);
        Ok(
            match prepare(target, &ctx, &self.parts.headers, bytes).await? {
                Prepared::Send {
                    body,
                    stream,
                    mut options,
                    hook_results,
                } => {
                    let ask = self.metering
                        && stream
                        && !options.include_usage
                        && ingress.is_none()
                        && matches!(endpoint, Endpoint::Chat | Endpoint::Completions);
                    let (body, hide_usage) = match (ask, target.provider.stream_usage()) {
                        (true, StreamUsage::Translated) => (body, true),
                        (true, StreamUsage::Requested) => (asking_usage(body)?, true),
                        _ => (body, false),
                    };
                    options.include_usage |= hide_usage;
                    Step::Send(Ready {
                        body,
                        endpoint,
                        ingress,
                        stream,
                        options: AnswerOptions {
                            strict: target.strict,
                            ..options
                        },
                        before: hook_results,
                        hide_usage,
                    })
                }
                Prepared::Answer(response) if ingress.is_some() => {
                    Step::Answer(back_to(ingress, response, false).await?)
                }
                Prepared::Answer(response) => Step::Answer(response),
            },
        )
    }

    async fn send(
        &self,
        target: &Target,
        ready: &Ready,
        deadline: &Deadline,
        in_flight: InFlight,
    ) -> Result<Response, GatewayError> {
        let state = self.state;
        let provider = &target.provider;
        tracing::Span::current().record("gen_ai.provider.name", provider.slug());
        *self.sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sent {
            provider: provider.slug().to_owned(),
            model: ready.options.model.clone(),
            virtual_key: target.virtual_key.clone(),
            hide_usage: ready.hide_usage,
            cache: cache::Status::Disabled,
        });
        let path = self.parts.uri.path();
        let mut call = target.call(
            ready.endpoint,
            self.parts.method.clone(),
            &self.parts.headers,
            self.parts.uri.query(),
            path.strip_prefix("/v1").unwrap_or(path),
            ready.body.clone(),
        );
        let token;
        if let Some(source) = provider.token_source(&call)? {
            token =
                tokio::time::timeout_at(deadline.at, state.upstream.token(provider.slug(), source))
                    .await
                    .map_err(|_| deadline.error())??;
            call.token = Some(&token);
        }
        let upstream_req = provider.build_request(&call).await?;
        let lookup = caching::lookup(
            &state.cache,
            target,
            self.cache_mode,
            ready.endpoint,
            &self.parts.headers,
            &ready.body,
            &upstream_req,
        );
        let found = match &lookup {
            None => caching::Found {
                status: cache::Status::Disabled,
                entry: None,
                vector: None,
            },
            Some(l) => {
                let embed = async |prompt: &str| {
                    let asked = embedding(state, self.parts, prompt);
                    tokio::time::timeout_at(deadline.at, asked)
                        .await
                        .ok()
                        .flatten()
                };
                caching::find(state, l, embed).await
            }
        };
        if let Some(sent) = self.sent.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            sent.cache = found.status;
        }
        let response = match found.entry {
            Some(entry) => caching::hit(entry),
            None => {
                let response = self
                    .call_upstream(target, ready, deadline, in_flight, upstream_req)
                    .await?;
                match &lookup {
                    Some(l) => caching::storing(response, state, l, found.vector),
                    None => response,
                }
            }
        };
        let response = if target.hooks.is_empty() {
            response
        } else {
            let ctx = self.guardrails_context(target, ready.endpoint);
            after_hooks(
                &target.hooks,
                &ctx,
                ready,
                response,
                state.config.upstream.max_response_bytes,
            )
            .await?
        };
        if ready.ingress.is_some() {
            return back_to(ready.ingress, response, ready.stream).await;
        }
        Ok(response)
    }
}

/// The embedding of a prompt for the semantic cache, asked of
/// `[cache.semantic] embedding_config` through the gateway's own pipeline (its
/// routing, retries, virtual keys and providers' embeddings formats), as a
/// request of its own: recorded in the request log under the same trace id,
/// with the metadata `sluice_purpose: semantic-cache`. `None` (the request
/// goes on as a miss) when the call fails or the answer holds no embedding;
/// the log says why.
async fn embedding(
    state: &Arc<AppState>,
    client: &http::request::Parts,
    prompt: &str,
) -> Option<Vec<f32>> {
    let (settings, _) = state.cache.semantic()?;
    let mut body = json!({"input": prompt});
    if let Some(model) = &settings.model {
        body["model"] = Value::String(model.clone());
    }
    let mut req = Request::new(Body::from(body.to_string()));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("/v1/embeddings");
    let headers = req.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-portkey-metadata",
        http::HeaderValue::from_static(r#"{"sluice_purpose":"semantic-cache"}"#),
    );
    let config = http::HeaderValue::from_str(&settings.embedding_config).ok()?;
    headers.insert("x-portkey-config", config);
    let info = client.extensions.get::<RequestInfo>().cloned();
    let mut meter = Meter::new(
        state.clone(),
        info.as_ref().map_or("", |i| &*i.id),
        "/v1/embeddings",
    );
    if let Some(info) = info {
        req.extensions_mut().insert(info);
    }
    // The pipeline calls this from inside itself: the inner run is boxed.
    let inner: std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>> =
        Box::pin(run(state, Endpoint::Embeddings, req, &mut meter));
    let response = match inner.await {
        Ok(response) => response,
        Err(err) => failed(err, Endpoint::Embeddings),
    };
    let response = meter.attach(response);
    let status = response.status();
    let limit = state.config.upstream.max_response_bytes;
    let bytes = axum::body::to_bytes(response.into_body(), limit).await;
    let vector = match (status.is_success(), &bytes) {
        (true, Ok(bytes)) => caching::embedding_of(bytes),
        _ => None,
    };
    if vector.is_none() {
        tracing::warn!(
            status = status.as_u16(),
            config = %settings.embedding_config,
            "semantic cache: no embedding for the prompt; looked up as an exact repeat only"
        );
    }
    vector
}

/// A streamed chat body that asks for the usage chunk
/// (`stream_options.include_usage`).
fn asking_usage(body: Bytes) -> Result<Bytes, GatewayError> {
    const ASK: &[u8] = br#"{"include_usage":true}"#;
    if memchr::memmem::find(&body, b"\"stream_options\"").is_none() {
        return Ok(Bytes::from(with_member(&body, "stream_options", ASK)));
    }
    let mut map = body::parse_object(&body)?;
    match map.get_mut("stream_options") {
        Some(Value::Object(options)) => {
            options.insert("include_usage".into(), Value::Bool(true));
        }
        _ => {
            map.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    serde_json::to_vec(&Value::Object(map))
        .map(Bytes::from)
        .map_err(|e| GatewayError::Internal(e.to_string()))
}

/// A stream body converted event by event.
fn converted_stream(body: Body, events: impl FromChatChunks) -> Body {
    use futures_util::StreamExt;
    let state = Some((body.into_data_stream(), events));
    let out = futures_util::stream::unfold(state, |state| async move {
        let (mut chunks, mut events) = state?;
        match chunks.next().await {
            Some(Ok(bytes)) => Some((
                Ok::<Bytes, std::convert::Infallible>(Bytes::from(events.push(&bytes))),
                Some((chunks, events)),
            )),
            Some(Err(_)) | None => Some((Ok(Bytes::from(events.finish())), None)),
        }
    });
    Body::from_stream(out)
}

/// An answer in OpenAI's chat format (a completion, its stream, or an error)
/// in the client's format.
async fn back_to(
    ingress: Option<Ingress>,
    response: Response,
    stream: bool,
) -> Result<Response, GatewayError> {
    let Some(ingress) = ingress else {
        return Ok(response);
    };
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    if stream && parts.status.is_success() {
        parts.headers.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        let body = match ingress {
            Ingress::Messages => converted_stream(body, messages::ChatToEvents::default()),
            Ingress::Responses => {
                converted_stream(body, responses::ChatToResponseEvents::default())
            }
        };
        return Ok(Response::from_parts(parts, body));
    }
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| GatewayError::Internal(format!("cannot re-read the answer: {e}")))?;
    let mut converted = match (ingress, parts.status.is_success()) {
        (Ingress::Messages, true) => messages::chat_to_message(&bytes)?,
        (Ingress::Messages, false) => messages::error_to_anthropic(parts.status, &bytes),
        (Ingress::Responses, true) => responses::chat_to_response(&bytes)?,
        // Errors are already in OpenAI's shape.
        (Ingress::Responses, false) => {
            return Ok(Response::from_parts(parts, Body::from(bytes)));
        }
    };
    // Guardrails' verdicts (on a 246 answer or a 446 refusal) stay with it.
    if let Some(results) = hook_results::<Value>(&bytes)
        && let Some(object) = converted.as_object_mut()
    {
        object.insert("hook_results".into(), results);
    }
    parts.headers.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(Response::from_parts(
        parts,
        Body::from(converted.to_string()),
    ))
}

/// The `hook_results` of a JSON answer, if the guardrails added them, read
/// as `T` (a `Value`, or the JSON text as a `&RawValue`).
pub(super) fn hook_results<'a, T: serde::Deserialize<'a>>(answer: &'a [u8]) -> Option<T> {
    memchr::memmem::find(answer, b"\"hook_results\"")?;
    #[derive(serde::Deserialize)]
    struct WithResults<T> {
        hook_results: Option<T>,
    }
    serde_json::from_slice::<WithResults<T>>(answer)
        .ok()?
        .hook_results
}

/// A JSON object's text with one more member, without parsing it again (the
/// answer was checked to be JSON by the relay). Not an object: left as it is.
fn with_member(object: &[u8], key: &str, value: &[u8]) -> Vec<u8> {
    let end = object.iter().rposition(|b| !b.is_ascii_whitespace());
    let start = object.iter().position(|b| !b.is_ascii_whitespace());
    let (Some(start), Some(end)) = (start, end) else {
        return object.to_vec();
    };
    if object[start] != b'{' || object[end] != b'}' {
        return object.to_vec();
    }
    let empty = object[start + 1..end].iter().all(u8::is_ascii_whitespace);
    let mut out = Vec::with_capacity(object.len() + 256);
    out.extend_from_slice(&object[..end]);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(Value::String(key.to_owned()).to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(value);
    out.extend_from_slice(&object[end..]);
    out
}

/// Portkey's 446 answer when a deny hook failed.
fn denied(before: &[guardrails::HookResult], after: &[guardrails::HookResult]) -> Response {
    let body = guardrails::denied_body(before, after);
    (guardrails::denied_status(), axum::Json(body)).into_response()
}

/// After the answer: output hooks on a complete 2xx JSON answer, then Portkey's
/// `hook_results` in the body and 246 when checks failed without deny. A 2xx
/// stream is checked as its policy says (held whole, or a sliding window).
async fn after_hooks(
    hooks: &Hooks,
    ctx: &guardrails::Context<'_>,
    ready: &Ready,
    response: Response,
    max_bytes: usize,
) -> Result<Response, GatewayError> {
    let empty = StageResult::default();
    let before = ready.before.as_ref().unwrap_or(&empty);
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let success = response.status().is_success();
    let run_after = !hooks.after.is_empty() && guardrails::applies(ctx.endpoint, true);
    if ready.stream && success && run_after {
        return guard_stream(hooks, ctx, ready, before, response, max_bytes).await;
    }
    if ready.stream || !is_json || !success {
        // Error answers pass as they are; a failed before hook still shows in
        // the status.
        let mut response = response;
        if before.failed && success {
            *response.status_mut() = guardrails::failed_status();
        }
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| GatewayError::Internal(format!("cannot re-read the answer: {e}")))?;
    let (after, answer) = if run_after {
        // Only the answer's text is read; it is parsed whole only when a
        // guardrail rewrote it.
        let Some(checked) = guardrails::after_response_bytes(hooks, ctx, &bytes).await else {
            return Ok(Response::from_parts(parts, Body::from(bytes)));
        };
        checked?
    } else {
        (StageResult::default(), None)
    };
    if after.denied {
        return Ok(denied(&before.results, &after.results));
    }
    if before.failed || after.failed {
        parts.status = guardrails::failed_status();
    }
    if before.results.is_empty() && after.results.is_empty() {
        // Only detached hooks: nothing ran that the answer could report.
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    }
    let results = guardrails::HookResults {
        before_request_hooks: &before.results,
        after_request_hooks: &after.results,
    };
    let body = match answer {
        Some(mut answer) => {
            let results = serde_json::to_value(&results)
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            answer.insert("hook_results".into(), results);
            serde_json::to_vec(&Value::Object(answer))
        }
        None => serde_json::to_vec(&results).map(|r| with_member(&bytes, "hook_results", &r)),
    }
    .map_err(|e| GatewayError::Internal(e.to_string()))?;
    parts.headers.remove(CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// Output guardrails on a 2xx stream: in buffer mode the stream is held
/// whole and checked before a byte leaves (a deny is a 446, as for a complete
/// answer); in window mode it leaves as it comes, checked on a sliding window
/// ([`relay::guarded_stream`]).
async fn guard_stream(
    hooks: &Hooks,
    ctx: &guardrails::Context<'_>,
    ready: &Ready,
    before: &StageResult,
    response: Response,
    max_bytes: usize,
) -> Result<Response, GatewayError> {
    use crate::config::routing::StreamPolicy;
    use guardrails::stream::{Owned, StreamText, check};
    let (mut parts, body) = response.into_parts();
    if before.failed {
        parts.status = guardrails::failed_status();
    }
    let owned = Owned::of(ctx);
    let model = ready.options.model.clone();
    // Only detached hooks: nothing to hold the stream for; they get the whole
    // text once it has passed.
    let policy = if hooks.after.iter().all(|h| h.detached) {
        StreamPolicy::Window {
            window_chars: usize::MAX,
            every_chars: usize::MAX,
        }
    } else {
        hooks.stream
    };
    match policy {
        StreamPolicy::Buffer => {
            let bytes = axum::body::to_bytes(body, max_bytes).await.map_err(|_| {
                GatewayError::UpstreamGarbage {
                    provider: ctx.provider.to_owned(),
                    detail: format!(
                        "the stream is over {max_bytes} bytes, the most output guardrails in \
                         buffer mode hold (see `stream_guardrails`)"
                    ),
                }
            })?;
            let mut text = StreamText::new(ctx.endpoint);
            text.push(&bytes);
            let after = check(&owned, &hooks.after, model, text.texts(None), true).await;
            if after.denied {
                return Ok(denied(&before.results, &after.results));
            }
            if after.failed {
                parts.status = guardrails::failed_status();
            }
            Ok(Response::from_parts(parts, Body::from(bytes)))
        }
        StreamPolicy::Window {
            window_chars,
            every_chars,
        } => {
            let guard = relay::StreamGuard {
                owned,
                hooks: hooks.after.clone(),
                model,
                window_chars,
                every_chars,
                endpoint: ctx.endpoint,
                before: before.results.clone(),
            };
            Ok(Response::from_parts(
                parts,
                relay::guarded_stream(body, guard),
            ))
        }
    }
}

async fn read_body(
    body: Body,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if too_large {
            GatewayError::BodyTooLarge { limit }
        } else {
            GatewayError::MalformedBody(format!("the body could not be read: {e}"))
        }
    })
}

async fn prepare(
    target: &Target,
    ctx: &guardrails::Context<'_>,
    headers: &http::HeaderMap,
    bytes: Bytes,
) -> Result<Prepared, GatewayError> {
    let send = |body: Bytes| Prepared::Send {
        body,
        stream: false,
        options: AnswerOptions::default(),
        hook_results: None,
    };
    match ctx.endpoint.body_kind() {
        BodyKind::Json => {}
        BodyKind::Multipart => {
            let is_multipart = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("multipart/form-data"));
            if !is_multipart {
                return Err(GatewayError::MalformedBody(
                    "this route takes multipart/form-data (a file upload)".into(),
                ));
            }
            return Ok(send(bytes));
        }
        BodyKind::Empty => return Ok(send(Bytes::new())),
        BodyKind::Raw => return Ok(send(bytes)),
    }

    let hooks = &target.hooks;
    let overrides = &target.override_params;
    let run_hooks = !hooks.before.is_empty() && guardrails::applies(ctx.endpoint, false);
    if overrides.is_empty() && !run_hooks {
        // The common case: nothing changes the body, so it is only checked and
        // peeked at (model, stream), then sent byte for byte.
        let peek = body::peek(&bytes)?;
        if let Some(model) = &peek.model {
            tracing::Span::current().record("gen_ai.request.model", model.as_ref());
        }
        let options = AnswerOptions {
            model: peek.model.as_deref().map(str::to_owned),
            include_usage: peek.include_usage(),
            ..AnswerOptions::default()
        };
        return Ok(Prepared::Send {
            stream: peek.stream.unwrap_or(false),
            options,
            body: bytes,
            hook_results: None,
        });
    }

    if overrides.is_empty() {
        // Checks only read the text: the body is parsed whole only if a
        // guardrail rewrote it; otherwise the client's bytes go as they came.
        // One pass reads the text and what `peek` reads; a body it cannot
        // read gets `peek`'s account of what is wrong, when it has one.
        let text =
            guardrails::BodyText::request(&bytes).or_else(|e| body::peek(&bytes).and(Err(e)))?;
        if let Some(model) = &text.model {
            tracing::Span::current().record("gen_ai.request.model", model.as_str());
        }
        let stream = text.stream.unwrap_or(false);
        // A rewrite changes message text only: model and options stay.
        let options = AnswerOptions {
            model: text.model.clone(),
            include_usage: text.include_usage,
            ..AnswerOptions::default()
        };
        let (result, rewritten) =
            guardrails::before_request_bytes(hooks, ctx, &bytes, text).await?;
        if result.denied {
            return Ok(Prepared::Answer(denied(&result.results, &[])));
        }
        let body = match rewritten {
            Some(map) => Bytes::from(
                serde_json::to_vec(&Value::Object(map))
                    .map_err(|e| GatewayError::Internal(e.to_string()))?,
            ),
            None => bytes,
        };
        return Ok(Prepared::Send {
            body,
            stream,
            options,
            hook_results: Some(result),
        });
    }

    let mut map = body::parse_object(&bytes)?;
    body::apply_overrides(&mut map, overrides);
    let hook_results = if run_hooks {
        let result = guardrails::before_request(hooks, ctx, &mut map).await;
        if result.denied {
            return Ok(Prepared::Answer(denied(&result.results, &[])));
        }
        Some(result)
    } else {
        None
    };
    if let Some(model) = map.get("model").and_then(Value::as_str) {
        tracing::Span::current().record("gen_ai.request.model", model);
    }
    let stream = map.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let options = body::stream_options(&map);
    // Unknown fields and their order are kept (serde_json's preserve_order).
    let body = Bytes::from(
        serde_json::to_vec(&Value::Object(map))
            .map_err(|e| GatewayError::Internal(e.to_string()))?,
    );
    Ok(Prepared::Send {
        body,
        stream,
        options,
        hook_results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_spliced_into_an_object() {
        let v = br#"{"a":[1]}"#;
        let out = with_member(b" {\"x\": 1}\n", "k", v);
        let parsed: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(parsed, serde_json::json!({"x": 1, "k": {"a": [1]}}));
        let out = with_member(b"{ }", "k", v);
        assert_eq!(
            serde_json::from_slice::<Value>(&out).ok(),
            Some(serde_json::json!({"k": {"a": [1]}}))
        );
        assert_eq!(with_member(b"[1]", "k", v), b"[1]");
    }

    #[test]
    fn hook_results_are_read_as_a_value_or_as_text() {
        let answer = br#"{"id":"x","hook_results":{"before_request_hooks":[]}}"#;
        assert_eq!(
            hook_results::<Value>(answer),
            Some(json!({"before_request_hooks": []}))
        );
        let raw = hook_results::<&serde_json::value::RawValue>(answer);
        assert_eq!(raw.map(|r| r.get()), Some(r#"{"before_request_hooks":[]}"#));
        assert_eq!(hook_results::<Value>(br#"{"id":"x"}"#), None);
    }

    #[test]
    fn a_stream_is_asked_for_its_usage() {
        let ask = |body: &str| -> Value {
            let out = asking_usage(Bytes::from(body.to_owned())).expect("json");
            serde_json::from_slice(&out).expect("json")
        };
        assert_eq!(
            ask(r#"{"model":"m","stream":true}"#),
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}})
        );
        assert_eq!(
            ask(r#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#),
            json!({"stream": true, "stream_options": {"include_usage": true, "x": 1}})
        );
        assert_eq!(
            ask(r#"{"stream_options":null}"#),
            json!({"stream_options": {"include_usage": true}})
        );
    }
}
