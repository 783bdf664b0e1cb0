//! Chat: OpenAI's request → Ollama's `/api/chat`, and Ollama's answer (whole, or
//! NDJSON line by line) → OpenAI's `chat.completion` / `chat.completion.chunk`.

use serde_json::{Map, Value, json};
use sluice_plugin_sdk::provider::{Error, Lines, StreamTranslator, UpstreamError};

use crate::time::unix_seconds;

/// The `/api/chat` body for an OpenAI chat request.
pub fn request(body: &Value, stream: bool) -> Result<Value, Error> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::InvalidInput("`messages` must be an array".into()))?;
    let mut out = Map::new();
    out.insert(
        "model".into(),
        body.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), Value::Array(convert_messages(messages)?));
    out.insert("stream".into(), Value::Bool(stream));
    if let Some(tools) = body.get("tools") {
        out.insert("tools".into(), tools.clone());
    }
    if let Some(format) = body.get("response_format").and_then(format) {
        out.insert("format".into(), format);
    }
    let mut options = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("max_tokens", "num_predict"),
        ("max_completion_tokens", "num_predict"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
    ] {
        if let Some(v) = body.get(from).filter(|v| !v.is_null()) {
            options.insert(to.into(), v.clone());
        }
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            options.insert("stop".into(), json!([s]));
        }
        Some(v @ Value::Array(_)) => {
            options.insert("stop".into(), v.clone());
        }
        _ => {}
    }
    if !options.is_empty() {
        out.insert("options".into(), Value::Object(options));
    }
    Ok(Value::Object(out))
}

fn format(rf: &Value) -> Option<Value> {
    match rf.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!("json")),
        "json_schema" => rf.pointer("/json_schema/schema").cloned(),
        _ => None,
    }
}

fn convert_messages(messages: &[Value]) -> Result<Vec<Value>, Error> {
    let mut tool_names: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let role = if role == "developer" { "system" } else { role };
        let mut msg = Map::new();
        msg.insert("role".into(), json!(role));
        let (text, images) = content(m.get("content"), i)?;
        msg.insert("content".into(), json!(text));
        if !images.is_empty() {
            msg.insert("images".into(), json!(images));
        }
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            let mut converted = Vec::new();
            for call in calls {
                let name = call
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let args = match call.pointer("/function/arguments") {
                    Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!({})),
                    Some(v) => v.clone(),
                    None => json!({}),
                };
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    tool_names.push((id.to_owned(), name.to_owned()));
                }
                converted.push(json!({"function": {"name": name, "arguments": args}}));
            }
            msg.insert("tool_calls".into(), Value::Array(converted));
        }
        if role == "tool"
            && let Some(id) = m.get("tool_call_id").and_then(Value::as_str)
            && let Some((_, name)) = tool_names.iter().find(|(known, _)| known == id)
        {
            msg.insert("tool_name".into(), json!(name));
        }
        out.push(Value::Object(msg));
    }
    Ok(out)
}

/// The text of a message's content and its inline images (base64).
fn content(content: Option<&Value>, i: usize) -> Result<(String, Vec<String>), Error> {
    match content {
        None | Some(Value::Null) => Ok((String::new(), Vec::new())),
        Some(Value::String(s)) => Ok((s.clone(), Vec::new())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            let mut images = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    Some("image_url") => {
                        let url = part
                            .pointer("/image_url/url")
                            .or_else(|| part.get("image_url"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        let data = url.split_once(";base64,").map(|(_, d)| d).ok_or_else(|| {
                            Error::InvalidInput(format!(
                                "messages[{i}]: Ollama takes images inline only (a `data:` URL with base64)"
                            ))
                        })?;
                        images.push(data.to_owned());
                    }
                    other => {
                        return Err(Error::Unsupported(format!(
                            "messages[{i}]: content part type {} is not supported by ollama",
                            other.unwrap_or("(none)")
                        )));
                    }
                }
            }
            Ok((text, images))
        }
        Some(_) => Err(Error::InvalidInput(format!(
            "messages[{i}].content must be a string or an array"
        ))),
    }
}

