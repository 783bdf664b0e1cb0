//! A mock upstream that speaks OpenAI's wire format on loopback, with faults on
//! demand. Routes are matched by path suffix, so the same mock serves
//! `/v1/chat/completions`, Azure's `/openai/deployments/D/chat/completions`, and
//! any base path a test gives as a custom host.
//!
//! Faults are chosen by the request's `model` (or `?fault=` on GET routes), so
//! they travel through the gateway untouched and concurrent tests do not collide:
//!
//! | model                 | answer                                               |
//! |-----------------------|------------------------------------------------------|
//! | `fault:status=CODE`   | that status with an OpenAI error body                |
//! | `fault:html=CODE`     | that status with an HTML body                        |
//! | `fault:delay=MS`      | the normal answer after MS milliseconds              |
//! | `fault:garbage`       | 200 with a body that is not JSON                     |
//! | `fault:big=N`         | 200 with a JSON body padded by N bytes               |
//! | `fault:bigchunked=N`  | the same, chunked, without a content-length          |
//! | `fault:cut`           | a stream (or body) cut off mid-way                   |
//! | `fault:slow`          | a stream of 5 chunks, 200 ms apart                   |
//! | `fault:endless`       | a stream that never ends (one chunk per 100 ms)      |
//! | `fault:stall`         | a stream that sends one chunk, then nothing, forever |
//! | `fault:cutfirst`      | a stream that breaks before its first byte           |
//! | `fault:flaky=N:CODE…` | CODE (a 429 with `retry-after-ms: 20`) for the first |
//! |                       | N requests with this exact model, then the answer    |
//!
//! [`MockUpstream::set_down`] makes every request answer 503 (an outage).
//!
//! Ollama's native API (`/api/chat` with NDJSON streaming, `/api/embed`) is
//! served too, with its own error shape (`{"error": "..."}`), and Anthropic's
//! Messages API (`/messages`: a message, an SSE event stream, or its error
//! shape for `fault:status=CODE`), and Gemini's (`models/M:generateContent`,
//! `:streamGenerateContent?alt=sse`, `:batchEmbedContents`; the model
//! `fault-status-CODE` answers Google's error shape), and Cohere's v2 (`/chat`
//! with typed stream events, `/embed`; `fault:status=CODE` answers
//! `{"message"}`), and Bedrock's runtime (`/model/ID/converse`,
//! `/converse-stream` in event-stream frames, `/invoke` for embeddings; the model
//! `fault-status-CODE` answers `{"message"}`; Claude's InvokeModel and its
//! stream, and CountTokens), and Vertex AI's (`/projects/…`: a bearer token
//! from `/token` is required, which verifies a service account's JWT; Claude's
//! `rawPredict` and `streamRawPredict`, Gemini as above, `:predict` embeddings).
//!
//! A chat request that offers tools is answered, in every wire format, with a
//! call of the first tool with arguments `{"q": "x"}`.
//!
//! Every request is recorded (method, path, query, headers, body) for assertions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// The body as JSON (panics in tests when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    streams_dropped_early: AtomicUsize,
    /// Requests seen per `fault:flaky` model.
    flaky: Mutex<std::collections::HashMap<String, usize>>,
    /// An outage: everything answers 503.
    down: std::sync::atomic::AtomicBool,
    /// When set, nothing is recorded (load tests).
    quiet: bool,
}

