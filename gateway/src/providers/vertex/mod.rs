//! `vertex-ai`: Google Cloud's Vertex AI — Gemini, and the partner models it
//! hosts — behind OpenAI's chat completions and embeddings, and Claude behind
//! Anthropic's Messages API as it is.
//!
//! - where: `https://{region}-aiplatform.googleapis.com/v1/projects/{project}/
//!   locations/{region}/…` (`aiplatform.googleapis.com` for the `global`
//!   region). Project and region come from the config target
//!   (`vertex_project_id`, `vertex_region`) or Portkey's headers
//!   (`x-portkey-vertex-project-id`, `x-portkey-vertex-region`); the project
//!   defaults to the service account's, the region to `us-central1`.
//! - auth: a service account key (`vertex_service_account_json`, an object or
//!   a string, or the `x-portkey-vertex-service-account-json` header) signs a
//!   JWT that its `token_uri` exchanges for an access token; the pipeline
//!   caches it until shortly before it expires ([`auth`],
//!   [`crate::upstream::Tokens`]). Without one, the provider key is taken as
//!   an access token (`gcloud auth print-access-token`).
//! - models, as Portkey names them: `publisher.model`, where the publisher is
//!   `google` (the default), `anthropic` (a bare `claude-*` is Anthropic's
//!   too), `meta` or `endpoints` (a deployed endpoint's id).
//!   - Gemini: `…/publishers/google/models/{model}:generateContent`
//!     (`:streamGenerateContent?alt=sse`), the request and answer exactly as
//!     the `google` adapter maps them; embeddings by `:predict`.
//!   - Claude: `…/publishers/anthropic/models/{model}:rawPredict`
//!     (`:streamRawPredict`): the Messages API body without `model`, with
//!     `anthropic_version: vertex-2023-10-16`, mapped as the `anthropic`
//!     adapter maps it. Anthropic's `/v1/messages` (and `count_tokens`) go
//!     as they are.
//!   - Llama (`meta.*`) and deployed endpoints: Vertex's OpenAI-compatible
//!     `…/endpoints/openapi/chat/completions` and
//!     `…/endpoints/{id}/chat/completions`; the body as it is.
//! - errors: Google's (`{"error":{"code","message","status"}}`) and
//!   Anthropic's shapes, in OpenAI's (Anthropic's on `/v1/messages`).

pub mod auth;

use serde_json::{Map, Value, json};

use super::{AnswerOptions, Call, ChunkTranslator, Endpoint, OpenAiCompatible, UpstreamRequest};
use super::{anthropic, google, messages, native};
use crate::GatewayError;
use crate::error::openai_error;
use crate::providers::native::bad;
use crate::upstream::TokenSource;

use auth::ServiceAccount;

const SPEC: &str = r#"
[[provider]]
slug = "vertex-ai"
endpoints = ["proxy"]
"#;

/// The Messages API version Vertex takes in the body.
const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

#[derive(Debug)]
pub struct Vertex {
    transport: OpenAiCompatible,
}

/// Who publishes a model on Vertex, which decides its API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    Google,
    Anthropic,
    Meta,
    /// A deployed endpoint, by id.
    Endpoint,
}

/// A model name's publisher and the model's own name.
pub fn publisher(model: &str) -> (Publisher, &str) {
    if let Some((prefix, rest)) = model.split_once('.') {
        let publisher = match prefix {
            "google" => Some(Publisher::Google),
            "anthropic" => Some(Publisher::Anthropic),
            "meta" => Some(Publisher::Meta),
            "endpoints" => Some(Publisher::Endpoint),
            _ => None,
        };
        if let Some(p) = publisher {
            return (p, rest);
        }
    }
    if model.starts_with("claude") {
        return (Publisher::Anthropic, model);
    }
    (Publisher::Google, model)
}

/// A string setting (config option, then header); empty means unset.
fn text_setting<'a>(call: &'a Call<'_>, option: &str, header: &str) -> Option<&'a str> {
    native::setting(call, option, header).filter(|s| !s.is_empty())
}

