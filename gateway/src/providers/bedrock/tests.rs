//! Golden tests against the shapes of the Converse API reference.

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, Method};

use super::eventstream::tests::encode;
use super::*;
use crate::providers::Provider;

fn build(
    endpoint: Endpoint,
    body: &Value,
    options: &Map<String, Value>,
    headers: &HeaderMap,
) -> UpstreamRequest {
    let call = Call {
        endpoint,
        method: Method::POST,
        api_key: None,
        custom_host: None,
        options,
        client_headers: headers,
        forward_headers: &[],
        query: None,
        proxy_path: "",
        body: Bytes::from(body.to_string()),
        token: None,
    };
    Bedrock::new()
        .expect("spec")
        .build_request(&call)
        .now_or_never()
        .expect("ready")
        .expect("built")
}

#[test]
fn a_chat_request_becomes_a_signed_converse_request() {
    let mut options = Map::new();
    for (k, v) in [
        ("aws_access_key_id", "AKIDEXAMPLE"),
        ("aws_secret_access_key", "secret"),
        ("aws_region", "eu-west-1"),
    ] {
        options.insert(k.into(), v.into());
    }
    let req = build(
        Endpoint::Chat,
        &json!({
            "model": "anthropic.claude-3-haiku-20240307-v1:0",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
                    {"type": "file", "file": {"filename": "a/b.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}]},
                {"role": "assistant", "content": "Looking.", "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "found"}
            ],
            "max_tokens": 300, "temperature": 0.1, "top_p": 0.7, "top_k": 20, "stop": ["END"],
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Find", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "seed": 1
        }),
        &options,
        &HeaderMap::new(),
    );
    assert_eq!(
        req.url.as_str(),
        "https://bedrock-runtime.eu-west-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    let auth = req.headers["authorization"].to_str().expect("text");
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{auth}"
    );
    assert!(auth.contains("/eu-west-1/bedrock/aws4_request"), "{auth}");
    assert!(req.headers.contains_key("x-amz-date"));
    assert!(!req.headers.contains_key("x-amz-security-token"));
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(
        body,
        json!({
            "messages": [
                {"role": "user", "content": [
                    {"text": "What is this?"},
                    {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}},
                    {"document": {"format": "pdf", "name": "a-b-pdf", "source": {"bytes": "JVBERi0x"}}}]},
                {"role": "assistant", "content": [
                    {"text": "Looking."},
                    {"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {"q": 1}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "found"}]}}]}
            ],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {"maxTokens": 300, "temperature": 0.1, "topP": 0.7, "stopSequences": ["END"]},
            "additionalModelRequestFields": {"top_k": 20},
            "toolConfig": {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}, "description": "Find"}}],
                           "toolChoice": {"any": {}}}
        })
    );
}

#[test]
fn headers_give_credentials_and_an_api_key_is_a_bearer_token() {
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("x-portkey-aws-access-key-id", "AKIDHEADER"),
        ("x-portkey-aws-secret-access-key", "s"),
        ("x-portkey-aws-session-token", "tok"),
        ("x-portkey-aws-region", "us-west-2"),
    ] {
        headers.insert(k, v.parse().expect("value"));
    }
    let req = build(
        Endpoint::Chat,
        &json!({"model": "amazon.nova-lite-v1:0", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        &Map::new(),
        &headers,
    );
    assert!(
        req.url
            .as_str()
            .ends_with("/model/amazon.nova-lite-v1%3A0/converse-stream")
    );
    assert!(req.url.as_str().contains("us-west-2"));
    assert_eq!(req.headers["x-amz-security-token"], "tok");
    assert!(req.headers["x-amz-security-token"].is_sensitive());

    // No AWS credentials: a Bedrock API key goes as the bearer token.
    let key = crate::config::Secret::new("bedrock-api-key".into());
    let options = Map::new();
    let headers = HeaderMap::new();
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
        body: Bytes::from(json!({"model": "m", "messages": []}).to_string()),
        token: None,
    };
    let req = Bedrock::new()
        .expect("spec")
        .build_request(&call)
        .now_or_never()
        .expect("ready")
        .expect("built");
    assert_eq!(req.headers["authorization"], "Bearer bedrock-api-key");
    assert!(req.url.as_str().contains("us-east-1"), "the default region");
}

