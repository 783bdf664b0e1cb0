//! Portkey's hook lists in a config, read into the form the guardrails stage
//! runs: `before_request_hooks` + `input_guardrails` + `input_mutators` before the
//! request, `after_request_hooks` + `output_guardrails` + `output_mutators` after
//! the answer. Read once when a config is loaded; requests share them.
//!
//! Forms: a full hook `{"id", "type", "deny", "async", "sequential",
//! "on_error" | "failOnError", "on_fail", "on_success", "checks": [{"id",
//! "parameters"}]}`; a shorthand object whose keys other than the hook settings
//! are check ids with their parameters (`{"deny": true, "blocklist": {...}}`); or a
//! bare check id (`"blocklist"`). A check id names a plugin (`default.` may prefix
//! it). Hooks in `input_mutators` / `output_mutators`, and hooks of `"type":
//! "mutator"`, are mutators.

use std::sync::Arc;

use serde_json::Value;

/// One check of a hook.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    /// As written (reported in `hook_results`).
    pub id: String,
    /// The plugin's name: the id without a `default.` prefix.
    pub plugin: String,
    /// The plugin's configuration, as JSON text.
    pub parameters: String,
    /// For an id `NS.NAME` when no plugin is named as above: the plugin `NS`,
    /// which serves several checks, and its configuration
    /// `{"check": NAME, "parameters": ...}` (`default.wordCount` is the
    /// built-in `default` plugin's `wordCount`).
    pub namespaced: Option<Namespaced>,
}

/// A check served by a plugin of several checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespaced {
    pub plugin: String,
    pub parameters: String,
}

/// One hook.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HookSpec {
    pub id: String,
    pub deny: bool,
    /// A plugin failure counts as a failed check (else as a pass).
    pub fail_closed: bool,
    /// A mutator: mutators run one after another, each on the text the one
    /// before it left, before the stage's guardrails.
    pub mutator: bool,
    /// Its checks run in order, each on the text the one before it left
    /// (else in parallel, on the same text).
    pub sequential: bool,
    /// Runs beside the request without holding it: its verdict is logged and
    /// counted, never applied.
    pub detached: bool,
    /// Portkey's feedback objects, reported with the hook's result.
    pub on_fail: Option<Value>,
    pub on_success: Option<Value>,
    pub checks: Vec<CheckSpec>,
}

/// The hooks of a config node, by stage.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hooks {
    pub before: Arc<[HookSpec]>,
    pub after: Arc<[HookSpec]>,
    /// How the after-response hooks judge a streamed answer.
    pub stream: StreamPolicy,
}

/// How output guardrails judge a streamed answer (Sluice's
/// `stream_guardrails: {"mode", "window_chars", "every_chars"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamPolicy {
    /// Hold the stream until it ends, check the whole text, then release it
    /// (or answer 446 instead). Nothing unchecked reaches the client; the
    /// client waits for the whole answer.
    #[default]
    Buffer,
    /// Release the stream as it comes; every `every_chars` of new text, check
    /// the last `window_chars`, and the rest at the end. A failed deny check
    /// ends the stream with an error event; what was sent before stays sent.
    Window {
        window_chars: usize,
        every_chars: usize,
    },
}

impl StreamPolicy {
    /// The defaults of window mode.
    pub const WINDOW: Self = Self::Window {
        window_chars: 2000,
        every_chars: 400,
    };
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty()
    }

    /// Every check of both stages.
    pub fn checks(&self) -> impl Iterator<Item = &CheckSpec> {
        self.before
            .iter()
            .chain(self.after.iter())
            .flat_map(|h| &h.checks)
    }
}

/// Settings of a hook object; its other keys are checks (shorthand form).
const HOOK_KEYS: &[&str] = &[
    "id",
    "type",
    "deny",
    "async",
    "sequential",
    "on_fail",
    "on_success",
    "on_error",
    "failOnError",
    "checks",
    "name",
];

fn check(id: &str, parameters: Option<&Value>) -> CheckSpec {
    let namespaced = id.split_once('.').map(|(ns, name)| Namespaced {
        plugin: ns.to_owned(),
        parameters:
            serde_json::json!({"check": name, "parameters": parameters.unwrap_or(&Value::Null)})
                .to_string(),
    });
    CheckSpec {
        id: id.to_owned(),
        plugin: id.strip_prefix("default.").unwrap_or(id).to_owned(),
        parameters: parameters.map_or_else(|| "{}".to_owned(), Value::to_string),
        namespaced,
    }
}

