//! Portkey's routing config — the JSON sent in `x-portkey-config`, or written
//! under `[configs.NAME]` in the server's TOML file with the same field names.
//!
//! The whole schema is validated here, at any depth, and every problem is
//! reported with its path. Execution of the strategy tree lives in `routing`.
//!
//! Unknown fields are refused, with one exception decided on purpose: Portkey's
//! provider-specific settings (`azure_*`, `aws_*`, `vertex_*`, `openai_*`,
//! `anthropic_*`, ...) and the Azure trio `resource_name`, `deployment_id`,
//! `api_version` are kept in [`Target::provider_options`] for the adapters, so a
//! config written for Portkey keeps working as adapters for those providers land.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::Secret;
use super::reader::{Obj, Problems, join};

/// Strategy modes Portkey defines.
/// Portkey's modes, plus `router`: a router plugin orders the targets
/// (`strategy: {"mode": "router", "router": "latency-router", "parameters": {...}}`).
pub const MODES: &[&str] = &["single", "fallback", "loadbalance", "conditional", "router"];

const NODE_FIELDS: &[&str] = &[
    "strategy",
    "targets",
    "name",
    "weight",
    "on_status_codes",
    "provider",
    "api_key",
    "virtual_key",
    "custom_host",
    "override_params",
    "request_timeout",
    "forward_headers",
    "retry",
    "cache",
    "strict_open_ai_compliance",
    "before_request_hooks",
    "after_request_hooks",
    "input_guardrails",
    "output_guardrails",
    "input_mutators",
    "output_mutators",
];

/// Prefixes of provider-specific target settings, kept for the adapters.
const PROVIDER_OPTION_PREFIXES: &[&str] = &[
    "azure_",
    "aws_",
    "vertex_",
    "openai_",
    "anthropic_",
    "google_",
    "bedrock_",
    "sagemaker_",
    "workers_ai_",
    "fireworks_",
    "mistral_",
    "huggingface_",
    "hugging_face_",
    "snowflake_",
    "oracle_",
    "stability_",
];
const PROVIDER_OPTION_NAMES: &[&str] = &["resource_name", "deployment_id", "api_version"];

/// Whether `key` is a provider-specific setting rather than a typo.
pub fn is_provider_option(key: &str) -> bool {
    PROVIDER_OPTION_NAMES.contains(&key)
        || PROVIDER_OPTION_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// A validated routing config: one node, which may hold a strategy and targets.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    pub root: Node,
}

/// A node of the strategy tree: a strategy over targets, or a single target.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub strategy: Option<Strategy>,
    pub targets: Vec<Node>,
    /// Referenced by `conditional` strategies.
    pub name: Option<String>,
    /// Load-balancing weight (default 1).
    pub weight: f64,
    /// Portkey's per-target `on_status_codes`.
    pub on_status_codes: Option<Vec<u16>>,
    pub target: Target,
    /// Settings children inherit unless they set their own.
    pub inherit: Inherited,
}

/// What a leaf needs to call a provider. Never inherited (credentials stay put).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    pub provider: Option<String>,
    pub api_key: Option<Secret>,
    pub virtual_key: Option<String>,
    pub provider_options: Map<String, Value>,
}

/// Settings passed from parent to child.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inherited {
    pub custom_host: Option<String>,
    pub request_timeout_ms: Option<u64>,
    pub forward_headers: Option<Vec<String>>,
    pub retry: Option<Retry>,
    pub cache: Option<Cache>,
    pub strict_open_ai_compliance: Option<bool>,
    /// Merged parent → child, child wins per key.
    pub override_params: Map<String, Value>,
    pub hooks: Hooks,
}

/// `strategy: {mode, on_status_codes, conditions, default}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    pub mode: &'static str,
    pub on_status_codes: Option<Vec<u16>>,
    pub conditions: Vec<Condition>,
    pub default: Option<String>,
    /// For `router`: the router plugin's name and its parameters.
    pub router: Option<String>,
    pub parameters: Option<Value>,
}

/// One rule of a conditional strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub query: Map<String, Value>,
    pub then: String,
}

/// `retry: {attempts, on_status_codes, use_retry_after_header}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub attempts: u32,
    pub on_status_codes: Option<Vec<u16>>,
    pub use_retry_after_header: bool,
}

/// `cache: {mode, max_age}` (`max_age` in seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Cache {
    pub mode: &'static str,
    pub max_age_s: Option<u64>,
}

pub use super::hooks::{CheckSpec, HookSpec, Hooks};

