//! Anthropic's Messages API as an ingress format: `POST /v1/messages` from
//! Claude clients, for providers that do not speak it. The request becomes an
//! OpenAI chat request, the provider is called as usual, and its answer (or
//! stream, or error) comes back in Anthropic's shapes.
//!
//! - request: `system` (text or blocks) becomes a system message; text, image
//!   (base64 or URL) and document blocks become content parts; `tool_use`
//!   blocks become `tool_calls` and `tool_result` blocks `tool` messages (before
//!   the rest of their user turn); `stop_sequences`, `metadata.user_id`, tools
//!   and `tool_choice` (`auto`, `any` → `required`, `tool` → a named function,
//!   `none`, `disable_parallel_tool_use` → `parallel_tool_calls: false`) are
//!   mapped. A stream asks for usage (`stream_options.include_usage`) so its
//!   `message_delta` can report it. Thinking blocks and `thinking` / `top_k` have
//!   no OpenAI form and are left out.
//! - answer: content and tool calls as blocks, finish reasons as stop reasons,
//!   usage with cached prompt tokens as `cache_read_input_tokens`.
//! - stream: OpenAI chunks become `message_start`, `content_block_start` /
//!   `_delta` / `_stop` per text or tool block, `message_delta` (stop reason,
//!   usage) and `message_stop`; an error event becomes Anthropic's `error`
//!   event.
//! - errors: `{"type":"error","error":{"type","message"}}` with the status.

use serde_json::{Map, Value, json};

use crate::GatewayError;

