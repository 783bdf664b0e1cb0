//! Guardrails: Portkey's hooks, run by guardrail plugins.
//!
//! A config's `before_request_hooks` / `input_guardrails` / `input_mutators` run
//! on the request before it leaves; `after_request_hooks` / `output_guardrails` /
//! `output_mutators` on a complete 2xx answer before it returns, and on a
//! streamed one as its `stream_guardrails` policy says ([`stream`]: held whole,
//! or checked on a sliding window as it leaves); the config module reads the
//! hook lists into [`Hooks`]. A check names a guardrail plugin by its name (`default.` may
//! prefix it); its `parameters` are the plugin's configuration, validated by
//! the plugin once per plugin version.
//!
//! Order: a stage's mutators (`type: "mutator"`, or the `*_mutators` lists) run
//! first, one after another, each on the text the one before left; then its
//! guardrails, in parallel, on the mutated text — so a redaction is in place
//! before anything judges the text. Within a hook, checks run in parallel on
//! the same text, or in order each on the text the one before left when the
//! hook is `sequential`. A hook with `async: true` runs beside the request on
//! the stage's input: its verdict is logged and counted, never applied or
//! reported in `hook_results` (Portkey ignores the flag).
//!
//! Verdicts as Portkey's: a failed hook with `deny: true` answers 446 with
//! `hook_results` (no upstream call for a before hook); a failed hook without
//! deny lets the request through and the answer's status becomes 246; when
//! hooks ran, a JSON answer carries `hook_results`, each hook with its
//! `on_success` or `on_fail` feedback. A rewrite (a plugin returning new text
//! for the segments) replaces the text in the body: that is how redaction
//! works. `on_error` (or Portkey's `failOnError`) decides what a plugin error
//! (trap, timeout, missing plugin) means: `fail-closed` counts the check as
//! failed, `fail-open` as passed; the default is fail-closed for deny hooks and
//! fail-open otherwise.
//!
//! Every check's outcome (pass, fail, error) and time is counted by check and
//! stage ([`Stats`], in `/metrics`), and each stage's verdicts
//! (`hook=pass[check=pass,…]`) are fields of the request's log line
//! (`guardrails.before_request`, `guardrails.after_request`); a stream's
//! output checks, which end after that line, log a line of their own.
//!
//! This module calls `plugins`; nothing else in the pipeline.

mod segments;
mod stats;
pub mod stream;

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use http::StatusCode;
use serde_json::{Map, Value, json};

pub use segments::{BodyText, Segments};
pub use stats::Stats;

use crate::config::routing::{CheckSpec, HookSpec, Hooks};
use crate::plugins::{self, CheckInput, Kind, Outcome};
use crate::providers::Endpoint;

/// Portkey's status when a deny hook failed.
pub const DENIED: u16 = 446;
/// Portkey's status when checks failed without deny.
pub const FAILED_WITHOUT_DENY: u16 = 246;

/// What a request's context gives the checks, and what runs them.
#[derive(Debug)]
pub struct Context<'a> {
    pub endpoint: Endpoint,
    pub provider: &'a str,
    pub metadata: &'a Map<String, Value>,
    pub plugins: &'a Arc<plugins::Registry>,
    /// Where every check's outcome and latency is counted.
    pub stats: &'a Arc<Stats>,
    /// What checks may reach through the plugin host: the request's headers
    /// and HTTP calls.
    pub grants: plugins::Grants,
}

/// The results of one stage.
#[derive(Debug, Default)]
pub struct StageResult {
    /// Portkey's `hook_results` entries.
    pub results: Vec<HookResult>,
    pub denied: bool,
    pub failed: bool,
}

impl StageResult {
    /// `hook=pass[check=pass,…] …` for the log.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            if !out.is_empty() {
                out.push(' ');
            }
            let verdict = match (r.verdict, r.deny) {
                (true, _) => "pass",
                (false, true) => "deny",
                (false, false) => "fail",
            };
            out.push_str(&r.id);
            out.push('=');
            out.push_str(verdict);
            out.push('[');
            r.summarise(&mut out);
            out.push(']');
        }
        out
    }
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
        grants: ctx.grants.clone(),
    }
}