/// A running mock upstream.
#[derive(Clone)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl MockUpstream {
    /// Starts a mock on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(false).await
    }

    /// Starts a mock that records nothing (for load tests).
    pub async fn start_quiet() -> std::io::Result<Self> {
        Self::start_with(true).await
    }

    async fn start_with(quiet: bool) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            quiet,
            ..Shared::default()
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared })
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The last request received.
    pub fn last(&self) -> Option<Received> {
        self.received().pop()
    }

    /// Starts or ends an outage (every request answers 503).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// How many requests asked for `model`.
    pub fn count_model(&self, model: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.json()["model"] == model)
            .count()
    }

    /// How many streams were dropped by the other side before they ended.
    pub fn streams_dropped_early(&self) -> usize {
        self.shared.streams_dropped_early.load(Ordering::SeqCst)
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let received = Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    if !shared.quiet
        && let Ok(mut r) = shared.received.lock()
    {
        r.push(received.clone());
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = json["model"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            received
                .query
                .as_deref()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("fault=")))
                .map(|f| format!("fault:{f}"))
        })
        .unwrap_or_default();
    let fault = fault.strip_prefix("fault:").unwrap_or("");

    if shared.down.load(Ordering::SeqCst) {
        let body = json!({"error": {"message": "mock outage", "type": "server_error", "param": null, "code": "mock_down"}});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    if let Some(spec) = fault.strip_prefix("flaky=") {
        let mut parts = spec.split(':');
        let n: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let code: u16 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(503);
        let seen = shared
            .flaky
            .lock()
            .map(|mut m| {
                let c = m
                    .entry(json["model"].as_str().unwrap_or_default().to_owned())
                    .or_default();
                *c += 1;
                *c
            })
            .unwrap_or(usize::MAX);
        if seen <= n {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let body = json!({"error": {"message": format!("mock flaky {code} ({seen} of {n})"), "type": "server_error", "param": null, "code": "mock"}});
            let mut response = (status, axum::Json(body)).into_response();
            if code == 429 {
                response
                    .headers_mut()
                    .insert("retry-after-ms", http::HeaderValue::from_static("20"));
            }
            return response;
        }
    }

    if received.path == "/token" {
        return token_endpoint(&received);
    }
    if received.path == "/jwks.json" {
        return axum::Json(jwks()).into_response();
    }
    if received.path == "/hooks/verdict" {
        // `?delay=MS` answers late, as a slow webhook does.
        if let Some(ms) = received
            .query
            .as_deref()
            .and_then(|q| q.strip_prefix("delay="))
            .and_then(|ms| ms.parse().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        return webhook(&json);
    }
    if received.path == "/hooks/log" {
        return axum::Json(json!({"ok": true})).into_response();
    }
    if received.path.contains("/projects/") {
        if let Some(denied) = vertex_auth(&received.headers) {
            return denied;
        }
        if let Some((_, call)) = received.path.rsplit_once("/publishers/anthropic/models/") {
            return vertex_claude(call, &json, fault);
        }
        if let Some((_, call)) = received.path.rsplit_once("/publishers/google/models/")
            && let Some(model) = call.strip_suffix(":predict")
        {
            return vertex_predict(model, &json);
        }
    }
    if received.path.ends_with("/api/chat") || received.path.ends_with("/api/embed") {
        return ollama(&received.path, &json, fault);
    }
    if received.path.ends_with("/messages") {
        return anthropic(&json, fault);
    }
    if let Some(rest) = received.path.strip_prefix("/model/")
        && let Some((model, action)) = rest.rsplit_once('/')
    {
        return bedrock(model, action, &json);
    }
    if received.path.ends_with("/v2/chat") || received.path.ends_with("/v2/embed") {
        return cohere(&received.path, &json, fault);
    }
    if let Some((_, call)) = received.path.rsplit_once("/models/")
        && let Some((model, method)) = call.split_once(':')
    {
        return gemini(model, method, &json);
    }

    if let Some(code) = fault
        .strip_prefix("status=")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error": {"message": format!("mock error {code}"), "type": "server_error", "param": null, "code": "mock"}});
        return (status, axum::Json(body)).into_response();
    }
    if let Some(code) = fault
        .strip_prefix("html=")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
        return (
            status,
            [(http::header::CONTENT_TYPE, "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response();
    }
    if let Some(ms) = fault
        .strip_prefix("delay=")
        .and_then(|c| c.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = fault
        .strip_prefix("big=")
        .and_then(|c| c.parse::<usize>().ok())
    {
        return axum::Json(json!({"object": "chat.completion", "pad": "x".repeat(n)}))
            .into_response();
    }
    if let Some(n) = fault
        .strip_prefix("bigchunked=")
        .and_then(|c| c.parse::<usize>().ok())
    {
        let text = json!({"object": "chat.completion", "pad": "x".repeat(n)})
            .to_string()
            .into_bytes();
        let chunks: Vec<Result<Bytes, std::io::Error>> = text
            .chunks(16 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        return Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    if fault == "garbage" {
        return (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            "{\"id\": \"chatcmpl-1\", \"cho",
        )
            .into_response();
    }

    let path = received.path.as_str();
    let model = json["model"].as_str().unwrap_or("mock-model").to_owned();
    if path.ends_with("/chat/completions") {
        if json["stream"] == true {
            let usage = json["stream_options"]["include_usage"] == true;
            return stream(shared, &model, fault, usage);
        }
        if let Some(name) = json["tools"][0]["function"]["name"].as_str() {
            return axum::Json(json!({
                "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": null,
                    "tool_calls": [{"id": "call_mock", "type": "function",
                                    "function": {"name": name, "arguments": "{\"q\":\"x\"}"}}]}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
            }))
            .into_response();
        }
        return axum::Json(chat_completion(&model)).into_response();
    }
    if path.ends_with("/completions") {
        return axum::Json(json!({
            "id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"text": "mock text", "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        }))
        .into_response();
    }
    if path.ends_with("/embeddings") {
        let inputs = match &json["input"] {
            Value::Array(items) => items.len(),
            _ => 1,
        };
        let data: Vec<Value> = (0..inputs)
            .map(|i| {
                let embedding = match (&json["input"], model.as_str()) {
                    (Value::String(text), "bag-of-words") => json!(words_embedding(text)),
                    _ => json!([0.1, -0.2, 0.3]),
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        return axum::Json(json!({"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": 2, "total_tokens": 2}}))
        .into_response();
    }
    if path.ends_with("/images/generations") {
        return axum::Json(
            json!({"created": 1, "data": [{"url": "https://example.invalid/img.png"}]}),
        )
        .into_response();
    }
    if path.ends_with("/audio/speech") {
        if fault == "cut" {
            return cut_body();
        }
        return (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "audio/mpeg")],
            speech_bytes(),
        )
            .into_response();
    }
    if path.ends_with("/audio/transcriptions") || path.ends_with("/audio/translations") {
        return axum::Json(json!({"text": format!("received {} bytes", body.len())}))
            .into_response();
    }
    if path.ends_with("/moderations") {
        return axum::Json(json!({"id": "modr-mock", "model": "omni-moderation-latest",
            "results": [{"flagged": false, "categories": {}, "category_scores": {}}]}))
        .into_response();
    }
    if path.ends_with("/models") && parts.method == http::Method::GET {
        return axum::Json(json!({"object": "list", "data": [
            {"id": "mock-model", "object": "model", "created": 1, "owned_by": "mock"},
            {"id": "mock-embed", "object": "model", "created": 1, "owned_by": "mock"}
        ]}))
        .into_response();
    }
    // Anything else: say what arrived, so passthrough tests can check it.
    let mut response = axum::Json(json!({
        "method": received.method, "path": received.path, "query": received.query,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response();
    response
        .headers_mut()
        .insert("x-mock-echo", http::HeaderValue::from_static("1"));
    response
}

/// A chat completion in OpenAI's shape.
/// The mock's embedding model `bag-of-words`: each lower-cased word of
/// `text` counted in one of 64 dimensions (by an FNV-1a hash). Texts that
/// share most of their words are close, whatever their case and
/// punctuation: a stand-in for a model's sense of meaning that tests can
/// reason about.
pub fn words_embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 64];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let hash = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        v[(hash % 64) as usize] += 1.0;
    }
    v
}

pub fn chat_completion(model: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from mock"},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    })
}

/// The audio the speech route answers with: 64 KiB of a known pattern.
pub fn speech_bytes() -> Vec<u8> {
    (0..65_536u32).map(|i| (i % 251) as u8).collect()
}

/// The SSE chunks of a streamed chat completion, `[DONE]` last.
pub fn stream_events(model: &str, n: usize) -> Vec<String> {
    let mut events = Vec::new();
    for i in 0..n {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": ""})
        } else {
            json!({"content": format!("tok{i} ")})
        };
        let finish = if i + 1 == n {
            json!("stop")
        } else {
            Value::Null
        };
        let chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        events.push(format!("data: {chunk}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    events
}

/// Counts a stream as dropped early unless it reached its end.
struct DropWatch {
    shared: Arc<Shared>,
    finished: bool,
}

impl DropWatch {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.shared
                .streams_dropped_early
                .fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// OpenAI's last chunk when asked for `stream_options.include_usage`.
pub fn usage_chunk(model: &str) -> String {
    let chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
        "model": model, "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
    format!("data: {chunk}\n\n")
}

fn stream(shared: Arc<Shared>, model: &str, fault: &str, usage: bool) -> Response {
    if fault == "cutfirst" || fault == "stall" {
        let stall = fault == "stall";
        let first = stream_events(model, 2).swap_remove(0);
        let body = futures_util::stream::unfold(0u8, move |i| {
            let first = first.clone();
            async move {
                match (i, stall) {
                    (0, false) => Some((
                        Err(std::io::Error::other("mock cut before the first byte")),
                        1,
                    )),
                    (0, true) => Some((Ok(Bytes::from(first)), 1)),
                    _ => {
                        std::future::pending::<()>().await;
                        None
                    }
                }
            }
        });
        return Response::builder()
            .header(http::header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let (count, gap, endless, cut) = match fault {
        "slow" => (5, Duration::from_millis(200), false, false),
        "endless" => (usize::MAX, Duration::from_millis(100), true, false),
        "cut" => (4, Duration::from_millis(20), false, true),
        _ => (4, Duration::ZERO, false, false),
    };
    let events = if endless {
        Vec::new()
    } else {
        let mut events = stream_events(model, count);
        if usage {
            events.insert(events.len() - 1, usage_chunk(model));
        }
        events
    };
    let model = model.to_owned();
    let watch = DropWatch {
        shared,
        finished: false,
    };
    let body = futures_util::stream::unfold((0usize, watch), move |(i, mut watch)| {
        let events = events.clone();
        let model = model.clone();
        async move {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if endless {
                let chunk = stream_events(&model, 2).swap_remove(1);
                return Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (i + 1, watch)));
            }
            if cut && i == 2 {
                watch.finished = true;
                return Some((
                    Err(std::io::Error::other("mock cut")),
                    (events.len(), watch),
                ));
            }
            match events.get(i) {
                Some(e) => Some((Ok(Bytes::from(e.clone())), (i + 1, watch))),
                None => {
                    watch.finish();
                    None
                }
            }
        }
    });
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A body that breaks after its first part (sent, then 50 ms later the break).
fn cut_body() -> Response {
    let parts = futures_util::stream::unfold(0u8, |i| async move {
        match i {
            0 => Some((Ok(Bytes::from(vec![1u8; 1024])), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Err(std::io::Error::other("mock cut")), 2))
            }
            _ => None,
        }
    });
    Response::builder()
        .header(http::header::CONTENT_TYPE, "audio/mpeg")
        .body(Body::from_stream(parts))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Ollama's native API, as documented (docs/api.md): whole answers, NDJSON
/// streams (sent in pieces that split lines), and `{"error": "..."}` errors.
fn ollama(path: &str, json: &Value, fault: &str) -> Response {
    if let Some(code) = fault
        .strip_prefix("status=")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            axum::Json(json!({"error": format!("mock ollama error {code}")})),
        )
            .into_response();
    }
    let model = json["model"].as_str().unwrap_or("llama3").to_owned();
    if path.ends_with("/api/embed") {
        let n = json["input"].as_array().map_or(1, Vec::len);
        let embeddings: Vec<Value> = (0..n).map(|_| json!([0.5, -0.5])).collect();
        return axum::Json(
            json!({"model": model, "embeddings": embeddings, "prompt_eval_count": 4}),
        )
        .into_response();
    }
    let created = "2024-05-01T12:34:56.123456Z";
    if json["stream"] == false {
        return axum::Json(json!({
            "model": model, "created_at": created,
            "message": {"role": "assistant", "content": "Hello from Ollama"},
            "done": true, "done_reason": "stop", "prompt_eval_count": 7, "eval_count": 3
        }))
        .into_response();
    }
    let mut text = String::new();
    for word in ["Hello", " from", " Ollama"] {
        text.push_str(&json!({"model": model, "created_at": created, "message": {"role": "assistant", "content": word}, "done": false}).to_string());
        text.push('\n');
    }
    text.push_str(&json!({"model": model, "created_at": created, "message": {"role": "assistant", "content": ""},
        "done": true, "done_reason": "stop", "prompt_eval_count": 7, "eval_count": 3}).to_string());
    text.push('\n');
    // Pieces of 37 bytes: lines arrive split, as they may on a real network.
    let pieces: Vec<Result<Bytes, std::io::Error>> = text
        .as_bytes()
        .chunks(37)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(futures_util::stream::iter(pieces)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Anthropic's Messages API, as its reference documents it.
fn anthropic(json: &Value, fault: &str) -> Response {
    if let Some(code) = fault
        .strip_prefix("status=")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = if code == 429 {
            "rate_limit_error"
        } else {
            "api_error"
        };
        return (
            status,
            axum::Json(json!({"type": "error", "error": {"type": kind, "message": format!("mock anthropic error {code}")}})),
        )
            .into_response();
    }
    let model = json["model"].as_str().unwrap_or("claude-mock").to_owned();
    if json["stream"] == true {
        return Response::builder()
            .header(http::header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from(anthropic_stream(&model)))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    if let Some(name) = json["tools"][0]["name"].as_str() {
        return axum::Json(json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "tool_use", "id": "toolu_mock", "name": name, "input": {"q": "x"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 5}
        }))
        .into_response();
    }
    axum::Json(json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Hello from Claude mock"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 5}
    }))
    .into_response()
}

/// A Messages API event stream: "Hello", " Claude", then the end.
pub fn anthropic_stream(model: &str) -> String {
    anthropic_events(model)
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

/// The events of [`anthropic_stream`], by name.
pub fn anthropic_events(model: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " Claude"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 2}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]
}

/// A throwaway RSA key (the gateway's Vertex test key) in a service account.
pub const VERTEX_TEST_KEY: &str = include_str!("../../gateway/src/providers/vertex/test-key.pem");

/// A service account key file whose token endpoint is this mock's `/token`.
pub fn vertex_service_account(mock: &MockUpstream) -> Value {
    json!({
        "type": "service_account", "project_id": "mock-project", "private_key_id": "kid-mock",
        "private_key": VERTEX_TEST_KEY, "client_email": "gw@mock-project.iam.gserviceaccount.com",
        "token_uri": mock.url("/token"),
    })
}

/// The test key as a key pair.
pub fn test_key_pair() -> ring::signature::RsaKeyPair {
    let der: String = VERTEX_TEST_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .expect("the test key is base64");
    ring::signature::RsaKeyPair::from_pkcs8(&der).expect("the test key loads")
}

/// The test key's public half as a JWK Set (kid `mock-key`), served at
/// `/jwks.json`.
pub fn jwks() -> Value {
    let key = test_key_pair();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(key.public());
    let trim = |b: &[u8]| b[b.iter().take_while(|x| **x == 0).count()..].to_vec();
    json!({"keys": [{
        "kty": "RSA", "kid": "mock-key", "use": "sig", "alg": "RS256",
        "n": b64.encode(trim(&public.n)),
        "e": b64.encode(trim(&public.e)),
    }]})
}

/// An RS256 JWT over `claims`, signed with the test key (kid `mock-key`).
pub fn sign_jwt(claims: &Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "mock-key"});
    let signed = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let key = test_key_pair();
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut sig,
    )
    .expect("signing");
    format!("{signed}.{}", b64.encode(sig))
}

