//! Relaying the upstream's answer to the client.
//!
//! - Streams (`stream: true` answered 2xx) and non-JSON answers (audio, the
//!   passthrough route) are forwarded chunk by chunk as they arrive: nothing is
//!   buffered or delayed. The first chunk is awaited before the answer is
//!   committed, so a stream that fails before its first byte is an error the
//!   routing engine retries or falls back on. If an SSE stream breaks later, or
//!   goes quiet for longer than the idle timeout, the client gets one final
//!   `data: {"error": ...}` event (what OpenAI's SDKs raise on) instead of a
//!   silent truncation or a hang. Dropping the client's body drops the upstream
//!   request.
//! - Other answers are read whole (within the deadline) so they can be checked:
//!   a 2xx that is not JSON is a 502; an error status with a JSON body is passed
//!   through as it is; an error status with any other body is wrapped in OpenAI's
//!   error shape, keeping the status.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};

use std::time::Duration;

use futures_util::stream::BoxStream;

use crate::GatewayError;
use crate::error::openai_error;
use crate::providers::{ChunkTranslator, Endpoint, Provider};
use crate::routing::{Deadline, InFlight};
use crate::upstream::{describe, strip_hop_by_hop};

/// Set when a relayed stream broke, stalled or failed to translate and was
/// ended with an error event: it looks whole to the client, but is not an
/// answer to keep.
#[derive(Debug, Clone, Default)]
pub struct Broken(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Broken {
    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How a streamed answer is relayed.
pub struct Streaming {
    /// Set if the stream is ended early with an error event.
    pub broken: Broken,
    /// The longest wait for the next chunk.
    pub idle: Duration,
    /// What the request asked of the stream (model, usage chunk).
    pub options: crate::providers::AnswerOptions,
    /// Held until the stream ends.
    #[expect(dead_code, reason = "held for its Drop: the call counts as in flight")]
    pub in_flight: InFlight,
}

/// The upstream's chunks, owned.
type Chunks = BoxStream<'static, reqwest::Result<Bytes>>;

/// Turns the upstream response into the client's.
pub async fn relay(
    mut upstream: reqwest::Response,
    provider: &dyn Provider,
    endpoint: Endpoint,
    stream: bool,
    deadline: &Deadline,
    max_bytes: usize,
    streaming: Streaming,
) -> Result<Response, GatewayError> {
    let status = upstream.status();
    // Taken, not cloned: the body is all that is read from `upstream` after this.
    let mut headers = std::mem::take(upstream.headers_mut());
    strip_hop_by_hop(&mut headers);
    headers.remove(CONTENT_LENGTH);

    if status.is_success() && stream {
        let translator = provider
            .stream_translator(endpoint, streaming.options.clone())
            .await?;
        if let Some(translator) = translator {
            let chunks = first_chunk(upstream, deadline, provider.slug(), false).await?;
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            return response(
                status,
                headers,
                translated_sse(
                    chunks,
                    translator,
                    provider.slug().to_owned(),
                    streaming,
                    Framing::of(endpoint),
                ),
            );
        }
    }
    if status.is_success() && (stream || !endpoint.answers_json()) {
        let sse = stream && is_event_stream(&headers);
        // Only an event stream must have a first event; an empty file is a file.
        let chunks = first_chunk(upstream, deadline, provider.slug(), !sse).await?;
        let body = if sse {
            sse_body(
                chunks,
                provider.slug().to_owned(),
                streaming,
                Framing::of(endpoint),
            )
        } else {
            raw_body(chunks, streaming)
        };
        return response(status, headers, body);
    }

    let bytes = tokio::time::timeout_at(
        deadline.at,
        crate::upstream::read_limited(
            upstream,
            max_bytes,
            provider.slug(),
            "upstream.max_response_bytes",
        ),
    )
    .await
    .map_err(|_| deadline.error())??;
    if !status.is_success() && provider.maps_errors() {
        // The adapter knows its upstream's error shape; it answers with the error.
        let mapped = provider
            .map_response(endpoint, status, &headers, bytes, &streaming.options)
            .await?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response(status, headers, Body::from(mapped));
    }
    let compressed = headers.contains_key(CONTENT_ENCODING);
    let is_json = compressed || serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();

    if status.is_success() {
        if !is_json {
            return Err(GatewayError::UpstreamGarbage {
                provider: provider.slug().to_owned(),
                detail: format!("expected JSON, got {}", snippet(&bytes)),
            });
        }
        let body = if compressed {
            bytes
        } else {
            provider
                .map_response(endpoint, status, &headers, bytes, &streaming.options)
                .await?
        };
        return response(status, headers, Body::from(body));
    }
    if is_json {
        return response(status, headers, Body::from(bytes));
    }
    tracing::warn!(
        status = status.as_u16(),
        "upstream error without a JSON body; wrapped"
    );
    let wrapped = openai_error(
        &format!(
            "upstream `{}` answered HTTP {}: {}",
            provider.slug(),
            status.as_u16(),
            snippet(&bytes)
        ),
        "api_error",
        None,
        "upstream_error",
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response(status, headers, Body::from(wrapped.to_string()))
}

fn response(
    status: StatusCode,
    headers: http::HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

/// Up to 200 characters of a body, for messages.
fn snippet(bytes: &Bytes) -> String {
    if bytes.is_empty() {
        return "an empty body".into();
    }
    let text = String::from_utf8_lossy(bytes);
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        format!("`{cut}...`")
    } else {
        format!("`{cut}`")
    }
}

/// How a client's stream is framed: OpenAI's `data:` events ending with
/// `data: [DONE]`, or Anthropic's named events (`event: {type}`), which end
/// with their own `message_stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    OpenAi,
    Anthropic,
}

impl Framing {
    fn of(endpoint: Endpoint) -> Self {
        if endpoint.anthropic_format() {
            Self::Anthropic
        } else {
            Self::OpenAi
        }
    }

    /// Appends one event (a JSON text) to `out`.
    fn event(self, out: &mut String, json: &str) {
        if self == Self::Anthropic {
            #[derive(serde::Deserialize)]
            struct Named<'a> {
                #[serde(borrow, rename = "type")]
                kind: std::borrow::Cow<'a, str>,
            }
            if let Ok(named) = serde_json::from_str::<Named<'_>>(json) {
                out.push_str("event: ");
                out.push_str(&named.kind);
                out.push('\n');
            }
        }
        out.push_str("data: ");
        out.push_str(json);
        out.push_str("\n\n");
    }
}

