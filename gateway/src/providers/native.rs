//! What every native adapter (Anthropic, Gemini, Cohere, ...) shares: its
//! transport described as a catalog entry, a JSON call to one of its paths,
//! OpenAI chunk framing, error types by status, and stream translators built
//! from an event handler.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;

use super::{
    Call, ChunkTranslator, Endpoint, OpenAiCompatible, ProviderFuture, SseData, UpstreamRequest,
};
use crate::GatewayError;
use crate::config::Problems;

/// The transport of an adapter, from its one-entry catalog text.
pub fn transport(spec: &str, slug: &str) -> Result<OpenAiCompatible, Problems> {
    super::parse_catalog(spec, slug)?
        .into_iter()
        .next()
        .map(OpenAiCompatible::new)
        .ok_or_else(|| Problems::one(slug, "no provider entry"))
}

/// A POST of a JSON `body` to `path` (and `query`) under the adapter's base
/// URL or the custom host, with its auth and the client's forwarded headers.
pub fn post_json(
    transport: &OpenAiCompatible,
    call: &Call<'_>,
    path: &str,
    query: Option<&str>,
    body: Vec<u8>,
) -> Result<UpstreamRequest, GatewayError> {
    let upstream = Call {
        endpoint: Endpoint::Proxy,
        method: http::Method::POST,
        proxy_path: path,
        query,
        body: Bytes::from(body),
        ..*call
    };
    let mut req = transport.build(&upstream)?;
    req.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(req)
}

/// A 400 about a request field.
pub fn bad(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

/// Seconds since the epoch, for `created`.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// OpenAI's error type for an upstream status.
pub fn error_type(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 | 403 => "authentication_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

/// A stream translator as a handler of SSE `data:` payloads.
pub trait Events: Send + 'static {
    fn sse(&mut self) -> &mut SseData;
    /// One event's payload; pushes OpenAI chunk texts.
    fn event(&mut self, data: &[u8], out: &mut Vec<String>) -> Result<(), GatewayError>;
    /// The stream ended.
    fn end(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// Boxes an event handler as a stream translator.
pub fn translator(events: impl Events) -> Option<Box<dyn ChunkTranslator>> {
    Some(Box::new(Translator(events)))
}

struct Translator<E>(E);

impl<E: Events> ChunkTranslator for Translator<E> {
    fn push<'a>(&'a mut self, bytes: &'a [u8]) -> ProviderFuture<'a, Vec<String>> {
        let mut out = Vec::new();
        let mut sse = std::mem::take(self.0.sse());
        let result = sse.push(bytes, |data| self.0.event(data, &mut out));
        *self.0.sse() = sse;
        Box::pin(std::future::ready(result.map(|()| out)))
    }

    fn finish(mut self: Box<Self>) -> ProviderFuture<'static, Vec<String>> {
        Box::pin(std::future::ready(Ok(self.0.end())))
    }
}

/// OpenAI's `tool_choice`, read once for every adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    Required,
    None,
    /// One named function.
    Function(serde_json::Value),
}

/// Reads `tool_choice`: absent is `None`; anything unknown is a 400.
pub fn tool_choice(
    req: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<ToolChoice>, GatewayError> {
    use serde_json::Value;
    match req.get("tool_choice") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "required" => Ok(Some(ToolChoice::Required)),
            "none" => Ok(Some(ToolChoice::None)),
            other => Err(bad(format!("unknown tool_choice `{other}`"), "tool_choice")),
        },
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .cloned()
            .map(|name| Some(ToolChoice::Function(name)))
            .ok_or_else(|| {
                bad(
                    "expected {\"type\":\"function\",\"function\":{\"name\"}}",
                    "tool_choice",
                )
            }),
        Some(_) => Err(bad("expected a string or an object", "tool_choice")),
    }
}