/// The stage a hook runs in, for logs and metrics.
fn stage_name(after: bool) -> &'static str {
    if after {
        "after_request"
    } else {
        "before_request"
    }
}

/// The input with new texts in its segments (roles kept).
fn with_texts(input: &CheckInput, texts: &[String]) -> CheckInput {
    let mut next = input.clone();
    for ((_, text), new) in next.segments.iter_mut().zip(texts) {
        text.clone_from(new);
    }
    next
}

/// Runs a stage's hooks on one input; returns the results and the final
/// text when a hook rewrote it. Mutators go first, one after another, each
/// on the text the one before left; then the guardrails, in parallel, on the
/// mutated text. Detached (`async`) hooks are not run here
/// ([`spawn_detached`]).
async fn run(
    ctx: &Context<'_>,
    hooks: &[HookSpec],
    input: &CheckInput,
) -> (StageResult, Option<Vec<String>>) {
    let mut stage = StageResult::default();
    let mut results: Vec<(usize, HookResult)> = Vec::with_capacity(hooks.len());
    let mut rewrite: Option<Vec<String>> = None;
    let mut current = std::borrow::Cow::Borrowed(input);
    let record = |stage: &mut StageResult, hook: &HookSpec, verdict: bool| {
        if !verdict {
            stage.failed = true;
            stage.denied |= hook.deny;
        }
    };
    for (i, hook) in hooks
        .iter()
        .enumerate()
        .filter(|(_, h)| h.mutator && !h.detached)
    {
        let (result, verdict, texts) = run_hook(ctx, hook, &current).await;
        record(&mut stage, hook, verdict);
        if let Some(texts) = texts {
            current = std::borrow::Cow::Owned(with_texts(&current, &texts));
            rewrite = Some(texts);
        }
        results.push((i, result));
    }
    let guards: Vec<(usize, &HookSpec)> = hooks
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.mutator && !h.detached)
        .collect();
    // A lone hook is awaited in place (see [`run_hook`]).
    let ran = match guards.as_slice() {
        [(i, hook)] => vec![(*i, *hook, run_hook(ctx, hook, &current).await)],
        _ => {
            join_all(guards.iter().map(|&(i, hook)| {
                let current = &current;
                async move { (i, hook, run_hook(ctx, hook, current).await) }
            }))
            .await
        }
    };
    for (i, hook, (result, verdict, texts)) in ran {
        record(&mut stage, hook, verdict);
        if texts.is_some() {
            rewrite = texts;
        }
        results.push((i, result));
    }
    results.sort_by_key(|(i, _)| *i);
    stage.results = results.into_iter().map(|(_, r)| r).collect();
    // The verdicts go into the request's log line (its span's fields), not a
    // line per hook: a log write costs more than a check.
    let summary = stage.summary();
    tracing::debug!(stage = stage_name(input.after_response), hooks = %summary, "guardrail hooks");
    tracing::Span::current().record(
        if input.after_response {
            "guardrails.after_request"
        } else {
            "guardrails.before_request"
        },
        summary.as_str(),
    );
    (stage, rewrite)
}

/// Runs a stage on a body's text: its detached hooks beside the request, the
/// others in it (see [`run`]). `whole` is the body, given to checks that ask
/// for it.
async fn run_text(
    ctx: &Context<'_>,
    hooks: &Arc<[HookSpec]>,
    after: bool,
    model: Option<String>,
    segments: Vec<(String, String)>,
    whole: impl FnOnce() -> String,
) -> (StageResult, Option<Vec<String>>) {
    let whole = wants_body(ctx.plugins, hooks).then(whole);
    let input = input(ctx, after, model, segments, whole);
    spawn_detached(ctx, hooks, &input);
    run(ctx, hooks, &input).await
}

