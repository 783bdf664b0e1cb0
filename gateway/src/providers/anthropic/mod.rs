//! `anthropic`: Anthropic's Messages API behind OpenAI's chat completions.
//!
//! The transport (base URL or custom host, `x-api-key`, `anthropic-version`
//! defaulting to `2023-06-01`, `anthropic-beta` when given, forwarded headers) is
//! the catalog's machinery, described by [`SPEC`]; this module converts bodies:
//!
//! - request: `system` and `developer` messages become `system`; user content
//!   parts become text, image (base64 from a data URL, else by URL) and PDF
//!   document blocks; assistant `tool_calls` become `tool_use` blocks and `tool`
//!   messages `tool_result` blocks (consecutive results in one user turn);
//!   `max_tokens` (or `max_completion_tokens`) defaults to 4096; `stop` becomes
//!   `stop_sequences`; `user` becomes `metadata.user_id`; tools and
//!   `tool_choice` (`auto`, `required` → `any`, `none`, a named function →
//!   `tool`, `parallel_tool_calls: false` → `disable_parallel_tool_use`) are
//!   mapped. Anthropic's own fields (`top_k`, `thinking`, `metadata`,
//!   `service_tier`) pass through. What the Messages API cannot express
//!   (`seed`, penalties, `logprobs`, `response_format`) is left out, because it
//!   refuses unknown fields; `n` above 1 is a 400.
//! - answer: text blocks joined as `content`, `tool_use` blocks as
//!   `tool_calls`, stop reasons mapped to finish reasons, usage with cache
//!   reads and writes counted in `prompt_tokens` (OpenAI's meaning) and cache
//!   reads as `prompt_tokens_details.cached_tokens`. With
//!   `strict_open_ai_compliance: false`, thinking is surfaced as Portkey does
//!   (`content_blocks`, `delta.content_blocks` in streams) and as
//!   `reasoning_content`; an assistant message's `content_blocks` are sent back
//!   as they are, so thinking survives tool-use turns.
//! - stream: Anthropic's events become OpenAI chunks (role first, text deltas,
//!   tool-call deltas with their indices, the finish reason, and a usage chunk
//!   when `stream_options.include_usage` asked for one).
//! - errors: `{"type":"error","error":{"type","message"}}` becomes OpenAI's
//!   shape with the same status; the error type is the code.
//!
//! The passthrough route (`/v1/*`) reaches Anthropic's API as it is, with its
//! auth.

pub mod ingress;

use serde_json::{Map, Value, json};
use std::collections::HashMap;

use super::{AnswerOptions, Call, ChunkTranslator, Endpoint, OpenAiCompatible, UpstreamRequest};
use crate::GatewayError;
use crate::error::openai_error;
use crate::providers::{SseData, native};

/// The transport, in the catalog's terms.
const SPEC: &str = r#"
[[provider]]
slug = "anthropic"
base_url = "https://api.anthropic.com/v1"
auth = "header:x-api-key"
endpoints = ["chat", "proxy"]
[provider.headers]
anthropic-version = "{anthropic_version}"
anthropic-beta = "{anthropic_beta}"
[provider.defaults]
anthropic_version = "2023-06-01"
"#;

/// Default `max_tokens` (required by the Messages API).
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Anthropic fields passed through as they are.
const NATIVE_FIELDS: &[&str] = &["top_k", "thinking", "metadata", "service_tier"];

#[derive(Debug)]
pub struct Anthropic {
    transport: OpenAiCompatible,
}

impl Anthropic {
    pub fn new() -> Result<Self, crate::config::Problems> {
        Ok(Self {
            transport: native::transport(SPEC, "anthropic")?,
        })
    }

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        let mut req = match call.endpoint {
            Endpoint::Chat | Endpoint::Messages | Endpoint::CountTokens => {
                let body = if call.endpoint == Endpoint::Chat {
                    to_messages(&call.body)?
                } else {
                    // Already in Anthropic's format.
                    call.body.to_vec()
                };
                let path = match call.endpoint {
                    Endpoint::Chat => Endpoint::Messages.path(),
                    other => other.path(),
                };
                native::post_json(&self.transport, call, path, None, body)?
            }
            _ => self.transport.build(call)?,
        };
        // Claude clients send Anthropic's own headers; keep them unless the
        // config or a Portkey header already set them.
        for name in ["anthropic-version", "anthropic-beta"] {
            if !req.headers.contains_key(name)
                && let Some(v) = call.client_headers.get(name)
            {
                req.headers.insert(name, v.clone());
            }
        }
        Ok(req)
    }
}