/// A native adapter: its slug, endpoints, request builder and answer mappers.
/// Every adapter gets the same [`super::Provider`] implementation from it.
pub trait Native: Send + Sync + std::fmt::Debug + 'static {
    const SLUG: &'static str;
    const ENDPOINTS: &'static [Endpoint];

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError>;

    /// See [`super::Provider::serves`].
    fn serves(&self, endpoint: Endpoint, _model: Option<&str>) -> bool {
        Self::ENDPOINTS.contains(&endpoint)
    }

    /// See [`super::Provider::token_source`].
    fn token_source(
        &self,
        _call: &Call<'_>,
    ) -> Result<Option<crate::upstream::TokenSource>, GatewayError> {
        Ok(None)
    }

    /// A 2xx answer in OpenAI's shape; `None` passes it as it is.
    fn answer(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        options: &super::AnswerOptions,
    ) -> Result<Option<serde_json::Value>, GatewayError>;

    /// An error answer in OpenAI's shape; `None` passes it as it is.
    fn error(
        &self,
        endpoint: Endpoint,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Option<serde_json::Value>;

    /// The translator of a streamed answer, if the endpoint needs one.
    fn stream(
        &self,
        endpoint: Endpoint,
        options: super::AnswerOptions,
    ) -> Option<Box<dyn ChunkTranslator>>;
}

impl<T: Native> super::Provider for T {
    fn slug(&self) -> &str {
        T::SLUG
    }

    fn supports(&self, endpoint: Endpoint) -> bool {
        T::ENDPOINTS.contains(&endpoint)
    }

    fn serves(&self, endpoint: Endpoint, model: Option<&str>) -> bool {
        Native::serves(self, endpoint, model)
    }

    fn token_source(
        &self,
        call: &Call<'_>,
    ) -> Result<Option<crate::upstream::TokenSource>, GatewayError> {
        Native::token_source(self, call)
    }

    fn build_request<'a>(&'a self, call: &'a Call<'a>) -> ProviderFuture<'a, UpstreamRequest> {
        Box::pin(std::future::ready(Native::build(self, call)))
    }

    fn maps_errors(&self) -> bool {
        true
    }

    fn stream_usage(&self) -> super::StreamUsage {
        super::StreamUsage::Translated
    }

    fn map_response<'a>(
        &'a self,
        endpoint: Endpoint,
        status: http::StatusCode,
        headers: &'a http::HeaderMap,
        body: Bytes,
        options: &'a super::AnswerOptions,
    ) -> ProviderFuture<'a, Bytes> {
        let mapped = if status.is_success() {
            self.answer(endpoint, &body, options)
        } else {
            Ok(self.error(endpoint, status, headers, &body))
        };
        let out = mapped.map(|v| v.map_or(body, |v| Bytes::from(v.to_string())));
        Box::pin(std::future::ready(out))
    }

    fn stream_translator<'a>(
        &'a self,
        endpoint: Endpoint,
        options: super::AnswerOptions,
    ) -> ProviderFuture<'a, Option<Box<dyn ChunkTranslator>>> {
        Box::pin(std::future::ready(Ok(self.stream(endpoint, options))))
    }
}

/// Converts a stream of OpenAI chat chunks (SSE) into another format's events:
/// the Messages and Responses ingress formats.
pub trait FromChatChunks: Send + 'static {
    fn sse(&mut self) -> &mut SseData;
    /// Whether the stream is over (its end or an error was emitted).
    fn ended(&self) -> bool;
    /// One parsed chunk (an error object included).
    fn chunk(&mut self, chunk: &serde_json::Value, out: &mut String);
    /// The stream ended (`[DONE]` or the upstream closed): close what is open.
    fn end(&mut self, out: &mut String);

    /// Translates what arrived; input may be split anywhere.
    fn push(&mut self, bytes: &[u8]) -> String {
        let mut out = String::new();
        let mut sse = std::mem::take(self.sse());
        let _ = sse.push::<()>(bytes, |data| {
            if self.ended() {
                return Ok(());
            }
            if data == b"[DONE]" {
                self.end(&mut out);
            } else if let Ok(chunk) = serde_json::from_slice(data) {
                self.chunk(&chunk, &mut out);
            }
            Ok(())
        });
        *self.sse() = sse;
        out
    }

    /// The upstream closed.
    fn finish(&mut self) -> String {
        let mut out = String::new();
        self.end(&mut out);
        out
    }
}

