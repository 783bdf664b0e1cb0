//! The proxy pipeline for one request, stage by stage, in this order:
//!
//! 1. routing — decide the target from headers and config (cheap, no body yet,
//!    so a bad header is answered before a large upload is read);
//! 2. body — read it within `server.max_body_bytes`, check it is what the route
//!    takes, apply `override_params`;
//! 3. router — a `router` strategy's plugin picks the target, now that the
//!    body (model) is known;
//! 4. guardrails — before-request hooks may rewrite the body or answer (446);
//! 5. provider — build the upstream request;
//! 6. upstream — send it within the deadline, noting the target's health;
//! 7. relay — stream or check the answer and hand it to the client;
//! 8. guardrails — after-response hooks on a complete answer, `hook_results`.

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
use crate::config::routing::Hooks;
use crate::guardrails::{self, StageResult};
use crate::providers::{BodyKind, Endpoint, body};
use crate::routing::{self, Plan};

/// The axum handler for every proxied route.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    endpoint: Endpoint,
    // The span (request id) is already open; the extension stays in the
    // signature for the stages that will log against it.
    Extension(_info): Extension<RequestInfo>,
    req: Request,
) -> Response {
    match run(&state, endpoint, req).await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(status = err.status().as_u16(), code = err.code(), error = %err, "request failed");
            err.into_response()
        }
    }
}

/// A body ready to send, or an answer that ends the request here.
enum Prepared {
    Send {
        body: Bytes,
        stream: bool,
        hook_results: Option<StageResult>,
    },
    Answer(Response),
}

async fn run(state: &AppState, endpoint: Endpoint, req: Request) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let span = tracing::Span::current();

    let mut plan = routing::plan(
        &state.config,
        &state.configs,
        &state.plugins,
        &parts.headers,
    )?;
    let metadata = routing::headers_metadata(&parts.headers)?;
    // Before the body is read: a wrong route must not cost a large upload.
    if plan.router.is_none() {
        plan.target.provider.require(endpoint)?;
    }
    let hooks = plan.hooks.clone();

    let bytes = read_body(body, &parts.headers, state.config.max_body_bytes).await?;
    if plan.router.is_some() {
        // The router sees the model, so it runs once the body is here, and
        // before anything that depends on the target (overrides, hooks).
        let model = body::peek(&bytes)
            .ok()
            .and_then(|p| p.model.map(|m| m.into_owned()));
        plan.resolve(
            &state.plugins,
            &state.health,
            endpoint,
            model,
            &metadata,
            Some(&bytes),
        )
        .await?;
        plan.target.provider.require(endpoint)?;
    }
    let ctx = guardrails::Context {
        endpoint,
        provider: plan.target.provider.slug(),
        metadata: &metadata,
    };
    let (body, stream, before) =
        match prepare(state, &plan, &hooks, &ctx, &parts.headers, bytes).await? {
            Prepared::Send {
                body,
                stream,
                hook_results,
            } => (body, stream, hook_results),
            Prepared::Answer(response) => return Ok(with_routing_headers(response, &plan)),
        };
    let provider = plan.target.provider.clone();
    span.record("gen_ai.provider.name", provider.slug());

    let path = parts.uri.path();
    let call = plan.target.call(
        endpoint,
        parts.method.clone(),
        &parts.headers,
        parts.uri.query(),
        path.strip_prefix("/v1").unwrap_or(path),
        body,
    );
    let upstream_req = provider.build_request(&call).await?;

    let deadline = Deadline::new(
        plan.target.request_timeout,
        state.config.upstream.timeout,
        provider.slug(),
    );
    let health_key = routing::Health::key(&plan.option_path, provider.slug());
    state.health.start(&health_key);
    let started = Instant::now();
    let response = tokio::time::timeout_at(
        deadline.at,
        state.upstream.send(
            provider.slug(),
            upstream_req,
            plan.target.custom_host.is_some(),
        ),
    )
    .await
    .map_err(|_| deadline.error());
    let ok = matches!(&response, Ok(Ok(r)) if !r.status().is_server_error());
    state.health.end(&health_key, ok, started.elapsed());
    let response = response??;

    let response = relay::relay(
        response,
        provider.as_ref(),
        endpoint,
        stream,
        &deadline,
        state.config.upstream.max_response_bytes,
    )
    .await?;
    let response = if hooks.is_empty() {
        response
    } else {
        after_hooks(state, &hooks, &ctx, stream, before, response).await?
    };
    Ok(with_routing_headers(response, &plan))
}

