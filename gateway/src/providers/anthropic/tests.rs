//! Golden tests: OpenAI requests in, the exact Messages API request out;
//! Messages API answers, events and errors in, OpenAI's shapes out. The
//! Anthropic fixtures follow the shapes in Anthropic's API reference.

use futures_util::FutureExt;
use http::{HeaderMap, Method};

use super::*;
use crate::config::Secret;
use crate::providers::Provider;
use bytes::Bytes;

fn call<'a>(
    endpoint: Endpoint,
    key: &'a Secret,
    headers: &'a HeaderMap,
    options: &'a Map<String, Value>,
    body: &'static str,
) -> Call<'a> {
    Call {
        endpoint,
        method: Method::POST,
        api_key: Some(key),
        custom_host: None,
        options,
        client_headers: headers,
        forward_headers: &[],
        query: None,
        proxy_path: "/messages/count_tokens",
        body: Bytes::from_static(body.as_bytes()),
        token: None,
    }
}

fn convert(request: Value) -> Value {
    let bytes = to_messages(request.to_string().as_bytes()).expect("converts");
    serde_json::from_slice(&bytes).expect("json")
}

#[test]
fn a_chat_request_becomes_a_messages_request() {
    let got = convert(json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_02", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "18 C, sunny"},
            {"role": "tool", "tool_call_id": "toolu_02", "content": [{"type": "text", "text": "14:00"}]},
            {"role": "user", "content": "Thanks"}
        ],
        "max_completion_tokens": 512,
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "stop": "END",
        "stream": true,
        "user": "user-42",
        "seed": 7,
        "frequency_penalty": 0.5,
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false
    }));
    let want = json!({
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "18 C, sunny"}]},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": [{"type": "text", "text": "14:00"}]},
                {"type": "text", "text": "Thanks"}
            ]}
        ],
        "max_tokens": 512,
        "temperature": 0.3,
        "top_p": 0.9,
        "stream": true,
        "stop_sequences": ["END"],
        "top_k": 40,
        "metadata": {"user_id": "user-42"},
        "tools": [{"name": "get_weather", "description": "Weather by city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}
    });
    assert_eq!(got, want);
}

#[test]
fn defaults_and_tool_choices() {
    let got = convert(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(got["max_tokens"], 4096, "required by the API, defaulted");
    assert!(got.get("system").is_none() && got.get("tool_choice").is_none());
    for (choice, want) in [
        (json!("auto"), json!({"type": "auto"})),
        (json!("required"), json!({"type": "any"})),
        (json!("none"), json!({"type": "none"})),
    ] {
        let got = convert(json!({"model": "m", "messages": [], "tool_choice": choice}));
        assert_eq!(got["tool_choice"], want);
    }
    let got = convert(
        json!({"model": "m", "messages": [], "stop": ["a", "b"], "max_tokens": 9,
        "thinking": {"type": "enabled", "budget_tokens": 1024}}),
    );
    assert_eq!(got["stop_sequences"], json!(["a", "b"]));
    assert_eq!(got["max_tokens"], 9);
    assert_eq!(got["thinking"]["budget_tokens"], 1024);
}

#[test]
fn what_cannot_be_expressed_is_a_clear_400() {
    for (body, needle) in [
        (
            json!({"model": "m", "messages": [], "n": 2}),
            "`n` must be 1",
        ),
        (json!({"model": "m"}), "`messages` must be an array"),
        (
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
            "role `robot`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            "tool_call_id",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{oops"}}]}]}),
            "not JSON",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "not supported by `anthropic`",
        ),
    ] {
        let err = to_messages(body.to_string().as_bytes()).expect_err("refused");
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn the_wire_request_has_anthropic_auth_and_headers() {
    let p = Anthropic::new().expect("spec");
    let key = Secret::new("sk-ant-test".into());
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-portkey-anthropic-beta",
        "prompt-caching-2024-07-31".parse().expect("v"),
    );
    headers.insert("authorization", "Bearer sk-ant-test".parse().expect("v"));
    let options = Map::new();
    let c = call(
        Endpoint::Chat,
        &key,
        &headers,
        &options,
        r#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let req = p
        .build_request(&c)
        .now_or_never()
        .expect("ready")
        .expect("built");
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.url.as_str(), "https://api.anthropic.com/v1/messages");
    assert_eq!(req.headers["x-api-key"], "sk-ant-test");
    assert!(req.headers["x-api-key"].is_sensitive());
    assert!(!req.headers.contains_key("authorization"));
    assert_eq!(req.headers["anthropic-version"], "2023-06-01");
    assert_eq!(req.headers["anthropic-beta"], "prompt-caching-2024-07-31");
    assert_eq!(req.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(body["messages"][0]["content"][0]["text"], "hi");

    // A config's anthropic_version wins; Claude clients' own headers pass.
    let mut options = Map::new();
    options.insert("anthropic_version".into(), "2024-01-01".into());
    let mut headers = HeaderMap::new();
    headers.insert("anthropic-beta", "tools-2024".parse().expect("v"));
    let c = call(Endpoint::Proxy, &key, &headers, &options, "{}");
    let req = p
        .build_request(&c)
        .now_or_never()
        .expect("ready")
        .expect("built");
    assert_eq!(
        req.url.as_str(),
        "https://api.anthropic.com/v1/messages/count_tokens"
    );
    assert_eq!(req.headers["anthropic-version"], "2024-01-01");
    assert_eq!(req.headers["anthropic-beta"], "tools-2024");
}

#[test]
fn a_message_becomes_a_chat_completion() {
    let message = json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "abc"},
            {"type": "text", "text": "Checking "},
            {"type": "text", "text": "now."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000}
    });
    let mut got = from_message(message.to_string().as_bytes(), true).expect("maps");
    assert!(got["created"].as_u64().is_some_and(|c| c > 1_700_000_000));
    got["created"] = json!(0);
    assert_eq!(
        got,
        json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "object": "chat.completion", "created": 0,
            "model": "claude-sonnet-4-5-20250929",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking now.",
                "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"}}]
            }}],
            "usage": {"prompt_tokens": 4195, "completion_tokens": 503, "total_tokens": 4698,
                      "prompt_tokens_details": {"cached_tokens": 2000}}
        })
    );
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        assert_eq!(finish_reason(stop), finish);
    }
    assert!(from_message(b"<html>", true).is_err());

    // Not strict: thinking is surfaced, in Portkey's and the common form.
    let loose = from_message(message.to_string().as_bytes(), false).expect("maps");
    let m = &loose["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], "The user wants weather.");
    assert_eq!(
        m["content_blocks"],
        json!([{"type": "thinking", "thinking": "The user wants weather.", "signature": "abc"},
               {"type": "text", "text": "Checking "}, {"type": "text", "text": "now."}])
    );
    assert!(
        got["choices"][0]["message"].get("content_blocks").is_none(),
        "strict by default"
    );
}