// What the adapters read from an OpenAI chat request the same way.

/// `messages`, after checking that one choice is asked for (the native APIs
/// give one).
pub fn chat_messages<'r>(
    req: &'r serde_json::Map<String, serde_json::Value>,
    slug: &str,
) -> Result<&'r Vec<serde_json::Value>, GatewayError> {
    if req
        .get("n")
        .and_then(serde_json::Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(bad(
            format!("`{slug}` returns one choice: `n` must be 1"),
            "n",
        ));
    }
    match req.get("messages") {
        Some(serde_json::Value::Array(messages)) => Ok(messages),
        _ => Err(bad("`messages` must be an array", "messages")),
    }
}

/// `max_completion_tokens`, else `max_tokens`.
pub fn max_tokens(req: &serde_json::Map<String, serde_json::Value>) -> Option<&serde_json::Value> {
    req.get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .filter(|v| !v.is_null())
}

/// `stop` as a list (one string is one stop); none when empty.
pub fn stop_list(req: &serde_json::Map<String, serde_json::Value>) -> Option<serde_json::Value> {
    match req.get("stop") {
        Some(serde_json::Value::String(s)) => Some(serde_json::json!([s])),
        Some(serde_json::Value::Array(items)) if !items.is_empty() => {
            Some(serde_json::Value::Array(items.clone()))
        }
        _ => None,
    }
}

/// Copies the fields `req` has (and are not null) into `out`, renamed.
pub fn copy_fields(
    req: &serde_json::Map<String, serde_json::Value>,
    out: &mut serde_json::Map<String, serde_json::Value>,
    names: &[(&str, &str)],
) {
    for (from, to) in names {
        if let Some(v) = req.get(*from).filter(|v| !v.is_null()) {
            out.insert((*to).into(), v.clone());
        }
    }
}

/// A tool call's `function.arguments` as JSON (empty means `{}`).
pub fn tool_arguments(
    call: &serde_json::Value,
    param: &str,
) -> Result<serde_json::Value, GatewayError> {
    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
    if args.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_str(args)
        .map_err(|e| bad(format!("`function.arguments` is not JSON: {e}"), param))
}

/// Appends `blocks` as a turn of `role`, joining the last turn when it has the
/// same role (`field` holds a turn's blocks: `content`, or Gemini's `parts`).
pub fn push_turn(
    turns: &mut Vec<serde_json::Value>,
    role: &str,
    field: &str,
    blocks: Vec<serde_json::Value>,
) {
    if let Some(last) = turns.last_mut()
        && last["role"] == role
        && let Some(existing) = last[field].as_array_mut()
    {
        existing.extend(blocks);
        return;
    }
    turns.push(serde_json::json!({"role": role, field: blocks}));
}

/// A base64 `data:` URL's media type and data.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    Some((meta.strip_suffix(";base64")?, data))
}

/// An embeddings request's `input` as texts (one string, or a list of them);
/// token arrays are a 400 for adapters whose API embeds text only.
pub fn text_inputs<'r>(
    req: &'r serde_json::Map<String, serde_json::Value>,
    slug: &str,
) -> Result<Vec<&'r str>, GatewayError> {
    use serde_json::Value;
    match req.get("input") {
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| bad(format!("`{slug}` embeds text inputs only"), "input"))
            })
            .collect(),
        _ => Err(bad(
            "`input` must be a string or an array of strings",
            "input",
        )),
    }
}

/// A provider setting from the client's `x-portkey-NAME` / `x-sluice-NAME`
/// header.
pub fn header_setting<'a>(call: &'a Call<'_>, header: &str) -> Option<&'a str> {
    [format!("x-portkey-{header}"), format!("x-sluice-{header}")]
        .iter()
        .find_map(|h| call.client_headers.get(h.as_str())?.to_str().ok())
}

/// A string provider setting: the config target's `option`, else the header.
pub fn setting<'a>(call: &'a Call<'_>, option: &str, header: &str) -> Option<&'a str> {
    if let Some(serde_json::Value::String(s)) = call.options.get(option) {
        return Some(s.as_str());
    }
    header_setting(call, header)
}