/// The call's service account, if it carries one.
fn service_account(call: &Call<'_>) -> Result<Option<ServiceAccount>, GatewayError> {
    const OPTION: &str = "vertex_service_account_json";
    const HEADER: &str = "vertex-service-account-json";
    if let Some(value) = call.options.get(OPTION).filter(|v| !v.is_null()) {
        return ServiceAccount::from_value(value).map(Some);
    }
    native::header_setting(call, HEADER)
        .map(|text| ServiceAccount::from_value(&Value::String(text.to_owned())))
        .transpose()
}

/// A value that goes into the URL's host or path: letters, digits and `extra`.
fn plain<'a>(value: &'a str, what: &str, extra: &[u8]) -> Result<&'a str, GatewayError> {
    let ok = !value.is_empty()
        && !value.contains("..")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || extra.contains(&b));
    if ok {
        Ok(value)
    } else {
        Err(bad(
            format!("`{value}` is not a valid Vertex AI {what}"),
            match what {
                "model" => "model",
                "region" => "vertex_region",
                _ => "vertex_project_id",
            },
        ))
    }
}

/// Where one call goes.
struct Route {
    /// Scheme and host (or the custom host).
    base: String,
    /// `/v1/projects/{project}/locations/{region}`.
    location: String,
    /// `projects/{project}/locations/{region}`.
    version_location: String,
}

impl Vertex {
    pub fn new() -> Result<Self, crate::config::Problems> {
        Ok(Self {
            transport: native::transport(SPEC, "vertex-ai")?,
        })
    }

