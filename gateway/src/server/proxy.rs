//! The proxy pipeline for one request, stage by stage, in this order:
//!
//! 1. routing — decide the target from headers and config (cheap, no body yet,
//!    so a bad header is answered before a large upload is read);
//! 2. body — read it within `server.max_body_bytes`, check it is what the route
//!    takes, apply `override_params`;
//! 3. guardrails — before-request hooks may rewrite the body or answer;
//! 4. provider — build the upstream request;
//! 5. upstream — send it within the deadline;
//! 6. relay — stream or check the answer and hand it to the client.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::Value;
use tokio::time::Instant;

use super::relay;
use super::{AppState, RequestInfo};
use crate::GatewayError;
use crate::guardrails::{HookContext, Outcome};
use crate::providers::{BodyKind, Endpoint, body};
use crate::routing::{self, Plan};

/// The axum handler for every proxied route.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    endpoint: Endpoint,
    Extension(info): Extension<RequestInfo>,
    req: Request,
) -> Response {
    match run(&state, endpoint, &info, req).await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(status = err.status().as_u16(), code = err.code(), error = %err, "request failed");
            err.into_response()
        }
    }
}

/// A body ready to send, or an answer that ends the request here.
enum Prepared {
    Send { body: Bytes, stream: bool },
    Answer(Response),
}

async fn run(
    state: &AppState,
    endpoint: Endpoint,
    info: &RequestInfo,
    req: Request,
) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let span = tracing::Span::current();

    let plan = routing::plan(&state.config, &state.configs, &parts.headers)?;
    let metadata = routing::headers_metadata(&parts.headers)?;
    let provider = plan.target.provider.clone();
    span.record("gen_ai.provider.name", provider.slug());
    // Before the body is read: a wrong route must not cost a large upload.
    provider.require(endpoint)?;

    let bytes = read_body(body, &parts.headers, state.config.max_body_bytes).await?;
    let ctx = HookContext {
        request_id: &info.id,
        endpoint,
        provider: provider.slug(),
        metadata: &metadata,
    };
    let (body, stream) = match prepare(state, &plan, &ctx, &parts.headers, bytes).await? {
        Prepared::Send { body, stream } => (body, stream),
        Prepared::Answer(response) => return Ok(with_routing_headers(response, &plan)),
    };

    let path = parts.uri.path();
    let call = plan.target.call(
        endpoint,
        parts.method.clone(),
        &parts.headers,
        parts.uri.query(),
        path.strip_prefix("/v1").unwrap_or(path),
        body,
    );
    let upstream_req = provider.build_request(&call)?;

    let deadline = Deadline::new(
        plan.target.request_timeout,
        state.config.upstream.timeout,
        provider.slug(),
    );
    let response = tokio::time::timeout_at(
        deadline.at,
        state.upstream.send(
            provider.slug(),
            upstream_req,
            plan.target.custom_host.is_some(),
        ),
    )
    .await
    .map_err(|_| deadline.error())??;

    let response = relay::relay(
        response,
        provider.as_ref(),
        endpoint,
        stream,
        &deadline,
        state.config.upstream.max_response_bytes,
    )
    .await?;
    Ok(with_routing_headers(response, &plan))
}

/// The time by which the upstream must have answered: the caller's
/// `request_timeout` (408 when passed) or the server's own limit (504).
pub struct Deadline {
    pub at: Instant,
    client_ms: Option<u64>,
    server_ms: u64,
    provider: String,
}

impl Deadline {
    fn new(client: Option<Duration>, server: Duration, provider: &str) -> Self {
        let (limit, client_ms) = match client {
            Some(c) if c <= server => (c, Some(c.as_millis() as u64)),
            _ => (server, None),
        };
        Self {
            at: Instant::now() + limit,
            client_ms,
            server_ms: server.as_millis() as u64,
            provider: provider.to_owned(),
        }
    }

    /// The error for a passed deadline.
    pub fn error(&self) -> GatewayError {
        match self.client_ms {
            Some(timeout_ms) => GatewayError::RequestTimeout {
                provider: self.provider.clone(),
                timeout_ms,
            },
            None => GatewayError::UpstreamTimeout {
                provider: self.provider.clone(),
                timeout_ms: self.server_ms,
            },
        }
    }
}

async fn read_body(
    body: Body,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if too_large {
            GatewayError::BodyTooLarge { limit }
        } else {
            GatewayError::MalformedBody(format!("the body could not be read: {e}"))
        }
    })
}

async fn prepare(
    state: &AppState,
    plan: &Plan,
    ctx: &HookContext<'_>,
    headers: &http::HeaderMap,
    bytes: Bytes,
) -> Result<Prepared, GatewayError> {
    match ctx.endpoint.body_kind() {
        BodyKind::Json => {}
        BodyKind::Multipart => {
            let is_multipart = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("multipart/form-data"));
            if !is_multipart {
                return Err(GatewayError::MalformedBody(
                    "this route takes multipart/form-data (a file upload)".into(),
                ));
            }
            return Ok(Prepared::Send {
                body: bytes,
                stream: false,
            });
        }
        BodyKind::Empty => {
            return Ok(Prepared::Send {
                body: Bytes::new(),
                stream: false,
            });
        }
        BodyKind::Raw => {
            return Ok(Prepared::Send {
                body: bytes,
                stream: false,
            });
        }
    }

    let overrides = &plan.target.override_params;
    if overrides.is_empty() && state.guardrails.is_empty() {
        // The common case: nothing changes the body, so it is only checked and
        // peeked at (model, stream), then sent byte for byte.
        let peek = body::peek(&bytes)?;
        if let Some(model) = &peek.model {
            tracing::Span::current().record("gen_ai.request.model", model.as_ref());
        }
        return Ok(Prepared::Send {
            stream: peek.stream.unwrap_or(false),
            body: bytes,
        });
    }

    let mut map = body::parse_object(&bytes)?;
    body::apply_overrides(&mut map, overrides);
    if let Outcome::Respond {
        status,
        body: answer,
    } = state.guardrails.before_request(ctx, &mut map).await?
    {
        return Ok(Prepared::Answer(
            (status, axum::Json(answer)).into_response(),
        ));
    }
    if let Some(model) = map.get("model").and_then(Value::as_str) {
        tracing::Span::current().record("gen_ai.request.model", model);
    }
    let stream = map.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // Unknown fields and their order are kept (serde_json's preserve_order).
    let body = Bytes::from(
        serde_json::to_vec(&Value::Object(map))
            .map_err(|e| GatewayError::Internal(e.to_string()))?,
    );
    Ok(Prepared::Send { body, stream })
}

fn with_routing_headers(mut response: Response, plan: &Plan) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(plan.target.provider.slug()) {
        headers.insert("x-portkey-provider", v);
    }
    if let Ok(path) = http::HeaderValue::from_str(&plan.option_path) {
        headers.insert("x-portkey-last-used-option-index", path);
    }
    response
}
