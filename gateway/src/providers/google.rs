//! `google`: the Gemini API (`generativelanguage.googleapis.com`) behind OpenAI's
//! chat completions and embeddings.
//!
//! - chat: `POST /v1beta/models/{model}:generateContent`, streams from
//!   `:streamGenerateContent?alt=sse`. System and developer messages become
//!   `systemInstruction`; user parts become text, `inlineData` (data URLs) and
//!   `fileData` (other URLs); assistant `tool_calls` become `functionCall`
//!   parts and `tool` messages `functionResponse` parts (named after the call
//!   they answer, with its id). `temperature`, `top_p`, `top_k`, `max_tokens` /
//!   `max_completion_tokens`, `stop`, `n`, `seed`, penalties and
//!   `response_format` (JSON mode and JSON schema) go to `generationConfig`;
//!   tools to `functionDeclarations`; `tool_choice` to `functionCallingConfig`.
//! - answers: text parts joined as `content` (thought parts, when not strict,
//!   as `reasoning_content`), `functionCall` parts as `tool_calls`, finish
//!   reasons mapped (safety, recitation and blocklist stops are
//!   `content_filter`; a blocked prompt is one choice with `content_filter`),
//!   usage from `usageMetadata` (cached tokens included).
//! - embeddings: `:batchEmbedContents`, one request per input.
//! - errors: `{"error":{"code","message","status"}}` in OpenAI's shape; the
//!   status (`INVALID_ARGUMENT`, ...) is the code.
//!
//! The key goes as `x-goog-api-key`.

use serde_json::{Map, Value, json};

use super::{AnswerOptions, Call, ChunkTranslator, Endpoint, OpenAiCompatible, UpstreamRequest};
use crate::GatewayError;
use crate::error::openai_error;
use crate::providers::{SseData, native};

const SPEC: &str = r#"
[[provider]]
slug = "google"
base_url = "https://generativelanguage.googleapis.com/v1beta"
auth = "header:x-goog-api-key"
endpoints = ["proxy"]
"#;

#[derive(Debug)]
pub struct Google {
    transport: OpenAiCompatible,
}

impl Google {
    pub fn new() -> Result<Self, crate::config::Problems> {
        Ok(Self {
            transport: native::transport(SPEC, "google")?,
        })
    }

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        let (path, query, body) = match call.endpoint {
            Endpoint::Chat => {
                let req = super::body::parse_object(&call.body)?;
                let model = model_path(&req)?;
                let stream = req.get("stream") == Some(&Value::Bool(true));
                let (method, query) = if stream {
                    ("streamGenerateContent", Some("alt=sse"))
                } else {
                    ("generateContent", None)
                };
                (format!("/models/{model}:{method}"), query, to_gemini(&req)?)
            }
            Endpoint::Embeddings => {
                let req = super::body::parse_object(&call.body)?;
                let model = model_path(&req)?;
                (
                    format!("/models/{model}:batchEmbedContents"),
                    None,
                    to_embed(&req, &model)?,
                )
            }
            _ => return self.transport.build(call),
        };
        native::post_json(&self.transport, call, &path, query, body)
    }
}

/// The model for the URL path, checked so it cannot leave `/models/`.
fn model_path(req: &Map<String, Value>) -> Result<String, GatewayError> {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| native::bad("`model` is required", "model"))?;
    let model = model.strip_prefix("models/").unwrap_or(model);
    let plain = !model.is_empty()
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !model.contains("..");
    if plain {
        Ok(model.to_owned())
    } else {
        Err(native::bad(
            format!("`{model}` is not a Gemini model name (letters, digits, `-`, `_`, `.`)"),
            "model",
        ))
    }
}

impl native::Native for Google {
    const SLUG: &'static str = "google";
    const ENDPOINTS: &'static [Endpoint] = &[Endpoint::Chat, Endpoint::Embeddings, Endpoint::Proxy];

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        Google::build(self, call)
    }

    fn answer(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        options: &AnswerOptions,
    ) -> Result<Option<Value>, GatewayError> {
        match endpoint {
            Endpoint::Chat => from_gemini(body, options).map(Some),
            Endpoint::Embeddings => from_embed(body, options).map(Some),
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
        (endpoint != Endpoint::Proxy).then(|| error_body(status, body))
    }

    fn stream(
        &self,
        endpoint: Endpoint,
        options: AnswerOptions,
    ) -> Option<Box<dyn ChunkTranslator>> {
        (endpoint == Endpoint::Chat).then(|| chat_stream(options))?
    }
}

