//! Golden tests against the shapes of the Gemini API reference.

use futures_util::FutureExt;
use http::{HeaderMap, Method};

use super::*;
use crate::config::Secret;
use crate::providers::Provider;
use bytes::Bytes;

fn build(endpoint: Endpoint, body: &Value, headers: &HeaderMap) -> UpstreamRequest {
    let key = Secret::new("AIza-test".into());
    let options = Map::new();
    let text = body.to_string();
    let call = Call {
        endpoint,
        method: Method::POST,
        api_key: Some(&key),
        custom_host: None,
        options: &options,
        client_headers: headers,
        forward_headers: &[],
        query: None,
        proxy_path: "",
        body: Bytes::from(text),
        token: None,
    };
    Google::new()
        .expect("spec")
        .build_request(&call)
        .now_or_never()
        .expect("ready")
        .expect("built")
}

#[test]
fn a_chat_request_becomes_generate_content() {
    let req = build(
        Endpoint::Chat,
        &json!({
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "gs://bucket/cat.jpg", "mime_type": "image/jpeg"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"answer\":\"a cat\"}"},
                {"role": "tool", "tool_call_id": "call_1", "content": "plain text"}
            ],
            "temperature": 0.2, "top_p": 0.8, "max_tokens": 100, "stop": ["END"], "seed": 3, "n": 1,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Find", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "logprobs": true
        }),
        &HeaderMap::new(),
    );
    assert_eq!(
        req.url.as_str(),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(req.headers["x-goog-api-key"], "AIza-test");
    assert!(req.headers["x-goog-api-key"].is_sensitive());
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(
        body,
        json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is this?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"fileData": {"fileUri": "gs://bucket/cat.jpg", "mimeType": "image/jpeg"}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": "cat"}, "id": "call_1"}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "lookup", "response": {"answer": "a cat"}, "id": "call_1"}},
                    {"functionResponse": {"name": "lookup", "response": {"content": "plain text"}, "id": "call_1"}}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"temperature": 0.2, "topP": 0.8, "candidateCount": 1, "seed": 3,
                                 "maxOutputTokens": 100, "stopSequences": ["END"],
                                 "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}},
            "tools": [{"functionDeclarations": [{"name": "lookup", "description": "Find", "parametersJsonSchema": {"type": "object"}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}}
        })
    );
}

#[test]
fn streams_embeddings_and_bad_models_build_the_right_request() {
    let req = build(
        Endpoint::Chat,
        &json!({"model": "models/gemini-2.5-pro", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        &HeaderMap::new(),
    );
    assert_eq!(
        req.url.as_str(),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    let req = build(
        Endpoint::Embeddings,
        &json!({"model": "gemini-embedding-001", "input": ["a", "b"], "dimensions": 8}),
        &HeaderMap::new(),
    );
    assert!(
        req.url
            .as_str()
            .ends_with("/models/gemini-embedding-001:batchEmbedContents")
    );
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(
        body,
        json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8}]})
    );
    let p = Google::new().expect("spec");
    for model in ["../secrets", "a/b", "", "x?y"] {
        let key = Secret::new("k".into());
        let options = Map::new();
        let headers = HeaderMap::new();
        let body = json!({"model": model, "messages": []}).to_string();
        let call = Call {
            endpoint: Endpoint::Chat,
            method: Method::POST,
            api_key: Some(&key),
            custom_host: None,
            options: &options,
            client_headers: &headers,
            forward_headers: &[],
            query: None,
            proxy_path: "",
            body: Bytes::from(body),
            token: None,
        };
        let err = p
            .build_request(&call)
            .now_or_never()
            .expect("ready")
            .expect_err(model);
        assert_eq!(
            err.status(),
            http::StatusCode::BAD_REQUEST,
            "{model}: {err}"
        );
    }
}