fn error_event(provider: &str, detail: &str, code: &str, framing: Framing) -> Bytes {
    let message = format!("the stream from `{provider}` broke: {detail}");
    let event = match framing {
        Framing::OpenAi => openai_error(&message, "api_error", None, code),
        Framing::Anthropic => serde_json::json!({
            "type": "error",
            "error": {"type": "api_error", "message": message},
        }),
    };
    let mut out = String::new();
    framing.event(&mut out, &event.to_string());
    Bytes::from(out)
}

/// Waits (within the deadline) for a stream's first chunk: a stream that fails
/// before it is an error, not a committed answer.
async fn first_chunk(
    upstream: reqwest::Response,
    deadline: &Deadline,
    provider: &str,
    empty_ok: bool,
) -> Result<Chunks, GatewayError> {
    let mut chunks = upstream.bytes_stream().boxed();
    match tokio::time::timeout_at(deadline.at, chunks.next()).await {
        Err(_) => Err(deadline.error()),
        Ok(Some(Ok(first))) => Ok(futures_util::stream::once(async move { Ok(first) })
            .chain(chunks)
            .boxed()),
        Ok(Some(Err(e))) => Err(GatewayError::UpstreamUnreachable {
            provider: provider.to_owned(),
            detail: format!("the stream broke before its first byte: {}", describe(&e)),
        }),
        Ok(None) if empty_ok => Ok(futures_util::stream::empty().boxed()),
        Ok(None) => Err(GatewayError::UpstreamGarbage {
            provider: provider.to_owned(),
            detail: "the stream ended before its first event".into(),
        }),
    }
}

