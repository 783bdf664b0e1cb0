//! Guardrails: Portkey's hooks, run by guardrail plugins.
//!
//! A config's `before_request_hooks` / `input_guardrails` run on the request
//! before it leaves; `after_request_hooks` / `output_guardrails` on a complete
//! 2xx answer before it returns (streamed answers are not checked yet); the
//! config module reads the hook lists into [`Hooks`]. Hooks of a stage run in
//! parallel, and so do the checks in a hook. A check names a guardrail plugin by
//! its name (`default.` may prefix it); its `parameters` are the plugin's
//! configuration, validated by the plugin once per plugin version.
//!
//! Verdicts as Portkey's: a failed hook with `deny: true` answers 446 with
//! `hook_results` (no upstream call for a before hook); a failed hook without
//! deny lets the request through and the answer's status becomes 246; when
//! hooks ran, a JSON answer carries `hook_results`. A rewrite (a plugin
//! returning new text for the segments) replaces the text in the body: that is
//! how redaction works. `on_error` decides what a plugin error (trap, timeout,
//! missing plugin) means: `fail-closed` counts the check as failed, `fail-open`
//! as passed; the default is fail-closed for deny hooks and fail-open otherwise.
//!
//! This module calls `plugins`; nothing else in the pipeline.

mod segments;

use std::time::Instant;

use futures_util::future::join_all;
use http::StatusCode;
use serde_json::{Map, Value, json};

pub use segments::Segments;

use crate::config::routing::{CheckSpec, HookSpec, Hooks};
use crate::plugins::{self, CheckInput, Kind, Outcome};
use crate::providers::Endpoint;

/// Portkey's status when a deny hook failed.
pub const DENIED: u16 = 446;
/// Portkey's status when checks failed without deny.
pub const FAILED_WITHOUT_DENY: u16 = 246;

/// What a request's context gives the checks.
#[derive(Debug)]
pub struct Context<'a> {
    pub endpoint: Endpoint,
    pub provider: &'a str,
    pub metadata: &'a Map<String, Value>,
}

/// The results of one stage.
#[derive(Debug, Default)]
pub struct StageResult {
    /// Portkey's `hook_results` entries.
    pub results: Vec<HookResult>,
    pub denied: bool,
    pub failed: bool,
    /// A guardrail rewrote the body's text.
    pub rewritten: bool,
}

/// Whether guardrails apply to an endpoint: chat, completions and Anthropic's
/// Messages API both ways, embeddings on the way in.
pub fn applies(endpoint: Endpoint, after: bool) -> bool {
    match endpoint {
        Endpoint::Chat | Endpoint::Completions | Endpoint::Messages => true,
        Endpoint::Embeddings => !after,
        _ => false,
    }
}

/// Whether any check of `hooks` asked for the whole body.
fn wants_body(registry: &plugins::Registry, hooks: &[HookSpec]) -> bool {
    hooks
        .iter()
        .flat_map(|h| &h.checks)
        .any(|c| registry.get(&c.plugin).is_some_and(|p| p.info.wants_body))
}

fn input(
    ctx: &Context<'_>,
    after: bool,
    model: Option<String>,
    segments: Vec<(String, String)>,
    body: Option<String>,
) -> CheckInput {
    CheckInput {
        after_response: after,
        endpoint: ctx.endpoint,
        provider: ctx.provider.to_owned(),
        model,
        metadata: ctx
            .metadata
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect(),
        segments,
        body,
    }
}

/// Runs a stage's hooks on one input; returns the results and the last rewrite.
async fn run(
    registry: &plugins::Registry,
    hooks: &[HookSpec],
    input: &CheckInput,
) -> (StageResult, Option<Vec<String>>) {
    let runs = hooks.iter().map(|hook| run_hook(registry, hook, input));
    let outcomes = join_all(runs).await;
    let mut stage = StageResult::default();
    let mut rewrite: Option<Vec<String>> = None;
    for (hook, (result, verdict, texts)) in hooks.iter().zip(outcomes) {
        if !verdict {
            stage.failed = true;
            stage.denied |= hook.deny;
        }
        if let Some(t) = texts {
            rewrite = Some(t);
        }
        stage.results.push(result);
    }
    stage.rewritten = rewrite.is_some();
    (stage, rewrite)
}

/// Runs a stage's hooks on a parsed body (the request, or the answer after it),
/// applying a rewrite to it.
async fn run_on_map(
    registry: &plugins::Registry,
    hooks: &[HookSpec],
    after: bool,
    ctx: &Context<'_>,
    body: &mut Map<String, Value>,
) -> StageResult {
    let segments = if after {
        Segments::of_response(body)
    } else {
        Segments::of_request(body)
    };
    let model = body.get("model").and_then(Value::as_str).map(str::to_owned);
    let whole = wants_body(registry, hooks).then(|| Value::Object(body.clone()).to_string());
    let input = input(ctx, after, model, segments.items.clone(), whole);
    let (stage, rewrite) = run(registry, hooks, &input).await;
    if let Some(texts) = rewrite {
        segments.apply(body, &texts);
    }
    stage
}

/// One hook's entry in Portkey's `hook_results`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HookResult {
    pub id: String,
    pub verdict: bool,
    pub deny: bool,
    pub checks: Vec<CheckResult>,
    /// Milliseconds.
    pub execution_time: u64,
}