/// The translator of a Gemini SSE stream into chat completion chunks.
pub fn chat_stream(options: AnswerOptions) -> Option<Box<dyn ChunkTranslator>> {
    native::translator(Stream::new(options))
}

/// Text content as Gemini text parts.
fn text_parts(content: Option<&Value>, param: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| part(p, &format!("{param}.content[{i}]")))
            .collect(),
        Some(_) => Err(native::bad(
            "`content` must be a string or an array of parts",
            param,
        )),
    }
}

fn part(p: &Value, at: &str) -> Result<Value, GatewayError> {
    let data = |url: &str, mime: Option<&str>| {
        if let Some((mime, data)) = native::data_url(url) {
            return json!({"inlineData": {"mimeType": mime, "data": data}});
        }
        let mut file = json!({"fileUri": url});
        if let Some(m) = mime {
            file["mimeType"] = m.into();
        }
        json!({"fileData": file})
    };
    match p["type"].as_str() {
        Some("text") => Ok(json!({"text": p["text"]})),
        Some("image_url") => {
            let url = p["image_url"]["url"]
                .as_str()
                .or_else(|| p["image_url"].as_str())
                .ok_or_else(|| native::bad("`image_url.url` is required", at))?;
            Ok(data(url, p["image_url"]["mime_type"].as_str()))
        }
        Some("file") => {
            let url = p["file"]["file_data"]
                .as_str()
                .or_else(|| p["file"]["file_id"].as_str())
                .ok_or_else(|| native::bad("`file.file_data` or `file.file_id` is required", at))?;
            Ok(data(url, p["file"]["mime_type"].as_str()))
        }
        other => Err(native::bad(
            format!("content part type {other:?} is not supported by `google`"),
            at,
        )),
    }
}

