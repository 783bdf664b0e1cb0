//! OpenAI's Responses API (`POST /v1/responses`) for providers that only speak
//! chat completions: the request becomes a chat request, the answer a
//! `response` object, a stream the Responses event sequence. Providers of the
//! OpenAI family that serve `/responses` themselves get the request as it is.
//!
//! Translated: `instructions`; `input` as text or items (messages with
//! `input_text` / `input_image` / `output_text` parts, `function_call` and
//! `function_call_output` items); `max_output_tokens`, `temperature`, `top_p`;
//! function tools and `tool_choice`; `text.format` (JSON mode and schema).
//! Not translatable, so a 400: built-in tools (web search, file search, ...),
//! `previous_response_id` and `conversation` (state the provider does not keep).

use serde_json::{Map, Value, json};

use crate::GatewayError;
use crate::providers::native::{self, bad};

/// A Responses request as a chat request.
pub fn responses_to_chat(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let req = super::body::parse_object(body)?;
    for key in ["previous_response_id", "conversation"] {
        if req.get(key).is_some_and(|v| !v.is_null()) {
            return Err(bad(
                format!(
                    "`{key}` needs a provider that keeps responses; this one only speaks chat completions"
                ),
                key,
            ));
        }
    }
    let mut messages = Vec::new();
    if let Some(i) = req.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": i}));
    }
    match req.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("input[{i}]");
                match item["type"].as_str().unwrap_or("message") {
                    "message" => {
                        let role = item["role"].as_str().unwrap_or("user");
                        messages.push(json!({"role": role, "content": parts(&item["content"], &at)?}));
                    }
                    "function_call" => {
                        let call = json!({"id": item["call_id"], "type": "function",
                            "function": {"name": item["name"], "arguments": item["arguments"]}});
                        // Calls of one turn share one assistant message.
                        match messages.last_mut() {
                            Some(last) if last["role"] == "assistant" && last["tool_calls"].is_array() => {
                                if let Some(calls) = last["tool_calls"].as_array_mut() {
                                    calls.push(call);
                                }
                            }
                            _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                        }
                    }
                    "function_call_output" => messages.push(json!({
                        "role": "tool", "tool_call_id": item["call_id"],
                        "content": item["output"].as_str().map_or_else(|| item["output"].to_string(), str::to_owned)
                    })),
                    other => return Err(bad(format!("input item type `{other}` cannot be sent to this provider"), &at)),
                }
            }
        }
        _ => {
            return Err(bad(
                "`input` must be a string or an array of items",
                "input",
            ));
        }
    }
    let mut out = Map::new();
    out.insert(
        "model".into(),
        req.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), Value::Array(messages));
    if let Some(n) = req.get("max_output_tokens").filter(|v| !v.is_null()) {
        out.insert("max_tokens".into(), n.clone());
    }
    for key in ["temperature", "top_p", "user", "parallel_tool_calls"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if req.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(Value::Array(tools)) = req.get("tools") {
        let tools: Result<Vec<Value>, GatewayError> = tools
            .iter()
            .enumerate()
            .map(|(i, t)| match t["type"].as_str() {
                Some("function") => {
                    let mut f = json!({"name": t["name"], "parameters": t["parameters"]});
                    if let Some(d) = t.get("description") {
                        f["description"] = d.clone();
                    }
                    if let Some(s) = t.get("strict") {
                        f["strict"] = s.clone();
                    }
                    Ok(json!({"type": "function", "function": f}))
                }
                other => Err(bad(
                    format!("tool type {other:?} is built into OpenAI's Responses API; this provider has only function tools"),
                    &format!("tools[{i}]"),
                )),
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools?));
    }
    match req.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("tool_choice".into(), s.clone().into());
        }
        Some(Value::Object(o)) if o.get("type") == Some(&Value::from("function")) => {
            out.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": o["name"]}}),
            );
        }
        Some(_) => {
            return Err(bad(
                "`tool_choice` must be auto, required, none or a function",
                "tool_choice",
            ));
        }
    }
    match req.get("text").and_then(|t| t.get("format")) {
        Some(f) if f["type"] == "json_schema" => {
            let mut schema = json!({"name": f["name"], "schema": f["schema"]});
            if let Some(s) = f.get("strict") {
                schema["strict"] = s.clone();
            }
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": schema}),
            );
        }
        Some(f) if f["type"] == "json_object" => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        _ => {}
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| GatewayError::Internal(e.to_string()))
}