/// One check's entry in a hook's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    pub id: String,
    pub verdict: bool,
    /// Why it failed, in the plugin's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// The plugin rewrote the text.
    pub transformed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The plugin failed to run (trap, timeout, missing, bad parameters).
    pub error: Option<String>,
    /// Milliseconds.
    pub execution_time: u64,
}

/// Both stages' results, as they appear in an answer.
#[derive(serde::Serialize)]
pub struct HookResults<'a> {
    pub before_request_hooks: &'a [HookResult],
    pub after_request_hooks: &'a [HookResult],
}

/// One hook: its checks in parallel. Returns its result, its verdict and the
/// last rewrite among its checks.
async fn run_hook(
    registry: &plugins::Registry,
    hook: &HookSpec,
    input: &CheckInput,
) -> (HookResult, bool, Option<Vec<String>>) {
    let started = Instant::now();
    let checks = hook
        .checks
        .iter()
        .map(|c| run_check(registry, hook, c, input));
    let results = join_all(checks).await;
    let mut verdict = true;
    let mut rewrite = None;
    let mut checks = Vec::with_capacity(results.len());
    for (result, texts) in results {
        verdict &= result.verdict;
        if texts.is_some() {
            rewrite = texts;
        }
        checks.push(result);
    }
    let result = HookResult {
        id: hook.id.clone(),
        verdict,
        deny: hook.deny,
        checks,
        execution_time: started.elapsed().as_millis() as u64,
    };
    (result, verdict, rewrite)
}

async fn run_check(
    registry: &plugins::Registry,
    hook: &HookSpec,
    check: &CheckSpec,
    input: &CheckInput,
) -> (CheckResult, Option<Vec<String>>) {
    let started = Instant::now();
    let outcome = async {
        let plugin = registry.get_kind(&check.plugin, Kind::Guardrail)?;
        plugin.ensure_valid(&check.parameters).await?;
        plugin.check(&check.parameters, input).await
    }
    .await;
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(v) => {
            let (ok, reason, texts) = match v.outcome {
                Outcome::Pass => (true, None, None),
                Outcome::Fail { reason, deny: _ } => (false, Some(reason), None),
                Outcome::Rewrite(texts) => (true, None, Some(texts)),
            };
            let result = CheckResult {
                id: check.id.clone(),
                verdict: ok,
                explanation: reason,
                transformed: texts.is_some(),
                score: v.score,
                data: v.data,
                error: None,
                execution_time: ms,
            };
            (result, texts)
        }
        Err(e) => {
            tracing::warn!(check = %check.id, error = %e, "guardrail check failed to run");
            let result = CheckResult {
                id: check.id.clone(),
                verdict: !hook.fail_closed,
                explanation: None,
                transformed: false,
                score: None,
                data: None,
                error: Some(e.to_string()),
                execution_time: ms,
            };
            (result, None)
        }
    }
}

/// Runs the before-request hooks on a parsed request, applying rewrites to it.
pub async fn before_request(
    registry: &plugins::Registry,
    hooks: &Hooks,
    ctx: &Context<'_>,
    body: &mut Map<String, Value>,
) -> StageResult {
    run_on_map(registry, &hooks.before, false, ctx, body).await
}

/// Runs the before-request hooks on the request's bytes: only the text is read
/// (no full parse); the body is parsed and rewritten only when a guardrail
/// rewrote the text, and then returned.
pub async fn before_request_bytes(
    registry: &plugins::Registry,
    hooks: &Hooks,
    ctx: &Context<'_>,
    bytes: &[u8],
) -> Result<(StageResult, Option<Map<String, Value>>), crate::GatewayError> {
    let text = segments::RequestText::read(bytes)?;
    let whole =
        wants_body(registry, &hooks.before).then(|| String::from_utf8_lossy(bytes).into_owned());
    let input = input(ctx, false, text.model, text.segments, whole);
    let (stage, rewrite) = run(registry, &hooks.before, &input).await;
    let Some(texts) = rewrite else {
        return Ok((stage, None));
    };
    let mut map = crate::providers::body::parse_object(bytes)?;
    Segments::of_request(&map).apply(&mut map, &texts);
    Ok((stage, Some(map)))
}

/// Runs the after-response hooks.
pub async fn after_response(
    registry: &plugins::Registry,
    hooks: &Hooks,
    ctx: &Context<'_>,
    body: &mut Map<String, Value>,
) -> StageResult {
    run_on_map(registry, &hooks.after, true, ctx, body).await
}

/// Portkey's 446 answer.
pub fn denied_body(before: &[HookResult], after: &[HookResult]) -> Value {
    json!({
        "error": {
            "message": "The guardrail checks defined in the config failed. You can find more information in the `hook_results` object.",
            "type": "hooks_failed",
            "param": null,
            "code": null,
        },
        "hook_results": {"before_request_hooks": before, "after_request_hooks": after},
    })
}

/// 446.
pub fn denied_status() -> StatusCode {
    StatusCode::from_u16(DENIED).unwrap_or(StatusCode::BAD_REQUEST)
}

/// 246.
pub fn failed_status() -> StatusCode {
    StatusCode::from_u16(FAILED_WITHOUT_DENY).unwrap_or(StatusCode::OK)
}