impl native::Native for Anthropic {
    const SLUG: &'static str = "anthropic";
    const ENDPOINTS: &'static [Endpoint] = &[
        Endpoint::Chat,
        Endpoint::Proxy,
        Endpoint::Messages,
        Endpoint::CountTokens,
    ];

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        Anthropic::build(self, call)
    }

    fn answer(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        options: &AnswerOptions,
    ) -> Result<Option<Value>, GatewayError> {
        match endpoint {
            Endpoint::Chat => from_message(body, options.strict).map(Some),
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
        // Claude clients (and the passthrough route) get Anthropic's own errors.
        (endpoint == Endpoint::Chat).then(|| error_body(status, body))
    }

    fn stream(
        &self,
        endpoint: Endpoint,
        options: AnswerOptions,
    ) -> Option<Box<dyn ChunkTranslator>> {
        (endpoint == Endpoint::Chat).then(|| chat_stream(options))?
    }
}

/// The translator of a Messages API stream into chat completion chunks.
pub fn chat_stream(options: AnswerOptions) -> Option<Box<dyn ChunkTranslator>> {
    native::translator(Stream::new(options))
}

/// A Messages API body as a cloud that hosts Claude takes it (Bedrock's
/// InvokeModel, Vertex's rawPredict): the model is in the URL, not the body,
/// and `anthropic_version` is the cloud's unless the client gave one.
pub fn cloud_body(body: &mut Map<String, Value>, version: &str) {
    body.remove("model");
    body.entry("anthropic_version")
        .or_insert_with(|| Value::String(version.into()));
}

/// An OpenAI chat request as a Messages API request.
pub fn to_messages(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let req = super::body::parse_object(body)?;
    let mut out = Map::new();
    if let Some(model) = req.get("model") {
        out.insert("model".into(), model.clone());
    }
    let input = native::chat_messages(&req, "anthropic")?;
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (i, m) in input.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        match role {
            "system" | "developer" => system.extend(text_blocks(m.get("content"), &param)?),
            "user" => push(
                &mut messages,
                "user",
                content_blocks(m.get("content"), &param)?,
            ),
            "assistant" => {
                // `content_blocks` (Portkey's form, as answers carry them when
                // not strict) hold Anthropic blocks as they were, thinking and
                // its signature included, which tool use turns must send back.
                let mut blocks = match (m.get("content_blocks"), m.get("content")) {
                    (Some(Value::Array(raw)), _) => raw.clone(),
                    (_, None | Some(Value::Null)) => Vec::new(),
                    (_, content) => content_blocks(content, &param)?,
                };
                for (j, call) in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    blocks.push(tool_use(call, &format!("{param}.tool_calls[{j}]"))?);
                }
                push(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| native::bad("a tool message needs `tool_call_id`", &param))?;
                let content: Vec<Value> = text_blocks(m.get("content"), &param)?;
                push(
                    &mut messages,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                );
            }
            other => {
                return Err(native::bad(
                    format!(
                        "role `{other}` is not one of system, developer, user, assistant, tool"
                    ),
                    &param,
                ));
            }
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = native::max_tokens(&req)
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), max_tokens.into());
    native::copy_fields(
        &req,
        &mut out,
        &[
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("stream", "stream"),
        ],
    );
    if let Some(stops) = native::stop_list(&req) {
        out.insert("stop_sequences".into(), stops);
    }
    for key in NATIVE_FIELDS {
        if let Some(v) = req.get(*key) {
            out.insert((*key).into(), v.clone());
        }
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        let metadata = out.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = metadata.as_object_mut() {
            m.entry("user_id").or_insert_with(|| user.into());
        }
    }
    if let Some(Value::Array(tools)) = req.get("tools") {
        let mapped: Result<Vec<Value>, GatewayError> = tools
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let f = t.get("function").ok_or_else(|| {
                    native::bad(
                        "only `function` tools are supported",
                        &format!("tools[{i}]"),
                    )
                })?;
                let mut tool = Map::new();
                tool.insert("name".into(), f.get("name").cloned().unwrap_or(Value::Null));
                if let Some(d) = f.get("description") {
                    tool.insert("description".into(), d.clone());
                }
                tool.insert(
                    "input_schema".into(),
                    f.get("parameters")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                );
                Ok(Value::Object(tool))
            })
            .collect();
        out.insert("tools".into(), Value::Array(mapped?));
    }
    let parallel_off = req.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let choice = native::tool_choice(&req)?.map(|c| match c {
        native::ToolChoice::Auto => json!({"type": "auto"}),
        native::ToolChoice::Required => json!({"type": "any"}),
        native::ToolChoice::None => json!({"type": "none"}),
        native::ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
    });
    let choice = match (choice, parallel_off) {
        (Some(mut c), true) => {
            if let Some(o) = c.as_object_mut() {
                o.insert("disable_parallel_tool_use".into(), true.into());
            }
            Some(c)
        }
        (None, true) if out.contains_key("tools") => {
            Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
        }
        (c, _) => c,
    };
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// Appends blocks as a turn of `role`, joining a turn of the same role.
fn push(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    native::push_turn(messages, role, "content", blocks);
}