fn bad(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

/// A Messages API request as an OpenAI chat request.
pub fn messages_to_chat(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let req = crate::providers::body::parse_object(body)?;
    let mut out = Map::new();
    if let Some(model) = req.get("model") {
        out.insert("model".into(), model.clone());
    }
    let mut messages = Vec::new();
    match req.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
            messages.push(json!({"role": "system", "content": text.join("\n")}));
        }
        Some(_) => return Err(bad("`system` must be a string or text blocks", "system")),
    }
    let Some(Value::Array(input)) = req.get("messages") else {
        return Err(bad("`messages` must be an array", "messages"));
    };
    for (i, m) in input.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = m["role"].as_str().unwrap_or_default();
        let blocks = match &m["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(blocks) => blocks.clone(),
            _ => {
                return Err(bad(
                    "`content` must be a string or an array of blocks",
                    &param,
                ));
            }
        };
        match role {
            "user" => {
                let mut parts = Vec::new();
                for (j, b) in blocks.iter().enumerate() {
                    let at = format!("{param}.content[{j}]");
                    match b["type"].as_str() {
                        Some("tool_result") => messages.push(json!({
                            "role": "tool",
                            "tool_call_id": b["tool_use_id"],
                            "content": result_text(&b["content"]),
                        })),
                        _ => parts.extend(part(b, &at)?),
                    }
                }
                if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": parts}));
                }
            }
            "assistant" => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for b in &blocks {
                    match b["type"].as_str() {
                        Some("text") => text.push_str(b["text"].as_str().unwrap_or_default()),
                        Some("tool_use") => calls.push(json!({
                            "id": b["id"], "type": "function",
                            "function": {"name": b["name"], "arguments": b["input"].to_string()}
                        })),
                        _ => {}
                    }
                }
                let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
            other => {
                return Err(bad(
                    format!("role `{other}` is not user or assistant"),
                    &param,
                ));
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(n) = req.get("max_tokens") {
        out.insert("max_tokens".into(), n.clone());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(Value::Array(stops)) = req.get("stop_sequences") {
        out.insert("stop".into(), Value::Array(stops.clone()));
    }
    if req.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = req.get("metadata").and_then(|m| m.get("user_id")) {
        out.insert("user".into(), user.clone());
    }
    if let Some(Value::Array(tools)) = req.get("tools") {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t["name"], "parameters": t["input_schema"]});
                if let Some(d) = t.get("description") {
                    f["description"] = d.clone();
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = req.get("tool_choice") {
        let mapped = match choice["type"].as_str() {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
            _ => {
                return Err(bad(
                    "`tool_choice.type` is auto, any, tool or none",
                    "tool_choice",
                ));
            }
        };
        out.insert("tool_choice".into(), mapped);
        if choice["disable_parallel_tool_use"] == true {
            out.insert("parallel_tool_calls".into(), false.into());
        }
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// A user block as OpenAI content parts (thinking blocks have none).
fn part(b: &Value, at: &str) -> Result<Option<Value>, GatewayError> {
    let url = |src: &Value| match src["type"].as_str() {
        Some("base64") => Ok(format!(
            "data:{};base64,{}",
            src["media_type"]
                .as_str()
                .unwrap_or("application/octet-stream"),
            src["data"].as_str().unwrap_or_default()
        )),
        Some("url") => Ok(src["url"].as_str().unwrap_or_default().to_owned()),
        _ => Err(bad("a source is base64 or url", at)),
    };
    Ok(match b["type"].as_str() {
        Some("text") => Some(json!({"type": "text", "text": b["text"]})),
        Some("image") => {
            Some(json!({"type": "image_url", "image_url": {"url": url(&b["source"])?}}))
        }
        Some("document") => {
            Some(json!({"type": "file", "file": {"file_data": url(&b["source"])?}}))
        }
        Some("thinking" | "redacted_thinking") => None,
        other => {
            return Err(bad(
                format!("block type {other:?} cannot be sent to this provider"),
                at,
            ));
        }
    })
}

/// A tool result's content as text.
fn result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// OpenAI's finish reason as Anthropic's stop reason.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn anthropic_usage(u: &Value) -> Value {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let cached = n(&u["prompt_tokens_details"]["cached_tokens"]);
    json!({"input_tokens": n(&u["prompt_tokens"]).saturating_sub(cached),
           "output_tokens": n(&u["completion_tokens"]),
           "cache_read_input_tokens": cached})
}

fn message_id(id: &Value) -> String {
    match id.as_str() {
        Some(s) if s.starts_with("msg_") => s.to_owned(),
        Some(s) => format!("msg_{s}"),
        None => "msg_sluice".into(),
    }
}

/// An OpenAI chat completion as a Messages API answer.
pub fn chat_to_message(body: &[u8]) -> Result<Value, GatewayError> {
    let c: Value = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamGarbage {
        provider: "(messages ingress)".into(),
        detail: format!("not a chat completion: {e}"),
    })?;
    let choice = &c["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = msg["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in msg["tool_calls"].as_array().into_iter().flatten() {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
    }
    Ok(json!({
        "id": message_id(&c["id"]), "type": "message", "role": "assistant", "model": c["model"],
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": null,
        "usage": anthropic_usage(&c["usage"]),
    }))
}

/// An error answer (OpenAI's shape, or anything) in Anthropic's.
pub fn error_to_anthropic(status: http::StatusCode, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// Anthropic's error type for a status.
pub fn error_type(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        408 | 504 => "timeout_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// OpenAI chunks in, Anthropic events out.
#[derive(Debug, Default)]
pub struct ChatToEvents {
    sse: crate::providers::SseData,
    started: bool,
    done: bool,
    /// The open block: its index and whether it is text (else a tool call,
    /// with its OpenAI index).
    open: Option<(u64, Option<u64>)>,
    next_block: u64,
    stop: Option<&'static str>,
    usage: Value,
}

impl crate::providers::FromChatChunks for ChatToEvents {
    fn sse(&mut self) -> &mut crate::providers::SseData {
        &mut self.sse
    }

    fn ended(&self) -> bool {
        self.done
    }

    fn end(&mut self, out: &mut String) {
        self.close(out);
    }

    fn chunk(&mut self, chunk: &Value, out: &mut String) {
        self.on_chunk(chunk, out);
    }
}

impl ChatToEvents {
    fn on_chunk(&mut self, chunk: &Value, out: &mut String) {
        if let Some(err) = chunk.get("error") {
            let message = err["message"].as_str().unwrap_or("the stream failed");
            out.push_str(&event(
                "error",
                &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            ));
            self.done = true;
            return;
        }
        if !self.started {
            self.started = true;
            out.push_str(&event(
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": message_id(&chunk["id"]), "type": "message", "role": "assistant",
                    "model": chunk["model"], "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            ));
        }
        if chunk["usage"].is_object() {
            self.usage = chunk["usage"].clone();
        }
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Some((_, None))) {
                self.open_block(None, &json!({"type": "text", "text": ""}), out);
            }
            let index = self.open.map_or(0, |(i, _)| i);
            out.push_str(&event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let tool = call["index"].as_u64().unwrap_or(0);
            if self.open.map(|(_, t)| t) != Some(Some(tool)) {
                let block = json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}});
                self.open_block(Some(tool), &block, out);
            }
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                let index = self.open.map_or(0, |(i, _)| i);
                out.push_str(&event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
            }
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            self.stop = Some(stop_reason(finish));
        }
    }

    fn open_block(&mut self, tool: Option<u64>, block: &Value, out: &mut String) {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, tool));
        out.push_str(&event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
    }

    fn close_block(&mut self, out: &mut String) {
        if let Some((index, _)) = self.open.take() {
            out.push_str(&event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn close(&mut self, out: &mut String) {
        if self.done || !self.started {
            return;
        }
        self.done = true;
        self.close_block(out);
        let usage = anthropic_usage(&self.usage);
        out.push_str(&event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
                    "usage": usage}),
        ));
        out.push_str(&event("message_stop", &json!({"type": "message_stop"})));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::FromChatChunks;

    fn convert(v: Value) -> Value {
        serde_json::from_slice(&messages_to_chat(v.to_string().as_bytes()).expect("converts"))
            .expect("json")
    }

    #[test]
    fn a_messages_request_becomes_a_chat_request() {
        let got = convert(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 1024,
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "-3 C"}]},
                    {"type": "text", "text": "And tomorrow?"}]}
            ],
            "stop_sequences": ["\n\nHuman:"], "temperature": 0.5, "top_k": 5, "stream": true,
            "metadata": {"user_id": "u-1"},
            "tools": [{"name": "weather", "description": "By city", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 1024}
        }));
        assert_eq!(
            got,
            json!({
                "model": "claude-sonnet-4-5",
                "messages": [
                    {"role": "system", "content": "Be brief.\nBe kind."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather here?"},
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "-3 C"},
                    {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}
                ],
                "max_tokens": 1024, "temperature": 0.5, "stop": ["\n\nHuman:"],
                "stream": true, "stream_options": {"include_usage": true}, "user": "u-1",
                "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "description": "By city"}}],
                "tool_choice": "required", "parallel_tool_calls": false
            })
        );
        let err =
            messages_to_chat(br#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#)
                .expect_err("role");
        assert!(err.to_string().contains("role `system`"));
    }

    #[test]
    fn a_chat_completion_becomes_a_message() {
        let got = chat_to_message(
            json!({"id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-4o",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Sure.",
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "prompt_tokens_details": {"cached_tokens": 60}}})
            .to_string()
            .as_bytes(),
        )
        .expect("maps");
        assert_eq!(
            got,
            json!({"id": "msg_chatcmpl-9", "type": "message", "role": "assistant", "model": "gpt-4o",
                "content": [{"type": "text", "text": "Sure."},
                            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 40, "output_tokens": 20, "cache_read_input_tokens": 60}})
        );
        let err = error_to_anthropic(
            http::StatusCode::TOO_MANY_REQUESTS,
            br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        );
        assert_eq!(
            err,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
    }

    #[test]
    fn openai_chunks_become_the_anthropic_event_sequence() {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let input = [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hel"}), Value::Null),
            chunk(json!({"content": "lo"}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "w", "arguments": ""}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            format!("data: {}\n\n", json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let mut t = ChatToEvents::default();
        let mut out = String::new();
        for piece in input.as_bytes().chunks(5) {
            out.push_str(&t.push(piece));
        }
        out.push_str(&t.finish());
        let events: Vec<(String, Value)> = out
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').expect("two lines");
                (
                    name.trim_start_matches("event: ").to_owned(),
                    serde_json::from_str(data.trim_start_matches("data: ")).expect("json"),
                )
            })
            .collect();
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["id"], "msg_chatcmpl-1");
        assert_eq!(
            events[2].1["delta"],
            json!({"type": "text_delta", "text": "Hel"})
        );
        assert_eq!(
            events[5].1["content_block"],
            json!({"type": "tool_use", "id": "call_1", "name": "w", "input": {}})
        );
        assert_eq!(events[5].1["index"], 1);
        assert_eq!(
            events[7].1["delta"],
            json!({"type": "input_json_delta", "partial_json": "1}"})
        );
        assert_eq!(events[9].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[9].1["usage"]["output_tokens"], 4);

        // A broken OpenAI stream ends with Anthropic's error event.
        let mut t = ChatToEvents::default();
        let out = t.push(b"data: {\"error\":{\"message\":\"the stream broke\"}}\n\n");
        assert!(out.starts_with("event: error\n"), "{out}");
        assert_eq!(t.finish(), "");
    }
}