/// Parses and validates a config from its JSON text.
pub fn parse_json(
    text: &str,
    known_provider: &dyn Fn(&str) -> bool,
) -> Result<RoutingConfig, Problems> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Problems::one("", format!("not valid JSON: {e}")))?;
    validate(&value, known_provider)
}

/// Validates a parsed config document.
pub fn validate(
    value: &Value,
    known_provider: &dyn Fn(&str) -> bool,
) -> Result<RoutingConfig, Problems> {
    let mut problems = Problems::default();
    let root = node(&mut problems, "", value, known_provider);
    match root {
        Some(root) if problems.is_empty() => Ok(RoutingConfig { root }),
        _ => Err(problems),
    }
}

fn node(p: &mut Problems, path: &str, value: &Value, known: &dyn Fn(&str) -> bool) -> Option<Node> {
    let o = Obj::new(p, path, value)?;
    o.deny_unknown(p, NODE_FIELDS, is_provider_option);

    let strategy = o
        .get("strategy")
        .and_then(|v| strategy(p, &o.path_of("strategy"), v));
    let targets_path = o.path_of("targets");
    let targets: Vec<Node> = o
        .array(p, "targets")
        .map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(i, t)| node(p, &join(&targets_path, &format!("[{i}]")), t, known))
                .collect()
        })
        .unwrap_or_default();

    let provider = o.str(p, "provider");
    if let Some(slug) = &provider
        && !known(slug)
    {
        p.push(&o.path_of("provider"), format!("unknown provider `{slug}`"));
    }
    let target = Target {
        provider,
        api_key: o.str(p, "api_key").map(Secret::new),
        virtual_key: o.str(p, "virtual_key"),
        provider_options: o
            .map
            .iter()
            .filter(|(k, v)| is_provider_option(k) && !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };

    let custom_host = o.str(p, "custom_host");
    if let Some(host) = &custom_host {
        match url::Url::parse(host) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => p.push(
                &o.path_of("custom_host"),
                format!("scheme `{}` is not allowed; use http or https", u.scheme()),
            ),
            Err(e) => p.push(&o.path_of("custom_host"), format!("not a valid URL: {e}")),
        }
    }
    let forward_headers = o.str_list(p, "forward_headers");
    if let Some(names) = &forward_headers {
        for (i, n) in names.iter().enumerate() {
            if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
                p.push(
                    &join(&o.path_of("forward_headers"), &format!("[{i}]")),
                    format!("`{n}` is not a valid header name"),
                );
            }
        }
    }
    let inherit = Inherited {
        custom_host,
        request_timeout_ms: o.uint(p, "request_timeout", 1, u64::from(u32::MAX)),
        forward_headers,
        retry: o
            .get("retry")
            .and_then(|v| retry(p, &o.path_of("retry"), v)),
        cache: o
            .get("cache")
            .and_then(|v| cache(p, &o.path_of("cache"), v)),
        strict_open_ai_compliance: o.bool(p, "strict_open_ai_compliance"),
        override_params: o.object(p, "override_params").unwrap_or_default(),
        hooks: hooks(p, &o),
    };

    // Judge the shape by what was written, even when the strategy itself is invalid.
    if o.get("strategy").is_none() {
        if o.get("targets").is_some() {
            p.push(&targets_path, "`targets` needs a `strategy` beside it");
        }
        if target.provider.is_none() && target.virtual_key.is_none() {
            p.push(
                path,
                "a target needs `provider` (or `virtual_key`), or a `strategy` with `targets`",
            );
        }
    } else {
        match o.get("targets") {
            None => p.push(
                &targets_path,
                "a strategy needs a non-empty `targets` array",
            ),
            Some(Value::Array(items)) if items.is_empty() => {
                p.push(&targets_path, "must not be empty")
            }
            Some(_) => {}
        }
    }
    if let Some(s) = &strategy {
        check_condition_names(p, &o.path_of("strategy"), s, &targets);
    }

    Some(Node {
        strategy,
        targets,
        name: o.str(p, "name"),
        weight: o.number(p, "weight", 0.0).unwrap_or(1.0),
        on_status_codes: o.status_list(p, "on_status_codes"),
        target,
        inherit,
    })
}

