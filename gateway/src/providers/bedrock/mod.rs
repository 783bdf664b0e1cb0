//! `bedrock`: Amazon Bedrock's Converse API behind OpenAI's chat completions,
//! and its Titan and Cohere embedding models behind OpenAI's embeddings.
//!
//! - auth: AWS SigV4 ([`sigv4`]) from an access key, secret and optional
//!   session token (config `aws_access_key_id`, `aws_secret_access_key`,
//!   `aws_session_token`, `aws_region`, or Portkey's `x-portkey-aws-*`
//!   headers); without them, a Bedrock API key as `Authorization: Bearer`.
//!   Region defaults to `us-east-1`.
//! - chat: `POST /model/{modelId}/converse` (`/converse-stream` for streams,
//!   whose `application/vnd.amazon.eventstream` frames are decoded with CRC
//!   checks, [`eventstream`]). System messages become `system`; text, images
//!   and PDFs (as bytes, from data URLs; `s3://` URIs as S3 locations), tool
//!   calls (`toolUse`) and results (`toolResult`) become content blocks;
//!   `max_tokens`, `temperature`, `top_p` and `stop` go to `inferenceConfig`,
//!   `top_k` to `additionalModelRequestFields`; tools and `tool_choice` to
//!   `toolConfig` (Converse has no "none": it means "auto" here). `n` above 1
//!   is a 400.
//! - answers: text, tool calls, reasoning (as `reasoning_content` when not
//!   strict), stop reasons (guardrail and content-filter stops are
//!   `content_filter`), usage with cache reads and writes in `prompt_tokens`.
//! - embeddings: `POST /model/{modelId}/invoke`; `amazon.titan-embed-*` takes
//!   one input per call, `cohere.embed-*` a list.
//! - errors: `{"message"}` in OpenAI's shape with the status.

pub mod eventstream;
pub mod sigv4;

use std::collections::HashMap;
use std::time::SystemTime;

use http::HeaderValue;
use serde_json::{Map, Value, json};

use super::{
    AnswerOptions, Call, ChunkTranslator, Endpoint, OpenAiCompatible, ProviderFuture,
    UpstreamRequest,
};
use crate::GatewayError;
use crate::error::openai_error;
use crate::providers::messages;
use crate::providers::native::{self, bad, setting};

const SPEC: &str = r#"
[[provider]]
slug = "bedrock"
base_url = "https://bedrock-runtime.{aws_region}.amazonaws.com"
endpoints = ["proxy"]
vars = { aws_region = "aws-region" }
defaults = { aws_region = "us-east-1" }
"#;

#[derive(Debug)]
pub struct Bedrock {
    transport: OpenAiCompatible,
}

/// A model id as one path segment (ids hold `:`, ARNs `/`).
fn model_segment(req: &Map<String, Value>) -> Result<String, GatewayError> {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`model` (a Bedrock model id or ARN) is required", "model"))?;
    Ok(url::form_urlencoded::byte_serialize(model.as_bytes())
        .collect::<String>()
        .replace('+', "%20"))
}