#[test]
fn an_answer_becomes_a_chat_completion() {
    let answer = json!({
        "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
            {"text": "Thinking about cats", "thought": true},
            {"text": "It is "}, {"text": "a cat."},
            {"functionCall": {"name": "lookup", "args": {"q": "cat"}}}]}}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
                          "totalTokenCount": 18, "cachedContentTokenCount": 4},
        "modelVersion": "gemini-2.5-flash", "responseId": "abc"
    });
    let strict = AnswerOptions::default();
    let mut got = from_gemini(answer.to_string().as_bytes(), &strict).expect("maps");
    got["created"] = json!(0);
    assert_eq!(
        got,
        json!({
            "id": "chatcmpl-abc", "object": "chat.completion", "created": 0, "model": "gemini-2.5-flash",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "It is a cat.",
                "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 3}}
        })
    );
    let loose = AnswerOptions {
        strict: false,
        ..AnswerOptions::default()
    };
    let got = from_gemini(answer.to_string().as_bytes(), &loose).expect("maps");
    assert_eq!(
        got["choices"][0]["message"]["reasoning_content"],
        "Thinking about cats"
    );

    for (reason, want) in [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("STOP", "stop"),
        ("OTHER", "stop"),
    ] {
        assert_eq!(finish_reason(reason, false), want);
    }
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}});
    let got = from_gemini(blocked.to_string().as_bytes(), &strict).expect("maps");
    assert_eq!(got["choices"][0]["finish_reason"], "content_filter");
    assert!(got["choices"][0]["message"]["content"].is_null());
}

#[test]
fn errors_and_embeddings_come_back_in_openai_shape() {
    let p = Google::new().expect("spec");
    let options = AnswerOptions {
        model: Some("gemini-embedding-001".into()),
        ..AnswerOptions::default()
    };
    let err = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#;
    let out = p
        .map_response(
            Endpoint::Chat,
            http::StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            Bytes::from_static(err),
            &options,
        )
        .now_or_never()
        .expect("ready")
        .expect("mapped");
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("API key not valid"))
    );
    let emb = br#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3,0.4]}]}"#;
    let out = p
        .map_response(
            Endpoint::Embeddings,
            http::StatusCode::OK,
            &HeaderMap::new(),
            Bytes::from_static(emb),
            &options,
        )
        .now_or_never()
        .expect("ready")
        .expect("mapped");
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(
        v["data"][1],
        json!({"object": "embedding", "index": 1, "embedding": [0.3, 0.4]})
    );
    assert_eq!(v["model"], "gemini-embedding-001");
}

/// Gemini's SSE: whole responses, the last with the finish reason and usage.
pub const STREAM: &str = concat!(
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hello\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"totalTokenCount\": 4},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n",
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" world\"}],\"role\": \"model\"},\"index\": 0}],\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n",
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"lookup\",\"args\": {\"q\": \"x\"}}}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 6,\"totalTokenCount\": 10},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n",
);

#[test]
fn a_stream_becomes_openai_chunks() {
    let run = |pieces: Vec<&[u8]>, include_usage: bool| -> Vec<Value> {
        let mut t = native::translator(Stream::new(AnswerOptions {
            model: Some("asked".into()),
            include_usage,
            strict: true,
        }))
        .expect("a translator");
        let mut out = Vec::new();
        for p in pieces {
            out.extend(t.push(p).now_or_never().expect("ready").expect("ok"));
        }
        out.extend(t.finish().now_or_never().expect("ready").expect("ok"));
        out.iter()
            .map(|c| {
                let mut v: Value = serde_json::from_str(c).expect("json");
                v["created"] = json!(0);
                v
            })
            .collect()
    };
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 0, "model": "gemini-2.5-flash",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let want = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": " world"}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_0", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 0, "model": "gemini-2.5-flash",
               "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10,
                                         "prompt_tokens_details": {"cached_tokens": 0}}}),
    ];
    assert_eq!(run(vec![STREAM.as_bytes()], true), want);
    assert_eq!(run(STREAM.as_bytes().chunks(11).collect(), true), want);
    assert_eq!(run(vec![STREAM.as_bytes()], false), want[..want.len() - 1]);
}