fn strategy(p: &mut Problems, path: &str, value: &Value) -> Option<Strategy> {
    let o = Obj::new(p, path, value)?;
    o.deny_unknown(
        p,
        &[
            "mode",
            "on_status_codes",
            "conditions",
            "default",
            "router",
            "parameters",
        ],
        |_| false,
    );
    let mode = match o.get("mode") {
        None => {
            p.push(
                &o.path_of("mode"),
                format!("required; one of: {}", MODES.join(", ")),
            );
            None
        }
        Some(_) => o.choice(p, "mode", MODES),
    };
    let conditions_path = o.path_of("conditions");
    let mut conditions = Vec::new();
    for (i, c) in o.array(p, "conditions").into_iter().flatten().enumerate() {
        let cpath = join(&conditions_path, &format!("[{i}]"));
        let Some(co) = Obj::new(p, &cpath, c) else {
            continue;
        };
        co.deny_unknown(p, &["query", "then"], |_| false);
        let query = co.object(p, "query");
        let then = co.str(p, "then");
        if query.is_none() && co.get("query").is_none() {
            p.push(&co.path_of("query"), "required");
        }
        if then.is_none() && co.get("then").is_none() {
            p.push(&co.path_of("then"), "required: the `name` of a target");
        }
        if let (Some(query), Some(then)) = (query, then) {
            conditions.push(Condition { query, then });
        }
    }
    if mode == Some("conditional") && o.get("conditions").is_none() {
        p.push(&conditions_path, "required when mode is `conditional`");
    }
    let router = o.str(p, "router");
    if mode == Some("router") && router.is_none() && o.get("router").is_none() {
        p.push(
            &o.path_of("router"),
            "required when mode is `router`: the name of a router plugin",
        );
    }
    let parameters = o.object(p, "parameters").map(Value::Object);
    Some(Strategy {
        mode: mode?,
        on_status_codes: o.status_list(p, "on_status_codes"),
        conditions,
        default: o.str(p, "default"),
        router,
        parameters,
    })
}

fn check_condition_names(p: &mut Problems, path: &str, s: &Strategy, targets: &[Node]) {
    let names: BTreeSet<&str> = targets.iter().filter_map(|t| t.name.as_deref()).collect();
    for (i, c) in s.conditions.iter().enumerate() {
        if !names.contains(c.then.as_str()) {
            p.push(
                &format!("{}.conditions[{i}].then", path),
                format!("no target is named `{}`", c.then),
            );
        }
    }
    if let Some(d) = &s.default
        && !names.contains(d.as_str())
    {
        p.push(&join(path, "default"), format!("no target is named `{d}`"));
    }
}

fn retry(p: &mut Problems, path: &str, value: &Value) -> Option<Retry> {
    let o = Obj::new(p, path, value)?;
    o.deny_unknown(
        p,
        &["attempts", "on_status_codes", "use_retry_after_header"],
        |_| false,
    );
    if o.get("attempts").is_none() {
        p.push(&o.path_of("attempts"), "required (0 to 10)");
    }
    Some(Retry {
        attempts: o.uint(p, "attempts", 0, 10)? as u32,
        on_status_codes: o.status_list(p, "on_status_codes"),
        use_retry_after_header: o.bool(p, "use_retry_after_header").unwrap_or(false),
    })
}

fn cache(p: &mut Problems, path: &str, value: &Value) -> Option<Cache> {
    let o = Obj::new(p, path, value)?;
    o.deny_unknown(p, &["mode", "max_age"], |_| false);
    if o.get("mode").is_none() {
        p.push(&o.path_of("mode"), "required: simple or semantic");
    }
    Some(Cache {
        mode: o.choice(p, "mode", &["simple", "semantic"])?,
        max_age_s: o.uint(p, "max_age", 0, u64::from(u32::MAX)),
    })
}