/// An OpenAI chat request as a `generateContent` body.
pub fn to_gemini(req: &Map<String, Value>) -> Result<Vec<u8>, GatewayError> {
    let messages = native::chat_messages(req, "google")?;
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool call id → function name, to name function responses.
    let mut names: std::collections::HashMap<String, Value> = Default::default();
    let push = |contents: &mut Vec<Value>, role: &str, parts: Vec<Value>| {
        native::push_turn(contents, role, "parts", parts);
    };
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        match m["role"].as_str().unwrap_or_default() {
            "system" | "developer" => system.extend(text_parts(m.get("content"), &param)?),
            "user" => {
                let parts = text_parts(m.get("content"), &param)?;
                push(&mut contents, "user", parts);
            }
            "assistant" => {
                let mut parts = text_parts(m.get("content"), &param)?;
                for (j, call) in m["tool_calls"].as_array().into_iter().flatten().enumerate() {
                    let f = &call["function"];
                    let args = native::tool_arguments(call, &format!("{param}.tool_calls[{j}]"))?;
                    if let Some(id) = call["id"].as_str() {
                        names.insert(id.to_owned(), f["name"].clone());
                    }
                    let mut function_call = json!({"name": f["name"], "args": args});
                    if let Some(id) = call["id"].as_str() {
                        // Gemini carries call ids too, and pairs results by them.
                        function_call["id"] = id.into();
                    }
                    parts.push(json!({"functionCall": function_call}));
                }
                push(&mut contents, "model", parts);
            }
            "tool" => {
                let id = m["tool_call_id"].as_str().unwrap_or_default();
                let name = names
                    .get(id)
                    .cloned()
                    .or_else(|| m.get("name").cloned())
                    .ok_or_else(|| {
                        native::bad(
                            "a tool message must answer a tool call of an earlier assistant message",
                            &param,
                        )
                    })?;
                let text: String = match &m["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => {
                        parts.iter().filter_map(|p| p["text"].as_str()).collect()
                    }
                    _ => String::new(),
                };
                // A JSON object result is passed as it is; anything else as text.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(o)) => Value::Object(o),
                    _ => json!({"content": text}),
                };
                let mut function_response = json!({"name": name, "response": response});
                if !id.is_empty() {
                    function_response["id"] = id.into();
                }
                push(
                    &mut contents,
                    "user",
                    vec![json!({"functionResponse": function_response})],
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
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut config = Map::new();
    native::copy_fields(
        req,
        &mut config,
        &[
            ("temperature", "temperature"),
            ("top_p", "topP"),
            ("top_k", "topK"),
            ("n", "candidateCount"),
            ("seed", "seed"),
            ("presence_penalty", "presencePenalty"),
            ("frequency_penalty", "frequencyPenalty"),
        ],
    );
    if let Some(v) = native::max_tokens(req) {
        config.insert("maxOutputTokens".into(), v.clone());
    }
    if let Some(stops) = native::stop_list(req) {
        config.insert("stopSequences".into(), stops);
    }
    match req.get("response_format").and_then(|f| f["type"].as_str()) {
        Some("json_object") => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some("json_schema") => {
            config.insert("responseMimeType".into(), "application/json".into());
            if let Some(schema) = req["response_format"]["json_schema"].get("schema") {
                config.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        _ => {}
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(Value::Array(tools)) = req.get("tools") {
        let decls: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut d = json!({"name": f["name"]});
                if let Some(desc) = f.get("description") {
                    d["description"] = desc.clone();
                }
                if let Some(p) = f.get("parameters") {
                    d["parametersJsonSchema"] = p.clone();
                }
                d
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    let calling = native::tool_choice(req)?.map(|c| match c {
        native::ToolChoice::Auto => json!({"mode": "AUTO"}),
        native::ToolChoice::Required => json!({"mode": "ANY"}),
        native::ToolChoice::None => json!({"mode": "NONE"}),
        native::ToolChoice::Function(name) => {
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
    });
    if let Some(c) = calling {
        out.insert("toolConfig".into(), json!({"functionCallingConfig": c}));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// Gemini's finish reason as OpenAI's.
pub fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if called => "tool_calls",
        _ => "stop",
    }
}

fn usage(u: &Value) -> Value {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let prompt = n("promptTokenCount");
    let completion = n("candidatesTokenCount") + n("thoughtsTokenCount");
    let mut out = json!({"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": n("totalTokenCount").max(prompt + completion),
                         "prompt_tokens_details": {"cached_tokens": n("cachedContentTokenCount")}});
    if u.get("thoughtsTokenCount").is_some() {
        out["completion_tokens_details"] = json!({"reasoning_tokens": n("thoughtsTokenCount")});
    }
    out
}

/// A candidate's parts as an OpenAI message (or delta): content, reasoning,
/// tool calls (ids made up when Gemini gives none).
fn message(parts: &Value, strict: bool, first_tool: usize) -> (Map<String, Value>, bool) {
    let mut text = String::new();
    let mut thought = String::new();
    let mut has_text = false;
    let mut calls = Vec::new();
    for p in parts.as_array().into_iter().flatten() {
        if let Some(call) = p.get("functionCall") {
            let index = first_tool + calls.len();
            let id = call["id"]
                .as_str()
                .map_or_else(|| format!("call_{index}"), str::to_owned);
            calls.push(json!({"index": index, "id": id, "type": "function",
                              "function": {"name": call["name"], "arguments": call["args"].to_string()}}));
        } else if let Some(t) = p["text"].as_str() {
            if p["thought"] == true {
                thought.push_str(t);
            } else {
                has_text = true;
                text.push_str(t);
            }
        }
    }
    let mut m = Map::new();
    m.insert(
        "content".into(),
        if has_text {
            Value::String(text)
        } else {
            Value::Null
        },
    );
    if !strict && !thought.is_empty() {
        m.insert("reasoning_content".into(), Value::String(thought));
    }
    let called = !calls.is_empty();
    if called {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    (m, called)
}

/// A `generateContent` answer as a chat completion.
pub fn from_gemini(body: &[u8], options: &AnswerOptions) -> Result<Value, GatewayError> {
    let r: Value = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamGarbage {
        provider: "google".into(),
        detail: format!("not a generateContent answer: {e}"),
    })?;
    let mut choices: Vec<Value> = r["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let (mut m, called) = message(&c["content"]["parts"], options.strict, 0);
            if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                for call in calls.iter_mut() {
                    if let Some(o) = call.as_object_mut() {
                        o.remove("index");
                    }
                }
            }
            m.insert("role".into(), "assistant".into());
            json!({"index": c["index"].as_u64().unwrap_or(i as u64), "message": m, "logprobs": null,
                   "finish_reason": finish_reason(c["finishReason"].as_str().unwrap_or("STOP"), called)})
        })
        .collect();
    if choices.is_empty() {
        // The prompt itself was blocked (`promptFeedback.blockReason`).
        choices.push(
            json!({"index": 0, "logprobs": null, "finish_reason": "content_filter",
                            "message": {"role": "assistant", "content": null}}),
        );
    }
    let model = r["modelVersion"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| options.model.clone());
    Ok(json!({
        "id": r["responseId"].as_str().map_or_else(|| "chatcmpl-gemini".to_owned(), |id| format!("chatcmpl-{id}")),
        "object": "chat.completion", "created": native::now(), "model": model,
        "choices": choices, "usage": usage(&r["usageMetadata"]),
    }))
}

/// An OpenAI embeddings request as `batchEmbedContents`.
fn to_embed(req: &Map<String, Value>, model: &str) -> Result<Vec<u8>, GatewayError> {
    let inputs = native::text_inputs(req, "google")?;
    let requests: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let mut r =
                json!({"model": format!("models/{model}"), "content": {"parts": [{"text": text}]}});
            if let Some(d) = req.get("dimensions") {
                r["outputDimensionality"] = d.clone();
            }
            r
        })
        .collect();
    serde_json::to_vec(&json!({"requests": requests}))
        .map_err(|e| GatewayError::Internal(e.to_string()))
}

fn from_embed(body: &[u8], options: &AnswerOptions) -> Result<Value, GatewayError> {
    let r: Value = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamGarbage {
        provider: "google".into(),
        detail: format!("not a batchEmbedContents answer: {e}"),
    })?;
    let data: Vec<Value> = r["embeddings"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e["values"]}))
        .collect();
    Ok(
        json!({"object": "list", "data": data, "model": options.model,
              "usage": {"prompt_tokens": 0, "total_tokens": 0}}),
    )
}

