//! Guardrails: Portkey's hooks, run by guardrail plugins.
//!
//! A config's `before_request_hooks` / `input_guardrails` run on the request
//! before it leaves; `after_request_hooks` / `output_guardrails` on a complete
//! 2xx answer before it returns (streamed answers are not checked yet). Hooks of
//! a stage run in parallel, and so do the checks in a hook. A check names a
//! guardrail plugin by its name (`default.` may prefix it); its `parameters` are
//! the plugin's configuration, validated by the plugin once per plugin version.
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

use crate::config::routing::Hooks;
use crate::plugins::{self, CheckInput, Kind, Outcome};
use crate::providers::Endpoint;

/// Portkey's status when a deny hook failed.
pub const DENIED: u16 = 446;
/// Portkey's status when checks failed without deny.
pub const FAILED_WITHOUT_DENY: u16 = 246;

/// One check of a hook.
#[derive(Debug, Clone, PartialEq)]
struct Check {
    id: String,
    parameters: String,
}

/// One hook, from the config.
#[derive(Debug, Clone, PartialEq)]
struct Hook {
    id: String,
    deny: bool,
    fail_closed: bool,
    checks: Vec<Check>,
}

const HOOK_KEYS: &[&str] = &[
    "id",
    "type",
    "deny",
    "async",
    "sequential",
    "on_fail",
    "on_success",
    "on_error",
    "checks",
    "name",
];

fn hook_from(value: &Value, index: usize, stage: &str) -> Option<Hook> {
    let default_id = format!("{stage}_{index}");
    match value {
        // A bare check id (shorthand).
        Value::String(id) => Some(Hook {
            id: default_id,
            deny: false,
            fail_closed: false,
            checks: vec![Check {
                id: id.clone(),
                parameters: "{}".into(),
            }],
        }),
        Value::Object(o) => {
            let deny = o.get("deny").and_then(Value::as_bool).unwrap_or(false);
            let fail_closed = match o.get("on_error").and_then(Value::as_str) {
                Some("fail-open") => false,
                Some("fail-closed") => true,
                _ => deny,
            };
            let mut checks = Vec::new();
            if let Some(list) = o.get("checks").and_then(Value::as_array) {
                for c in list {
                    if let Some(id) = c.get("id").and_then(Value::as_str) {
                        checks.push(Check {
                            id: id.to_owned(),
                            parameters: c
                                .get("parameters")
                                .map_or_else(|| "{}".to_owned(), Value::to_string),
                        });
                    }
                }
            } else {
                // Shorthand object: every key that is not a hook setting is a check.
                for (k, v) in o {
                    if !HOOK_KEYS.contains(&k.as_str()) {
                        checks.push(Check {
                            id: k.clone(),
                            parameters: v.to_string(),
                        });
                    }
                }
            }
            Some(Hook {
                id: o
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or(default_id, str::to_owned),
                deny,
                fail_closed,
                checks,
            })
        }
        _ => None,
    }
}

fn hooks_of(lists: [&Option<Vec<Value>>; 2], stage: &str) -> Vec<Hook> {
    lists
        .into_iter()
        .flatten()
        .flatten()
        .enumerate()
        .filter_map(|(i, v)| hook_from(v, i, stage))
        .collect()
}

/// The hooks of a config for each stage.
#[derive(Debug, Clone, Default)]
pub struct StageHooks {
    before: Vec<Hook>,
    after: Vec<Hook>,
}

impl StageHooks {
    pub fn from_config(h: &Hooks) -> Self {
        Self {
            before: hooks_of(
                [&h.before_request_hooks, &h.input_guardrails],
                "before_request",
            ),
            after: hooks_of(
                [&h.after_request_hooks, &h.output_guardrails],
                "after_request",
            ),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty()
    }

    pub fn has_before(&self) -> bool {
        !self.before.is_empty()
    }

    pub fn has_after(&self) -> bool {
        !self.after.is_empty()
    }

    /// Every check: (plugin name, parameters).
    pub fn checks(&self) -> impl Iterator<Item = (&str, &str)> {
        self.before.iter().chain(&self.after).flat_map(|h| {
            h.checks.iter().map(|c| {
                (
                    c.id.strip_prefix("default.").unwrap_or(&c.id),
                    c.parameters.as_str(),
                )
            })
        })
    }
}

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
    pub results: Vec<Value>,
    pub denied: bool,
    pub failed: bool,
}

