//! Relaying the upstream's answer to the client.
//!
//! - Streams (`stream: true` answered 2xx) and non-JSON answers (audio, the
//!   passthrough route) are forwarded chunk by chunk as they arrive: nothing is
//!   buffered or delayed. If an SSE stream breaks, the client gets one final
//!   `data: {"error": ...}` event (what OpenAI's SDKs raise on) instead of a
//!   silent truncation. Dropping the client's body drops the upstream request.
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

use super::proxy::Deadline;
use crate::GatewayError;
use crate::error::openai_error;
use crate::providers::{ChunkTranslator, Endpoint, Provider};
use crate::upstream::{describe, strip_hop_by_hop};

/// Turns the upstream response into the client's.
pub async fn relay(
    mut upstream: reqwest::Response,
    provider: &dyn Provider,
    endpoint: Endpoint,
    stream: bool,
    deadline: &Deadline,
    max_bytes: usize,
) -> Result<Response, GatewayError> {
    let status = upstream.status();
    // Taken, not cloned: the body is all that is read from `upstream` after this.
    let mut headers = std::mem::take(upstream.headers_mut());
    strip_hop_by_hop(&mut headers);
    headers.remove(CONTENT_LENGTH);

    if status.is_success() && stream {
        let translator = provider.stream_translator(endpoint, None).await?;
        if let Some(translator) = translator {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            return response(
                status,
                headers,
                translated_sse(upstream, translator, provider.slug().to_owned()),
            );
        }
    }
    if status.is_success() && (stream || !endpoint.answers_json()) {
        let sse = stream && is_event_stream(&headers);
        let body = if sse {
            sse_body(upstream, provider.slug().to_owned())
        } else {
            Body::from_stream(upstream.bytes_stream())
        };
        return response(status, headers, body);
    }

    let bytes = tokio::time::timeout_at(
        deadline.at,
        read_limited(upstream, max_bytes, provider.slug()),
    )
    .await
    .map_err(|_| deadline.error())??;
    if !status.is_success() && provider.maps_errors() {
        // The adapter knows its upstream's error shape; it answers with the error.
        let mapped = provider.map_response(endpoint, status, bytes).await?;
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
            provider.map_response(endpoint, status, bytes).await?
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

/// Reads a whole answer, refusing one larger than `limit` (a client-chosen host
/// must not be able to make the gateway buffer without bound).
async fn read_limited(
    upstream: reqwest::Response,
    limit: usize,
    provider: &str,
) -> Result<Bytes, GatewayError> {
    let too_large = || GatewayError::UpstreamGarbage {
        provider: provider.to_owned(),
        detail: format!("the answer is larger than upstream.max_response_bytes ({limit} bytes)"),
    };
    if upstream.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut chunks = upstream.bytes_stream();
    let mut first: Option<Bytes> = None;
    let mut rest = bytes::BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| GatewayError::UpstreamGarbage {
            provider: provider.to_owned(),
            detail: format!("the body was cut off: {}", describe(&e)),
        })?;
        let held = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if held + chunk.len() > limit {
            return Err(too_large());
        }
        // The usual single-chunk answer is kept without a copy.
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            None => rest.extend_from_slice(&chunk),
            Some(f) => {
                rest.extend_from_slice(&f);
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
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

fn error_event(provider: &str, detail: &str, code: &str) -> Bytes {
    let event = openai_error(
        &format!("the stream from `{provider}` broke: {detail}"),
        "api_error",
        None,
        code,
    );
    Bytes::from(format!("data: {event}\n\n"))
}

/// An SSE body made by a provider's translator from the upstream's own stream
/// format: each chunk becomes `data: {chunk}`, then `data: [DONE]`. A broken
/// upstream stream or a failing translator ends it with an error event.
fn translated_sse(
    upstream: reqwest::Response,
    translator: Box<dyn ChunkTranslator>,
    provider: String,
) -> Body {
    type State = (
        futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        Box<dyn ChunkTranslator>,
    );
    let events = futures_util::stream::unfold(
        Some((upstream.bytes_stream().boxed(), translator)),
        move |state: Option<State>| {
            let provider = provider.clone();
            async move {
                let (mut inner, mut translator) = state?;
                let frame = |chunks: Vec<String>| {
                    let mut out = String::new();
                    for c in chunks {
                        out.push_str("data: ");
                        out.push_str(&c);
                        out.push_str("\n\n");
                    }
                    Bytes::from(out)
                };
                match inner.next().await {
                    Some(Ok(bytes)) => match translator.push(&bytes).await {
                        Ok(chunks) => Some((
                            Ok::<Bytes, std::convert::Infallible>(frame(chunks)),
                            Some((inner, translator)),
                        )),
                        Err(e) => {
                            tracing::warn!(provider = %provider, error = %e, "stream translation failed");
                            Some((
                                Ok(error_event(
                                    &provider,
                                    &e.to_string(),
                                    "stream_translation_error",
                                )),
                                None,
                            ))
                        }
                    },
                    Some(Err(e)) => {
                        let detail = describe(&e);
                        tracing::warn!(provider = %provider, error = %detail, "upstream stream broke");
                        Some((
                            Ok(error_event(&provider, &detail, "upstream_stream_error")),
                            None,
                        ))
                    }
                    None => match translator.finish().await {
                        Ok(chunks) => {
                            let mut out = frame(chunks).to_vec();
                            out.extend_from_slice(b"data: [DONE]\n\n");
                            Some((Ok(Bytes::from(out)), None))
                        }
                        Err(e) => Some((
                            Ok(error_event(
                                &provider,
                                &e.to_string(),
                                "stream_translation_error",
                            )),
                            None,
                        )),
                    },
                }
            }
        },
    );
    Body::from_stream(events)
}

/// An SSE body that ends with an error event if the upstream stream breaks.
fn sse_body(upstream: reqwest::Response, provider: String) -> Body {
    let events = futures_util::stream::unfold(Some(upstream.bytes_stream()), move |state| {
        let provider = provider.clone();
        async move {
            let mut inner = state?;
            match inner.next().await {
                Some(Ok(chunk)) => {
                    Some((Ok::<Bytes, std::convert::Infallible>(chunk), Some(inner)))
                }
                Some(Err(e)) => {
                    let detail = describe(&e);
                    tracing::warn!(provider = %provider, error = %detail, "upstream stream broke");
                    // The blank lines end an event the upstream left half-sent.
                    let mut out = b"\n\n".to_vec();
                    out.extend_from_slice(&error_event(
                        &provider,
                        &detail,
                        "upstream_stream_error",
                    ));
                    Some((Ok(Bytes::from(out)), None))
                }
                None => None,
            }
        }
    });
    Body::from_stream(events)
}
