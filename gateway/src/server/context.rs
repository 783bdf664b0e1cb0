//! The per-request context: a request id (the client's `x-portkey-trace-id` when
//! usable, a new UUID otherwise), returned on every response, and the tracing span
//! every log line of the request carries. Only the method and path are logged —
//! never headers or the query string (both can carry keys).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use tracing::Instrument;

use crate::routing::{PortkeyHeader, header_str};

/// Inserted into each request's extensions.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub id: Arc<str>,
}

fn usable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Middleware: assigns the id, opens the span, stamps the response.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id: Arc<str> = match header_str(req.headers(), PortkeyHeader::TraceId) {
        Ok(Some(given)) if usable(given) => given.into(),
        _ => {
            let mut buf = uuid::Uuid::encode_buffer();
            Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
        }
    };
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        gen_ai.provider.name = tracing::field::Empty,
        gen_ai.request.model = tracing::field::Empty,
        guardrails.before_request = tracing::field::Empty,
        guardrails.after_request = tracing::field::Empty,
    );
    req.extensions_mut().insert(RequestInfo { id: id.clone() });
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-portkey-trace-id", value);
    }
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_us = started.elapsed().as_micros() as u64,
            "response started"
        );
    });
    response
}