/// Text-only content (system, tool results) as text blocks.
fn text_blocks(content: Option<&Value>, param: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("text").and_then(Value::as_str) {
                Some(t) => Ok(json!({"type": "text", "text": t})),
                None => Err(native::bad("only text parts are allowed here", param)),
            })
            .collect(),
        Some(_) => Err(native::bad(
            "`content` must be a string or an array of parts",
            param,
        )),
    }
}

/// User or assistant content as Anthropic blocks.
fn content_blocks(content: Option<&Value>, param: &str) -> Result<Vec<Value>, GatewayError> {
    let Some(Value::Array(parts)) = content else {
        return text_blocks(content, param);
    };
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let at = format!("{param}.content[{i}]");
            match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(
                    json!({"type": "text", "text": part.get("text").cloned().unwrap_or_default()}),
                ),
                Some("image_url") => {
                    let url = part
                        .get("image_url")
                        .and_then(|u| u.get("url").or(Some(u)))
                        .and_then(Value::as_str)
                        .ok_or_else(|| native::bad("`image_url.url` is required", &at))?;
                    Ok(json!({"type": "image", "source": media_source(url)}))
                }
                Some("file") => {
                    let data = part
                        .get("file")
                        .and_then(|f| f.get("file_data"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            native::bad("`file.file_data` (a data URL) is required", &at)
                        })?;
                    Ok(json!({"type": "document", "source": media_source(data)}))
                }
                other => Err(native::bad(
                    format!("content part type {other:?} is not supported by `anthropic`"),
                    &at,
                )),
            }
        })
        .collect()
}

/// A `data:` URL as a base64 source, anything else as a URL source.
fn media_source(url: &str) -> Value {
    match native::data_url(url) {
        Some((media_type, data)) => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        None => json!({"type": "url", "url": url}),
    }
}

fn tool_use(call: &Value, param: &str) -> Result<Value, GatewayError> {
    let f = call
        .get("function")
        .ok_or_else(|| native::bad("a tool call needs `function`", param))?;
    let input = native::tool_arguments(call, param)?;
    Ok(
        json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or_default(),
              "name": f.get("name").cloned().unwrap_or_default(), "input": input}),
    )
}

/// Anthropic's stop reason as OpenAI's finish reason.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Anthropic's usage as OpenAI's.
fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    let prompt = n("input_tokens") + n("cache_creation_input_tokens") + cached;
    let completion = n("output_tokens");
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

/// A Messages API answer as a chat completion. When not `strict`, thinking is
/// surfaced: the answer's blocks as `content_blocks` (Portkey's form) and the
/// thinking text as `reasoning_content`.
pub fn from_message(body: &[u8], strict: bool) -> Result<Value, GatewayError> {
    let m: Value = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamGarbage {
        provider: "anthropic".into(),
        detail: format!("not a Messages API answer: {e}"),
    })?;
    let mut text = String::new();
    let mut has_text = false;
    let mut tool_calls = Vec::new();
    let mut thinking: Option<String> = None;
    let mut blocks = Vec::new();
    for block in m["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("thinking") => {
                thinking
                    .get_or_insert_default()
                    .push_str(block["thinking"].as_str().unwrap_or_default());
                blocks.push(block.clone());
            }
            Some("redacted_thinking") => {
                thinking.get_or_insert_default();
                blocks.push(block.clone());
            }
            Some("text") => {
                has_text = true;
                text.push_str(block["text"].as_str().unwrap_or_default());
                blocks.push(block.clone());
            }
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"], "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()}
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if has_text { Value::String(text) } else { Value::Null }});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    if let (false, Some(reasoning)) = (strict, thinking) {
        message["reasoning_content"] = Value::String(reasoning);
        message["content_blocks"] = Value::Array(blocks);
    }
    Ok(json!({
        "id": m["id"], "object": "chat.completion", "created": native::now(), "model": m["model"],
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(m["stop_reason"].as_str().unwrap_or("end_turn"))}],
        "usage": usage(&m["usage"]),
    }))
}

