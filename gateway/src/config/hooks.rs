//! Portkey's hook lists in a config, read into the form the guardrails stage
//! runs: `before_request_hooks` + `input_guardrails` + `input_mutators` before the
//! request, `after_request_hooks` + `output_guardrails` + `output_mutators` after
//! the answer. Read once when a config is loaded; requests share them.
//!
//! Forms: a full hook `{"id", "type", "deny", "on_error", "checks": [{"id",
//! "parameters"}]}`; a shorthand object whose keys other than the hook settings
//! are check ids with their parameters (`{"deny": true, "blocklist": {...}}`); or a
//! bare check id (`"blocklist"`). A check id names a plugin (`default.` may prefix
//! it).

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
}

/// One hook.
#[derive(Debug, Clone, PartialEq)]
pub struct HookSpec {
    pub id: String,
    pub deny: bool,
    /// A plugin failure counts as a failed check (else as a pass).
    pub fail_closed: bool,
    pub checks: Vec<CheckSpec>,
}

/// The hooks of a config node, by stage.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hooks {
    pub before: Arc<[HookSpec]>,
    pub after: Arc<[HookSpec]>,
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
    "checks",
    "name",
];

fn check(id: &str, parameters: Option<&Value>) -> CheckSpec {
    CheckSpec {
        id: id.to_owned(),
        plugin: id.strip_prefix("default.").unwrap_or(id).to_owned(),
        parameters: parameters.map_or_else(|| "{}".to_owned(), Value::to_string),
    }
}

fn hook(value: &Value, default_id: String) -> Option<HookSpec> {
    match value {
        Value::String(id) => Some(HookSpec {
            id: default_id,
            deny: false,
            fail_closed: false,
            checks: vec![check(id, None)],
        }),
        Value::Object(o) => {
            let deny = o.get("deny").and_then(Value::as_bool).unwrap_or(false);
            let fail_closed = match o.get("on_error").and_then(Value::as_str) {
                Some("fail-open") => false,
                Some("fail-closed") => true,
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
            Some(HookSpec {
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

/// A stage's hooks from its lists (already shape-checked), in order.
pub fn stage(lists: &[Option<&Vec<Value>>], stage: &str) -> Arc<[HookSpec]> {
    lists
        .iter()
        .flatten()
        .flat_map(|l| l.iter())
        .enumerate()
        .filter_map(|(i, v)| hook(v, format!("{stage}_{i}")))
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
    }
}