impl Bedrock {
    pub fn new() -> Result<Self, crate::config::Problems> {
        Ok(Self {
            transport: native::transport(SPEC, "bedrock")?,
        })
    }

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        let mut req = match call.endpoint {
            Endpoint::Chat => {
                let body = super::body::parse_object(&call.body)?;
                let model = model_segment(&body)?;
                let action = if body.get("stream") == Some(&Value::Bool(true)) {
                    "converse-stream"
                } else {
                    "converse"
                };
                let path = format!("/model/{model}/{action}");
                native::post_json(&self.transport, call, &path, None, to_converse(&body)?)?
            }
            Endpoint::Embeddings => {
                let body = super::body::parse_object(&call.body)?;
                let model = model_segment(&body)?;
                let path = format!("/model/{model}/invoke");
                native::post_json(&self.transport, call, &path, None, to_embed(&body)?)?
            }
            Endpoint::Messages | Endpoint::CountTokens => {
                let mut body = super::body::parse_object(&call.body)?;
                let model = model_segment(&body)?;
                let stream = body.remove("stream") == Some(Value::Bool(true));
                super::anthropic::cloud_body(&mut body, ANTHROPIC_VERSION);
                if let Some(beta) = call
                    .client_headers
                    .get("anthropic-beta")
                    .and_then(|v| v.to_str().ok())
                {
                    let flags = beta.split(',').map(|f| Value::String(f.trim().to_owned()));
                    body.entry("anthropic_beta")
                        .or_insert_with(|| Value::Array(flags.collect()));
                }
                let body =
                    serde_json::to_vec(&body).map_err(|e| GatewayError::Internal(e.to_string()))?;
                let (action, body) = match (call.endpoint, stream) {
                    (Endpoint::CountTokens, _) => {
                        use base64::Engine as _;
                        let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
                        let wrapped = json!({"input": {"invokeModel": {"body": encoded}}});
                        ("count-tokens", wrapped.to_string().into_bytes())
                    }
                    (_, true) => ("invoke-with-response-stream", body),
                    (_, false) => ("invoke", body),
                };
                let path = format!("/model/{model}/{action}");
                native::post_json(&self.transport, call, &path, None, body)?
            }
            _ => self.transport.build(call)?,
        };
        let access = setting(call, "aws_access_key_id", "aws-access-key-id");
        let secret = setting(call, "aws_secret_access_key", "aws-secret-access-key");
        let (Some(access_key_id), Some(secret_access_key)) = (access, secret) else {
            // A Bedrock API key, if any, went as the bearer token.
            return Ok(req);
        };
        let region = setting(call, "aws_region", "aws-region").unwrap_or("us-east-1");
        let host = match (req.url.host_str(), req.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return Err(bad("the Bedrock URL has no host", "custom_host")),
        };
        req.headers.remove(http::header::AUTHORIZATION);
        req.headers.insert(
            http::header::HOST,
            HeaderValue::from_str(&host)
                .map_err(|_| bad("the host is not a header value", "custom_host"))?,
        );
        let signer = sigv4::Signer {
            access_key_id,
            secret_access_key,
            session_token: setting(call, "aws_session_token", "aws-session-token"),
            region,
            service: "bedrock",
        };
        sigv4::sign(
            &signer,
            req.method.as_str(),
            &req.url,
            &mut req.headers,
            &req.body,
            SystemTime::now(),
        )
        .map_err(|e| bad(format!("cannot sign the request: {e}"), "aws_access_key_id"))?;
        Ok(req)
    }
}

/// The Messages API version InvokeModel takes in the body.
const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Whether a model id (or ARN, or inference profile) is one of Anthropic's.
fn claude(model: &str) -> bool {
    model.contains("anthropic.")
}

impl native::Native for Bedrock {
    const SLUG: &'static str = "bedrock";
    const ENDPOINTS: &'static [Endpoint] = &[
        Endpoint::Chat,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::Proxy,
    ];

    fn serves(&self, endpoint: Endpoint, model: Option<&str>) -> bool {
        match endpoint {
            Endpoint::Messages | Endpoint::CountTokens => model.is_some_and(claude),
            other => Self::ENDPOINTS.contains(&other),
        }
    }

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        Bedrock::build(self, call)
    }

    fn answer(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        options: &AnswerOptions,
    ) -> Result<Option<Value>, GatewayError> {
        match endpoint {
            Endpoint::Chat => from_converse(body, options).map(Some),
            Endpoint::Embeddings => from_embed(body, options).map(Some),
            Endpoint::CountTokens => from_count_tokens(body).map(Some),
            _ => Ok(None),
        }
    }

    fn error(
        &self,
        endpoint: Endpoint,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Option<Value> {
        match endpoint {
            Endpoint::Proxy => None,
            // Claude clients get Anthropic's error shape.
            Endpoint::Messages | Endpoint::CountTokens => Some(messages::error_to_anthropic(
                status,
                error_body(status, headers, body).to_string().as_bytes(),
            )),
            _ => Some(error_body(status, headers, body)),
        }
    }

    fn stream(
        &self,
        endpoint: Endpoint,
        options: AnswerOptions,
    ) -> Option<Box<dyn ChunkTranslator>> {
        match endpoint {
            Endpoint::Chat => Some(Box::new(Stream::new(options))),
            Endpoint::Messages => Some(Box::new(ClaudeEvents::default())),
            _ => None,
        }
    }
}