/// A JSON object's text with one more member, without parsing it again (the
/// answer was checked to be JSON by the relay). Not an object: left as it is.
fn with_member(object: &[u8], key: &str, value: &[u8]) -> Vec<u8> {
    let end = object.iter().rposition(|b| !b.is_ascii_whitespace());
    let start = object.iter().position(|b| !b.is_ascii_whitespace());
    let (Some(start), Some(end)) = (start, end) else {
        return object.to_vec();
    };
    if object[start] != b'{' || object[end] != b'}' {
        return object.to_vec();
    }
    let empty = object[start + 1..end].iter().all(u8::is_ascii_whitespace);
    let mut out = Vec::with_capacity(object.len() + 256);
    out.extend_from_slice(&object[..end]);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(Value::String(key.to_owned()).to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(value);
    out.extend_from_slice(&object[end..]);
    out
}

/// Portkey's 446 answer when a deny hook failed.
fn denied(before: &[guardrails::HookResult], after: &[guardrails::HookResult]) -> Response {
    let body = guardrails::denied_body(before, after);
    (guardrails::denied_status(), axum::Json(body)).into_response()
}

/// After the answer: output hooks on a complete 2xx JSON answer, then Portkey's
/// `hook_results` in the body and 246 when checks failed without deny.
async fn after_hooks(
    state: &AppState,
    hooks: &Hooks,
    ctx: &guardrails::Context<'_>,
    stream: bool,
    before: Option<StageResult>,
    response: Response,
) -> Result<Response, GatewayError> {
    let before = before.unwrap_or_default();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let success = response.status().is_success();
    if stream || !is_json || !success {
        // Streams and error answers pass as they are; a failed before hook still
        // shows in the status.
        let mut response = response;
        if before.failed && success {
            *response.status_mut() = guardrails::failed_status();
        }
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| GatewayError::Internal(format!("cannot re-read the answer: {e}")))?;
    let run_after = !hooks.after.is_empty() && guardrails::applies(ctx.endpoint, true);
    let (after, answer) = if run_after {
        let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(Response::from_parts(parts, Body::from(bytes)));
        };
        let after = guardrails::after_response(&state.plugins, hooks, ctx, &mut answer).await;
        let rewritten = after.rewritten;
        (after, rewritten.then_some(answer))
    } else {
        (StageResult::default(), None)
    };
    if after.denied {
        return Ok(denied(&before.results, &after.results));
    }
    if before.failed || after.failed {
        parts.status = guardrails::failed_status();
    }
    let results = guardrails::HookResults {
        before_request_hooks: &before.results,
        after_request_hooks: &after.results,
    };
    let body = match answer {
        Some(mut answer) => {
            let results = serde_json::to_value(&results)
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            answer.insert("hook_results".into(), results);
            serde_json::to_vec(&Value::Object(answer))
        }
        None => serde_json::to_vec(&results).map(|r| with_member(&bytes, "hook_results", &r)),
    }
    .map_err(|e| GatewayError::Internal(e.to_string()))?;
    parts.headers.remove(CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(body)))
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
    hooks: &Hooks,
    ctx: &guardrails::Context<'_>,
    headers: &http::HeaderMap,
    bytes: Bytes,
) -> Result<Prepared, GatewayError> {
    let send = |body: Bytes| Prepared::Send {
        body,
        stream: false,
        hook_results: None,
    };
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
            return Ok(send(bytes));
        }
        BodyKind::Empty => return Ok(send(Bytes::new())),
        BodyKind::Raw => return Ok(send(bytes)),
    }

    let overrides = &plan.target.override_params;
    let run_hooks = !hooks.before.is_empty() && guardrails::applies(ctx.endpoint, false);
    if overrides.is_empty() && !run_hooks {
        // The common case: nothing changes the body, so it is only checked and
        // peeked at (model, stream), then sent byte for byte.
        let peek = body::peek(&bytes)?;
        if let Some(model) = &peek.model {
            tracing::Span::current().record("gen_ai.request.model", model.as_ref());
        }
        return Ok(Prepared::Send {
            stream: peek.stream.unwrap_or(false),
            body: bytes,
            hook_results: None,
        });
    }

    if overrides.is_empty() {
        // Checks only read the text: the body is parsed whole only if a
        // guardrail rewrote it; otherwise the client's bytes go as they came.
        let peek = body::peek(&bytes)?;
        if let Some(model) = &peek.model {
            tracing::Span::current().record("gen_ai.request.model", model.as_ref());
        }
        let stream = peek.stream.unwrap_or(false);
        let (result, rewritten) =
            guardrails::before_request_bytes(&state.plugins, hooks, ctx, &bytes).await?;
        if result.denied {
            return Ok(Prepared::Answer(denied(&result.results, &[])));
        }
        let body = match rewritten {
            Some(map) => Bytes::from(
                serde_json::to_vec(&Value::Object(map))
                    .map_err(|e| GatewayError::Internal(e.to_string()))?,
            ),
            None => bytes,
        };
        return Ok(Prepared::Send {
            body,
            stream,
            hook_results: Some(result),
        });
    }

    let mut map = body::parse_object(&bytes)?;
    body::apply_overrides(&mut map, overrides);
    let hook_results = if run_hooks {
        let result = guardrails::before_request(&state.plugins, hooks, ctx, &mut map).await;
        if result.denied {
            return Ok(Prepared::Answer(denied(&result.results, &[])));
        }
        Some(result)
    } else {
        None
    };
    if let Some(model) = map.get("model").and_then(Value::as_str) {
        tracing::Span::current().record("gen_ai.request.model", model);
    }
    let stream = map.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // Unknown fields and their order are kept (serde_json's preserve_order).
    let body = Bytes::from(
        serde_json::to_vec(&Value::Object(map))
            .map_err(|e| GatewayError::Internal(e.to_string()))?,
    );
    Ok(Prepared::Send {
        body,
        stream,
        hook_results,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_spliced_into_an_object() {
        let v = br#"{"a":[1]}"#;
        let out = with_member(b" {\"x\": 1}\n", "k", v);
        let parsed: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(parsed, serde_json::json!({"x": 1, "k": {"a": [1]}}));
        let out = with_member(b"{ }", "k", v);
        assert_eq!(
            serde_json::from_slice::<Value>(&out).ok(),
            Some(serde_json::json!({"k": {"a": [1]}}))
        );
        assert_eq!(with_member(b"[1]", "k", v), b"[1]");
    }
}