    fn route(&self, call: &Call<'_>) -> Result<Route, GatewayError> {
        let region = plain(
            text_setting(call, "vertex_region", "vertex-region").unwrap_or("us-central1"),
            "region",
            &[],
        )?;
        let account_project;
        let project = match text_setting(call, "vertex_project_id", "vertex-project-id") {
            Some(p) => p,
            None => {
                account_project = service_account(call)?.and_then(|a| a.project_id);
                account_project
                    .as_deref()
                    .ok_or_else(|| GatewayError::MissingProviderSetting {
                        provider: "vertex-ai".into(),
                        what: "a project (config `vertex_project_id`, header \
                               `x-portkey-vertex-project-id`, or a service account's `project_id`)"
                            .into(),
                    })?
            }
        };
        let project = plain(project, "project", b"_.:")?;
        let base = match call.custom_host {
            Some(host) => host.trim_end_matches('/').to_owned(),
            None if region == "global" => "https://aiplatform.googleapis.com".to_owned(),
            None => format!("https://{region}-aiplatform.googleapis.com"),
        };
        let version_location = format!("projects/{project}/locations/{region}");
        Ok(Route {
            base,
            location: format!("/v1/{version_location}"),
            version_location,
        })
    }

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        let route = self.route(call)?;
        let (path, query, body) = match call.endpoint {
            Endpoint::Chat | Endpoint::Messages | Endpoint::CountTokens => {
                let req = super::body::parse_object(&call.body)?;
                let model = req
                    .get("model")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("`model` is required", "model"))?;
                let (publisher, name) = publisher(model);
                let name = plain(name, "model", b"_.@")?.to_owned();
                let stream = req.get("stream") == Some(&Value::Bool(true));
                let at = &route.location;
                match (publisher, call.endpoint) {
                    (Publisher::Anthropic, Endpoint::CountTokens) => {
                        let mut req = req;
                        req.insert("model".into(), Value::String(name));
                        let path =
                            format!("{at}/publishers/anthropic/models/count-tokens:rawPredict");
                        (path, None, to_vec(&Value::Object(req))?)
                    }
                    (Publisher::Anthropic, endpoint) => {
                        let body = if endpoint == Endpoint::Chat {
                            super::body::parse_object(&anthropic::to_messages(&call.body)?)?
                        } else {
                            req
                        };
                        let method = if stream {
                            "streamRawPredict"
                        } else {
                            "rawPredict"
                        };
                        let path = format!("{at}/publishers/anthropic/models/{name}:{method}");
                        (path, None, claude_body(body)?)
                    }
                    (_, Endpoint::Messages | Endpoint::CountTokens) => {
                        return Err(GatewayError::UnsupportedEndpoint {
                            provider: "vertex-ai".into(),
                            endpoint: format!(
                                "{} for a model not Anthropic's",
                                call.endpoint.describe()
                            ),
                        });
                    }
                    (Publisher::Google, _) => {
                        let (method, query) = if stream {
                            ("streamGenerateContent", Some("alt=sse"))
                        } else {
                            ("generateContent", None)
                        };
                        let path = format!("{at}/publishers/google/models/{name}:{method}");
                        (path, query, google::to_gemini(&req)?)
                    }
                    (Publisher::Meta, _) => {
                        let mut req = req;
                        req.insert("model".into(), Value::String(format!("meta/{name}")));
                        let path = format!(
                            "/v1beta1/{}/endpoints/openapi/chat/completions",
                            route.version_location
                        );
                        (path, None, to_vec(&Value::Object(req))?)
                    }
                    (Publisher::Endpoint, _) => {
                        let path = format!("{at}/endpoints/{name}/chat/completions");
                        (path, None, call.body.to_vec())
                    }
                }
            }
            Endpoint::Embeddings => {
                let req = super::body::parse_object(&call.body)?;
                let model = req
                    .get("model")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("`model` is required", "model"))?;
                let name = plain(publisher(model).1, "model", b"_.@")?;
                let path = format!("{}/publishers/google/models/{name}:predict", route.location);
                (path, None, to_predict(&req)?)
            }
            _ => (call.proxy_path.to_owned(), call.query, call.body.to_vec()),
        };
        let key = call.token.or(call.api_key);
        if key.is_none() {
            return Err(GatewayError::MissingProviderSetting {
                provider: "vertex-ai".into(),
                what: "credentials: a service account (config `vertex_service_account_json` or \
                       header `x-portkey-vertex-service-account-json`) or an access token as \
                       the provider key"
                    .into(),
            });
        }
        let upstream = Call {
            api_key: key,
            custom_host: Some(&route.base),
            method: call.method.clone(),
            body: call.body.clone(),
            ..*call
        };
        let mut req = native::post_json(&self.transport, &upstream, &path, query, body)?;
        if let Some(beta) = call.client_headers.get("anthropic-beta") {
            req.headers.insert("anthropic-beta", beta.clone());
        }
        Ok(req)
    }
}