/// A Gemini error answer in OpenAI's shape.
pub fn error_body(status: http::StatusCode, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // The API answers an object, and some gateways in front of it a list of one.
    let e = if v.is_array() {
        &v[0]["error"]
    } else {
        &v["error"]
    };
    let code = e["status"].as_str().unwrap_or("UNKNOWN");
    let message = e["message"].as_str().map(str::to_owned).unwrap_or_else(|| {
        format!(
            "google answered HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    });
    let kind = native::error_type(status);
    openai_error(&message, kind, None, code)
}

/// Gemini's SSE stream: each event is a whole `GenerateContentResponse`.
struct Stream {
    options: AnswerOptions,
    sse: super::SseData,
    started: bool,
    created: u64,
    id: String,
    tools: usize,
    usage: Option<Value>,
}

impl Stream {
    fn new(options: AnswerOptions) -> Self {
        Self {
            options,
            sse: super::SseData::default(),
            started: false,
            created: native::now(),
            id: "chatcmpl-gemini".into(),
            tools: 0,
            usage: None,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.options.model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        .to_string()
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<String>) -> Result<(), GatewayError> {
        let r: Value = serde_json::from_slice(data).map_err(|e| GatewayError::UpstreamGarbage {
            provider: "google".into(),
            detail: format!("a stream event is not JSON: {e}"),
        })?;
        if let Some(e) = r.get("error") {
            return Err(GatewayError::UpstreamGarbage {
                provider: "google".into(),
                detail: e["message"].as_str().unwrap_or("stream error").to_owned(),
            });
        }
        if !self.started {
            self.started = true;
            if let Some(id) = r["responseId"].as_str() {
                self.id = format!("chatcmpl-{id}");
            }
            if let Some(m) = r["modelVersion"].as_str() {
                self.options.model = Some(m.to_owned());
            }
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        if r["usageMetadata"].is_object() {
            self.usage = Some(usage(&r["usageMetadata"]));
        }
        let c = &r["candidates"][0];
        let (delta, called) = message(&c["content"]["parts"], self.options.strict, self.tools);
        if let Some(Value::Array(calls)) = delta.get("tool_calls") {
            self.tools += calls.len();
        }
        let has_delta = delta.get("content").is_some_and(|v| !v.is_null())
            || delta.contains_key("tool_calls")
            || delta.contains_key("reasoning_content");
        if has_delta {
            let mut delta = delta;
            if delta.get("content") == Some(&Value::Null) {
                delta.remove("content");
            }
            out.push(self.chunk(Value::Object(delta), None));
        }
        if let Some(reason) = c["finishReason"].as_str() {
            out.push(self.chunk(
                json!({}),
                Some(finish_reason(reason, called || self.tools > 0)),
            ));
        } else if r["candidates"].as_array().is_none_or(Vec::is_empty)
            && r["promptFeedback"]["blockReason"].is_string()
        {
            out.push(self.chunk(json!({}), Some("content_filter")));
        }
        Ok(())
    }
}

impl native::Events for Stream {
    fn sse(&mut self) -> &mut SseData {
        &mut self.sse
    }

    fn event(&mut self, data: &[u8], out: &mut Vec<String>) -> Result<(), GatewayError> {
        self.on_event(data, out)
    }

    fn end(&mut self) -> Vec<String> {
        match (&self.usage, self.options.include_usage) {
            (Some(u), true) => vec![
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                       "model": self.options.model, "choices": [], "usage": u})
                .to_string(),
            ],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "google_tests.rs"]
mod tests;