fn content_blocks(content: Option<&Value>, param: &str) -> Result<Vec<Value>, GatewayError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![json!({"text": s})]),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(bad(
                "`content` must be a string or an array of parts",
                param,
            ));
        }
    };
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = format!("{param}.content[{i}]");
            match p["type"].as_str() {
                Some("text") => Ok(json!({"text": p["text"]})),
                Some("image_url") => {
                    let url = p["image_url"]["url"].as_str().unwrap_or_default();
                    if let Some((mime, data)) = native::data_url(url) {
                        let format = mime.strip_prefix("image/").unwrap_or("png");
                        let format = if format == "jpg" { "jpeg" } else { format };
                        Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
                    } else if url.starts_with("s3://") {
                        let format = url.rsplit('.').next().unwrap_or("png");
                        Ok(json!({"image": {"format": format, "source": {"s3Location": {"uri": url}}}}))
                    } else {
                        Err(bad("`bedrock` takes images as data URLs or s3:// URIs", &at))
                    }
                }
                Some("file") => {
                    let data = p["file"]["file_data"].as_str().and_then(native::data_url);
                    let Some((mime, data)) = data else {
                        return Err(bad("`file.file_data` must be a data URL", &at));
                    };
                    let format = mime.rsplit('/').next().unwrap_or("pdf");
                    let name = p["file"]["filename"].as_str().unwrap_or("document");
                    // Bedrock allows letters, digits, spaces, hyphens, parentheses and brackets.
                    let name: String = name
                        .chars()
                        .map(|c| if c.is_alphanumeric() || " -()[]".contains(c) { c } else { '-' })
                        .collect();
                    Ok(json!({"document": {"format": format, "name": name, "source": {"bytes": data}}}))
                }
                other => Err(bad(format!("content part type {other:?} is not supported by `bedrock`"), &at)),
            }
        })
        .collect()
}