fn tool_calls(message: &Value, with_index: bool) -> Option<Vec<Value>> {
    let calls = message.get("tool_calls").and_then(Value::as_array)?;
    Some(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut call = json!({
                    "id": format!("call_{i}"),
                    "type": "function",
                    "function": {
                        "name": c.pointer("/function/name").cloned().unwrap_or(json!("")),
                        "arguments": c.pointer("/function/arguments").map(|a| a.to_string()).unwrap_or_else(|| "{}".into()),
                    }
                });
                if with_index {
                    call["index"] = json!(i);
                }
                call
            })
            .collect(),
    )
}

fn finish_reason(v: &Value, has_tools: bool) -> &'static str {
    if has_tools {
        return "tool_calls";
    }
    match v.get("done_reason").and_then(Value::as_str) {
        Some("length") => "length",
        _ => "stop",
    }
}

fn usage(v: &Value) -> Value {
    let prompt = v
        .get("prompt_eval_count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let completion = v.get("eval_count").and_then(Value::as_u64).unwrap_or(0);
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn id(v: &Value) -> String {
    format!(
        "chatcmpl-ollama-{}",
        unix_seconds(v.get("created_at").and_then(Value::as_str).unwrap_or(""))
    )
}

/// OpenAI's `chat.completion` for a whole `/api/chat` answer.
pub fn response(v: &Value) -> Value {
    let message = v.get("message").cloned().unwrap_or_else(|| json!({}));
    let calls = tool_calls(&message, false);
    let mut out_message = json!({
        "role": "assistant",
        "content": message.get("content").cloned().unwrap_or(json!("")),
    });
    if let Some(thinking) = message.get("thinking").filter(|t| t.is_string()) {
        out_message["reasoning_content"] = thinking.clone();
    }
    if let Some(calls) = &calls {
        out_message["tool_calls"] = json!(calls);
    }
    json!({
        "id": id(v),
        "object": "chat.completion",
        "created": unix_seconds(v.get("created_at").and_then(Value::as_str).unwrap_or("")),
        "model": v.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": out_message,
            "finish_reason": finish_reason(v, calls.is_some()),
        }],
        "usage": usage(v),
    })
}

/// Translates Ollama's NDJSON stream, one JSON object per line.
pub struct Stream {
    lines: Lines,
    model: Option<String>,
    sent_role: bool,
    saw_tools: bool,
}

impl Stream {
    pub fn new(model: Option<String>) -> Self {
        Self {
            lines: Lines::default(),
            model,
            sent_role: false,
            saw_tools: false,
        }
    }

    fn chunk(&mut self, line: &str) -> Result<Option<String>, Error> {
        if line.trim().is_empty() {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(line).map_err(|e| {
            Error::InvalidInput(format!("ollama sent a stream line that is not JSON: {e}"))
        })?;
        if let Some(message) = v.get("error").and_then(Value::as_str) {
            return Err(Error::Upstream(UpstreamError {
                status: 502,
                message: message.to_owned(),
                code: None,
            }));
        }
        let message = v.get("message").cloned().unwrap_or_else(|| json!({}));
        let mut delta = Map::new();
        if !self.sent_role {
            delta.insert("role".into(), json!("assistant"));
            self.sent_role = true;
        }
        if let Some(text) = message
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            delta.insert("content".into(), json!(text));
        }
        if let Some(thinking) = message
            .get("thinking")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            delta.insert("reasoning_content".into(), json!(thinking));
        }
        if let Some(calls) = tool_calls(&message, true) {
            self.saw_tools = true;
            delta.insert("tool_calls".into(), json!(calls));
        }
        let done = v.get("done").and_then(Value::as_bool).unwrap_or(false);
        if delta.is_empty() && !done {
            return Ok(None);
        }
        let model = v
            .get("model")
            .cloned()
            .or_else(|| self.model.clone().map(Value::String))
            .unwrap_or(Value::Null);
        let mut chunk = json!({
            "id": id(&v),
            "object": "chat.completion.chunk",
            "created": unix_seconds(v.get("created_at").and_then(Value::as_str).unwrap_or("")),
            "model": model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "finish_reason": if done { json!(finish_reason(&v, self.saw_tools)) } else { Value::Null },
            }],
        });
        if done {
            chunk["usage"] = usage(&v);
        }
        Ok(Some(chunk.to_string()))
    }
}

impl StreamTranslator for Stream {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for line in self.lines.push(bytes) {
            out.extend(self.chunk(&line)?);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<String>, Error> {
        match self.lines.rest() {
            Some(line) => Ok(self.chunk(&line)?.into_iter().collect()),
            None => Ok(Vec::new()),
        }
    }
}