fn hook(value: &Value, default_id: String, mutator: bool) -> Option<HookSpec> {
    match value {
        Value::String(id) => Some(HookSpec {
            id: default_id,
            mutator,
            checks: vec![check(id, None)],
            ..HookSpec::default()
        }),
        Value::Object(o) => {
            let flag = |key: &str| o.get(key).and_then(Value::as_bool);
            let deny = flag("deny").unwrap_or(false);
            let fail_closed = match (
                o.get("on_error").and_then(Value::as_str),
                flag("failOnError"),
            ) {
                (Some("fail-open"), _) => false,
                (Some("fail-closed"), _) => true,
                (_, Some(fail)) => fail,
                _ => deny,
            };
            let checks = match o.get("checks").and_then(Value::as_array) {
                Some(list) => list
                    .iter()
                    .filter_map(|c| Some(check(c.get("id")?.as_str()?, c.get("parameters"))))
                    .collect(),
                None => o
                    .iter()
                    .filter(|(k, _)| !HOOK_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| check(k, Some(v)))
                    .collect(),
            };
            let feedback = |key: &str| o.get(key).filter(|v| !v.is_null()).cloned();
            Some(HookSpec {
                id: o
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or(default_id, str::to_owned),
                deny,
                fail_closed,
                mutator: mutator || o.get("type").and_then(Value::as_str) == Some("mutator"),
                sequential: flag("sequential").unwrap_or(false),
                detached: flag("async").unwrap_or(false),
                on_fail: feedback("on_fail"),
                on_success: feedback("on_success"),
                checks,
            })
        }
        _ => None,
    }
}

/// A stage's hooks from its lists (already shape-checked), in order: the full
/// hooks, the guardrail shorthands, and the mutator shorthands.
pub fn stage(lists: &[Option<&Vec<Value>>; 3], stage: &str) -> Arc<[HookSpec]> {
    lists
        .iter()
        .enumerate()
        .flat_map(|(n, l)| l.iter().flat_map(|l| l.iter()).map(move |v| (n == 2, v)))
        .enumerate()
        .filter_map(|(i, (mutator, v))| hook(v, format!("{stage}_{i}"), mutator))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn full_shorthand_and_bare_forms() {
        let full = vec![
            json!({"id": "g1", "deny": true, "checks": [{"id": "blocklist", "parameters": {"words": ["x"]}}]}),
        ];
        let short = vec![
            json!("chaos"),
            json!({"default.blocklist": {"words": ["y"]}, "deny": false, "on_error": "fail-closed"}),
        ];
        let before = stage(&[Some(&full), Some(&short), None], "before_request");
        assert_eq!(before.len(), 3);
        assert_eq!(before[0].id, "g1");
        assert!(before[0].deny && before[0].fail_closed);
        assert_eq!(before[0].checks[0].parameters, r#"{"words":["x"]}"#);
        assert_eq!(before[1].id, "before_request_1");
        assert_eq!(before[1].checks[0].plugin, "chaos");
        assert!(!before[1].fail_closed);
        assert_eq!(before[2].checks[0].id, "default.blocklist");
        assert_eq!(before[2].checks[0].plugin, "blocklist");
        assert!(before[2].fail_closed && !before[2].deny);
        assert!(
            !before
                .iter()
                .any(|h| h.mutator || h.sequential || h.detached)
        );
    }

    #[test]
    fn mutators_order_async_and_feedback() {
        let full = vec![
            json!({"id": "m", "type": "mutator", "sequential": true,
            "checks": [{"id": "a"}, {"id": "b"}]}),
            json!({"id": "bg", "async": true, "failOnError": true, "checks": [{"id": "a"}],
                   "on_fail": {"value": -1, "weight": 1}, "on_success": {"value": 1}}),
        ];
        let mutators = vec![json!({"default.blocklist": {"words": ["x"], "mode": "redact"}})];
        let before = stage(&[Some(&full), None, Some(&mutators)], "before_request");
        assert!(before[0].mutator && before[0].sequential && !before[0].detached);
        assert!(before[1].detached && before[1].fail_closed && !before[1].mutator);
        assert_eq!(before[1].on_fail, Some(json!({"value": -1, "weight": 1})));
        assert_eq!(before[1].on_success, Some(json!({"value": 1})));
        assert!(before[2].mutator, "input_mutators are mutators");
        assert_eq!(before[2].id, "before_request_2");
    }
}