/// What came next from the upstream stream.
enum Next {
    Chunk(Bytes),
    /// Broke: the detail and the error code for the client's event.
    Broke(String, &'static str),
    End,
}

async fn next(chunks: &mut Chunks, idle: Duration) -> Next {
    match tokio::time::timeout(idle, chunks.next()).await {
        Ok(Some(Ok(chunk))) => Next::Chunk(chunk),
        Ok(Some(Err(e))) => Next::Broke(describe(&e), "upstream_stream_error"),
        Ok(None) => Next::End,
        Err(_) => Next::Broke(
            format!(
                "no data for {} ms (the stream idle timeout)",
                idle.as_millis()
            ),
            "stream_idle_timeout",
        ),
    }
}

/// An SSE body made by a provider's translator from the upstream's own stream
/// format: each chunk becomes an event ([`Framing`]), and OpenAI's streams end
/// with `data: [DONE]`. A broken or stalled upstream stream, or a failing
/// translator, ends it with an error event.
fn translated_sse(
    chunks: Chunks,
    translator: Box<dyn ChunkTranslator>,
    provider: String,
    streaming: Streaming,
    framing: Framing,
) -> Body {
    type State = (Chunks, Box<dyn ChunkTranslator>, Streaming);
    let events = futures_util::stream::unfold(
        Some((chunks, translator, streaming)),
        move |state: Option<State>| {
            let provider = provider.clone();
            async move {
                let (mut inner, mut translator, streaming) = state?;
                let frame = |chunks: Vec<String>| {
                    let mut out = String::new();
                    for c in chunks {
                        framing.event(&mut out, &c);
                    }
                    out
                };
                let translation_failed = |e: &dyn std::fmt::Display| {
                    tracing::warn!(provider = %provider, error = %e, "stream translation failed");
                    streaming.broken.set();
                    error_event(
                        &provider,
                        &e.to_string(),
                        "stream_translation_error",
                        framing,
                    )
                };
                match next(&mut inner, streaming.idle).await {
                    Next::Chunk(bytes) => match translator.push(&bytes).await {
                        Ok(chunks) => Some((
                            Ok::<Bytes, std::convert::Infallible>(Bytes::from(frame(chunks))),
                            Some((inner, translator, streaming)),
                        )),
                        Err(e) => Some((Ok(translation_failed(&e)), None)),
                    },
                    Next::Broke(detail, code) => {
                        tracing::warn!(provider = %provider, error = %detail, "upstream stream broke");
                        streaming.broken.set();
                        Some((Ok(error_event(&provider, &detail, code, framing)), None))
                    }
                    Next::End => match translator.finish().await {
                        Ok(chunks) => {
                            let mut out = frame(chunks);
                            if framing == Framing::OpenAi {
                                out.push_str("data: [DONE]\n\n");
                            }
                            Some((Ok(Bytes::from(out)), None))
                        }
                        Err(e) => Some((Ok(translation_failed(&e)), None)),
                    },
                }
            }
        },
    );
    Body::from_stream(events)
}

/// An SSE body that ends with an error event if the upstream stream breaks or
/// stalls.
fn sse_body(chunks: Chunks, provider: String, streaming: Streaming, framing: Framing) -> Body {
    let events = futures_util::stream::unfold(Some((chunks, streaming)), move |state| {
        let provider = provider.clone();
        async move {
            let (mut inner, streaming) = state?;
            match next(&mut inner, streaming.idle).await {
                Next::Chunk(chunk) => Some((
                    Ok::<Bytes, std::convert::Infallible>(chunk),
                    Some((inner, streaming)),
                )),
                Next::Broke(detail, code) => {
                    tracing::warn!(provider = %provider, error = %detail, "upstream stream broke");
                    streaming.broken.set();
                    // The blank lines end an event the upstream left half-sent.
                    let mut out = b"\n\n".to_vec();
                    out.extend_from_slice(&error_event(&provider, &detail, code, framing));
                    Some((Ok(Bytes::from(out)), None))
                }
                Next::End => None,
            }
        }
    });
    Body::from_stream(events)
}

/// Any other streamed body (audio, passthrough): a break or a stall aborts it,
/// which the client sees as a cut connection (there is no error event to send).
fn raw_body(chunks: Chunks, streaming: Streaming) -> Body {
    let parts = futures_util::stream::unfold(Some((chunks, streaming)), |state| async move {
        let (mut inner, streaming) = state?;
        match next(&mut inner, streaming.idle).await {
            Next::Chunk(chunk) => Some((Ok(chunk), Some((inner, streaming)))),
            Next::Broke(detail, _) => Some((Err(std::io::Error::other(detail)), None)),
            Next::End => None,
        }
    });
    Body::from_stream(parts)
}

/// What a streamed answer's output guardrails in window mode need.
pub struct StreamGuard {
    pub owned: crate::guardrails::stream::Owned,
    pub hooks: std::sync::Arc<[crate::config::routing::HookSpec]>,
    pub model: Option<String>,
    pub window_chars: usize,
    pub every_chars: usize,
    pub endpoint: Endpoint,
    /// The before-request hooks' results, for the deny event.
    pub before: Vec<crate::guardrails::HookResult>,
}

/// A stream released as it comes while output guardrails check a sliding
/// window of its text: every `every_chars` of new text, the last
/// `window_chars`, and again when its end marker arrives (before the marker is
/// released). A failed deny hook replaces the chunk that completed the window
/// with an error event carrying `hook_results`, and ends the stream.
pub fn guarded_stream(body: Body, guard: StreamGuard) -> Body {
    use crate::guardrails::stream::{StreamText, check};
    let framing = Framing::of(guard.endpoint);
    let text = StreamText::new(guard.endpoint);
    let state = Some((body.into_data_stream(), text, 0usize, guard));
    let out = futures_util::stream::unfold(state, move |state| async move {
        let (mut chunks, mut text, mut checked, guard) = state?;
        let bytes = match chunks.next().await {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => return Some((Err(std::io::Error::other(e.to_string())), None)),
            None => return None,
        };
        let ended = text.push(&bytes);
        let chars = text.chars();
        if ended || chars.saturating_sub(checked) >= guard.every_chars {
            checked = chars;
            let window = text.texts(Some(guard.window_chars));
            let after = check(
                &guard.owned,
                &guard.hooks,
                guard.model.clone(),
                window,
                ended,
            )
            .await;
            if after.denied {
                let event = denied_event(framing, &guard.before, &after.results);
                return Some((Ok(event), None));
            }
        }
        Some((
            Ok::<Bytes, std::io::Error>(bytes),
            Some((chunks, text, checked, guard)),
        ))
    });
    Body::from_stream(out)
}

/// The event that ends a stream an output guardrail denied.
fn denied_event(
    framing: Framing,
    before: &[crate::guardrails::HookResult],
    after: &[crate::guardrails::HookResult],
) -> Bytes {
    let message = "An output guardrail with deny failed on the streamed answer; the stream was ended. See `hook_results`.";
    let results = serde_json::json!({"before_request_hooks": before, "after_request_hooks": after});
    let event = match framing {
        Framing::OpenAi => serde_json::json!({
            "error": {"message": message, "type": "hooks_failed", "param": null, "code": "output_guardrail_denied"},
            "hook_results": results,
        }),
        Framing::Anthropic => serde_json::json!({
            "type": "error",
            "error": {"type": "hooks_failed", "message": message},
            "hook_results": results,
        }),
    };
    let mut out = String::new();
    framing.event(&mut out, &event.to_string());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_clients_get_named_events_and_anthropics_error_shape() {
        let mut out = String::new();
        Framing::Anthropic.event(&mut out, r#"{"type":"message_stop"}"#);
        Framing::OpenAi.event(&mut out, r#"{"object":"chat.completion.chunk"}"#);
        assert_eq!(
            out,
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n\
             data: {\"object\":\"chat.completion.chunk\"}\n\n"
        );
        let anthropic = error_event(
            "bedrock",
            "reset",
            "upstream_stream_error",
            Framing::Anthropic,
        );
        let text = std::str::from_utf8(&anthropic).expect("utf-8");
        let data: serde_json::Value = serde_json::from_str(
            text.strip_prefix("event: error\ndata: ")
                .and_then(|t| t.strip_suffix("\n\n"))
                .expect("one named event"),
        )
        .expect("json");
        assert_eq!(data["error"]["type"], "api_error");
        assert!(
            data["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("reset"))
        );
        let openai = error_event("openai", "reset", "upstream_stream_error", Framing::OpenAi);
        assert!(openai.starts_with(b"data: {\"error\""));
        assert_eq!(Framing::of(Endpoint::Messages), Framing::Anthropic);
        assert_eq!(Framing::of(Endpoint::Chat), Framing::OpenAi);
    }
}