fn to_vec(v: &Value) -> Result<Vec<u8>, GatewayError> {
    serde_json::to_vec(v).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// A Messages API body as Vertex takes it.
fn claude_body(mut body: Map<String, Value>) -> Result<Vec<u8>, GatewayError> {
    anthropic::cloud_body(&mut body, ANTHROPIC_VERSION);
    to_vec(&Value::Object(body))
}

/// An OpenAI embeddings request as Vertex's `:predict`.
fn to_predict(req: &Map<String, Value>) -> Result<Vec<u8>, GatewayError> {
    let texts = native::text_inputs(req, "vertex-ai")?;
    let task = req.get("task_type").and_then(Value::as_str);
    let instances: Vec<Value> = texts
        .iter()
        .map(|text| match task {
            Some(task) => json!({"content": text, "task_type": task}),
            None => json!({"content": text}),
        })
        .collect();
    let mut body = json!({"instances": instances});
    if let Some(d) = req.get("dimensions").filter(|d| !d.is_null()) {
        body["parameters"] = json!({"outputDimensionality": d});
    }
    to_vec(&body)
}

/// Vertex's `:predict` embeddings answer as OpenAI's.
fn from_predict(body: &[u8], options: &AnswerOptions) -> Result<Value, GatewayError> {
    let r: Value = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamGarbage {
        provider: "vertex-ai".into(),
        detail: format!("not a predict answer: {e}"),
    })?;
    let predictions = r["predictions"]
        .as_array()
        .ok_or_else(|| GatewayError::UpstreamGarbage {
            provider: "vertex-ai".into(),
            detail: "the predict answer has no `predictions`".into(),
        })?;
    let mut tokens = 0;
    let data: Vec<Value> = predictions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            tokens += p["embeddings"]["statistics"]["token_count"]
                .as_u64()
                .unwrap_or(0);
            json!({"object": "embedding", "index": i, "embedding": p["embeddings"]["values"]})
        })
        .collect();
    Ok(
        json!({"object": "list", "data": data, "model": options.model,
              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

/// The publisher of the model an answer is for.
fn answer_publisher(options: &AnswerOptions) -> Publisher {
    options
        .model
        .as_deref()
        .map_or(Publisher::Google, |m| publisher(m).0)
}

/// Whether an error body is Anthropic's (`{"type":"error","error":{…}}`).
fn anthropic_error(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| v["type"] == "error")
}

impl native::Native for Vertex {
    const SLUG: &'static str = "vertex-ai";
    const ENDPOINTS: &'static [Endpoint] = &[
        Endpoint::Chat,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::Proxy,
    ];

    fn serves(&self, endpoint: Endpoint, model: Option<&str>) -> bool {
        match endpoint {
            Endpoint::Messages | Endpoint::CountTokens => {
                model.is_some_and(|m| publisher(m).0 == Publisher::Anthropic)
            }
            other => Self::ENDPOINTS.contains(&other),
        }
    }

    fn token_source(&self, call: &Call<'_>) -> Result<Option<TokenSource>, GatewayError> {
        Ok(service_account(call)?.map(|a| a.token_source()))
    }

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        Vertex::build(self, call)
    }

    fn answer(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        options: &AnswerOptions,
    ) -> Result<Option<Value>, GatewayError> {
        match (endpoint, answer_publisher(options)) {
            (Endpoint::Chat, Publisher::Google) => google::from_gemini(body, options).map(Some),
            (Endpoint::Chat, Publisher::Anthropic) => {
                anthropic::from_message(body, options.strict).map(Some)
            }
            (Endpoint::Embeddings, _) => from_predict(body, options).map(Some),
            _ => Ok(None),
        }
    }

    fn error(
        &self,
        endpoint: Endpoint,
        status: http::StatusCode,
        _headers: &http::HeaderMap,
        body: &[u8],
    ) -> Option<Value> {
        let anthropic_shape = anthropic_error(body);
        match endpoint {
            Endpoint::Proxy => None,
            // Claude clients get Anthropic's errors; Google's are converted.
            Endpoint::Messages | Endpoint::CountTokens if anthropic_shape => None,
            Endpoint::Messages | Endpoint::CountTokens => Some(messages::error_to_anthropic(
                status,
                google::error_body(status, body).to_string().as_bytes(),
            )),
            _ if anthropic_shape => Some(anthropic::error_body(status, body)),
            _ if serde_json::from_slice::<Value>(body).is_ok_and(|v| v["error"].is_object()) => {
                Some(google::error_body(status, body))
            }
            _ => Some(openai_error(
                &format!(
                    "vertex-ai answered HTTP {}: {}",
                    status.as_u16(),
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
                native::error_type(status),
                None,
                "upstream_error",
            )),
        }
    }

    fn stream(
        &self,
        endpoint: Endpoint,
        options: AnswerOptions,
    ) -> Option<Box<dyn ChunkTranslator>> {
        if endpoint != Endpoint::Chat {
            return None;
        }
        match answer_publisher(&options) {
            Publisher::Google => google::chat_stream(options),
            Publisher::Anthropic => anthropic::chat_stream(options),
            Publisher::Meta | Publisher::Endpoint => None,
        }
    }
}

#[cfg(test)]
mod tests;
