//! `cohere`: Cohere's v2 API behind OpenAI's chat completions and embeddings;
//! `/v1/rerank` (and any other path) reaches Cohere's v2 API as it is.
//!
//! - chat (`/v2/chat`): messages are close to OpenAI's (roles, text and image
//!   parts, tool calls, tool results); `top_p` → `p`, `top_k` → `k`, `stop` →
//!   `stop_sequences`, `response_format` (JSON mode, JSON schema) → Cohere's
//!   `json_object` with its schema, `tool_choice` `required` → `REQUIRED`,
//!   `none` → `NONE`. A named `tool_choice` and `n` above 1 cannot be expressed
//!   and are a 400.
//! - answers: text content joined, tool calls as they are, finish reasons
//!   mapped (`COMPLETE`/`STOP_SEQUENCE` → stop, `MAX_TOKENS` → length,
//!   `TOOL_CALL` → tool_calls), usage from `usage.tokens` (else `billed_units`).
//! - stream: Cohere's typed events (`message-start`, `content-delta`,
//!   `tool-call-start`/`-delta`, `message-end`) become OpenAI chunks.
//! - embeddings (`/v2/embed`): `input_type` defaults to `search_document`
//!   (a body field of that name is passed on), float embeddings back.
//! - errors: `{"message"}` in OpenAI's shape with the status.

use serde_json::{Map, Value, json};

use super::{
    AnswerOptions, Call, ChunkTranslator, Endpoint, OpenAiCompatible, SseData, UpstreamRequest,
};
use crate::GatewayError;
use crate::error::openai_error;
use crate::providers::native;

const SPEC: &str = r#"
[[provider]]
slug = "cohere"
base_url = "https://api.cohere.com/v2"
endpoints = ["proxy"]
"#;

#[derive(Debug)]
pub struct Cohere {
    transport: OpenAiCompatible,
}

impl Cohere {
    pub fn new() -> Result<Self, crate::config::Problems> {
        Ok(Self {
            transport: native::transport(SPEC, "cohere")?,
        })
    }

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        let (path, body) = match call.endpoint {
            Endpoint::Chat => ("/chat", to_cohere(&super::body::parse_object(&call.body)?)?),
            Endpoint::Embeddings => ("/embed", to_embed(&super::body::parse_object(&call.body)?)?),
            _ => return self.transport.build(call),
        };
        native::post_json(&self.transport, call, path, None, body)
    }
}

impl native::Native for Cohere {
    const SLUG: &'static str = "cohere";
    const ENDPOINTS: &'static [Endpoint] = &[Endpoint::Chat, Endpoint::Embeddings, Endpoint::Proxy];

    fn build(&self, call: &Call<'_>) -> Result<UpstreamRequest, GatewayError> {
        Cohere::build(self, call)
    }

    fn answer(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        options: &AnswerOptions,
    ) -> Result<Option<Value>, GatewayError> {
        match endpoint {
            Endpoint::Chat => from_cohere(body, options).map(Some),
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
        if endpoint == Endpoint::Chat {
            native::translator(Stream::new(options))
        } else {
            None
        }
    }
}

/// An OpenAI chat request as a Cohere v2 chat request.
pub fn to_cohere(req: &Map<String, Value>) -> Result<Vec<u8>, GatewayError> {
    let messages = native::chat_messages(req, "cohere")?;
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(o) = m.as_object_mut() {
                // Cohere knows system, user, assistant and tool.
                if o.get("role") == Some(&Value::from("developer")) {
                    o.insert("role".into(), "system".into());
                }
                o.remove("name");
                if o.get("content") == Some(&Value::Null) {
                    o.remove("content");
                }
            }
            m
        })
        .collect();
    let mut out = Map::new();
    out.insert(
        "model".into(),
        req.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), Value::Array(messages));
    native::copy_fields(
        req,
        &mut out,
        &[
            ("temperature", "temperature"),
            ("top_p", "p"),
            ("top_k", "k"),
            ("seed", "seed"),
            ("frequency_penalty", "frequency_penalty"),
            ("presence_penalty", "presence_penalty"),
            ("stream", "stream"),
            ("tools", "tools"),
        ],
    );
    if let Some(v) = native::max_tokens(req) {
        out.insert("max_tokens".into(), v.clone());
    }
    if let Some(stops) = native::stop_list(req) {
        out.insert("stop_sequences".into(), stops);
    }
    match req.get("response_format").and_then(|f| f["type"].as_str()) {
        Some("json_object") => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some("json_schema") => {
            let schema = req["response_format"]["json_schema"]["schema"].clone();
            out.insert(
                "response_format".into(),
                json!({"type": "json_object", "json_schema": schema}),
            );
        }
        _ => {}
    }
    match native::tool_choice(req)? {
        None | Some(native::ToolChoice::Auto) => {}
        Some(native::ToolChoice::Required) => {
            out.insert("tool_choice".into(), "REQUIRED".into());
        }
        Some(native::ToolChoice::None) => {
            out.insert("tool_choice".into(), "NONE".into());
        }
        Some(native::ToolChoice::Function(_)) => {
            return Err(native::bad(
                "`cohere` takes tool_choice auto, required or none (not a named function)",
                "tool_choice",
            ));
        }
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// Cohere's finish reason as OpenAI's.
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "TOOL_CALL" => "tool_calls",
        _ => "stop",
    }
}