/// An Anthropic error answer in OpenAI's shape.
pub fn error_body(status: http::StatusCode, body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = parsed["error"]["type"].as_str().unwrap_or("api_error");
    let message = parsed["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "anthropic answered HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        });
    let openai_type = match kind {
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            "invalid_request_error"
        }
        "authentication_error" | "permission_error" => "authentication_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "api_error",
    };
    openai_error(&message, openai_type, None, kind)
}

/// Anthropic's SSE events, translated as they come.
struct Stream {
    options: AnswerOptions,
    sse: super::SseData,
    id: String,
    model: String,
    created: u64,
    /// Content block index → tool-call index.
    tools: HashMap<u64, u64>,
    usage: Value,
    finish: Option<&'static str>,
}

impl Stream {
    fn new(options: AnswerOptions) -> Self {
        Self {
            model: options.model.clone().unwrap_or_default(),
            options,
            sse: super::SseData::default(),
            id: String::new(),
            created: native::now(),
            tools: HashMap::new(),
            usage: json!({}),
            finish: None,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        .to_string()
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<String>) -> Result<(), GatewayError> {
        let e: Value =
            serde_json::from_slice(data).map_err(|err| GatewayError::UpstreamGarbage {
                provider: "anthropic".into(),
                detail: format!("a stream event is not JSON: {err}"),
            })?;
        match e["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let m = &e["message"];
                self.id = m["id"].as_str().unwrap_or_default().to_owned();
                if let Some(model) = m["model"].as_str() {
                    self.model = model.to_owned();
                }
                merge(&mut self.usage, &m["usage"]);
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            "content_block_start" => {
                let block = &e["content_block"];
                if block["type"] == "tool_use" {
                    let index = e["index"].as_u64().unwrap_or(0);
                    let tool = self.tools.len() as u64;
                    self.tools.insert(index, tool);
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": tool, "id": block["id"], "type": "function",
                                               "function": {"name": block["name"], "arguments": ""}}]}),
                        None,
                    ));
                }
            }
            "content_block_delta" => {
                let d = &e["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        out.push(self.chunk(json!({"content": d["text"]}), None));
                    }
                    Some("thinking_delta") if !self.options.strict => {
                        let index = e["index"].clone();
                        out.push(self.chunk(
                            json!({"content_blocks": [{"index": index, "delta": {"thinking": d["thinking"]}}],
                                   "reasoning_content": d["thinking"]}),
                            None,
                        ));
                    }
                    Some("signature_delta") if !self.options.strict => {
                        let index = e["index"].clone();
                        out.push(self.chunk(
                            json!({"content_blocks": [{"index": index, "delta": {"signature": d["signature"]}}]}),
                            None,
                        ));
                    }
                    Some("input_json_delta") => {
                        let index = e["index"].as_u64().unwrap_or(0);
                        if let Some(tool) = self.tools.get(&index) {
                            out.push(self.chunk(
                                json!({"tool_calls": [{"index": tool, "function": {"arguments": d["partial_json"]}}]}),
                                None,
                            ));
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                merge(&mut self.usage, &e["usage"]);
                if let Some(stop) = e["delta"]["stop_reason"].as_str() {
                    self.finish = Some(finish_reason(stop));
                    out.push(self.chunk(json!({}), self.finish));
                }
            }
            "message_stop" if self.options.include_usage => {
                out.push(
                    json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model, "choices": [], "usage": usage(&self.usage)})
                    .to_string(),
                );
            }
            "error" => {
                let message = e["error"]["message"].as_str().unwrap_or("stream error");
                let kind = e["error"]["type"].as_str().unwrap_or("api_error");
                return Err(GatewayError::UpstreamGarbage {
                    provider: "anthropic".into(),
                    detail: format!("{kind}: {message}"),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// Copies the numbers of `from` over `into` (usage arrives in two events).
fn merge(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in from {
            if v.is_number() {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

impl native::Events for Stream {
    fn sse(&mut self) -> &mut SseData {
        &mut self.sse
    }

    fn event(&mut self, data: &[u8], out: &mut Vec<String>) -> Result<(), GatewayError> {
        self.on_event(data, out)
    }
}

#[cfg(test)]
mod tests;