#[test]
fn answers_embeddings_and_errors_come_back_in_openai_shape() {
    let options = AnswerOptions {
        model: Some("anthropic.claude".into()),
        ..AnswerOptions::default()
    };
    let answer = json!({
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
            {"text": "It is "}, {"text": "sunny."},
            {"toolUse": {"toolUseId": "t9", "name": "weather", "input": {"city": "Oslo"}}}]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15, "cacheReadInputTokens": 4, "cacheWriteInputTokens": 2}
    });
    let mut got = from_converse(answer.to_string().as_bytes(), &options).expect("maps");
    got["created"] = json!(0);
    assert_eq!(
        got,
        json!({"id": "chatcmpl-bedrock", "object": "chat.completion", "created": 0, "model": "anthropic.claude",
               "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                            "message": {"role": "assistant", "content": "It is sunny.",
                                        "tool_calls": [{"id": "t9", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
               "usage": {"prompt_tokens": 16, "completion_tokens": 5, "total_tokens": 21, "prompt_tokens_details": {"cached_tokens": 4}}})
    );
    assert_eq!(finish_reason("guardrail_intervened"), "content_filter");
    assert_eq!(finish_reason("max_tokens"), "length");

    let titan = from_embed(
        br#"{"embedding":[0.1,0.2],"inputTextTokenCount":3}"#,
        &options,
    )
    .expect("titan");
    assert_eq!(titan["data"][0]["embedding"], json!([0.1, 0.2]));
    assert_eq!(titan["usage"]["prompt_tokens"], 3);
    let cohere = from_embed(
        br#"{"embeddings":[[1.0],[2.0]],"texts":["a","b"]}"#,
        &options,
    )
    .expect("cohere");
    assert_eq!(cohere["data"][1]["embedding"], json!([2.0]));
    let req = build(
        Endpoint::Embeddings,
        &json!({"model": "amazon.titan-embed-text-v2:0", "input": "a", "dimensions": 256}),
        &Map::new(),
        &HeaderMap::new(),
    );
    assert!(
        req.url
            .as_str()
            .ends_with("/model/amazon.titan-embed-text-v2%3A0/invoke")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&req.body).expect("json"),
        json!({"inputText": "a", "dimensions": 256})
    );
    let err = to_embed(
        json!({"model": "amazon.titan-embed-text-v2:0", "input": ["a", "b"]})
            .as_object()
            .expect("o"),
    )
    .expect_err("titan takes one");
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);

    let mut headers = HeaderMap::new();
    headers.insert(
        "x-amzn-errortype",
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
            .parse()
            .expect("v"),
    );
    let e = error_body(
        http::StatusCode::TOO_MANY_REQUESTS,
        &headers,
        br#"{"message":"Too many requests, please wait before trying again."}"#,
    );
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert_eq!(e["error"]["code"], "ThrottlingException");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Too many requests"))
    );
}