#[test]
fn content_blocks_are_sent_back_as_they_are() {
    let got = convert(json!({"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "ignored when blocks are given",
         "content_blocks": [{"type": "thinking", "thinking": "need a tool", "signature": "sig"}],
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    ]}));
    assert_eq!(
        got["messages"][1]["content"],
        json!([{"type": "thinking", "thinking": "need a tool", "signature": "sig"},
               {"type": "tool_use", "id": "t1", "name": "w", "input": {}}])
    );
}

#[test]
fn errors_keep_their_status_in_openai_shape() {
    let p = Anthropic::new().expect("spec");
    let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
    let out = p
        .map_response(
            Endpoint::Chat,
            http::StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            Bytes::from_static(body),
            &AnswerOptions::default(),
        )
        .now_or_never()
        .expect("ready")
        .expect("mapped");
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("per-minute"))
    );
    let out = p
        .map_response(
            Endpoint::Chat,
            http::StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            Bytes::from_static(b"<html>bad</html>"),
            &AnswerOptions::default(),
        )
        .now_or_never()
        .expect("ready")
        .expect("mapped");
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["error"]["type"], "api_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("HTTP 502"))
    );
}

/// A recorded stream: text, then a tool call whose input arrives in pieces.
pub const STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

fn translate(pieces: &[&[u8]], include_usage: bool) -> Vec<Value> {
    translate_with(
        pieces,
        AnswerOptions {
            model: Some("asked".into()),
            include_usage,
            strict: true,
        },
    )
}

fn translate_with(pieces: &[&[u8]], options: AnswerOptions) -> Vec<Value> {
    let mut t = native::translator(Stream::new(options)).expect("a translator");
    let mut out = Vec::new();
    for p in pieces {
        out.extend(
            t.push(p)
                .now_or_never()
                .expect("ready")
                .expect("translates"),
        );
    }
    out.extend(t.finish().now_or_never().expect("ready").expect("finishes"));
    out.iter()
        .map(|c| {
            let mut v: Value = serde_json::from_str(c).expect("chunk json");
            v["created"] = json!(0);
            v
        })
        .collect()
}

#[test]
fn a_stream_becomes_openai_chunks_wherever_it_is_split() {
    let bytes = STREAM.as_bytes();
    let whole = translate(&[bytes], true);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 0, "model": "claude-sonnet-4-5",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let want = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": " there"}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 0, "model": "claude-sonnet-4-5",
               "choices": [], "usage": {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40,
                                         "prompt_tokens_details": {"cached_tokens": 0}}}),
    ];
    assert_eq!(whole, want);
    // Split every 7 bytes, and with \r\n line ends: the same chunks.
    let pieces: Vec<&[u8]> = bytes.chunks(7).collect();
    assert_eq!(translate(&pieces, true), want);
    let crlf = STREAM.replace('\n', "\r\n");
    assert_eq!(translate(&[crlf.as_bytes()], true), want);
    // Without include_usage, no usage chunk.
    assert_eq!(translate(&[bytes], false), want[..want.len() - 1]);
}

#[test]
fn an_error_event_ends_the_stream_with_an_error() {
    let mut t = native::translator(Stream::new(AnswerOptions::default())).expect("a translator");
    let err = t
        .push(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")
        .now_or_never()
        .expect("ready")
        .expect_err("error event");
    assert!(
        err.to_string().contains("overloaded_error: Overloaded"),
        "{err}"
    );
}

#[test]
fn streamed_thinking_is_surfaced_only_when_not_strict() {
    let stream = concat!(
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"model\":\"claude\",\"usage\":{\"input_tokens\":5}}}\n\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\"}}\n\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"42\"}}\n\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );
    let loose = translate_with(
        &[stream.as_bytes()],
        AnswerOptions {
            strict: false,
            ..AnswerOptions::default()
        },
    );
    let deltas: Vec<&Value> = loose.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(
        deltas[1]["content_blocks"],
        json!([{"index": 0, "delta": {"thinking": "Let me think"}}])
    );
    assert_eq!(deltas[1]["reasoning_content"], "Let me think");
    assert_eq!(
        deltas[2]["content_blocks"],
        json!([{"index": 0, "delta": {"signature": "EqQB"}}])
    );
    assert_eq!(deltas[3]["content"], "42");
    let strict = translate_with(&[stream.as_bytes()], AnswerOptions::default());
    assert!(
        strict
            .iter()
            .all(|c| c["choices"][0]["delta"].get("content_blocks").is_none())
    );
    assert_eq!(strict.len(), loose.len() - 2);
}