fn parts(content: &Value, at: &str) -> Result<Value, GatewayError> {
    match content {
        Value::String(s) => Ok(Value::String(s.clone())),
        Value::Array(items) => {
            let mut out = Vec::new();
            for p in items {
                match p["type"].as_str() {
                    Some("input_text" | "output_text" | "text") => {
                        out.push(json!({"type": "text", "text": p["text"]}))
                    }
                    Some("input_image") => {
                        let url = p["image_url"]
                            .as_str()
                            .ok_or_else(|| bad("`input_image` needs `image_url`", at))?;
                        out.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    Some("input_file") => {
                        let data = p["file_data"]
                            .as_str()
                            .ok_or_else(|| bad("`input_file` needs `file_data`", at))?;
                        out.push(json!({"type": "file", "file": {"file_data": data, "filename": p["filename"]}}));
                    }
                    other => {
                        return Err(bad(
                            format!("content type {other:?} cannot be sent to this provider"),
                            at,
                        ));
                    }
                }
            }
            Ok(Value::Array(out))
        }
        _ => Err(bad("`content` must be a string or an array of parts", at)),
    }
}

fn response_id(id: &Value) -> String {
    match id.as_str() {
        Some(s) if s.starts_with("resp_") => s.to_owned(),
        Some(s) => format!("resp_{s}"),
        None => "resp_sluice".into(),
    }
}

fn usage(u: &Value) -> Value {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    json!({"input_tokens": n(&u["prompt_tokens"]), "output_tokens": n(&u["completion_tokens"]),
           "total_tokens": n(&u["total_tokens"]),
           "input_tokens_details": {"cached_tokens": n(&u["prompt_tokens_details"]["cached_tokens"])},
           "output_tokens_details": {"reasoning_tokens": n(&u["completion_tokens_details"]["reasoning_tokens"])}})
}

fn text_item(id: &str, text: &str) -> Value {
    json!({"type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(call: &Value) -> Value {
    json!({"type": "function_call", "id": format!("fc_{}", call["id"].as_str().unwrap_or_default()),
           "call_id": call["id"], "name": call["function"]["name"],
           "arguments": call["function"]["arguments"], "status": "completed"})
}

/// A chat completion as a `response` object.
pub fn chat_to_response(body: &[u8]) -> Result<Value, GatewayError> {
    let c: Value = serde_json::from_slice(body).map_err(|e| GatewayError::UpstreamGarbage {
        provider: "(responses ingress)".into(),
        detail: format!("not a chat completion: {e}"),
    })?;
    let id = response_id(&c["id"]);
    let choice = &c["choices"][0];
    let mut output = Vec::new();
    if let Some(text) = choice["message"]["content"].as_str() {
        output.push(text_item(&id, text));
    }
    for call in choice["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
    {
        output.push(call_item(call));
    }
    Ok(finished(
        &id,
        &c["model"],
        output,
        &c["usage"],
        choice["finish_reason"].as_str(),
    ))
}

fn finished(id: &str, model: &Value, output: Vec<Value>, u: &Value, finish: Option<&str>) -> Value {
    let incomplete = match finish {
        Some("length") => Some("max_output_tokens"),
        Some("content_filter") => Some("content_filter"),
        _ => None,
    };
    json!({"id": id, "object": "response", "created_at": native::now(),
           "status": if incomplete.is_some() { "incomplete" } else { "completed" },
           "incomplete_details": incomplete.map(|r| json!({"reason": r})),
           "model": model, "output": output, "usage": usage(u), "error": null})
}

/// OpenAI chat chunks in, Responses events out.
#[derive(Debug, Default)]
pub struct ChatToResponseEvents {
    sse: super::SseData,
    seq: u64,
    id: String,
    model: Value,
    started: bool,
    done: bool,
    /// The text item so far, if one is open, and its output index.
    text: Option<(usize, String)>,
    /// Function calls: (output index, id, name, arguments).
    calls: Vec<(usize, Value, Value, String)>,
    next_index: usize,
    usage: Value,
    finish: Option<String>,
}

impl ChatToResponseEvents {
    fn emit(&mut self, out: &mut String, kind: &str, mut data: Value) {
        data["type"] = kind.into();
        data["sequence_number"] = self.seq.into();
        self.seq += 1;
        out.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
    }

    fn close(&mut self, out: &mut String) {
        if self.done || !self.started {
            return;
        }
        self.done = true;
        let mut output: Vec<(usize, Value)> = Vec::new();
        if let Some((index, text)) = self.text.take() {
            let item_id = format!("msg_{}", self.id);
            self.emit(out, "response.output_text.done", json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text}));
            self.emit(
                out,
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": text, "annotations": []}}),
            );
            let item = text_item(&self.id, &text);
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": index, "item": item.clone()}),
            );
            output.push((index, item));
        }
        for (index, id, name, args) in std::mem::take(&mut self.calls) {
            let call = json!({"id": id, "function": {"name": name, "arguments": args}});
            let item = call_item(&call);
            self.emit(
                out,
                "response.function_call_arguments.done",
                json!({"item_id": item["id"], "output_index": index, "arguments": args}),
            );
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": index, "item": item.clone()}),
            );
            output.push((index, item));
        }
        output.sort_by_key(|(i, _)| *i);
        let response = finished(
            &self.id,
            &self.model,
            output.into_iter().map(|(_, item)| item).collect(),
            &self.usage,
            self.finish.as_deref(),
        );
        let kind = if response["status"] == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({"response": response}));
    }
}