fn usage(u: &Value) -> Value {
    let t = if u["tokens"].is_object() {
        &u["tokens"]
    } else {
        &u["billed_units"]
    };
    let n = |k: &str| t[k].as_f64().unwrap_or(0.0) as u64;
    let (p, c) = (n("input_tokens"), n("output_tokens"));
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            (!parts.is_empty()).then_some(text)
        }
        _ => None,
    }
}

/// A Cohere chat answer as a chat completion.
pub fn from_cohere(body: &[u8], options: &AnswerOptions) -> Result<Value, GatewayError> {
    let r: Value = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamGarbage {
        provider: "cohere".into(),
        detail: format!("not a chat answer: {e}"),
    })?;
    let mut message = json!({"role": "assistant", "content": text_of(&r["message"]["content"])});
    if let Some(calls) = r["message"]["tool_calls"]
        .as_array()
        .filter(|c| !c.is_empty())
    {
        message["tool_calls"] = Value::Array(calls.clone());
    }
    Ok(json!({
        "id": r["id"], "object": "chat.completion", "created": native::now(), "model": options.model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(r["finish_reason"].as_str().unwrap_or("COMPLETE"))}],
        "usage": usage(&r["usage"]),
    }))
}

fn to_embed(req: &Map<String, Value>) -> Result<Vec<u8>, GatewayError> {
    let texts = match req.get("input") {
        Some(Value::String(s)) => json!([s]),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Value::Array(items.clone())
        }
        _ => {
            return Err(native::bad(
                "`input` must be a string or an array of strings",
                "input",
            ));
        }
    };
    let mut out = json!({
        "model": req.get("model").cloned().unwrap_or(Value::Null),
        "texts": texts,
        "input_type": req.get("input_type").cloned().unwrap_or_else(|| "search_document".into()),
        "embedding_types": ["float"],
    });
    if let Some(d) = req.get("dimensions") {
        out["output_dimension"] = d.clone();
    }
    serde_json::to_vec(&out).map_err(|e| GatewayError::Internal(e.to_string()))
}