/// An OpenAI chat request as a Converse request.
pub fn to_converse(req: &Map<String, Value>) -> Result<Vec<u8>, GatewayError> {
    let input = native::chat_messages(req, "bedrock")?;
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let push = |messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>| {
        native::push_turn(messages, role, "content", blocks);
    };
    for (i, m) in input.iter().enumerate() {
        let param = format!("messages[{i}]");
        match m["role"].as_str().unwrap_or_default() {
            "system" | "developer" => system.extend(content_blocks(m.get("content"), &param)?),
            "user" => push(
                &mut messages,
                "user",
                content_blocks(m.get("content"), &param)?,
            ),
            "assistant" => {
                let mut blocks = content_blocks(m.get("content"), &param)?;
                for (j, call) in m["tool_calls"].as_array().into_iter().flatten().enumerate() {
                    let input = native::tool_arguments(call, &format!("{param}.tool_calls[{j}]"))?;
                    blocks.push(json!({"toolUse": {"toolUseId": call["id"], "name": call["function"]["name"], "input": input}}));
                }
                push(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let text: String = match &m["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => {
                        parts.iter().filter_map(|p| p["text"].as_str()).collect()
                    }
                    _ => String::new(),
                };
                push(
                    &mut messages,
                    "user",
                    vec![
                        json!({"toolResult": {"toolUseId": m["tool_call_id"], "content": [{"text": text}]}}),
                    ],
                );
            }
            other => {
                return Err(bad(
                    format!(
                        "role `{other}` is not one of system, developer, user, assistant, tool"
                    ),
                    &param,
                ));
            }
        }
    }
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let mut config = Map::new();
    if let Some(v) = native::max_tokens(req) {
        config.insert("maxTokens".into(), v.clone());
    }
    native::copy_fields(
        req,
        &mut config,
        &[("temperature", "temperature"), ("top_p", "topP")],
    );
    if let Some(stops) = native::stop_list(req) {
        config.insert("stopSequences".into(), stops);
    }
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if let Some(k) = req.get("top_k") {
        out.insert("additionalModelRequestFields".into(), json!({"top_k": k}));
    }
    if let Some(Value::Array(tools)) = req.get("tools") {
        let specs: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut spec = json!({"name": f["name"],
                    "inputSchema": {"json": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"}))}});
                if let Some(d) = f.get("description") {
                    spec["description"] = d.clone();
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut tool_config = json!({"tools": specs});
        match native::tool_choice(req)? {
            Some(native::ToolChoice::Required) => tool_config["toolChoice"] = json!({"any": {}}),
            Some(native::ToolChoice::Function(name)) => {
                tool_config["toolChoice"] = json!({"tool": {"name": name}});
            }
            Some(native::ToolChoice::Auto) => tool_config["toolChoice"] = json!({"auto": {}}),
            Some(native::ToolChoice::None) | None => {}
        }
        out.insert("toolConfig".into(), tool_config);
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// Converse's stop reason as OpenAI's finish reason.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

fn usage(u: &Value) -> Value {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let cached = n("cacheReadInputTokens");
    let prompt = n("inputTokens") + cached + n("cacheWriteInputTokens");
    let completion = n("outputTokens");
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

/// A Converse answer as a chat completion.
pub fn from_converse(body: &[u8], options: &AnswerOptions) -> Result<Value, GatewayError> {
    let r: Value = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamGarbage {
        provider: "bedrock".into(),
        detail: format!("not a Converse answer: {e}"),
    })?;
    let mut text = String::new();
    let mut has_text = false;
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in r["output"]["message"]["content"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(t) = block["text"].as_str() {
            has_text = true;
            text.push_str(t);
        } else if let Some(u) = block.get("toolUse") {
            calls.push(json!({"id": u["toolUseId"], "type": "function",
                              "function": {"name": u["name"], "arguments": u["input"].to_string()}}));
        } else if let Some(t) = block["reasoningContent"]["reasoningText"]["text"].as_str() {
            reasoning.push_str(t);
        }
    }
    let mut message = json!({"role": "assistant", "content": if has_text { Value::String(text) } else { Value::Null }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !options.strict && !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    Ok(json!({
        "id": "chatcmpl-bedrock", "object": "chat.completion", "created": native::now(),
        "model": options.model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(r["stopReason"].as_str().unwrap_or("end_turn"))}],
        "usage": usage(&r["usage"]),
    }))
}

fn to_embed(req: &Map<String, Value>) -> Result<Vec<u8>, GatewayError> {
    let model = req.get("model").and_then(Value::as_str).unwrap_or_default();
    let inputs = native::text_inputs(req, "bedrock")?;
    let body = if model.contains("cohere.embed") {
        json!({"texts": inputs, "input_type": req.get("input_type").cloned().unwrap_or_else(|| "search_document".into())})
    } else {
        let [one] = inputs.as_slice() else {
            return Err(bad(
                "Titan embedding models take one input per request",
                "input",
            ));
        };
        let mut b = json!({"inputText": one});
        if let Some(d) = req.get("dimensions") {
            b["dimensions"] = d.clone();
        }
        b
    };
    serde_json::to_vec(&body).map_err(|e| GatewayError::Internal(e.to_string()))
}

fn from_embed(body: &[u8], options: &AnswerOptions) -> Result<Value, GatewayError> {
    let r: Value = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamGarbage {
        provider: "bedrock".into(),
        detail: format!("not an embeddings answer: {e}"),
    })?;
    let vectors: Vec<Value> = if let Some(one) = r.get("embedding") {
        vec![one.clone()]
    } else {
        r["embeddings"]
            .as_array()
            .or_else(|| r["embeddings"]["float"].as_array())
            .cloned()
            .unwrap_or_default()
    };
    let tokens = r["inputTextTokenCount"].as_u64().unwrap_or(0);
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    Ok(
        json!({"object": "list", "data": data, "model": options.model,
              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

/// An error answer; AWS names the error type in `x-amzn-ErrorType`
/// (`ThrottlingException:http://...`), which becomes the code.
fn error_body(status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["message"]
        .as_str()
        .or_else(|| v["Message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "bedrock answered HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        });
    let code = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(':').next())
        .filter(|v| !v.is_empty())
        .map_or_else(|| format!("bedrock_{}", status.as_u16()), str::to_owned);
    openai_error(&message, native::error_type(status), None, &code)
}

/// ConverseStream's event-stream messages as OpenAI chunks.
struct Stream {
    options: AnswerOptions,
    frames: eventstream::Decoder,
    created: u64,
    /// Content block index → tool-call index.
    tools: HashMap<u64, u64>,
    usage: Option<Value>,
}

impl Stream {
    fn new(options: AnswerOptions) -> Self {
        Self {
            options,
            frames: eventstream::Decoder::default(),
            created: native::now(),
            tools: HashMap::new(),
            usage: None,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({"id": "chatcmpl-bedrock", "object": "chat.completion.chunk", "created": self.created,
               "model": self.options.model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        .to_string()
    }

    fn message(
        &mut self,
        m: &eventstream::Message,
        out: &mut Vec<String>,
    ) -> Result<(), GatewayError> {
        let e: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
        if m.header(":message-type") == Some("exception") {
            let kind = m.header(":exception-type").unwrap_or("exception");
            let message = e["message"]
                .as_str()
                .or_else(|| e["Message"].as_str())
                .unwrap_or("stream error");
            return Err(GatewayError::UpstreamGarbage {
                provider: "bedrock".into(),
                detail: format!("{kind}: {message}"),
            });
        }
        let block = e["contentBlockIndex"].as_u64().unwrap_or(0);
        match m.header(":event-type").unwrap_or_default() {
            "messageStart" => {
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None))
            }
            "contentBlockStart" => {
                if let Some(u) = e["start"].get("toolUse") {
                    let tool = self.tools.len() as u64;
                    self.tools.insert(block, tool);
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": tool, "id": u["toolUseId"], "type": "function",
                                               "function": {"name": u["name"], "arguments": ""}}]}),
                        None,
                    ));
                }
            }
            "contentBlockDelta" => {
                let d = &e["delta"];
                if let Some(t) = d["text"].as_str() {
                    out.push(self.chunk(json!({"content": t}), None));
                } else if let Some(input) = d["toolUse"]["input"].as_str() {
                    let tool = self.tools.get(&block).copied().unwrap_or(0);
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": tool, "function": {"arguments": input}}]}),
                        None,
                    ));
                } else if let Some(t) = d["reasoningContent"]["text"].as_str()
                    && !self.options.strict
                {
                    out.push(self.chunk(json!({"reasoning_content": t}), None));
                }
            }
            "messageStop" => {
                let finish = finish_reason(e["stopReason"].as_str().unwrap_or("end_turn"));
                out.push(self.chunk(json!({}), Some(finish)));
            }
            "metadata" => self.usage = Some(usage(&e["usage"])),
            _ => {}
        }
        Ok(())
    }
}

impl ChunkTranslator for Stream {
    fn push<'a>(&'a mut self, bytes: &'a [u8]) -> ProviderFuture<'a, Vec<String>> {
        let result = (|| {
            let messages =
                self.frames
                    .push(bytes)
                    .map_err(|detail| GatewayError::UpstreamGarbage {
                        provider: "bedrock".into(),
                        detail,
                    })?;
            let mut out = Vec::new();
            for m in &messages {
                self.message(m, &mut out)?;
            }
            Ok(out)
        })();
        Box::pin(std::future::ready(result))
    }

    fn finish(self: Box<Self>) -> ProviderFuture<'static, Vec<String>> {
        let out = match (&self.usage, self.options.include_usage) {
            (Some(u), true) => vec![
                json!({"id": "chatcmpl-bedrock", "object": "chat.completion.chunk", "created": self.created,
                       "model": self.options.model, "choices": [], "usage": u})
                .to_string(),
            ],
            _ => Vec::new(),
        };
        Box::pin(std::future::ready(Ok(out)))
    }
}