/// A guardrail webhook as Portkey's `default.webhook` calls one: the verdict
/// is false when the text mentions `secret`, with a reason; true otherwise,
/// echoing the event type in `data`.
fn webhook(event: &Value) -> Response {
    let text = [&event["request"]["text"], &event["response"]["text"]]
        .iter()
        .filter_map(|t| t.as_str())
        .collect::<String>();
    let answer = if text.contains("secret") {
        json!({"verdict": false, "reason": "the text mentions a secret"})
    } else {
        json!({"verdict": true, "data": {"event": event["eventType"]}})
    };
    axum::Json(answer).into_response()
}

/// Google's OAuth token endpoint for a service account's JWT (RFC 7523): the
/// assertion's RS256 signature is checked against the test key's public half,
/// and its claims against Google's rules. Tokens are `ya29.mock-N`.
fn token_endpoint(received: &Received) -> Response {
    let deny = |error: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&received.body)
            .into_owned()
            .collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return deny("unsupported_grant_type", "Invalid grant_type");
    }
    let Some(jwt) = form.get("assertion") else {
        return deny("invalid_request", "no assertion");
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (Some(header), Some(claims), Some(signature)) = (
        parts.first().and_then(|p| b64.decode(p).ok()),
        parts.get(1).and_then(|p| b64.decode(p).ok()),
        parts.get(2).and_then(|p| b64.decode(p).ok()),
    ) else {
        return deny("invalid_grant", "Invalid JWT: malformed");
    };
    let key = test_key_pair();
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        key.public().as_ref().to_vec(),
    );
    let signed = format!("{}.{}", parts[0], parts[1]);
    if public.verify(signed.as_bytes(), &signature).is_err() {
        return deny("invalid_grant", "Invalid JWT Signature.");
    }
    let header: Value = serde_json::from_slice(&header).unwrap_or(Value::Null);
    let claims: Value = serde_json::from_slice(&claims).unwrap_or(Value::Null);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let iat = claims["iat"].as_u64().unwrap_or(0);
    let exp = claims["exp"].as_u64().unwrap_or(0);
    let valid = header["alg"] == "RS256"
        && claims["aud"]
            .as_str()
            .is_some_and(|a| a.ends_with("/token"))
        && claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        && claims["iss"]
            .as_str()
            .is_some_and(|i| i.ends_with(".iam.gserviceaccount.com"))
        && iat <= now + 60
        && exp > now
        && exp - iat <= 3600;
    if !valid {
        return deny("invalid_grant", "Invalid JWT: claims");
    }
    static ISSUED: AtomicUsize = AtomicUsize::new(0);
    let n = ISSUED.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(json!({"access_token": format!("ya29.mock-{n}"), "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

/// Vertex answers 401 in Google's shape without a token it issued.
fn vertex_auth(headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if token.starts_with("ya29.") {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
                "message": "Request had invalid authentication credentials. Expected OAuth 2 access token."}})),
        )
            .into_response(),
    )
}