fn hooks(p: &mut Problems, o: &Obj<'_, '_>) -> Hooks {
    // Full hooks take objects; the shorthands also take bare check ids.
    let full = |p: &mut Problems, key: &str| -> Option<Vec<Value>> {
        let items = o.array(p, key)?;
        for (i, item) in items.iter().enumerate() {
            if !item.is_object() {
                p.push(
                    &join(&o.path_of(key), &format!("[{i}]")),
                    "expected a hook object",
                );
            }
        }
        Some(items.clone())
    };
    let short = |p: &mut Problems, key: &str| -> Option<Vec<Value>> {
        let items = o.array(p, key)?;
        for (i, item) in items.iter().enumerate() {
            if !(item.is_object() || item.is_string()) {
                p.push(
                    &join(&o.path_of(key), &format!("[{i}]")),
                    "expected a guardrail id or a check object",
                );
            }
        }
        Some(items.clone())
    };
    let before = [
        full(p, "before_request_hooks"),
        short(p, "input_guardrails"),
        short(p, "input_mutators"),
    ];
    let after = [
        full(p, "after_request_hooks"),
        short(p, "output_guardrails"),
        short(p, "output_mutators"),
    ];
    Hooks {
        before: super::hooks::stage(&before.each_ref().map(Option::as_ref), "before_request"),
        after: super::hooks::stage(&after.each_ref().map(Option::as_ref), "after_request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(s: &str) -> bool {
        ["openai", "groq", "azure-openai"].contains(&s)
    }

    #[test]
    fn a_single_target_config_parses() {
        let c = parse_json(
            r#"{"provider":"openai","api_key":"sk-x","override_params":{"model":"m"},"request_timeout":500,"forward_headers":["x-a"]}"#,
            &known,
        )
        .expect("valid");
        assert_eq!(c.root.target.provider.as_deref(), Some("openai"));
        assert_eq!(c.root.inherit.request_timeout_ms, Some(500));
        assert_eq!(c.root.inherit.override_params["model"], "m");
        assert_eq!(c.root.weight, 1.0);
    }

    #[test]
    fn a_nested_tree_with_every_section_parses() {
        let c = parse_json(
            r#"{
              "strategy": {"mode": "fallback", "on_status_codes": [429, 500]},
              "retry": {"attempts": 3, "on_status_codes": [503], "use_retry_after_header": true},
              "cache": {"mode": "simple", "max_age": 60},
              "targets": [
                {"provider": "openai", "api_key": "a", "weight": 0.5, "openai_organization": "org"},
                {"strategy": {"mode": "conditional",
                              "conditions": [{"query": {"metadata.tier": {"$eq": "pro"}}, "then": "pro"}],
                              "default": "free"},
                 "targets": [{"name": "pro", "provider": "groq"}, {"name": "free", "provider": "azure-openai",
                              "resource_name": "r", "deployment_id": "d", "api_version": "2024-10-21"}]}
              ],
              "input_guardrails": ["pii", {"default.contains": {"words": ["x"]}}]
            }"#,
            &known,
        )
        .expect("valid");
        assert_eq!(c.root.strategy.as_ref().map(|s| s.mode), Some("fallback"));
        assert_eq!(
            c.root.targets[0].target.provider_options["openai_organization"],
            "org"
        );
        assert_eq!(
            c.root.targets[1].targets[1].target.provider_options.len(),
            3
        );
        assert_eq!(c.root.inherit.retry.as_ref().map(|r| r.attempts), Some(3));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = parse_json(
            r#"{"strategy":{"mode":"roundrobin"},"targets":[{"provider":"nope","weight":-1},{"providr":"openai"}],"retry":{"attempts":11},"cache":{"mode":"x"}}"#,
            &known,
        )
        .expect_err("invalid");
        let text = err.to_string();
        for needle in [
            "strategy.mode: `roundrobin` is not one of",
            "targets[0].provider: unknown provider `nope`",
            "targets[0].weight: expected a number >= 0",
            "targets[1].providr: unknown field",
            "retry.attempts: expected an integer from 0 to 10",
            "cache.mode: `x` is not one of",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in {text}");
        }
    }

    #[test]
    fn structural_mistakes_are_caught() {
        let cases = [
            (
                r#"{"targets":[{"provider":"openai"}]}"#,
                "targets: `targets` needs a `strategy`",
            ),
            (
                r#"{"strategy":{"mode":"fallback"}}"#,
                "targets: a strategy needs a non-empty",
            ),
            (
                r#"{"strategy":{"mode":"fallback"},"targets":[]}"#,
                "targets: must not be empty",
            ),
            (r#"{"api_key":"k"}"#, "a target needs `provider`"),
            (
                r#"{"provider":"openai","custom_host":"ftp://x"}"#,
                "custom_host: scheme `ftp`",
            ),
            (
                r#"{"provider":"openai","forward_headers":["bad header"]}"#,
                "forward_headers[0]",
            ),
            (
                r#"{"strategy":{"mode":"conditional","conditions":[{"query":{},"then":"a"}]},"targets":[{"provider":"openai"}]}"#,
                "strategy.conditions[0].then: no target is named `a`",
            ),
            ("[1]", "expected an object"),
            ("{", "not valid JSON"),
        ];
        for (text, needle) in cases {
            let err = parse_json(text, &known).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: `{err}` lacks `{needle}`");
        }
    }
}