/// Starts a stage's detached (`async: true`) hooks beside the request: they
/// run on the same input, their verdicts are logged and counted, and nothing
/// waits for them or applies them.
fn spawn_detached(ctx: &Context<'_>, hooks: &Arc<[HookSpec]>, input: &CheckInput) {
    if !hooks.iter().any(|h| h.detached) {
        return;
    }
    let (owned, hooks, input) = (stream::Owned::of(ctx), hooks.clone(), input.clone());
    let task = async move {
        let ctx = owned.context();
        for hook in hooks.iter().filter(|h| h.detached) {
            let (r, _, _) = run_hook(&ctx, hook, &input).await;
            tracing::info!(
                stage = stage_name(input.after_response),
                hook = %r.id,
                verdict = r.verdict,
                checks = %r.summary(),
                ms = r.execution_time,
                "async guardrail hook (logged only)"
            );
        }
    };
    tokio::spawn(tracing::Instrument::instrument(
        task,
        tracing::Span::current(),
    ));
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
    /// The hook's `on_success` or `on_fail` feedback, by its verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Value>,
}

impl HookResult {
    /// `id=pass`, `id=fail`, `id=error` per check, for the log.
    fn summary(&self) -> String {
        let mut out = String::new();
        self.summarise(&mut out);
        out
    }

    fn summarise(&self, out: &mut String) {
        for (i, c) in self.checks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&c.id);
            out.push_str(match (&c.error, c.verdict) {
                (Some(_), _) => "=error",
                (None, true) => "=pass",
                (None, false) => "=fail",
            });
        }
    }
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
    pub data: Option<Box<serde_json::value::RawValue>>,
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

/// One hook: its checks in parallel on the same text, or in order each on the
/// text the one before left (`sequential`). Returns its result, its verdict
/// and the hook's rewrite.
async fn run_hook(
    ctx: &Context<'_>,
    hook: &HookSpec,
    input: &CheckInput,
) -> (HookResult, bool, Option<Vec<String>>) {
    let started = Instant::now();
    let mut rewrite = None;
    let mut checks = Vec::with_capacity(hook.checks.len());
    if hook.sequential {
        let mut current = std::borrow::Cow::Borrowed(input);
        for check in &hook.checks {
            let (result, texts) = run_check(ctx, hook, check, &current).await;
            if let Some(texts) = texts {
                current = std::borrow::Cow::Owned(with_texts(&current, &texts));
                rewrite = Some(texts);
            }
            checks.push(result);
        }
    } else {
        // A lone check is awaited in place: `join_all` moves each future
        // into a list of its own, and a check's future is large (it holds
        // the plugin call's), so on one-check hooks (the shorthand form) the
        // move costs more than it saves.
        let ran = match hook.checks.as_slice() {
            [check] => vec![run_check(ctx, hook, check, input).await],
            checks => join_all(checks.iter().map(|c| run_check(ctx, hook, c, input))).await,
        };
        for (result, texts) in ran {
            if texts.is_some() {
                rewrite = texts;
            }
            checks.push(result);
        }
    }
    let verdict = checks.iter().all(|c| c.verdict);
    let result = HookResult {
        id: hook.id.clone(),
        verdict,
        deny: hook.deny,
        checks,
        execution_time: started.elapsed().as_millis() as u64,
        feedback: if verdict {
            hook.on_success.clone()
        } else {
            hook.on_fail.clone()
        },
    };
    (result, verdict, rewrite)
}

/// The plugin a check names, and its configuration: the plugin named as the
/// check (without `default.`), else for `NS.NAME` the plugin `NS` serving
/// several checks.
fn resolve<'c>(
    plugins: &plugins::Registry,
    check: &'c CheckSpec,
) -> Result<(Arc<plugins::Plugin>, &'c str), plugins::PluginError> {
    let (plugin, parameters) = match (plugins.get(&check.plugin), &check.namespaced) {
        (Some(plugin), _) => (plugin, &check.parameters),
        (None, Some(ns)) => match plugins.get(&ns.plugin) {
            Some(plugin) => (plugin, &ns.parameters),
            None => {
                return Err(plugins::PluginError::NotLoaded(format!(
                    "{}` or `{}",
                    check.plugin, ns.plugin
                )));
            }
        },
        (None, None) => return Err(plugins::PluginError::NotLoaded(check.plugin.clone())),
    };
    if plugin.kind() != Kind::Guardrail {
        return Err(plugin.wrong_kind(Kind::Guardrail));
    }
    Ok((plugin, parameters))
}