/// Claude on Vertex (`rawPredict`, `streamRawPredict`, `count-tokens`): the
/// Messages API without `model`, with Vertex's `anthropic_version`.
fn vertex_claude(call: &str, json: &Value, fault: &str) -> Response {
    // count-tokens names the model in the body; the others in the URL, with
    // Vertex's `anthropic_version` in the body.
    let counting = call.starts_with("count-tokens:");
    let wrong = if counting {
        json.get("model").is_none()
    } else {
        json["anthropic_version"] != "vertex-2023-10-16" || json.get("model").is_some()
    };
    if wrong {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": "rawPredict takes anthropic_version: vertex-2023-10-16 and no model; count-tokens a model"}})),
        )
            .into_response();
    }
    let Some((model, method)) = call.split_once(':') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if model == "count-tokens" {
        return axum::Json(json!({"input_tokens": json["messages"].to_string().len() / 4}))
            .into_response();
    }
    if let Some((_, code)) = model.split_once("fault-status-") {
        return anthropic(json, &format!("status={code}"));
    }
    let mut json = json.clone();
    json["model"] = json!(model);
    if method == "streamRawPredict" {
        json["stream"] = json!(true);
    }
    anthropic(&json, fault)
}

/// Vertex's `:predict` for text embeddings.
fn vertex_predict(model: &str, json: &Value) -> Response {
    let predictions: Vec<Value> = json["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, _)| json!({"embeddings": {"values": [i as f64, 0.75], "statistics": {"token_count": 2, "truncated": false}}}))
        .collect();
    axum::Json(json!({"predictions": predictions, "deployedModelId": model})).into_response()
}

/// Gemini's API, as its reference documents it.
fn gemini(model: &str, method: &str, json: &Value) -> Response {
    if let Some(code) = model
        .strip_prefix("fault-status-")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let name = if code == 429 {
            "RESOURCE_EXHAUSTED"
        } else {
            "INTERNAL"
        };
        return (
            status,
            axum::Json(json!({"error": {"code": code, "message": format!("mock gemini error {code}"), "status": name}})),
        )
            .into_response();
    }
    match method {
        "batchEmbedContents" => {
            let n = json["requests"].as_array().map_or(0, Vec::len);
            let embeddings: Vec<Value> = (0..n).map(|i| json!({"values": [i as f64, 0.5]})).collect();
            axum::Json(json!({"embeddings": embeddings})).into_response()
        }
        "streamGenerateContent" => {
            let piece = |text: &str, last: bool| {
                let mut r = json!({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
                                   "modelVersion": model, "responseId": "mock-r"});
                if last {
                    r["candidates"][0]["finishReason"] = json!("STOP");
                    r["usageMetadata"] = json!({"promptTokenCount": 6, "candidatesTokenCount": 2, "totalTokenCount": 8});
                }
                format!("data: {r}\r\n\r\n")
            };
            let body = [piece("Hello", false), piece(" Gemini", true)].concat();
            Response::builder()
                .header(http::header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from(body))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        _ if json["tools"][0]["functionDeclarations"][0]["name"].is_string() => axum::Json(json!({
            "candidates": [{"content": {"parts": [{"functionCall": {
                "name": json["tools"][0]["functionDeclarations"][0]["name"], "args": {"q": "x"}}}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 4, "totalTokenCount": 10},
            "modelVersion": model, "responseId": "mock-r"
        }))
        .into_response(),
        _ => axum::Json(json!({
            "candidates": [{"content": {"parts": [{"text": "Hello from Gemini mock"}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 4, "totalTokenCount": 10},
            "modelVersion": model, "responseId": "mock-r"
        }))
        .into_response(),
    }
}

/// Cohere's v2 API, as its reference documents it.
fn cohere(path: &str, json: &Value, fault: &str) -> Response {
    if let Some(code) = fault
        .strip_prefix("status=")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            axum::Json(json!({"id": "err", "message": format!("mock cohere error {code}")})),
        )
            .into_response();
    }
    if path.ends_with("/embed") {
        let n = json["texts"].as_array().map_or(0, Vec::len);
        let vectors: Vec<Value> = (0..n).map(|i| json!([i as f64, 0.25])).collect();
        return axum::Json(json!({"id": "emb", "embeddings": {"float": vectors},
            "meta": {"billed_units": {"input_tokens": n}}}))
        .into_response();
    }
    if json["stream"] == true {
        let events = [
            json!({"type": "message-start", "id": "co-1", "delta": {"message": {"role": "assistant"}}}),
            json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
            json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hello"}}}}),
            json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": " Cohere"}}}}),
            json!({"type": "content-end", "index": 0}),
            json!({"type": "message-end", "delta": {"finish_reason": "COMPLETE",
                "usage": {"tokens": {"input_tokens": 7, "output_tokens": 2}}}}),
        ];
        let body: String = events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
            .collect();
        return Response::builder()
            .header(http::header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    if let Some(name) = json["tools"][0]["function"]["name"].as_str() {
        return axum::Json(json!({"id": "co-1", "finish_reason": "TOOL_CALL",
            "message": {"role": "assistant", "tool_plan": "call it",
                        "tool_calls": [{"id": "co_call", "type": "function",
                                        "function": {"name": name, "arguments": "{\"q\":\"x\"}"}}]},
            "usage": {"tokens": {"input_tokens": 7, "output_tokens": 4}}}))
        .into_response();
    }
    axum::Json(json!({"id": "co-1", "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": "Hello from Cohere mock"}]},
        "usage": {"tokens": {"input_tokens": 7, "output_tokens": 4}}}))
    .into_response()
}

/// One event-stream message with string headers (AWS's framing, CRC-32 checked).
pub fn event_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = (16 + h.len() + payload.len()) as u32;
    let mut m = total.to_be_bytes().to_vec();
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude = crc32fast::hash(&m);
    m.extend_from_slice(&prelude.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

/// An event-stream answer, sent in pieces of `piece` bytes that split frames,
/// as a network may.
fn event_stream(bytes: &[u8], piece: usize) -> Response {
    let pieces: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Response::builder()
        .header(
            http::header::CONTENT_TYPE,
            "application/vnd.amazon.eventstream",
        )
        .body(Body::from_stream(futures_util::stream::iter(pieces)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Bedrock's runtime API, as its reference documents it.
fn bedrock(model: &str, action: &str, json: &Value) -> Response {
    if let Some(code) = model
        .split_once("fault-status-")
        .and_then(|(_, c)| c.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            [("x-amzn-errortype", "ThrottlingException")],
            axum::Json(json!({"message": format!("mock bedrock error {code}")})),
        )
            .into_response();
    }
    let claude = json["anthropic_version"] == "bedrock-2023-05-31";
    match action {
        "invoke" if claude => {
            let mut json = json.clone();
            json["model"] = json!(model);
            anthropic(&json, "")
        }
        "invoke-with-response-stream" if claude => {
            let frames: Vec<u8> = anthropic_events(model)
                .iter()
                .flat_map(|(_, event)| {
                    let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
                    event_frame(
                        &[
                            (":event-type", "chunk"),
                            (":content-type", "application/json"),
                            (":message-type", "event"),
                        ],
                        json!({"bytes": bytes, "p": "abcd"}).to_string().as_bytes(),
                    )
                })
                .collect();
            event_stream(&frames, 31)
        }
        "count-tokens" => {
            let inner = json["input"]["invokeModel"]["body"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .unwrap_or(Value::Null);
            axum::Json(json!({"inputTokens": inner.to_string().len() / 4})).into_response()
        }
        "invoke" => {
            axum::Json(json!({"embedding": [0.5, 0.25], "inputTextTokenCount": 2})).into_response()
        }
        "converse-stream" => {
            let ev = |kind: &str, payload: Value| {
                event_frame(
                    &[
                        (":event-type", kind),
                        (":content-type", "application/json"),
                        (":message-type", "event"),
                    ],
                    payload.to_string().as_bytes(),
                )
            };
            let frames = [
                ev("messageStart", json!({"role": "assistant"})),
                ev(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": "Hello"}}),
                ),
                ev(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": " Bedrock"}}),
                ),
                ev("contentBlockStop", json!({"contentBlockIndex": 0})),
                ev("messageStop", json!({"stopReason": "end_turn"})),
                ev(
                    "metadata",
                    json!({"usage": {"inputTokens": 9, "outputTokens": 2, "totalTokens": 11}, "metrics": {"latencyMs": 5}}),
                ),
            ];
            // Sent in pieces that split frames, as a network may.
            event_stream(&frames.concat(), 23)
        }
        _ if json["toolConfig"]["tools"][0]["toolSpec"]["name"].is_string() => axum::Json(json!({
            "output": {"message": {"role": "assistant", "content": [{"toolUse": {
                "toolUseId": "tu_mock", "name": json["toolConfig"]["tools"][0]["toolSpec"]["name"], "input": {"q": "x"}}}]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 9, "outputTokens": 4, "totalTokens": 13}
        }))
        .into_response(),
        _ => {
            let echo = json["system"][0]["text"].as_str().unwrap_or("");
            axum::Json(json!({
                "output": {"message": {"role": "assistant", "content": [{"text": format!("Hello from Bedrock mock{echo}")}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 9, "outputTokens": 4, "totalTokens": 13},
                "metrics": {"latencyMs": 5}
            }))
            .into_response()
        }
    }
}