#[test]
fn converse_stream_frames_become_openai_chunks() {
    let ev = |kind: &str, payload: Value| {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().as_bytes(),
        )
    };
    let bytes = [
        ev("messageStart", json!({"role": "assistant"})),
        ev("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}})),
        ev("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "lo"}})),
        ev("contentBlockStop", json!({"contentBlockIndex": 0})),
        ev("contentBlockStart", json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}})),
        ev("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}})),
        ev("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}})),
        ev("messageStop", json!({"stopReason": "tool_use"})),
        ev("metadata", json!({"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}, "metrics": {"latencyMs": 10}})),
    ]
    .concat();
    let mut t: Box<dyn ChunkTranslator> = Box::new(Stream::new(AnswerOptions {
        model: Some("m".into()),
        include_usage: true,
        strict: true,
    }));
    let mut out = Vec::new();
    for piece in bytes.chunks(9) {
        out.extend(t.push(piece).now_or_never().expect("ready").expect("ok"));
    }
    out.extend(t.finish().now_or_never().expect("ready").expect("ok"));
    let chunks: Vec<Value> = out
        .iter()
        .map(|c| serde_json::from_str(c).expect("json"))
        .collect();
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(deltas[0]["role"], "assistant");
    assert_eq!(deltas[1]["content"], "Hel");
    assert_eq!(deltas[2]["content"], "lo");
    assert_eq!(
        deltas[3]["tool_calls"][0],
        json!({"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}})
    );
    assert_eq!(
        deltas[4]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":"
    );
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[7]["usage"]["total_tokens"], 7);
    assert_eq!(chunks.len(), 8);

    // An exception frame ends the stream with an error.
    let mut t: Box<dyn ChunkTranslator> = Box::new(Stream::new(AnswerOptions::default()));
    let frame = encode(
        &[
            (":message-type", "exception"),
            (":exception-type", "throttlingException"),
        ],
        br#"{"message":"slow down"}"#,
    );
    let err = t
        .push(&frame)
        .now_or_never()
        .expect("ready")
        .expect_err("exception");
    assert!(
        err.to_string().contains("throttlingException: slow down"),
        "{err}"
    );
}

#[test]
fn claude_messages_go_to_invoke_model_as_they_are() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "anthropic-beta",
        http::HeaderValue::from_static(
            "token-efficient-tools-2025-02-19, interleaved-thinking-2025-05-14",
        ),
    );
    let messages = json!({"model": "us.anthropic.claude-sonnet-4-20250514-v1:0", "max_tokens": 50,
        "system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]});
    let req = build(Endpoint::Messages, &messages, &Map::new(), &headers);
    assert_eq!(
        req.url.as_str(),
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/invoke"
    );
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(
        body,
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "system": "Be brief.",
               "messages": [{"role": "user", "content": "Hi"}],
               "anthropic_beta": ["token-efficient-tools-2025-02-19", "interleaved-thinking-2025-05-14"]})
    );
    let mut stream = messages.clone();
    stream["stream"] = json!(true);
    let req = build(Endpoint::Messages, &stream, &Map::new(), &HeaderMap::new());
    assert!(req.url.path().ends_with("/invoke-with-response-stream"));
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert!(body.get("stream").is_none() && body.get("model").is_none());

    // count_tokens wraps the InvokeModel body, base64-encoded.
    let req = build(
        Endpoint::CountTokens,
        &messages,
        &Map::new(),
        &HeaderMap::new(),
    );
    assert!(req.url.path().ends_with("/count-tokens"));
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    use base64::Engine as _;
    let inner = base64::engine::general_purpose::STANDARD
        .decode(body["input"]["invokeModel"]["body"].as_str().expect("body"))
        .expect("base64");
    let inner: Value = serde_json::from_slice(&inner).expect("json");
    assert_eq!(inner["anthropic_version"], "bedrock-2023-05-31");
    assert_eq!(inner["messages"], messages["messages"]);
    let b = Bedrock::new().expect("spec");
    assert_eq!(
        native::Native::answer(
            &b,
            Endpoint::CountTokens,
            br#"{"inputTokens": 17}"#,
            &AnswerOptions::default()
        )
        .expect("mapped"),
        Some(json!({"input_tokens": 17}))
    );

    // Only Claude models take the Messages API as it is.
    assert!(Provider::serves(
        &b,
        Endpoint::Messages,
        Some("anthropic.claude-3-5-haiku-20241022-v1:0")
    ));
    assert!(!Provider::serves(
        &b,
        Endpoint::Messages,
        Some("meta.llama3-70b-instruct-v1:0")
    ));
    assert!(!Provider::serves(&b, Endpoint::Messages, None));

    // Errors come back in Anthropic's shape.
    let mut err_headers = HeaderMap::new();
    err_headers.insert(
        "x-amzn-errortype",
        http::HeaderValue::from_static("ValidationException:http://internal.amazon.com/"),
    );
    let out = native::Native::error(
        &b,
        Endpoint::Messages,
        http::StatusCode::BAD_REQUEST,
        &err_headers,
        br#"{"message": "max_tokens: field required"}"#,
    )
    .expect("mapped");
    assert_eq!(out["type"], "error");
    assert_eq!(out["error"]["type"], "invalid_request_error");
    assert_eq!(out["error"]["message"], "max_tokens: field required");
}

#[test]
fn an_invoke_model_stream_becomes_anthropics_events() {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    let chunk = |event: Value| {
        encode(
            &[
                (":event-type", "chunk"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            json!({"bytes": b64(event), "p": "abcdefghij"})
                .to_string()
                .as_bytes(),
        )
    };
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 3}}),
    ];
    let bytes: Vec<u8> = events.iter().cloned().flat_map(chunk).collect();
    for split in [1, 7, 64, bytes.len()] {
        let mut t = native::Native::stream(
            &Bedrock::new().expect("spec"),
            Endpoint::Messages,
            AnswerOptions::default(),
        )
        .expect("translator");
        let mut out = Vec::new();
        for piece in bytes.chunks(split) {
            out.extend(t.push(piece).now_or_never().expect("ready").expect("ok"));
        }
        let parsed: Vec<Value> = out
            .iter()
            .map(|e| serde_json::from_str(e).expect("json"))
            .collect();
        assert_eq!(parsed, events, "split {split}");
    }
    let mut t = native::Native::stream(
        &Bedrock::new().expect("spec"),
        Endpoint::Messages,
        AnswerOptions::default(),
    )
    .expect("translator");
    let exception = encode(
        &[
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message": "Too many requests"}"#,
    );
    let err = t
        .push(&exception)
        .now_or_never()
        .expect("ready")
        .expect_err("exception");
    assert!(
        err.to_string()
            .contains("throttlingException: Too many requests"),
        "{err}"
    );
}