async fn run_check(
    ctx: &Context<'_>,
    hook: &HookSpec,
    check: &CheckSpec,
    input: &CheckInput,
) -> (CheckResult, Option<Vec<String>>) {
    let started = Instant::now();
    let outcome = async {
        let (plugin, parameters) = resolve(ctx.plugins, check)?;
        plugin.ensure_valid(parameters).await?;
        plugin.check(parameters, input).await
    }
    .await;
    let took = started.elapsed();
    let ms = took.as_millis() as u64;
    let stage = stage_name(input.after_response);
    match outcome {
        Ok(v) => {
            let (ok, reason, texts) = match v.outcome {
                Outcome::Pass => (true, None, None),
                Outcome::Fail { reason, deny: _ } => (false, Some(reason), None),
                Outcome::Rewrite(texts) => (true, None, Some(texts)),
            };
            ctx.stats.record(
                &check.id,
                stage,
                if ok { stats::PASS } else { stats::FAIL },
                took,
            );
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
            ctx.stats.record(&check.id, stage, stats::ERROR, took);
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

/// Runs the before-request hooks on a parsed request, applying rewrites to it
/// (when `override_params` changed the body, so it is parsed anyway).
pub async fn before_request(
    hooks: &Hooks,
    ctx: &Context<'_>,
    body: &mut Map<String, Value>,
) -> StageResult {
    let segments = Segments::of_request(body);
    let model = body.get("model").and_then(Value::as_str).map(str::to_owned);
    let whole = || Value::Object(body.clone()).to_string();
    let (stage, rewrite) = run_text(
        ctx,
        &hooks.before,
        false,
        model,
        segments.items.clone(),
        whole,
    )
    .await;
    if let Some(texts) = rewrite {
        segments.apply(body, &texts);
    }
    stage
}

/// Runs the before-request hooks on the request's bytes and `text`, read
/// from them with [`BodyText::request`] (no full parse); the body is parsed
/// and rewritten only when a guardrail rewrote the text, and then returned.
pub async fn before_request_bytes(
    hooks: &Hooks,
    ctx: &Context<'_>,
    bytes: &[u8],
    text: BodyText,
) -> Result<(StageResult, Option<Map<String, Value>>), crate::GatewayError> {
    run_on_bytes(&hooks.before, false, ctx, bytes, text).await
}

/// Runs the after-response hooks on a JSON answer's bytes, as
/// [`before_request_bytes`] does on a request. `None` when the answer is not a
/// JSON object (nothing to check; it passes as it is).
pub async fn after_response_bytes(
    hooks: &Hooks,
    ctx: &Context<'_>,
    bytes: &[u8],
) -> Option<Result<(StageResult, Option<Map<String, Value>>), crate::GatewayError>> {
    let text = segments::BodyText::answer(bytes)?;
    Some(run_on_bytes(&hooks.after, true, ctx, bytes, text).await)
}

async fn run_on_bytes(
    hooks: &Arc<[HookSpec]>,
    after: bool,
    ctx: &Context<'_>,
    bytes: &[u8],
    text: segments::BodyText,
) -> Result<(StageResult, Option<Map<String, Value>>), crate::GatewayError> {
    let whole = || String::from_utf8_lossy(bytes).into_owned();
    let (stage, rewrite) = run_text(ctx, hooks, after, text.model, text.segments, whole).await;
    let Some(texts) = rewrite else {
        return Ok((stage, None));
    };
    let mut map = crate::providers::body::parse_object(bytes)?;
    let segments = if after {
        Segments::of_response(&map)
    } else {
        Segments::of_request(&map)
    };
    segments.apply(&mut map, &texts);
    Ok((stage, Some(map)))
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