fn from_embed(body: &[u8], options: &AnswerOptions) -> Result<Value, GatewayError> {
    let r: Value = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamGarbage {
        provider: "cohere".into(),
        detail: format!("not an embed answer: {e}"),
    })?;
    let data: Vec<Value> = r["embeddings"]["float"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    let tokens = r["meta"]["billed_units"]["input_tokens"]
        .as_f64()
        .unwrap_or(0.0) as u64;
    Ok(
        json!({"object": "list", "data": data, "model": options.model,
              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

fn error_body(status: http::StatusCode, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["message"].as_str().map(str::to_owned).unwrap_or_else(|| {
        format!(
            "cohere answered HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    });
    let kind = native::error_type(status);
    openai_error(&message, kind, None, &format!("cohere_{}", status.as_u16()))
}

/// Cohere's typed stream events as OpenAI chunks.
struct Stream {
    options: AnswerOptions,
    sse: SseData,
    id: String,
    created: u64,
}

impl Stream {
    fn new(options: AnswerOptions) -> Self {
        Self {
            options,
            sse: SseData::default(),
            id: String::new(),
            created: native::now(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.options.model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        .to_string()
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<String>) -> Result<(), GatewayError> {
        let e: Value =
            serde_json::from_slice(data).map_err(|err| GatewayError::UpstreamGarbage {
                provider: "cohere".into(),
                detail: format!("a stream event is not JSON: {err}"),
            })?;
        let m = &e["delta"]["message"];
        match e["type"].as_str().unwrap_or_default() {
            "message-start" => {
                self.id = e["id"].as_str().unwrap_or_default().to_owned();
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            "content-delta" => {
                out.push(self.chunk(json!({"content": m["content"]["text"]}), None));
            }
            "tool-call-start" => {
                let call = &m["tool_calls"];
                out.push(self.chunk(
                    json!({"tool_calls": [{"index": e["index"], "id": call["id"], "type": "function",
                                           "function": {"name": call["function"]["name"],
                                                        "arguments": call["function"]["arguments"].as_str().unwrap_or("")}}]}),
                    None,
                ));
            }
            "tool-call-delta" => {
                out.push(self.chunk(
                    json!({"tool_calls": [{"index": e["index"],
                                           "function": {"arguments": m["tool_calls"]["function"]["arguments"]}}]}),
                    None,
                ));
            }
            "message-end" => {
                let d = &e["delta"];
                let finish = finish_reason(d["finish_reason"].as_str().unwrap_or("COMPLETE"));
                out.push(self.chunk(json!({}), Some(finish)));
                if self.options.include_usage {
                    out.push(
                        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                               "model": self.options.model, "choices": [], "usage": usage(&d["usage"])})
                        .to_string(),
                    );
                }
            }
            _ => {}
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn convert(v: Value) -> Value {
        let map = v.as_object().cloned().unwrap_or_default();
        serde_json::from_slice(&to_cohere(&map).expect("converts")).expect("json")
    }

    #[test]
    fn a_chat_request_becomes_a_cohere_request() {
        let got = convert(json!({
            "model": "command-a-03-2025",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "top_p": 0.9, "top_k": 10, "max_tokens": 50, "stop": "END", "seed": 1, "stream": true,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "logprobs": true
        }));
        assert_eq!(
            got,
            json!({
                "model": "command-a-03-2025",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                    {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "42"}
                ],
                "p": 0.9, "k": 10, "seed": 1, "stream": true,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "max_tokens": 50, "stop_sequences": ["END"],
                "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
                "tool_choice": "REQUIRED"
            })
        );
        for bad in [
            json!({"model": "m", "messages": [], "n": 2}),
            json!({"model": "m", "messages": [], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
        ] {
            let map = bad.as_object().cloned().unwrap_or_default();
            assert_eq!(
                to_cohere(&map).expect_err("refused").status(),
                http::StatusCode::BAD_REQUEST
            );
        }
    }

    #[test]
    fn answers_embeddings_and_errors_come_back_in_openai_shape() {
        let options = AnswerOptions {
            model: Some("command-a".into()),
            ..AnswerOptions::default()
        };
        let answer = json!({"id": "c-1", "finish_reason": "TOOL_CALL",
            "message": {"role": "assistant", "content": [{"type": "text", "text": "Let me "}, {"type": "text", "text": "check."}],
                        "tool_plan": "call f",
                        "tool_calls": [{"id": "f_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 2}, "tokens": {"input_tokens": 70, "output_tokens": 2}}});
        let mut got = from_cohere(answer.to_string().as_bytes(), &options).expect("maps");
        got["created"] = json!(0);
        assert_eq!(
            got,
            json!({"id": "c-1", "object": "chat.completion", "created": 0, "model": "command-a",
                   "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                                "message": {"role": "assistant", "content": "Let me check.",
                                            "tool_calls": [{"id": "f_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
                   "usage": {"prompt_tokens": 70, "completion_tokens": 2, "total_tokens": 72}})
        );
        let emb = json!({"id": "e", "embeddings": {"float": [[0.1, 0.2]]}, "texts": ["a"], "meta": {"billed_units": {"input_tokens": 1}}});
        let got = from_embed(emb.to_string().as_bytes(), &options).expect("maps");
        assert_eq!(got["data"][0]["embedding"], json!([0.1, 0.2]));
        assert_eq!(got["usage"]["prompt_tokens"], 1);
        let err = error_body(
            http::StatusCode::UNAUTHORIZED,
            br#"{"id":"x","message":"invalid api token"}"#,
        );
        assert_eq!(err["error"]["message"], "invalid api token");
        assert_eq!(err["error"]["type"], "authentication_error");
    }

    #[test]
    fn typed_stream_events_become_openai_chunks() {
        let events = [
            json!({"type": "message-start", "id": "s-1", "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": []}}}),
            json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
            json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi"}}}}),
            json!({"type": "content-end", "index": 0}),
            json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {"id": "f_1", "type": "function", "function": {"name": "f", "arguments": ""}}}}}),
            json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": "{\"a\":1}"}}}}}),
            json!({"type": "tool-call-end", "index": 0}),
            json!({"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": {"tokens": {"input_tokens": 9, "output_tokens": 3}}}}),
        ];
        let text: String = events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
            .collect();
        let mut t = native::translator(Stream::new(AnswerOptions {
            model: Some("command-a".into()),
            include_usage: true,
            strict: true,
        }))
        .expect("a translator");
        let mut out = Vec::new();
        for piece in text.as_bytes().chunks(13) {
            out.extend(t.push(piece).now_or_never().expect("ready").expect("ok"));
        }
        let chunks: Vec<Value> = out
            .iter()
            .map(|c| serde_json::from_str(c).expect("json"))
            .collect();
        let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
        assert_eq!(chunks.len(), 6);
        assert_eq!(deltas[0]["role"], "assistant");
        assert_eq!(deltas[1]["content"], "Hi");
        assert_eq!(deltas[2]["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(
            deltas[3]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[5]["usage"]["total_tokens"], 12);
        assert!(chunks.iter().all(|c| c["id"] == "s-1"));
    }
}