impl native::FromChatChunks for ChatToResponseEvents {
    fn sse(&mut self) -> &mut super::SseData {
        &mut self.sse
    }

    fn ended(&self) -> bool {
        self.done
    }

    fn end(&mut self, out: &mut String) {
        self.close(out);
    }

    fn chunk(&mut self, chunk: &Value, out: &mut String) {
        if let Some(err) = chunk.get("error") {
            let message = err["message"].as_str().unwrap_or("the stream failed");
            self.emit(
                out,
                "error",
                json!({"code": "upstream_error", "message": message, "param": null}),
            );
            self.done = true;
            return;
        }
        if !self.started {
            self.started = true;
            self.id = response_id(&chunk["id"]);
            self.model = chunk["model"].clone();
            let shell = json!({"id": self.id, "object": "response", "created_at": native::now(),
                               "status": "in_progress", "model": self.model, "output": []});
            self.emit(out, "response.created", json!({"response": shell.clone()}));
            self.emit(out, "response.in_progress", json!({"response": shell}));
        }
        if chunk["usage"].is_object() {
            self.usage = chunk["usage"].clone();
        }
        let choice = &chunk["choices"][0];
        if let Some(delta) = choice["delta"]["content"]
            .as_str()
            .filter(|d| !d.is_empty())
        {
            if self.text.is_none() {
                let index = self.next_index;
                self.next_index += 1;
                self.text = Some((index, String::new()));
                let item = json!({"type": "message", "id": format!("msg_{}", self.id), "status": "in_progress",
                                  "role": "assistant", "content": []});
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
                self.emit(
                    out,
                    "response.content_part.added",
                    json!({"item_id": format!("msg_{}", self.id),
                    "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
                );
            }
            if let Some((index, text)) = self.text.as_mut() {
                text.push_str(delta);
                let index = *index;
                self.emit(
                    out,
                    "response.output_text.delta",
                    json!({"item_id": format!("msg_{}", self.id),
                    "output_index": index, "content_index": 0, "delta": delta}),
                );
            }
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let k = call["index"].as_u64().unwrap_or(0) as usize;
            if k >= self.calls.len() {
                let index = self.next_index;
                self.next_index += 1;
                let (id, name) = (call["id"].clone(), call["function"]["name"].clone());
                self.calls
                    .push((index, id.clone(), name.clone(), String::new()));
                let item = json!({"type": "function_call", "id": format!("fc_{}", id.as_str().unwrap_or_default()),
                                  "call_id": id, "name": name, "arguments": "", "status": "in_progress"});
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
            }
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
                && let Some((index, id, _, so_far)) = self.calls.get_mut(k)
            {
                so_far.push_str(args);
                let (index, item_id) = (*index, format!("fc_{}", id.as_str().unwrap_or_default()));
                self.emit(
                    out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": index, "delta": args}),
                );
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::FromChatChunks;

    #[test]
    fn a_responses_request_becomes_a_chat_request() {
        let got: Value = serde_json::from_slice(
            &responses_to_chat(
                json!({
                    "model": "llama-3", "instructions": "Be brief.",
                    "input": [
                        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                                     {"type": "input_image", "image_url": "data:image/png;base64,AA=="}]},
                        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
                        {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
                        {"type": "function_call_output", "call_id": "c1", "output": "-3 C"},
                        {"type": "function_call_output", "call_id": "c2", "output": "14:00"}
                    ],
                    "max_output_tokens": 99, "temperature": 0.4, "stream": true,
                    "tools": [{"type": "function", "name": "weather", "description": "By city", "parameters": {"type": "object"}}],
                    "tool_choice": {"type": "function", "name": "weather"},
                    "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}}
                })
                .to_string()
                .as_bytes(),
            )
            .expect("converts"),
        )
        .expect("json");
        assert_eq!(
            got,
            json!({
                "model": "llama-3",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                        {"id": "c2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "-3 C"},
                    {"role": "tool", "tool_call_id": "c2", "content": "14:00"}
                ],
                "max_tokens": 99, "temperature": 0.4, "stream": true, "stream_options": {"include_usage": true},
                "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "description": "By city"}}],
                "tool_choice": {"type": "function", "function": {"name": "weather"}},
                "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}}
            })
        );
        for (body, needle) in [
            (
                json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}),
                "built into",
            ),
            (json!({"model": "m"}), "`input`"),
        ] {
            let err = responses_to_chat(body.to_string().as_bytes()).expect_err("refused");
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn a_chat_completion_becomes_a_response() {
        let mut got = chat_to_response(
            json!({"id": "chatcmpl-1", "model": "llama-3",
                   "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Partial",
                       "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
                   "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
            .to_string()
            .as_bytes(),
        )
        .expect("maps");
        got["created_at"] = json!(0);
        assert_eq!(
            got,
            json!({"id": "resp_chatcmpl-1", "object": "response", "created_at": 0, "status": "incomplete",
                   "incomplete_details": {"reason": "max_output_tokens"}, "model": "llama-3", "error": null,
                   "output": [
                       {"type": "message", "id": "msg_resp_chatcmpl-1", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": "Partial", "annotations": []}]},
                       {"type": "function_call", "id": "fc_c1", "call_id": "c1", "name": "f", "arguments": "{}", "status": "completed"}],
                   "usage": {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10,
                             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}})
        );
    }

    #[test]
    fn chat_chunks_become_the_responses_event_sequence() {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c9", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let input = [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hi "}), Value::Null),
            chunk(json!({"content": "there"}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            format!("data: {}\n\n", json!({"id": "c9", "model": "m", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let mut t = ChatToResponseEvents::default();
        let mut out = String::new();
        for piece in input.as_bytes().chunks(6) {
            out.push_str(&t.push(piece));
        }
        out.push_str(&t.finish());
        let events: Vec<Value> = out
            .split("\n\n")
            .filter_map(|e| {
                e.split_once("\ndata: ")
                    .map(|(_, d)| serde_json::from_str(d).expect("json"))
            })
            .collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert!(
            events
                .iter()
                .enumerate()
                .all(|(i, e)| e["sequence_number"] == i as u64)
        );
        let done = &events[events.len() - 1]["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], "Hi there");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["usage"]["total_tokens"], 5);
    }
}