/// CountTokens' answer (`{"inputTokens"}`) as Anthropic's (`{"input_tokens"}`).
fn from_count_tokens(body: &[u8]) -> Result<Value, GatewayError> {
    let r: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let tokens = r["inputTokens"]
        .as_u64()
        .ok_or_else(|| GatewayError::UpstreamGarbage {
            provider: "bedrock".into(),
            detail: "the CountTokens answer has no `inputTokens`".into(),
        })?;
    Ok(json!({"input_tokens": tokens}))
}

/// InvokeModelWithResponseStream for Claude: each `chunk` message carries one
/// Messages API event, base64-encoded in `{"bytes"}`; out come the events.
#[derive(Default)]
struct ClaudeEvents {
    frames: eventstream::Decoder,
}

impl ClaudeEvents {
    fn message(m: &eventstream::Message) -> Result<Option<String>, GatewayError> {
        use base64::Engine as _;
        let garbage = |detail: String| GatewayError::UpstreamGarbage {
            provider: "bedrock".into(),
            detail,
        };
        let e: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
        if m.header(":message-type") == Some("exception") {
            let kind = m.header(":exception-type").unwrap_or("exception");
            let message = e["message"].as_str().unwrap_or("stream error");
            return Err(garbage(format!("{kind}: {message}")));
        }
        if m.header(":event-type") != Some("chunk") {
            return Ok(None);
        }
        let bytes = e["bytes"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| garbage("a stream chunk has no base64 `bytes`".into()))?;
        let event =
            String::from_utf8(bytes).map_err(|_| garbage("a stream chunk is not UTF-8".into()))?;
        Ok(Some(event))
    }
}

impl ChunkTranslator for ClaudeEvents {
    fn push<'a>(&'a mut self, bytes: &'a [u8]) -> ProviderFuture<'a, Vec<String>> {
        let result = self
            .frames
            .push(bytes)
            .map_err(|detail| GatewayError::UpstreamGarbage {
                provider: "bedrock".into(),
                detail,
            })
            .and_then(|messages| {
                messages
                    .iter()
                    .filter_map(|m| Self::message(m).transpose())
                    .collect()
            });
        Box::pin(std::future::ready(result))
    }

    fn finish(self: Box<Self>) -> ProviderFuture<'static, Vec<String>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

#[cfg(test)]
mod tests;