/// Whether guardrails apply to an endpoint (chat, completions, embeddings).
pub fn applies(endpoint: Endpoint, after: bool) -> bool {
    match endpoint {
        Endpoint::Chat | Endpoint::Completions => true,
        Endpoint::Embeddings => !after,
        _ => false,
    }
}

/// Runs a stage's hooks on `body` (the request, or the answer after it), applying
/// rewrites to it.
async fn run(
    registry: &plugins::Registry,
    hooks: &[Hook],
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
    let input = CheckInput {
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
        segments: segments.items.clone(),
        body: Some(Value::Object(body.clone()).to_string()),
    };
    let runs = hooks.iter().map(|hook| run_hook(registry, hook, &input));
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
    if let Some(texts) = rewrite {
        segments.apply(body, &texts);
    }
    stage
}

/// One hook: its checks in parallel. Returns its result, its verdict and the
/// last rewrite among its checks.
async fn run_hook(
    registry: &plugins::Registry,
    hook: &Hook,
    input: &CheckInput,
) -> (Value, bool, Option<Vec<String>>) {
    let started = Instant::now();
    let checks = hook
        .checks
        .iter()
        .map(|c| run_check(registry, hook, c, input));
    let results = join_all(checks).await;
    let mut verdict = true;
    let mut rewrite = None;
    let mut checks_json = Vec::new();
    for (json, ok, texts) in results {
        verdict &= ok;
        if texts.is_some() {
            rewrite = texts;
        }
        checks_json.push(json);
    }
    let result = json!({
        "id": hook.id,
        "verdict": verdict,
        "deny": hook.deny,
        "checks": checks_json,
        "execution_time": started.elapsed().as_millis() as u64,
    });
    (result, verdict, rewrite)
}

async fn run_check(
    registry: &plugins::Registry,
    hook: &Hook,
    check: &Check,
    input: &CheckInput,
) -> (Value, bool, Option<Vec<String>>) {
    let started = Instant::now();
    let name = check.id.strip_prefix("default.").unwrap_or(&check.id);
    let outcome = async {
        let plugin = registry.get_kind(name, Kind::Guardrail)?;
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
            let json = json!({
                "id": check.id,
                "verdict": ok,
                "explanation": reason,
                "transformed": texts.is_some(),
                "score": v.score,
                "data": v.data,
                "error": null,
                "execution_time": ms,
            });
            (json, ok, texts)
        }
        Err(e) => {
            tracing::warn!(check = %check.id, error = %e, "guardrail check failed to run");
            let ok = !hook.fail_closed;
            let json = json!({
                "id": check.id,
                "verdict": ok,
                "error": e.to_string(),
                "execution_time": ms,
            });
            (json, ok, None)
        }
    }
}

/// Runs the before-request hooks.
pub async fn before_request(
    registry: &plugins::Registry,
    hooks: &StageHooks,
    ctx: &Context<'_>,
    body: &mut Map<String, Value>,
) -> StageResult {
    run(registry, &hooks.before, false, ctx, body).await
}

/// Runs the after-response hooks.
pub async fn after_response(
    registry: &plugins::Registry,
    hooks: &StageHooks,
    ctx: &Context<'_>,
    body: &mut Map<String, Value>,
) -> StageResult {
    run(registry, &hooks.after, true, ctx, body).await
}

/// Portkey's 446 answer.
pub fn denied_body(before: &[Value], after: &[Value]) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_in_full_and_shorthand_forms() {
        let h = Hooks {
            before_request_hooks: Some(vec![
                json!({"id": "g1", "deny": true, "checks": [{"id": "blocklist", "parameters": {"words": ["x"]}}]}),
            ]),
            input_guardrails: Some(vec![
                json!("chaos"),
                json!({"default.blocklist": {"words": ["y"]}, "deny": false, "on_error": "fail-closed"}),
            ]),
            ..Hooks::default()
        };
        let s = StageHooks::from_config(&h);
        assert!(s.has_before() && !s.has_after());
        assert_eq!(s.before.len(), 3);
        assert_eq!(s.before[0].id, "g1");
        assert!(s.before[0].deny && s.before[0].fail_closed);
        assert_eq!(s.before[0].checks[0].parameters, r#"{"words":["x"]}"#);
        assert_eq!(s.before[1].checks[0].id, "chaos");
        assert!(!s.before[1].fail_closed);
        assert_eq!(s.before[2].checks[0].id, "default.blocklist");
        assert!(s.before[2].fail_closed && !s.before[2].deny);
    }
}
